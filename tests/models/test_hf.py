"""Hugging Face video classifiers (VideoMAE, TimeSformer, ViViT) through ``hf:ORG/NAME``: the cache,
the offline errors, the wrapper, the token layouts and the suffix-only runner, on small random
configurations written by the tests."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch

import video_iba
from video_iba import UserInputError
from video_iba.bottleneck.insertion import capture_taps, get_module
from video_iba.models import get_spec, labels_for, layers
from video_iba.models.hf import blocks_path

from ..helpers import hub_checkpoint, read_frames, run_cli
from ..nets import snapshot
from ..videos import encode

transformers = pytest.importorskip("transformers")

LABELS = {"0": "left", "1": "right", "2": "still"}
TINY = dict(image_size=32, patch_size=8, num_channels=3, num_frames=4, hidden_size=16, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=32, id2label=LABELS, label2id={v: int(k) for k, v in LABELS.items()})


def _config(kind: str) -> transformers.PretrainedConfig:
    if kind == "videomae":
        return transformers.VideoMAEConfig(tubelet_size=2, use_mean_pooling=True, **TINY)
    if kind == "timesformer":
        return transformers.TimesformerConfig(attention_type="divided_space_time", **TINY)
    return transformers.VivitConfig(**{**TINY, "tubelet_size": [2, 8, 8]})


def _cache(tmp_path, monkeypatch, kind: str) -> tuple[str, torch.nn.Module]:  # type: ignore[no-untyped-def]
    """A checkpoint ``test-org/tiny-KIND`` in a Hugging Face cache of the test's own (the hub's layout)."""
    torch.manual_seed(0)
    net = transformers.AutoModelForVideoClassification.from_config(_config(kind)).eval()
    return hub_checkpoint(tmp_path, monkeypatch, net, kind), net


@pytest.mark.parametrize("kind", ["videomae", "timesformer", "vivit"])
def test_a_cached_checkpoint_is_wrapped_and_explained_from_a_token_layer(tmp_path, monkeypatch, kind: str) -> None:  # type: ignore[no-untyped-def]
    name, net = _cache(tmp_path, monkeypatch, kind)
    model = video_iba.load_model(name)
    for k, v in net.state_dict().items():  # the cached weights, not a fresh initialisation
        assert torch.equal(model.state_dict()[f"hf.{k}"], v), k
    spec = get_spec(name)
    assert labels_for(spec) == ["left", "right", "still"] and spec.frames == 4 and spec.input_size == 32
    clip = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    pixel_values = clip.permute(0, 2, 1, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(clip), net(pixel_values=pixel_values).logits)
    grid = {"videomae": (2, 4, 4), "timesformer": (4, 4, 4), "vivit": (2, 4, 4)}[kind]
    table = {li.name: li for li in layers(name)}
    blocks = f"hf.{kind}.{blocks_path(kind)}."
    assert table[spec.layers[0]].grid == grid and table[blocks + "1"].grid == grid
    before = snapshot(model)
    for layer in (spec.layers[0], blocks + "0"):
        a = video_iba.explain(model, clip, layer=layer, steps=2, samples=2, seed=0)
        assert a.bits.shape == (4, 32, 32) and a.total_bits > 0
        assert a.meta["micro_batch"] == 2  # replicas in pairs: the base models' 10 at once took 9-15 GB
        assert a.meta["prefix_cached"] is True and "own suffix" in a.meta["prefix_note"]
        assert ("prefix_bits" in a.meta) == (kind != "videomae")
        hooked = video_iba.explain(model, clip, layer=layer, steps=2, samples=2, seed=0, split="hook")
        torch.testing.assert_close(a.bits, hooked.bits, rtol=1e-3, atol=1e-6)
    cam = video_iba.attribute("gradcam", model, clip)
    assert cam.meta["cam_layer"] == spec.cam_layer and float(cam.values.max()) > 0
    after = snapshot(model)
    assert after["hooks"] == 0 and after["requires_grad"] == before["requires_grad"]
    assert len(model.hf.base_model.get_submodule(blocks_path(kind))) == 2  # the block list is back after the suffix


def test_a_checkpoint_loads_without_a_progress_bar_and_the_setting_is_restored(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    name, _ = _cache(tmp_path, monkeypatch, "vivit")
    bars = transformers.utils.logging
    assert bars.is_progress_bar_enabled()
    capsys.readouterr()
    video_iba.load_model(name)
    assert "Loading weights" not in capsys.readouterr().err  # the command line's lines stay its own
    assert bars.is_progress_bar_enabled()  # the user's setting, as it was
    bars.disable_progress_bar()
    try:
        video_iba.load_model(name)
        assert not bars.is_progress_bar_enabled()
    finally:
        bars.enable_progress_bar()


@pytest.mark.parametrize("kind", ["videomae", "timesformer"])
def test_a_network_built_in_memory_is_wrapped_with_its_spec(tmp_path, kind: str) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = transformers.AutoModelForVideoClassification.from_config(_config(kind)).train()  # a notebook's, training
    assert set(net.config.id2label) == {0, 1, 2}  # in memory the configuration's labels have int keys
    before = snapshot(net)
    model = video_iba.wrap_hf(net, name="hf:mine")
    spec = model.video_iba_spec
    assert model.hf is net and spec.name == "hf:mine" and spec.layers == (f"hf.{kind}.embeddings",)
    assert labels_for(spec) == ["left", "right", "still"] and spec.frames == 4 and spec.input_size == 32
    assert video_iba.wrap_hf(net).video_iba_spec.name.startswith("hf:")  # named after the configuration or class
    clip = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(clip), net(pixel_values=clip.permute(0, 2, 1, 3, 4)).logits)
    net.train()
    a = video_iba.explain(model, clip, steps=2, samples=2, seed=0)
    assert a.bits.shape == (4, 32, 32) and a.total_bits > 0 and a.meta["prefix_cached"] is True
    assert a.meta["layer"] == f"hf.{kind}.embeddings"
    after = snapshot(net)  # hooks gone, flags and modes as they were
    assert after["hooks"] == 0 and all(after[k] == before[k] for k in ("training", "requires_grad", "grads"))
    with pytest.raises(UserInputError, match="wrap_hf takes a Hugging Face video or image classifier"):
        video_iba.wrap_hf(torch.nn.Linear(2, 2))
    text = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))
    with pytest.raises(UserInputError, match="is a 'bert' model; video-iba explains Hugging Face videomae, timesformer, "
                                             "vivit video classifiers and vit, deit, beit, dinov2, "
                                             "dinov2_with_registers, swin, swinv2, convnext, convnextv2, resnet, regnet"):
        video_iba.wrap_hf(text)
    session = video_iba.Session.for_model(model, settings=video_iba.Settings(changes={"steps": 2}))  # its own spec
    assert session.spec is spec and session.layers == [f"hf.{kind}.embeddings"]
    with pytest.raises(UserInputError, match="a Settings goes third"):
        video_iba.Session.for_model(model, video_iba.Settings())
    with pytest.raises(UserInputError, match=r"the model \(Linear\) carries no spec; give Session.for_model a"):
        video_iba.Session.for_model(torch.nn.Linear(2, 2))
    # the network itself (its own axis order, an output object, tokens without a layout) is refused with the fix
    with pytest.raises(UserInputError, match=rf"a Hugging Face {kind} classifier .*; wrap it with video_iba.wrap_"):
        video_iba.Session.for_model(net)
    for method, where in (("iba", "layer"), ("gradcam", "cam_layer")):
        with pytest.raises(UserInputError, match=rf"a Hugging Face {kind} classifier .*; wrap it with video_iba.wrap_"):
            video_iba.attribute(method, net, clip.permute(0, 2, 1, 3, 4), **{where: f"{kind}.embeddings"})


@pytest.mark.parametrize("kind", ["videomae", "timesformer", "vivit"])
def test_clips_are_prepared_as_the_checkpoints_own_processor_prepares_them(tmp_path, monkeypatch, caplog,
                                                                          kind: str) -> None:  # type: ignore[no-untyped-def]
    # the spec took the family's published normalisation whatever the checkpoint's processor said:
    # a fine-tune saved with another processor saw other inputs than it was trained on
    if kind != "videomae" and not hasattr(transformers, "VivitVideoProcessor"):
        pytest.skip("this transformers has no video processors (transformers 5 added them)")
    name, net = _cache(tmp_path, monkeypatch, kind)
    snap = tmp_path / "hub" / ("models--" + name[3:].replace("/", "--")) / "snapshots" / "abc123"
    sizes = dict(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})
    processor = {"videomae": lambda: transformers.VideoMAEImageProcessor(image_mean=[0.1, 0.2, 0.3],
                                                                        image_std=[0.5, 0.6, 0.7], **sizes),
                 "timesformer": lambda: transformers.TimesformerVideoProcessor(**sizes),  # video_preprocessor_config
                 "vivit": lambda: transformers.VivitVideoProcessor(**sizes)}[kind]()  # p / 127.5 - 1, then (x - m) / s
    processor.save_pretrained(snap)
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 40, 56, 3), dtype=np.uint8)
    given = processor(list(frames), return_tensors="pt") if kind == "videomae" else \
        processor(videos=[list(frames)], return_tensors="pt")
    expected = given["pixel_values"].permute(0, 2, 1, 3, 4)
    for spec in (get_spec(name), video_iba.wrap_hf(net, processor=processor).video_iba_spec):
        assert spec.resize == 40 and spec.input_size == 32
        x, _ = video_iba.preprocess_clip(frames, spec)
        torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    # a processor that does not resize is followed but for that, and says so
    with caplog.at_level(logging.WARNING, logger="video_iba"):
        spec = video_iba.wrap_hf(net, processor=type(processor)(do_resize=False, **sizes)).video_iba_spec
    assert (spec.resize, spec.input_size) == (40, 32)
    assert f"{type(processor).__name__} does not resize frames (do_resize: false); video-iba resizes each to a " \
           f"shorter side of 40 pixels before the 32-pixel crop" in caplog.text
    for old in snap.glob("*preprocessor_config.json"):
        old.unlink()
    get_spec.cache_clear()  # a spec is read once per process
    published = video_iba.get_spec("hf:MCG-NJU/videomae-base-finetuned-kinetics" if kind == "videomae" else
                                   "hf:facebook/timesformer-base-finetuned-k400")
    if kind != "vivit":  # without a processor configuration, the family's published preprocessing
        assert (get_spec(name).mean, get_spec(name).std) == (published.mean, published.std)
    (snap / "preprocessor_config.json").write_text('{"size": {"shortest_edge": 40}, "image_std": [1, 1, 1]}')
    with pytest.raises(UserInputError, match=r"cannot read the processor configuration '.*preprocessor_config.json' "
                                             r"\(it has no 'image_mean'\); give a checkpoint whose"):
        video_iba.load_model(name)
    folder = tmp_path / "saved"  # a checkpoint folder's processor configuration is read there
    net.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text('[1, 2]')
    with pytest.raises(UserInputError, match=r"^cannot read the processor configuration '.*saved.preprocessor_config"
                                             r".json' \(a JSON list, not an object\)"):
        video_iba.load_model(name, weights=str(folder))
    (folder / "preprocessor_config.json").write_text('{"size": {"longest_edge": 64}, "image_mean": 0.5, "image_std": 0.5}')
    with pytest.raises(UserInputError, match=r"\(a size \{'longest_edge': 64\} names neither the shorter side nor the "
                                             r"height and width\)"):
        video_iba.load_model(name, weights=str(folder))
    with pytest.raises(UserInputError, match="processor= takes a Hugging Face image or video processor"):
        video_iba.wrap_hf(net, processor={"image_mean": 0.5})


def test_clips_fitted_together_through_the_models_own_suffix_get_their_maps_alone(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    name, _ = _cache(tmp_path, monkeypatch, "timesformer")
    model = video_iba.load_model(name)
    spec = get_spec(name)
    clips = torch.randn(3, 3, 4, 32, 32, generator=torch.Generator().manual_seed(4))
    layer = f"hf.timesformer.{blocks_path('timesformer')}.0"
    together = video_iba.explain(model, clips, [0, 1, 2], layer=layer, seed=[5, 6, 7], steps=3, samples=3,
                                 config=spec.config().replace(inputs_per_pass=2))  # passes of inputs 0-1, then 2
    for i, got in enumerate(together):
        alone = video_iba.explain(model, clips[i:i + 1], i, layer=layer, seed=5 + i, steps=3, samples=3)
        assert "own suffix" in got.meta["prefix_note"] and got.meta["inputs_per_pass"] == 2
        torch.testing.assert_close(got.bits, alone.bits, rtol=1e-3, atol=1e-6)
        assert got.meta["prefix_bits"] == pytest.approx(alone.meta["prefix_bits"], rel=1e-3)


@pytest.mark.parametrize("kind", ["videomae", "timesformer"])
def test_each_frame_lands_on_its_own_grid_frame(tmp_path, monkeypatch, kind: str) -> None:  # type: ignore[no-untyped-def]
    """TimeSformer orders tokens (h w t), VideoMAE (t h w) with 2-frame tubelets: a change in one
    frame must show in that frame's grid cells only, whatever the order."""
    name, _ = _cache(tmp_path, monkeypatch, kind)
    model = video_iba.load_model(name)
    spec = get_spec(name)
    layer = spec.layers[0]
    module = get_module(model, layer)
    clip = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    changed = clip.clone()
    changed[:, :, 3] += 1.0  # the last frame only
    maps = []
    for x in (clip, changed):
        _, taps = capture_taps(model, [module], [layer], x, [spec.layout(layer)])
        maps.append(taps.parts[0])
    moved = (maps[1] - maps[0]).abs().sum(dim=(0, 1, 3, 4))  # per grid frame
    last = moved.shape[0] - 1
    assert moved[last] > 0 and torch.all(moved[:last] == 0)


