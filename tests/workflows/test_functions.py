"""The workflows behind the commands, called as Python functions (the command line only parses and prints)."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import video_iba
from video_iba import Statistics, UserInputError
from video_iba.io.ledger import read_records
from video_iba.workflows import (MANIFEST, Evaluation, Schedule, Settings, TrainingRun, estimate_folder,
                                 evaluate_dataset, explain_batch, train_dataset)


def test_estimate_folder_returns_and_writes_the_statistics(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    est = estimate_folder(photo_dir, model_name="efficientnet_lite0", out=str(tmp_path / "s.pt"), batch_size=2,
                          max_samples=2)
    assert est.lead and est.inputs == "images" and est.skipped == [] and est.written == [str(tmp_path / "s.pt")]
    st = Statistics.load(est.written[0])
    assert st.samples == 2 == est.statistics[0].samples and tuple(st.mean.shape) == (40, 28, 28)
    assert st.meta["layer"] == "_blocks.4" and st.meta["model"] == "efficientnet_lite0"
    with pytest.raises(UserInputError, match="is a folder; give out="):
        estimate_folder(photo_dir, model_name="efficientnet_lite0", out=str(tmp_path))


def test_files_of_the_other_kind_are_named_not_skipped_silently(photo_dir, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from ..videos import encode

    folder = tmp_path / "in"
    shutil.copytree(photo_dir, folder)
    encode(str(folder / "clip.mp4"), frames=8)
    with caplog.at_level("WARNING"):
        est = estimate_folder(str(folder), model_name="efficientnet_lite0", out=str(tmp_path / "s.pt"), batch_size=2,
                              max_samples=2)
    assert est.statistics[0].meta["files"]["found"] == 3  # the photos
    notes = [r.getMessage() for r in caplog.records if "not read" in r.getMessage()]
    assert notes == [f"1 video in '{folder}' not read (first: '{folder / 'clip.mp4'}'): efficientnet_lite0 is an "
                     f"image model"]


def test_max_samples_draws_the_files_across_the_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for cls, value in (("a", 20), ("b", 230)):  # a folder sorted by class: its first 4 files are all 'a'
        os.makedirs(tmp_path / "in" / cls)
        for i in range(4):
            Image.fromarray(np.full((96, 96, 3), value, np.uint8)).save(tmp_path / "in" / cls / f"{i}.png")

    def stats(folder: str, name: str, **kw) -> Statistics:  # type: ignore[no-untyped-def]
        est = estimate_folder(folder, model_name="efficientnet_lite0", out=str(tmp_path / name), batch_size=4, **kw)
        return est.statistics[0]

    drawn = stats(str(tmp_path / "in"), "drawn.pt", max_samples=4, seed=0)  # draws 2 of 'a' and 2 of 'b'
    assert drawn.samples == 4 and drawn.meta["files"] == {"found": 8, "order": "random (seed 0)"}
    whole, first = stats(str(tmp_path / "in"), "all.pt"), stats(str(tmp_path / "in" / "a"), "a.pt")
    assert whole.meta["files"]["order"] == "sorted"
    assert np.allclose(drawn.mean.numpy(), whole.mean.numpy(), atol=1e-5)
    assert not np.allclose(drawn.mean.numpy(), first.mean.numpy(), atol=1e-2)
    assert np.array_equal(stats(str(tmp_path / "in"), "again.pt", max_samples=4, seed=0).mean.numpy(),
                          drawn.mean.numpy())


def test_explain_batch_counts_and_records_every_input(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    shutil.copytree(photo_dir, folder)
    (folder / "broken.png").write_bytes(b"no image")
    out = str(tmp_path / "out")
    counts = explain_batch(str(folder), Settings(method="saliency"), out)
    assert (counts.inputs, counts.done, counts.skipped, counts.failed) == (4, 3, 0, 1) and counts.lead
    rows = {os.path.basename(r["input"]): r for r in read_records(os.path.join(out, MANIFEST))}
    assert rows["broken.png"]["status"].startswith("error: ") and rows["coffee.jpg"]["label"] == "espresso"
    assert isinstance(video_iba.load(rows["coffee.jpg"]["output"][1]), video_iba.Attribution)
    again = explain_batch(str(folder), Settings(method="saliency"), out)
    assert (again.done, again.skipped, again.failed) == (0, 3, 1)  # done inputs are skipped, the broken one retried


def test_evaluate_dataset_returns_the_summary(tmp_path) -> None:  # type: ignore[no-untyped-def]
    summary = evaluate_dataset(Evaluation("synthetic", methods=["random"], metrics=["hit_ratio"], clips=1),
                               str(tmp_path / "ev"))
    (row,) = summary["table"]
    assert (row["method"], row["metric"], row["n"]) == ("random", "hit_ratio", 1) and 0 <= row["mean"] < 0.05
    with pytest.raises(UserInputError, match="drop weights=, stats= and annotations="):
        evaluate_dataset(Evaluation("synthetic", weights="random"), str(tmp_path / "x"))
    with pytest.raises(UserInputError, match="models are tubenet, tubevit, not 'resnet18'; give one of them to model="):
        evaluate_dataset(Evaluation("synthetic", model="resnet18"), str(tmp_path / "x"))


def test_train_dataset_trains_and_reports_the_epochs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = train_dataset(TrainingRun("synthetic", str(tmp_path / "ro"), clips=8, validation="none"),
                        Schedule(epochs=1, batch_size=8))
    assert res.lead and res.epoch == 1 and len(res.history) == 1 and not res.validated and res.inputs == 8
    assert res.readout.spec.layers == ["block1"] and res.history[0]["info_nats"] > 0
    readout = video_iba.load_readout(str(tmp_path / "ro" / "readout.pt"), "tubenet")
    assert readout.spec == res.readout.spec
    from video_iba.evaluation.synthetic import load_tubenet

    tubenet = load_tubenet()
    tubenet.video_iba_spec = dataclasses.replace(video_iba.get_spec("r3d_18"), name="tubenet")  # type: ignore[assignment]
    assert video_iba.load_readout(str(tmp_path / "ro" / "readout.pt"), tubenet).spec == res.readout.spec  # by its spec
    net = torch.nn.Conv3d(3, 3, 1)
    net.video_iba_spec = tubenet.video_iba_spec  # type: ignore[assignment]
    with pytest.raises(UserInputError, match="the readout was trained with other weights of tubenet \\(digest "):
        video_iba.load_readout(str(tmp_path / "ro" / "readout.pt"), net)
    net.video_iba_spec = video_iba.get_spec("r3d_18")  # type: ignore[assignment]
    with pytest.raises(UserInputError, match="was trained for tubenet, not r3d_18;"):
        video_iba.load_readout(str(tmp_path / "ro" / "readout.pt"), net)  # was the whole network printed twice
    with pytest.raises(UserInputError, match="this Conv3d carries no spec"):
        video_iba.load_readout(str(tmp_path / "ro" / "readout.pt"), torch.nn.Conv3d(3, 3, 1))


def test_a_model_of_your_own_gets_the_files_of_a_registry_model(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    import torch
    from PIL import Image

    from ..helpers import read_frames
    from ..nets import TinyCNN, Tiny3D, TinyViViT, snapshot
    from ..videos import encode, moving_square

    torch.manual_seed(0)
    net = Tiny3D().eval()
    before = snapshot(net)
    spec = video_iba.ModelSpec(name="tiny3d", family="own", modality="video", frames=8, sampling_rate=2, input_size=32,
                               resize=36, default_layer="block")
    clip = encode(str(tmp_path / "c.mp4"), frames=40, size=(96, 64), content=moving_square)
    session = video_iba.Session.for_model(net, spec, Settings(seed=0), labels=["a", "b", "c", "d"])
    res = video_iba.explain_file(session, clip, str(tmp_path / "o"))
    assert res.outputs == [str(tmp_path / "o" / "c.mp4"), str(tmp_path / "o" / "c.npz")]
    assert len(read_frames(res.outputs[0])) == 40  # every source frame, overlaid
    result = video_iba.load(res.outputs[1])
    assert isinstance(result, video_iba.ClipAttribution) and result.values.shape[1:] == (1, 8, 32, 32)
    assert (result.meta["model"], result.meta["weights"], result.meta["layers"]) == ("tiny3d", "own", ["block"])
    # the first window's map is the one explain gives for that model clip with the same settings
    x, _ = video_iba.read_clip(clip, spec, start=0.0)
    alone = video_iba.explain(net, x, result.target, layer="block", seed=0)
    np.testing.assert_allclose(result.values[0, 0], alone.bits.numpy(), rtol=1e-4, atol=1e-6)
    after = snapshot(net)  # the model is left as it was
    assert all(after[k] == before[k] for k in ("training", "requires_grad", "grads", "hooks"))
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())  # type: ignore[index,union-attr]
    assert not hasattr(net, "video_iba_spec")
    # Grad-CAM at a layer the spec names; a photo model; a transformer whose tokens the spec lays out
    cam = video_iba.Session.for_model(net, dataclasses.replace(spec, cam_layer="stem"), Settings(method="gradcam"),
                                      labels=list("abcd"))
    assert video_iba.explain_file(cam, clip, str(tmp_path / "g")).result.meta["cam_layer"] == "stem"
    photo_spec = video_iba.ModelSpec(name="tinycnn", family="own", input_size=32, resize=36, default_layer="features")
    photo = os.path.join(photo_dir, "coffee.jpg")
    out = video_iba.explain_file(video_iba.Session.for_model(TinyCNN().eval(), photo_spec, labels=list("vwxyz")),
                                 photo, str(tmp_path / "p"))
    with Image.open(out.outputs[0]) as fig:
        assert fig.size[0] > fig.size[1]
    assert video_iba.load(out.outputs[1]).bits.shape == (32, 32)
    vit = TinyViViT().eval()
    layout = video_iba.TokenLayout(grid=(4, 4, 4), prefix=1)
    vit_spec = video_iba.ModelSpec(name="tinyvivit", family="own", modality="video", frames=8, sampling_rate=2,
                                   input_size=32, resize=36, default_layer="blocks.0", layouts=(("blocks.*", layout),))
    tokens = video_iba.explain_file(video_iba.Session.for_model(vit, vit_spec, Settings(seed=0), labels=list("abcd")),
                                    clip, str(tmp_path / "t")).result
    assert tokens.prefix_total is not None and tokens.values.shape[1:] == (1, 8, 32, 32)
    # what cannot work is refused with the fix
    no_layer = video_iba.ModelSpec(name="tiny3d", family="own", modality="video", frames=8, input_size=32, resize=36)
    with pytest.raises(UserInputError, match="has no bottleneck layer; give layer= or the spec's default_layer"):
        video_iba.Session.for_model(net, no_layer, labels=list("abcd"))
    wrong = video_iba.Session.for_model(net, spec)  # the spec's default label set: ImageNet's 1000 classes
    with pytest.raises(UserInputError, match="outputs 4 classes, not the 1000 of its labels; give labels= its 4"):
        video_iba.explain_file(wrong, clip, str(tmp_path / "w"))


def test_a_model_of_your_own_is_compared_across_methods(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch
    from PIL import Image

    from ..nets import TinyCNN

    torch.manual_seed(0)
    net = TinyCNN().eval()
    spec = video_iba.ModelSpec(name="tinycnn", family="own", input_size=32, resize=36, default_layer="features.2")
    session = video_iba.Session.for_model(net, spec, labels=list("vwxyz"))
    photo = os.path.join(photo_dir, "coffee.jpg")
    options = Settings(seed=0, changes={"steps": 2, "samples": 2}, cam_layer="features.0")
    res = video_iba.compare_file(photo, ["iba", "gradcam", "saliency"], options, str(tmp_path / "o"), session=session)
    assert [(name, unit) for name, unit, _, _ in res.panels] == [
        ("iba", video_iba.Unit.BITS), ("gradcam", video_iba.Unit.GRAD_CAM), ("saliency", video_iba.Unit.ABS_GRADIENT)]
    with Image.open(res.output) as fig:
        assert fig.size[0] == 4 * 224  # the input and three panels
    # each method gets the settings that apply to it
    assert session.for_method("gradcam", options).settings.changes == {}
    assert session.for_method("iba", options).config.steps == 2
    assert session.for_method("gradcam", options).settings.cam_layer == "features.0"
    assert session.for_method("saliency", options).settings.cam_layer is None
    grid = video_iba.compare_grid([photo, os.path.join(photo_dir, "rocket.jpg")], ["iba", "gradcam"], options,
                                  str(tmp_path / "g"), session=session)
    assert [[(name, unit) for name, unit, _, _ in panels] for _, panels in grid.rows] == [
        [("iba", video_iba.Unit.BITS), ("gradcam", video_iba.Unit.GRAD_CAM)]] * 2
    with Image.open(grid.output) as fig:
        assert fig.size[0] == 3 * 224 and fig.size[1] > 2 * 224
    with pytest.raises(UserInputError, match="an open session holds its model"):
        video_iba.compare_file(photo, ["iba"], Settings(model="resnet18"), str(tmp_path / "x"), session=session)
    with pytest.raises(UserInputError, match="samples=, steps= are settings of the method iba, which is not among methods="):
        video_iba.compare_file(photo, ["saliency"], options, str(tmp_path / "x"), session=session)
    with pytest.raises(UserInputError, match="needs a trained readout"):
        session.for_method("readout")
    no_layer = video_iba.Session.for_model(net, dataclasses.replace(spec, default_layer=None),
                                           Settings(method="saliency"), labels=list("vwxyz"))
    with pytest.raises(UserInputError, match="has no bottleneck layer"):
        no_layer.for_method("iba")


def test_a_model_of_your_own_explains_a_folder(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from ..nets import TinyCNN
    from ..videos import encode, moving_square

    torch.manual_seed(0)
    net = TinyCNN().eval()
    spec = video_iba.ModelSpec(name="tinycnn", family="own", input_size=32, resize=36, default_layer="features.2")
    settings = Settings(seed=0, changes={"steps": 2, "samples": 2}, batch_size=2)
    session = video_iba.Session.for_model(net, spec, settings, labels=list("vwxyz"))
    out = str(tmp_path / "out")
    counts = video_iba.explain_batch(photo_dir, None, out, session=session)
    assert (counts.inputs, counts.done, counts.skipped, counts.failed) == (3, 3, 0, 0)
    rows = {os.path.basename(r["input"]): r for r in read_records(os.path.join(out, MANIFEST))}
    assert sorted(rows) == ["chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    coffee = video_iba.load(rows["coffee.jpg"]["output"][1])
    assert (coffee.meta["model"], coffee.meta["weights"]) == ("tinycnn", "own") and coffee.bits.shape == (32, 32)
    assert rows["coffee.jpg"]["label"] in list("vwxyz")
    # fitted together, each as alone: the folder's map is the one explain_file gives for the photo
    alone = video_iba.explain_file(session, os.path.join(photo_dir, "coffee.jpg"), str(tmp_path / "one")).result
    np.testing.assert_allclose(coffee.bits, alone.bits, rtol=1e-4, atol=1e-6)
    assert video_iba.explain_batch(photo_dir, None, out, session=session).skipped == 3
    # other weights are another model: every input is explained again
    other = TinyCNN().eval()
    redo = video_iba.explain_batch(photo_dir, None, out,
                                   session=video_iba.Session.for_model(other, spec, settings, labels=list("vwxyz")))
    assert (redo.done, redo.changed) == (3, 3)
    # a video for a photo model, settings and a session: refused before anything is written
    mixed = tmp_path / "mixed"
    shutil.copytree(photo_dir, mixed)
    encode(str(mixed / "c.mp4"), frames=8, size=(48, 48), content=moving_square)
    with pytest.raises(UserInputError, match=r"1 of the 4 inputs are videos \(first: '.*c\.mp4'\) and tinycnn takes "
                                             r"photos; explain them with a session of a model that takes videos"):
        video_iba.explain_batch(str(mixed), None, str(tmp_path / "m"), session=session)
    assert not os.path.exists(tmp_path / "m")
    with pytest.raises(UserInputError, match="either settings .* or an open session with settings=None, not both"):
        video_iba.explain_batch(photo_dir, settings, str(tmp_path / "m"), session=session)
    with pytest.raises(UserInputError, match="not neither"):
        video_iba.explain_batch(photo_dir, None, str(tmp_path / "m"))


def test_a_model_of_your_own_is_evaluated_on_a_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import torch

    from ..nets import Tiny3D, snapshot
    from ..videos import encode, moving_square

    torch.manual_seed(0)
    net = Tiny3D().eval()
    before = snapshot(net)
    spec = video_iba.ModelSpec(name="tiny3d", family="own", modality="video", frames=8, sampling_rate=2, input_size=32,
                               resize=36, default_layer="block", cam_layer="stem")
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        encode(str(folder / name), frames=30, size=(48, 40), fps=30, content=moving_square)
    ann = tmp_path / "tubes.json"
    ann.write_text(json.dumps({"a.mp4": {"tube": [[0.1, 4, 4, 30, 30], [0.3, 10, 4, 36, 30]], "start": 0.0}}))
    session = video_iba.Session.for_model(net, spec, Settings(seed=0, changes={"steps": 2, "samples": 2}),
                                          labels=list("abcd"))
    ev = Evaluation(str(folder), methods=["iba", "gradcam", "random"], metrics=["hit_ratio", "temporal_share"],
                    annotations=str(ann))
    out = str(tmp_path / "ev")
    summary = evaluate_dataset(ev, out, session=session)
    rows = {(r["method"], r["metric"]): r["n"] for r in summary["table"]}
    assert rows == {(m, k): 1 for m in ("iba", "gradcam", "random") for k in ("hit_ratio", "temporal_share")}
    record = json.load(open(os.path.join(out, "evaluation.json")))
    assert record["model"] == "tiny3d" and record["weights"].startswith("own (")
    # the session's settings reached the methods: IBA at its layer with 2 steps, Grad-CAM at the spec's layer
    items = video_iba.evaluation.folder_items(str(folder), spec, str(ann))
    a = next(i for i in items if i.name == "a.mp4")
    iba = video_iba.explain(net, a.loaded().x, None, layer="block", seed=0, steps=2, samples=2)
    mask = video_iba.box_mask(tuple(iba.bits.shape), a.boxes)
    score = next(r["value"] for r in read_records(os.path.join(out, "scores.jsonl"))
                 if (r["method"], r["metric"]) == ("iba", "hit_ratio"))
    assert score == pytest.approx(video_iba.hit_ratio(iba.bits, mask))
    after = snapshot(net)
    assert all(after[k] == before[k] for k in ("training", "requires_grad", "grads", "hooks"))
    # other weights are other scores; a session with a model option, or on the synthetic benchmark, is refused
    other = video_iba.Session.for_model(Tiny3D().eval(), spec, Settings(seed=0, changes={"steps": 2, "samples": 2}),
                                        labels=list("abcd"))
    with pytest.raises(UserInputError, match=r"holds scores computed otherwise \(weights was 'own \("):
        evaluate_dataset(ev, out, session=other)
    with pytest.raises(UserInputError, match="an open session holds its model, .*; drop model=, layer="):
        evaluate_dataset(Evaluation(str(folder), model="r3d_18", layers=["block"]), out, session=session)
    with pytest.raises(UserInputError, match="the synthetic benchmark has its own models"):
        evaluate_dataset(Evaluation("synthetic"), out, session=session)


def test_a_model_of_your_own_trains_a_readout_on_a_folder(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from ..nets import TinyCNN, snapshot

    torch.manual_seed(0)
    net = TinyCNN().eval()
    before = snapshot(net)
    spec = video_iba.ModelSpec(name="tinycnn", family="own", input_size=32, resize=36, default_layer="features.2")
    session = video_iba.Session.for_model(net, spec, labels=list("vwxyz"))
    out = str(tmp_path / "ro")
    res = train_dataset(TrainingRun(photo_dir, out), Schedule(epochs=1, batch_size=2), session=session)
    assert res.inputs == 3 and res.epoch == 1 and res.readout.spec.layers == ["features.2"]
    after = snapshot(net)
    assert all(after[k] == before[k] for k in ("training", "requires_grad", "grads", "hooks"))
    # the trained readout explains through the file workflows
    explained = video_iba.explain_file(
        video_iba.Session.for_model(net, spec, Settings(method="readout"), labels=list("vwxyz"), readout=res.readout),
        os.path.join(photo_dir, "coffee.jpg"), str(tmp_path / "e"))
    assert explained.result.meta["method"] == "iba_readout" and explained.result.bits.shape == (32, 32)
    # more epochs resume; other weights do not
    assert train_dataset(TrainingRun(photo_dir, out), Schedule(epochs=2, batch_size=2), session=session).epoch == 2
    other = video_iba.Session.for_model(TinyCNN().eval(), spec, labels=list("vwxyz"))
    with pytest.raises(UserInputError, match=r"the readout was trained with other weights of tinycnn \(digest "):
        video_iba.Session.for_model(other.model, spec, Settings(method="readout"), readout=res.readout)
    with pytest.raises(UserInputError, match="was trained otherwise \\(weights was '"):
        train_dataset(TrainingRun(photo_dir, out), Schedule(epochs=3, batch_size=2), session=other)
    with pytest.raises(UserInputError, match="an open session holds its model, .*; drop model=, weights="):
        train_dataset(TrainingRun(photo_dir, out, model="resnet18", weights="random"), session=session)


def test_the_file_functions_take_path_objects(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pathlib

    session = video_iba.Session.open(Settings(method="saliency", model="efficientnet_lite0"))
    res = video_iba.explain_file(session, pathlib.Path(photo_dir) / "coffee.jpg", tmp_path / "o")  # was AttributeError
    assert res.outputs == [str(tmp_path / "o" / "coffee.png"), str(tmp_path / "o" / "coffee.npz")]
    assert video_iba.load(pathlib.Path(res.outputs[1])).target == 967


def test_a_model_of_your_own_in_half_precision_gets_every_file_workflow(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # the workflows read files as float32 and a float16 network refused them ("convert x"), with no
    # way to convert inside explain_file, evaluate_dataset or train_dataset
    import torch

    from ..nets import TinyCNN

    torch.manual_seed(0)
    net = TinyCNN().eval()
    half = TinyCNN().eval().half()
    half.load_state_dict(net.state_dict())
    spec = video_iba.ModelSpec(name="tinycnn", family="own", input_size=32, resize=36, default_layer="features.2")
    photo = os.path.join(photo_dir, "coffee.jpg")
    maps = []
    for model, out in ((net, "f32"), (half, "f16")):
        session = video_iba.Session.for_model(model, spec, Settings(seed=0), labels=list("vwxyz"))
        maps.append(video_iba.explain_file(session, photo, str(tmp_path / out)).result)
    assert maps[1].bits.dtype == torch.float32 and abs(maps[1].total_bits - maps[0].total_bits) < 0.01 * maps[0].total_bits
    assert float(np.corrcoef(maps[0].bits.flatten(), maps[1].bits.flatten())[0, 1]) > 0.99
    assert repr(session) == "Session(tinycnn, method iba, layers ['features.2'], 5 labels, on cpu, weights own)"
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee.jpg", "rocket.jpg"):
        shutil.copy(os.path.join(photo_dir, name), folder / name)
    summary = evaluate_dataset(Evaluation(str(folder), methods=["gradcam", "random"], metrics=["degradation8"]),
                               str(tmp_path / "ev"), session=session)
    assert not summary["failed"] and {r["method"] for r in summary["table"]} == {"gradcam", "random"}
    trained = train_dataset(TrainingRun(str(folder), str(tmp_path / "ro"), validation="none"), Schedule(epochs=1),
                            session=session)
    assert trained.epoch == 1 and all(np.isfinite(h["loss"]) for h in trained.history)
    assert all(p.dtype == torch.float16 for p in half.parameters())


def test_settings_take_one_layer_as_a_string_and_refuse_values_of_the_wrong_kind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a string was read letter by letter: layers ['_', 'b', 'l', ...], or 5 statistics files for 'st.pt'
    s = Settings(model="efficientnet_lite0", layers="_blocks.4", stats=tmp_path / "st.pt")  # type: ignore[arg-type]
    assert s.layers == ("_blocks.4",) and s.stats == (str(tmp_path / "st.pt"),)
    assert Settings(seed=np.int64(3)).seed == 3 and Settings(seed=None).seed is None
    for kwargs, message in ((dict(seed="a"), "seed must be a whole number in 0 .. 2\\*\\*63-1"),  # was a RuntimeError
                            (dict(seed=-1), "got -1"),
                            (dict(config={"steps": 3}), "config takes an IBAConfig, got dict; give a few settings as "
                                                        "changes="),
                            (dict(changes=[("steps", 3)]), "changes takes a mapping")):
        with pytest.raises(UserInputError, match=message):
            Settings(**kwargs)  # type: ignore[arg-type]


def test_names_given_as_one_string_are_not_read_letter_by_letter(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # before: "unknown method 's'" for methods="saliency", and Evaluation kept the string
    photo = os.path.join(photo_dir, "coffee.jpg")
    res = video_iba.compare_file(photo, "saliency,random", Settings(), str(tmp_path / "c"), targets="top2")
    assert [p[0] for p in res.panels] == ["espresso · saliency", "espresso · random", "cup · saliency", "cup · random"]
    ev = Evaluation(photo_dir, methods="random", metrics="hit_ratio,degradation8", layers="_blocks.4", betas=10.0)
    assert (ev.methods, ev.metrics, ev.layers, ev.betas) == (("random",), ("hit_ratio", "degradation8"),
                                                              ("_blocks.4",), (10.0,))
    run = TrainingRun(photo_dir, str(tmp_path / "ro"), layers="_blocks.4", stats=tmp_path / "s.pt")
    assert run.layers == ("_blocks.4",) and run.stats == (str(tmp_path / "s.pt"),)


def test_explain_batch_takes_a_list_of_paths_and_refuses_one_file(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    photos = [os.path.join(photo_dir, "coffee.jpg"), os.path.join(photo_dir, "chelsea.jpg")]
    counts = explain_batch(photos + photos[:1], Settings(method="random"), str(tmp_path / "o"))  # was a TypeError
    assert (counts.inputs, counts.done) == (2, 2)
    assert sorted(os.listdir(tmp_path / "o")) == ["chelsea.npz", "chelsea.png", "coffee.npz", "coffee.png", MANIFEST]
    assert isinstance(video_iba.load(str(tmp_path / "o" / "coffee.npz")), video_iba.Attribution)
    with pytest.raises(UserInputError, match="is one input, not a folder or a .txt list of inputs; explain one file "
                                             "with explain_file"):  # was a UnicodeDecodeError: read as a list
        explain_batch(photos[0], Settings(method="random"), str(tmp_path / "o2"))
    session = video_iba.Session.open(Settings(model="efficientnet_lite0", method="random"))
    with pytest.raises(UserInputError, match="is a folder; explain its inputs with explain_batch"):
        video_iba.explain_file(session, photo_dir, str(tmp_path / "o3"))
