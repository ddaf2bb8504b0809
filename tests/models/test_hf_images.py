"""Hugging Face image classifiers (ViT, DeiT, BEiT, Swin, ConvNeXt (V2), ResNet, RegNet) through ``hf:ORG/NAME``:
the wrapper, the token layouts, the suffix-only runner, the processor's preprocessing and the
command line, on small random configurations written by the tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import video_iba
from video_iba import UserInputError
from video_iba.models import get_spec, labels_for, layers, preprocess_image
from video_iba.models.hf import FAMILIES, FAMILY_NAMES, IMAGE_FAMILIES, blocks_path

from ..helpers import hub_checkpoint, run_cli
from ..nets import quadrant_photos, seeded_init, snapshot
from ..videos import encode

transformers = pytest.importorskip("transformers")

LABELS = {"0": "cat", "1": "dog", "2": "tie"}
LABEL_IDS = dict(id2label=LABELS, label2id={v: int(k) for k, v in LABELS.items()})
VIT = dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
           intermediate_size=32)
STAGES = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])
#: The tiny network of each family, and the token grid and class tokens of its embedding (``None``: a CNN).
KINDS = {
    "vit": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(**VIT, **LABEL_IDS)), (4, 4), 1),
    "deit": (lambda: transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**VIT, **LABEL_IDS)),
             (4, 4), 2),
    "beit": (lambda: transformers.BeitForImageClassification(transformers.BeitConfig(
        **VIT, use_relative_position_bias=True, use_mean_pooling=True, **LABEL_IDS)), (4, 4), 1),
    "dinov2": (lambda: transformers.Dinov2ForImageClassification(transformers.Dinov2Config(**VIT, **LABEL_IDS)),
               (28, 28), 1),  # at the processor's 224 pixels (its position embeddings are interpolated)
    "dinov2_with_registers": (lambda: transformers.Dinov2WithRegistersForImageClassification(
        transformers.Dinov2WithRegistersConfig(**VIT, num_register_tokens=2, **LABEL_IDS)), (28, 28), 3),
    "swin": (lambda: transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=4, **LABEL_IDS)),
        (8, 8), 0),
    "swinv2": (lambda: transformers.Swinv2ForImageClassification(transformers.Swinv2Config(
        image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=4, **LABEL_IDS)),
        (8, 8), 0),
    "convnext": (lambda: transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
        num_channels=3, **STAGES, **LABEL_IDS)), None, None),
    "convnextv2": (lambda: transformers.ConvNextV2ForImageClassification(transformers.ConvNextV2Config(
        **STAGES, **LABEL_IDS)), None, None),
    "resnet": (lambda: transformers.ResNetForImageClassification(transformers.ResNetConfig(
        embedding_size=8, **STAGES, **LABEL_IDS)), None, None),
    "regnet": (lambda: transformers.RegNetForImageClassification(transformers.RegNetConfig(
        embedding_size=8, groups_width=8, **STAGES, **LABEL_IDS)), None, None),
}


def _network(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    try:
        return KINDS[kind][0]().eval()
    except AttributeError as exc:  # a family newer than the transformers installed (4.46 has no DINOv2 registers)
        pytest.skip(f"transformers {transformers.__version__} lacks it: {exc}")


def _cache(tmp_path, monkeypatch, kind: str) -> tuple[str, torch.nn.Module]:  # type: ignore[no-untyped-def]
    """A checkpoint ``test-org/tiny-KIND`` in a Hugging Face cache of the test's own (the hub's layout)."""
    net = _network(kind)
    return hub_checkpoint(tmp_path, monkeypatch, net, kind), net


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_cached_image_checkpoint_is_wrapped_and_explained(tmp_path, monkeypatch, kind: str) -> None:  # type: ignore[no-untyped-def]
    name, net = _cache(tmp_path, monkeypatch, kind)
    _, grid, prefix = KINDS[kind]
    model = video_iba.load_model(name)
    for k, v in net.state_dict().items():  # the cached weights, not a fresh initialisation
        assert torch.equal(model.state_dict()[f"hf.{k}"], v), k
    spec = get_spec(name)
    assert labels_for(spec) == ["cat", "dog", "tie"] and spec.modality == "image"
    side = 224 if IMAGE_FAMILIES[kind].any_size else 32  # those of any size: the processor's crop
    assert spec.input_size == side
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(pixel_values=x).logits)
    table = {li.name: li for li in layers(name)}
    blocks = f"hf.{kind}.{blocks_path(kind)}."
    if grid is None:  # a CNN: the stride-8 stage, as the paper's ResNet-50 conv3_x
        assert spec.layers == (blocks + "1",) and table[blocks + "1"].shape[-2:] == (side // 8, side // 8)
        assert table[blocks + "1"].grid is None
    else:  # a transformer: its embedding, before attention mixes the patches
        assert spec.layers[0].endswith(".embeddings") and table[spec.layers[0]].grid == grid
        assert spec.layout(spec.layers[0]).prefix == prefix
    before = snapshot(model)
    tried = [spec.layers[0]] + ([blocks + "0"] if prefix else [])  # Swin's stages: below
    for layer in tried:
        a = video_iba.explain(model, x, layer=layer, steps=2, samples=2, seed=0)
        assert a.bits.shape == (side, side) and a.total_bits > 0
        assert a.meta["prefix_cached"] is True and "own suffix" in a.meta["prefix_note"], layer
        assert ("prefix_bits" in a.meta) == bool(prefix), layer  # class tokens restricted, counted apart
        hooked = video_iba.explain(model, x, layer=layer, steps=2, samples=2, seed=0, split="hook")
        torch.testing.assert_close(a.bits, hooked.bits, rtol=1e-3, atol=1e-6)
    cam = video_iba.attribute("gradcam", model, x)
    assert cam.meta["cam_layer"] == spec.cam_layer and cam.values.shape == (side, side)
    assert float(cam.values.max()) > 0
    after = snapshot(model)
    assert after["hooks"] == 0 and after["requires_grad"] == before["requires_grad"]
    assert len(model.hf.base_model.get_submodule(blocks_path(kind))) == len(
        net.base_model.get_submodule(blocks_path(kind)))  # the block list is back after the suffix


@pytest.mark.parametrize("kind", ["vit", "deit", "beit", "dinov2_with_registers", "swin", "swinv2"])
def test_each_patch_lands_on_its_own_grid_cell(tmp_path, monkeypatch, kind: str) -> None:  # type: ignore[no-untyped-def]
    # a wrong token order would draw the bits on other patches: change one patch of the photo and
    # only that patch's cell of the embedding's grid changes
    name, _ = _cache(tmp_path, monkeypatch, kind)
    model = video_iba.load_model(name)
    spec = model.video_iba_spec
    layer, (rows, cols), side = spec.layers[0], KINDS[kind][1], spec.input_size
    cell = side // rows
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(3))
    bumped = x.clone()
    bumped[..., 1 * cell:2 * cell, 2 * cell:3 * cell] += 1.0  # the patch in row 1, column 2
    outs = []
    handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: outs.append(out))
    try:
        with torch.no_grad():
            model(x), model(bumped)
    finally:
        handle.remove()
    (grid, *prefix), _ = spec.layout(layer).split(outs[0], layer)
    (other, *other_prefix), _ = spec.layout(layer).split(outs[1], layer)
    changed = (other - grid).abs().amax(dim=1)[0] > 1e-6  # (rows, cols)
    expected = torch.zeros(rows, cols, dtype=torch.bool)
    expected[1, 2] = True
    assert torch.equal(changed, expected)
    assert all(torch.equal(a, b) for a, b in zip(prefix, other_prefix))  # the class tokens hold no patch yet


def test_the_listing_names_every_family() -> None:
    assert list(FAMILY_NAMES) == [*FAMILIES, *IMAGE_FAMILIES]


def test_swin_stages_have_their_grids_and_run_the_whole_network(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    name, _ = _cache(tmp_path, monkeypatch, "swin")
    table = {li.name: li for li in layers(name)}
    assert table["hf.swin.encoder.layers.0"].grid == (4, 4) and table["hf.swin.encoder.layers.1"].grid == (4, 4)
    model = video_iba.load_model(name)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    a = video_iba.explain(model, x, layer="hf.swin.encoder.layers.0", steps=2, samples=2, seed=0)
    # its stages hand the grid's size on to the next, so it cannot start from one: the whole network
    assert a.bits.shape == (32, 32) and a.total_bits > 0 and a.meta["prefix_cached"] is False
    assert snapshot(model)["hooks"] == 0


def test_an_image_network_in_memory_is_wrapped_with_its_processor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    net = _network("vit").train()  # a notebook's, training
    before = snapshot(net)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with pytest.raises(UserInputError, match=r"Hugging Face vit classifier \(ViTForImageClassification\); wrap it "
                                             r"with video_iba.wrap_hf\(model\)"):
        video_iba.explain(net, x, layer="vit.embeddings")
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                                               image_std=[0.2, 0.25, 0.3])
    model = video_iba.wrap_hf(net, name="hf:mine", processor=processor)
    spec = model.video_iba_spec
    assert model.hf is net and spec.layers == ("hf.vit.embeddings",) and spec.modality == "image"
    assert spec.mean == pytest.approx((0.4, 0.5, 0.6)) and spec.std == pytest.approx((0.2, 0.25, 0.3))
    # on a photo at the processor's size, the model input is the processor's
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ours, _ = preprocess_image(rgb, spec)
    theirs = processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    a = video_iba.explain(model, ours, steps=2, samples=2, seed=0)
    assert a.bits.shape == (32, 32) and a.meta["prefix_cached"] is True
    assert a.meta["target_label"] in ("cat", "dog", "tie")
    after = snapshot(net)  # hooks gone, flags and modes as they were
    assert after["hooks"] == 0 and all(after[k] == before[k] for k in ("training", "requires_grad", "grads"))
    with pytest.raises(UserInputError, match="a Hugging Face image model takes photos"):
        model(torch.zeros(1, 3, 2, 32, 32))
    with pytest.raises(UserInputError, match="ViTModel is a vit backbone without a classification head; give the "
                                             "classifier built on it"):
        video_iba.wrap_hf(net.vit)


def test_a_state_dict_file_fine_tuned_to_other_classes_loads(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    name, _ = _cache(tmp_path, monkeypatch, "deit")
    torch.manual_seed(4)
    tuned = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**VIT, num_labels=5)).eval()
    torch.save(tuned.state_dict(), tmp_path / "tuned.pt")  # the network's own keys, two heads of 5 classes
    model = video_iba.load_model(name, weights=str(tmp_path / "tuned.pt"))
    assert labels_for(model.video_iba_spec) == [f"class {i}" for i in range(5)]
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), tuned(pixel_values=x).logits)


def test_convnext_processors_resize_by_their_crop_share(tmp_path) -> None:  # type: ignore[no-untyped-def]
    net = _network("convnext")
    # ConvNeXt's and ResNet's processor: the shorter side to 224 / 0.875 = 256, the centre 224 kept
    processor = transformers.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875)
    spec = video_iba.wrap_hf(net, processor=processor).video_iba_spec
    assert (spec.resize, spec.input_size) == (256, 224)
    rgb = np.random.default_rng(1).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    ours, _ = preprocess_image(rgb, spec)
    theirs = processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # as an older checkpoint's file names it (microsoft/resnet-50's preprocessor_config.json)
    folder = tmp_path / "resnet"
    _network("resnet").save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_pct": 0.875, "do_normalize": True, "do_resize": True, "feature_extractor_type": "ConvNextFeatureExtractor",
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": 192}))
    spec = get_spec(f"hf:{folder}")
    assert (spec.resize, spec.input_size, spec.layers) == (219, 192, ("hf.resnet.encoder.stages.1",))
    # from 384 pixels on the processor resizes without cropping
    large = transformers.ConvNextImageProcessor(size={"shortest_edge": 384}, crop_pct=0.875)
    spec = video_iba.wrap_hf(net, processor=large).video_iba_spec
    assert (spec.resize, spec.input_size) == (384, 384)


def test_the_command_line_explains_a_photo_with_a_cached_image_checkpoint(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    name, _ = _cache(tmp_path, monkeypatch, "deit")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photo)
    code, out, err = run_cli(["explain", str(photo), "--model", name, "--steps", "2", "--samples", "2", "--out",
                              str(tmp_path / "out")], capsys)
    assert code == 0, err
    result = video_iba.load(tmp_path / "out" / "photo.npz")
    assert isinstance(result, video_iba.Attribution) and result.bits.shape == (32, 32)
    assert result.meta["target_label"] == LABELS[str(result.target)] and result.meta["model"] == name
    assert "in class tokens" in out and result.prefix_total > 0  # the class and distillation tokens
    with Image.open(tmp_path / "out" / "photo.png") as figure:
        assert figure.size[0] > 200
    # an image model on a video, and --frames, are refused in one line
    code, _, err = run_cli(["explain", str(photo), "--model", name, "--frames", "8", "--out",
                            str(tmp_path / "out2")], capsys)
    assert code == 2 and "is an image model; --frames applies to video models only" in err
    clip = encode(str(tmp_path / "clip.mp4"), frames=8, size=(48, 40))
    code, _, err = run_cli(["explain", clip, "--model", name, "--out", str(tmp_path / "out2")], capsys)
    assert code == 2 and f"{name} is an image model and" in err and "Traceback" not in err
    assert not (tmp_path / "out2").exists()


def test_a_trained_vit_puts_its_bits_where_the_class_is_decided() -> None:
    # photos with a coloured patch in each quadrant, the top-left one's colour the class: a small
    # Hugging Face ViT trained on them, explained at its embedding (with its class token)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = seeded_init(transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_labels=2)), 0)  # the same start in every transformers version
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(120):
        xb, yb = quadrant_photos(64, g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(pixel_values=xb).logits, yb).backward()
        opt.step()
    net.eval()
    xt, yt = quadrant_photos(200, g)
    with torch.no_grad():
        assert float((net(pixel_values=xt).logits.argmax(1) == yt).float().mean()) > 0.95  # it learned the task
    model = video_iba.wrap_hf(net)
    # with the input's own noise two of the six maps stayed nearly flat (top-left share 0.29 and 0.26;
    # for one the network gave the class to noise alone, as the warning said); the statistics per token
    # of photos like these give it the class only from the evidence
    stats = video_iba.estimate(model, [quadrant_photos(100, g)[0] for _ in range(5)], layer="hf.vit.embeddings")
    shares = []
    for i in range(6):
        attr = video_iba.explain(model, xt[i:i + 1], int(yt[i]), stats=stats, seed=i)
        shares.append(float(attr.bits[:16, :16].sum() / attr.bits.sum()))
    # the decisive quadrant is a quarter of the photo; measured: 0.61-0.82, mean 0.69
    assert min(shares) > 0.4 and float(np.mean(shares)) > 0.55, shares
    # attention rollout, the same for both classes, finds it too, less sharply (measured: 0.48-0.64, mean 0.54)
    rolled = [video_iba.attribute("rollout", model, xt[i:i + 1]).values for i in range(6)]
    shares = [float(v[:16, :16].sum() / v.sum()) for v in rolled]
    assert min(shares) > 0.4 and float(np.mean(shares)) > 0.5, shares
    # and its gradient-weighted relevance for the true class as sharply as IBA (measured: 0.47-0.83, mean 0.69)
    relevant = [video_iba.attribute("gae", model, xt[i:i + 1], int(yt[i])).values for i in range(6)]
    shares = [float(v[:16, :16].sum() / v.sum()) for v in relevant]
    assert min(shares) > 0.4 and float(np.mean(shares)) > 0.6, shares