def test_missing_checkpoints_name_the_cache_and_the_fix(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(UserInputError) as err:
        video_iba.load_model("hf:nobody/no-such-video-model")
    msg = str(err.value)
    assert str(tmp_path / "empty") in msg and "huggingface-cli download nobody/no-such-video-model" in msg
    with pytest.raises(UserInputError) as err:  # a shipped configuration: random weights are offered
        video_iba.load_model("hf:MCG-NJU/videomae-base-finetuned-kinetics")
    assert "or 'random'" in str(err.value) and str(tmp_path / "empty") in str(err.value)
    with pytest.raises(UserInputError, match="write hf:ORG/NAME"):
        video_iba.load_model("hf:just-a-name")


def test_unsupported_architectures_and_a_checkpoint_folder(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    name, net = _cache(tmp_path, monkeypatch, "vivit")
    folder = tmp_path / "finetuned"
    torch.manual_seed(5)
    other = transformers.AutoModelForVideoClassification.from_config(_config("vivit"))
    other.save_pretrained(folder)
    model = video_iba.load_model(name, weights=str(folder))
    assert torch.equal(model.state_dict()["hf.classifier.weight"], other.state_dict()["classifier.weight"])
    torch.save(net.state_dict(), tmp_path / "plain.pt")  # the network's own state dict, without the wrapper
    model = video_iba.load_model(name, weights=str(tmp_path / "plain.pt"))
    assert torch.equal(model.state_dict()["hf.classifier.weight"], net.state_dict()["classifier.weight"])
    # such a state dict fine-tuned to 7 classes: its head resized, the classes numbered (it was a size
    # mismatch: the head was looked for under the network's own names, not the wrapper's)
    tuned = transformers.AutoModelForVideoClassification.from_config(
        transformers.VivitConfig(**{**TINY, "tubelet_size": [2, 8, 8], "id2label": None, "label2id": None,
                                    "num_labels": 7}))
    torch.save(tuned.state_dict(), tmp_path / "tuned.pt")
    model = video_iba.load_model(name, weights=str(tmp_path / "tuned.pt"))
    assert labels_for(model.video_iba_spec) == [f"class {i}" for i in range(7)]
    assert torch.equal(model.state_dict()["hf.classifier.weight"], tuned.state_dict()["classifier.weight"])
    root = tmp_path / "hub" / "models--x--bert"
    (root / "snapshots" / "r").mkdir(parents=True)
    (root / "snapshots" / "r" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(UserInputError, match="a 'bert' model; video-iba explains Hugging Face videomae"):
        video_iba.load_model("hf:x/bert")


def test_the_command_line_explains_a_clip_with_a_cached_checkpoint(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    name, _ = _cache(tmp_path, monkeypatch, "timesformer")
    clip = encode(str(tmp_path / "clip.mp4"), frames=40, size=(48, 40))
    code, out, err = run_cli(["explain", clip, "--model", name, "--steps", "2", "--samples", "2", "--out",
                              str(tmp_path / "out")], capsys)
    assert code == 0, err
    result = video_iba.load(tmp_path / "out" / "clip.npz")
    assert isinstance(result, video_iba.ClipAttribution) and result.bits.shape[2:] == (4, 32, 32)
    assert result.prefix_bits is not None and result.prefix_bits.shape == (*result.bits.shape[:2], 1)
    assert float(result.prefix_bits.min()) > 0 and result.meta["model"] == name
    assert f"#{result.target} {result.meta['target_label']}" in out and "in class tokens)" in out
    assert result.meta["target_label"] == LABELS[str(result.target)]
    assert len(read_frames(str(tmp_path / "out" / "clip.mp4"))) == 40


def test_a_checkpoint_folder_brings_its_own_configuration(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    # a save_pretrained folder of a model the cache does not hold was refused for want of a cached
    # configuration ("or give --weights a checkpoint folder", which it was), one of another size
    # than the id's shipped configuration ended in a transformers traceback, and hf:PATH was no id
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    folder = tmp_path / "mine"
    torch.manual_seed(3)
    net = transformers.AutoModelForVideoClassification.from_config(_config("videomae")).eval()
    net.save_pretrained(folder)
    for name, weights in (("hf:me/mine", str(folder)), (f"hf:{folder}", "default"),
                          ("hf:MCG-NJU/videomae-base-finetuned-kinetics", str(folder))):
        model = video_iba.load_model(name, weights=weights)
        spec = model.video_iba_spec
        assert (spec.input_size, spec.frames, spec.label_names) == (32, 4, ("left", "right", "still")), name
        assert torch.equal(model.state_dict()["hf.classifier.weight"], net.state_dict()["classifier.weight"])
    random = video_iba.load_model(f"hf:{folder}", weights="random")
    assert random.video_iba_spec.input_size == 32
    assert not torch.equal(random.state_dict()["hf.classifier.weight"], net.state_dict()["classifier.weight"])
    (tmp_path / "no-config").mkdir()
    with pytest.raises(UserInputError, match="holds no config.json; give weights= a folder written by save_pretrained"):
        video_iba.load_model("hf:me/mine", weights=str(tmp_path / "no-config"))
    # `layers` reads the configuration from the folder too (it had no --weights, and the missing
    # configuration's message told it to give one)
    code, _, err = run_cli(["layers", "--model", "hf:me/mine"], capsys)
    assert code == 2 and "or give --weights a checkpoint folder" in err
    code, out, err = run_cli(["layers", "--model", "hf:me/mine", "--weights", str(folder)], capsys)
    assert code == 0, err
    assert re.search(r"hf\.videomae\.embeddings +VideoMAEEmbeddings +1x\d+x16 +grid 2x4x4 \(t h w\)", out), out
    code, _, err = run_cli(["layers", "--model", "r3d_18", "--weights", str(folder)], capsys)
    assert code == 2 and "r3d_18's layers are listed without its weights; drop --weights" in err
    clip = encode(str(tmp_path / "clip.mp4"), frames=40, size=(48, 40))
    code, out, err = run_cli(["explain", clip, "--model", "hf:me/mine", "--weights", str(folder), "--steps", "2",
                              "--samples", "2", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    result = video_iba.load(tmp_path / "out" / "clip.npz")
    assert result.bits.shape[2:] == (4, 32, 32) and result.meta["target_label"] in ("left", "right", "still")


def test_every_family_takes_clips_of_another_length(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    clip = torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    for kind in ("videomae", "timesformer", "vivit"):
        name, net = _cache(tmp_path / kind, monkeypatch, kind)  # a checkpoint of 4-frame clips
        model = video_iba.load_model(name, frames=8)
        spec = model.video_iba_spec
        assert spec.frames == 8 and spec.layout(spec.layers[0]).grid == ((8, 4, 4) if kind == "timesformer" else (4, 4, 4))
        # the network Hugging Face builds for 8-frame clips with these weights: TimeSformer's time
        # embeddings resampled to 8 as its embedding resamples them itself (nearest); ViViT's
        # position embeddings resampled linearly in time, 2 -> 4 steps (the class token's kept)
        reference = transformers.AutoModelForVideoClassification.from_config(
            _config(kind).__class__(**{**_config(kind).to_dict(), "num_frames": 8})).eval()
        state = net.state_dict()
        if kind == "timesformer":
            table = state["timesformer.embeddings.time_embeddings"]
            state["timesformer.embeddings.time_embeddings"] = torch.nn.functional.interpolate(
                table.transpose(1, 2), size=8, mode="nearest").transpose(1, 2)
        if kind == "vivit":
            table = state["vivit.embeddings.position_embeddings"]  # (1, 1 + 2 x 16, C)
            first, second = table[:, 1:17], table[:, 17:]
            state["vivit.embeddings.position_embeddings"] = torch.cat(
                [table[:, :1], first, 0.75 * first + 0.25 * second, 0.25 * first + 0.75 * second, second], dim=1)
        reference.load_state_dict(state)
        with torch.no_grad():
            torch.testing.assert_close(model(clip), reference(pixel_values=clip.permute(0, 2, 1, 3, 4)).logits)
        attr = video_iba.explain(model, clip, steps=2, samples=2, seed=0)
        assert attr.bits.shape == (8, 32, 32) and len(attr.bits_per_frame) == 8
        if kind == "videomae":
            with pytest.raises(UserInputError, match=rf"frames= must be even for {name} \(its tubelets span 2"):
                video_iba.load_model(name, frames=5)
        own = video_iba.load_model(name)  # without frames=, the checkpoint's own length
        with pytest.raises(UserInputError, match=rf"this {kind} network takes clips of 4 frames \(its config.num_frames"
                                                 r"\), got 8; give it clips of 4 frames, or build it for 8"):
            own(clip)
        if kind == "vivit":  # a state dict file of 4-frame clips, explained on 8: resampled, with a warning
            torch.save(net.state_dict(), tmp_path / "vivit.pt")
            with caplog.at_level(logging.WARNING, logger="video_iba"):
                from_file = video_iba.load_model(name, weights=str(tmp_path / "vivit.pt"), frames=8)
            assert ("vivit: the weights' position embeddings are made for clips of 4 frames and these clips hold 8: "
                    "resampled to them; give --frames 4") in caplog.text
            with torch.no_grad():
                torch.testing.assert_close(from_file(clip), model(clip))
