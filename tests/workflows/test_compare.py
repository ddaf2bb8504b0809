"""`video-iba compare`: a panel per method for photos, and for every source frame of a video range."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import video_iba
from video_iba import Unit, UserInputError
from video_iba.io.video import probe_video
from video_iba.workflows import Options, Range, Settings, compare_file

from ..helpers import read_frames, run_cli
from ..videos import encode, moving_square


def test_compare_photo(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    photo = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])
    out = tmp_path / "o"
    code, stdout, err = run_cli(["compare", photo, "--methods", "random,saliency", "--out", str(out)], capsys)
    assert code == 0, err
    stem = os.path.splitext(os.path.basename(photo))[0]
    img = np.asarray(Image.open(out / f"{stem}-compare.png"))
    assert img.shape[1] == 3 * 224  # input + two methods
    assert "saliency (|gradient|)" in stdout and f"wrote {out / stem}-compare.npz" in stdout
    res = compare_file(photo, ["saliency", "gradcam"], Settings(), str(tmp_path / "py"))
    assert res.units == [("saliency", Unit.ABS_GRADIENT), ("gradcam", Unit.GRAD_CAM)]
    assert res.label == "Egyptian cat" and os.path.exists(res.output)  # chelsea, sorted first
    # every panel's map as data: the one explain writes for the photo with that method
    panels = video_iba.load(res.npz)
    assert isinstance(panels, video_iba.Comparison) and [p.name for p in panels.panels] == ["saliency", "gradcam"]
    assert all(p.input == os.path.abspath(photo) and p.result.meta["target_label"] == "Egyptian cat"
               for p in panels.panels)
    assert run_cli(["explain", photo, "--method", "gradcam", "--out", str(tmp_path / "e")], capsys)[0] == 0
    alone = video_iba.load(str(tmp_path / "e" / f"{stem}.npz"))
    assert torch.equal(panels["gradcam"].values, alone.values) and panels["gradcam"].target == alone.target == 285


@pytest.mark.parametrize("method, message", [
    ("guided_backprop", "Guided Backprop rewrites nn.ReLU modules and efficientnet_lite0 has none (it uses ReLU6)"),
    ("lrp", "LRP is available for torchvision VGG and ResNet networks, whose layers zennit's rules and canonizers "
            "cover, not efficientnet_lite0's EfficientNet"),
])
def test_a_method_the_network_cannot_take_is_refused_before_any_work(method, message, photo_dir, tmp_path, capsys,
                                                                      monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from video_iba.workflows.session import Session

    def no_work(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("a method ran before the comparison was refused")

    monkeypatch.setattr(Session, "attribute", no_work)
    photo = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])
    out = tmp_path / "o"
    code, _, err = run_cli(["compare", photo, "--methods", f"iba,saliency,{method}", "--out", str(out)], capsys)
    assert code == 2 and message in err and not list(out.glob("*"))  # nothing written


def test_compare_clip_renders_the_whole_range(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "c.mp4"), frames=40, size=(128, 96), content=moving_square)
    out = tmp_path / "o"
    code, stdout, err = run_cli(["compare", clip, "--model", "r3d_18", "--weights", "random", "--methods",
                                 "saliency,gradcam", "--target", "3", "--out", str(out)], capsys)
    assert code == 0, err
    frames = read_frames(str(out / "c-compare.mp4"))
    # every source frame (not only the 16 frames of the first model clip), at the source's rate
    assert len(frames) == 40 and probe_video(str(out / "c-compare.mp4")).fps == 30
    assert frames[0].shape[1] == 3 * 320  # the frame and two methods, each 240 pixels high
    assert not np.array_equal(frames[5][:240, 320:640], frames[30][:240, 320:640])  # the overlay follows the clip
    assert "#3 " in stdout and "saliency (|gradient|), gradcam (grad-cam)" in stdout
    panels = video_iba.load(str(out / "c-compare.npz"))  # the maps drawn, every source frame's total
    assert isinstance(panels, video_iba.Comparison) and [p.name for p in panels.panels] == ["saliency", "gradcam"]
    assert all(len(p.result.per_source_frame) == 40 and p.result.target == 3 for p in panels.panels)
    assert panels["gradcam"].unit is Unit.GRAD_CAM and panels["gradcam"].class_names is not None
    res = compare_file(clip, ["random"], Settings(model="r3d_18", weights="random"), str(tmp_path / "py"),
                       Options(target=3, span=Range(start=0.2, end=1.0)))
    assert len(read_frames(res.output)) == 24  # [0.2 s, 1.0 s) at 30 fps
    code, _, err = run_cli(["compare", clip, "--model", "resnet50", "--out", str(out)], capsys)
    assert code == 2 and "is an image model" in err


def test_compare_several_models_on_a_photo(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import torch

    import video_iba

    photo = os.path.join(photo_dir, "coffee.jpg")
    out = tmp_path / "o"
    code, stdout, err = run_cli(["compare", photo, "--models", "resnet18,efficientnet_lite0", "--weights", "random",
                                 "--methods", "saliency,random", "--out", str(out)], capsys)
    assert code == 0, err
    img = np.asarray(Image.open(out / "coffee-compare.png"))
    assert img.shape[1] == (1 + 2 * 2) * 224  # the input, then two methods for each model
    res = compare_file(photo, ["saliency"], Settings(weights="random"), str(tmp_path / "py"),
                       models=["resnet18", "efficientnet_lite0"])
    assert [p[0] for p in res.panels] == ["resnet18 · saliency", "efficientnet_lite0 · saliency"]
    for (name, _unit, target, label), model in zip(res.panels, ["resnet18", "efficientnet_lite0"]):
        # each model explains its own top-1, on its own preprocessing of the photo
        torch.manual_seed(0)  # random weights as the session builds them
        net = video_iba.load_model(model, weights="random")
        x, _ = video_iba.preprocess_image(video_iba.read_image(photo), net.video_iba_spec)
        with torch.no_grad():
            assert target == int(net(x).argmax())
        assert f"{name} (|gradient|): explained #{target} {label}" in stdout


def test_compare_several_video_models_places_each_by_its_own_windows_and_crops(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "c.mp4"), frames=40, size=(128, 96), content=moving_square)
    both = tmp_path / "both"
    # r3d_18: 16 frames at rate 2, 112-pixel crops of frames resized to 128; the inflated
    # EfficientNet: 8 frames at rate 4, 224-pixel crops
    code, stdout, err = run_cli(["compare", clip, "--models", "r3d_18,efficientnet_lite0_i3d", "--weights", "random",
                                 "--methods", "saliency", "--target", "3", "--out", str(both)], capsys)
    assert code == 0, err
    assert "r3d_18 · saliency (|gradient|): explained #3" in stdout
    frames = read_frames(str(both / "c-compare.mp4"))
    assert len(frames) == 40 and frames[0].shape[1] == 3 * 320
    for i, model in enumerate(["r3d_18", "efficientnet_lite0_i3d"]):
        alone = tmp_path / model
        code, _, err = run_cli(["compare", clip, "--model", model, "--weights", "random", "--methods", "saliency",
                                "--target", "3", "--out", str(alone)], capsys)
        assert code == 0, err
        single = read_frames(str(alone / "c-compare.mp4"))
        for t in (5, 30):  # the model's overlay is the one it gets alone (up to the MP4's compression)
            a = frames[t][:240, 320 * (i + 1):320 * (i + 2)].astype(float)
            b = single[t][:240, 320:640].astype(float)
            assert np.abs(a - b).mean() < 2.0, (model, t)
    assert not np.array_equal(frames[30][:240, 320:640], frames[30][:240, 640:960])


@pytest.mark.parametrize("extra, message", [
    (["--models", "r3d_18"], "compares two or more models"),
    (["--models", "r3d_18,r3d_18"], "names a model twice"),
    (["--models", "r3d_18,mc3_18", "--model", "r3d_18"], "give --model or --models, not both"),
    (["--models", "r3d_18,mc3_18", "--layer", "layer2"], "--layer belongs to one model; drop it"),
    (["--models", "r3d_18,mc3_18", "--stats", "s.pt"], "--stats belongs to one model; drop it"),
    (["--models", "r3d_18,mc3_18", "--readout", "r.pt"], "--readout belongs to one model; drop it"),
    (["--models", "r3d_18,mc3_18", "--weights", "IMAGENET1K_V1"], "belongs to one model"),
    # before any download; the fix names --models
    (["--models", "r3d_18,resnet18", "--weights", "default"], "c.mp4' is a video; explain it with a video model "
                                                              "given to --models"),
])
def test_compare_several_models_refuses_what_belongs_to_one(extra, message, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "c.mp4"), frames=40, size=(128, 96))  # longer than a clip: no warning
    out = tmp_path / "o"
    code, _, err = run_cli(["compare", clip, "--methods", "random", "--out", str(out), *extra,
                            *([] if "--weights" in extra else ["--weights", "random"])], capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_compare_takes_the_bottleneck_settings_of_explain(photo_dir, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import video_iba.cli

    seen: list[Settings] = []

    def record(path, methods, settings, out_dir, options, progress, models=(), targets=()):  # type: ignore[no-untyped-def]
        seen.append(settings)
        return compare_file(path, methods, settings, out_dir, options, progress, models=models, targets=targets)

    monkeypatch.setattr(video_iba.cli, "compare_file", record)
    photo = os.path.join(photo_dir, "coffee.jpg")
    config = tmp_path / "c.yaml"
    config.write_text("steps: 4\nsamples: 2\n", encoding="utf-8")
    for flags, (steps, samples) in ((["--steps", "3", "--samples", "2", "--seed", "5"], (3, 2)),
                                    (["--config", str(config)], (4, 2)),
                                    (["--config", str(config), "--steps", "2"], (2, 2))):  # a flag wins over the file
        code, _, err = run_cli(["compare", photo, "--methods", "iba,random", "--out", str(tmp_path / "o"), *flags],
                               capsys)
        assert code == 0, err
        cfg = seen[-1].config_for(video_iba.get_spec("efficientnet_lite0"))
        assert (cfg.steps, cfg.samples) == (steps, samples)
    assert seen[0].seed == 5 and seen[1].seed == 0
    code, _, err = run_cli(["compare", photo, "--methods", "iba", "--beta", "0", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--beta" in err
    # dataset statistics, as for explain
    stats = str(tmp_path / "s.pt")
    code, _, err = run_cli(["estimate", photo_dir, "--out", stats], capsys)
    assert code == 0, err
    code, _, err = run_cli(["compare", photo, "--methods", "iba", "--steps", "1", "--samples", "2", "--stats", stats,
                            "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and seen[-1].stats == (stats,), err
    code, _, err = run_cli(["compare", photo, "--methods", "iba", "--stats", str(config), "--out", str(tmp_path / "o")],
                           capsys)
    assert code == 2 and "not a readable statistics file" in err


def test_compare_a_readout_next_to_other_methods(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    ro = tmp_path / "ro"
    code, _, err = run_cli(["train-readout", photo_dir, "--model", "efficientnet_lite0", "--epochs", "1",
                            "--out", str(ro)], capsys)
    assert code == 0, err
    photo = os.path.join(photo_dir, "coffee.jpg")
    out = tmp_path / "o"
    code, stdout, err = run_cli(["compare", photo, "--methods", "readout,saliency,iba", "--steps", "1", "--samples", "2",
                                 "--readout", str(ro / "readout.pt"), "--out", str(out)], capsys)
    assert code == 0, err
    assert "readout (bits), saliency (|gradient|), iba (bits)" in stdout
    assert np.asarray(Image.open(out / "coffee-compare.png")).shape[1] == 4 * 224
    # settings that no listed method uses are refused, naming the fix
    for extra, message in ((["--readout", str(ro / "readout.pt")], "--readout applies to the method readout, which is "
                                                                  "not among --methods"),
                           (["--stats", str(ro / "readout.pt")], "--stats applies to the method iba, which is not "
                                                               "among --methods"),
                           (["--precision", "bf16"], "--precision applies to the method iba, which is not among")):
        code, _, err = run_cli(["compare", photo, "--methods", "saliency", "--out", str(out), *extra], capsys)
        assert code == 2 and message in err, err


def test_compare_reads_ibas_layer_and_grad_cams_layer_where_given(photo_dir, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import video_iba.workflows.session as session

    layers: dict[str, object] = {}
    original_explain, original_baseline = session.explain, session.baseline

    def explain(*args, **kwargs):  # type: ignore[no-untyped-def]
        layers["iba"] = kwargs["layer"]
        return original_explain(*args, **kwargs)

    def baseline(method, *args, **kwargs):  # type: ignore[no-untyped-def]
        layers[method] = kwargs.get("cam_layer")
        return original_baseline(method, *args, **kwargs)

    import video_iba.workflows.compare as compare

    notes: list[object] = []
    original_row = compare.comparison_row

    def comparison_row(*args, **kwargs):  # type: ignore[no-untyped-def]
        notes.append(kwargs["notes"])
        return original_row(*args, **kwargs)

    monkeypatch.setattr(session, "explain", explain)
    monkeypatch.setattr(session, "baseline", baseline)
    monkeypatch.setattr(compare, "comparison_row", comparison_row)
    photo = os.path.join(photo_dir, "coffee.jpg")
    out = str(tmp_path / "o")
    base = ["compare", photo, "--model", "resnet18", "--weights", "random", "--out", out]
    code, _, err = run_cli([*base, "--methods", "iba,gradcam,saliency", "--layer", "layer2", "--cam-layer", "layer3",
                            "--steps", "1", "--samples", "2"], capsys)
    assert code == 0, err
    assert layers == {"iba": "layer2", "gradcam": "layer3", "saliency": None}
    assert notes == [["layer2", "layer3", ""]]  # each panel names the layer its method read
    for extra, message in (
            (["--methods", "saliency,gradcam", "--steps", "3"], "--steps is a setting of the method iba, which is not "
                                                                "among --methods"),
            (["--methods", "saliency,gradcam", "--layer", "layer2"], "--layer is the bottleneck's layer of the method "
                                                                     "iba, which is not among --methods; drop it or add "
                                                                     "iba; Grad-CAM's layer is --cam-layer"),
            (["--methods", "iba,saliency", "--cam-layer", "layer3"], "--cam-layer applies to gradcam and guided_gradcam, "
                                                                     "neither of which is among --methods"),
            (["--methods", "saliency", "--batch-size", "2"], "--batch-size applies to the method iba, which is not")):
        code, _, err = run_cli([*base, *extra], capsys)
        assert code == 2 and message in err and "Traceback" not in err, err
    code, _, err = run_cli(["compare", photo, "--models", "resnet18,efficientnet_lite0", "--weights", "random",
                            "--methods", "gradcam", "--cam-layer", "layer3", "--out", out], capsys)
    assert code == 2 and "--cam-layer belongs to one model" in err


def test_a_grid_holds_a_row_per_photo_each_as_compare_draws_it(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from video_iba.render.compare import GRID_GAP, PANEL
    from video_iba.workflows import compare_grid

    out = tmp_path / "g"
    code, stdout, err = run_cli(["compare", photo_dir, "--methods", "saliency,gradcam", "--out", str(out)], capsys)
    assert code == 0, err
    assert stdout.splitlines()[:3] == [f"{os.path.join(photo_dir, name)}: explained {what}" for name, what in (
        ("chelsea.jpg", "#285 Egyptian cat"), ("coffee.jpg", "#967 espresso"), ("rocket.jpg", "#657 missile"))]
    grid = np.asarray(Image.open(out / "compare-grid.png").convert("RGB"))
    row_h = (grid.shape[0] - 2 * GRID_GAP) // 3
    assert grid.shape[1] == 3 * PANEL and grid.shape[0] == 3 * row_h + 2 * GRID_GAP
    # the coffee row's method panels are the ones compare draws for the photo alone
    alone = compare_file(os.path.join(photo_dir, "coffee.jpg"), ["saliency", "gradcam"], Settings(), str(tmp_path / "a"))
    single = np.asarray(Image.open(alone.output).convert("RGB"))
    row = grid[row_h + GRID_GAP:2 * row_h + GRID_GAP]
    assert single.shape == row.shape
    np.testing.assert_array_equal(row[:, PANEL:], single[:, PANEL:])
    np.testing.assert_array_equal(row[:PANEL, :PANEL], single[:PANEL, :PANEL])  # the input; only its head differs
    assert not np.array_equal(row[PANEL:, :PANEL], single[PANEL:, :PANEL])  # 'coffee.jpg', not 'input'
    # the Python function: rows in the order given, one target for all where given
    photos = [os.path.join(photo_dir, n) for n in ("rocket.jpg", "chelsea.jpg")]
    res = compare_grid(photos, ["saliency"], Settings(), str(tmp_path / "p"), Options(target="espresso"))
    assert [(p, [(name, t) for name, _, t, _ in panels]) for p, panels in res.rows] == [
        (photos[0], [("saliency", 967)]), (photos[1], [("saliency", 967)])]
    maps = video_iba.load(res.npz)  # a panel per row and method, rows in order
    assert isinstance(maps, video_iba.Comparison)
    assert [(os.path.basename(p.input), p.name, p.result.target) for p in maps.panels] == [
        ("rocket.jpg", "saliency", 967), ("chelsea.jpg", "saliency", 967)]
    assert not torch.equal(maps.panel("saliency", "rocket.jpg").values, maps.panel("saliency", "chelsea.jpg").values)
    # IBA fits the rows' photos together where the batch size allows, each as alone
    fast = {"steps": 1, "samples": 2}
    pngs = [np.asarray(Image.open(compare_grid(photos, ["iba"], Settings(changes=fast, batch_size=b),
                                               str(tmp_path / f"b{b}")).output).convert("RGB")).astype(int)
            for b in (1, 2)]
    assert np.abs(pngs[0] - pngs[1]).max() <= 3


def test_a_grid_refuses_photos_with_videos_and_too_few_or_many_photos(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from video_iba.workflows import compare_grid

    coffee = os.path.join(photo_dir, "coffee.jpg")
    clip = encode(str(tmp_path / "c.mp4"), frames=8)
    code, _, err = run_cli(["compare", coffee, clip, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"'{clip}' is a video and '{coffee}' a photo; a comparison grid holds photos or videos" in err
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.open(coffee).save(folder / "a.jpg")
    encode(str(folder / "b.mp4"), frames=8)
    code, _, err = run_cli(["compare", str(folder), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "holds photos and videos (first: " in err and "a comparison grid holds one kind" in err
    code, _, err = run_cli(["compare", coffee, coffee, "--start", "1", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--start applies to videos" in err
    with pytest.raises(UserInputError, match="a comparison grid holds 2 to 16 photos, got 17; give fewer"):
        compare_grid([coffee] * 17, ["saliency"], Settings(), str(tmp_path / "o"))
    with pytest.raises(UserInputError, match="got 1; compare one photo on its own"):
        compare_grid([coffee], ["saliency"], Settings(), str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "o")


def test_a_grid_of_videos_plays_them_together_each_holding_its_last_frame(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from video_iba.render.compare import (GRID_CLIP_PANEL_HEIGHT, GRID_GAP, STILL_LABELS, STILL_TIMES, STRIP_HEIGHT,
                                          clip_panel_size)
    from video_iba.workflows import compare_grid

    folder = tmp_path / "clips"
    folder.mkdir()
    short = encode(str(folder / "a_short.mp4"), frames=15, size=(96, 64), fps=15, content=moving_square)  # 1 s
    long = encode(str(folder / "b_long.mp4"), frames=60, size=(128, 64), fps=30, content=moving_square)  # 2 s
    out = tmp_path / "o"
    args = ["--model", "r3d_18", "--weights", "random", "--methods", "saliency,gradcam", "--out", str(out)]
    code, stdout, err = run_cli(["compare", str(folder), "--keyframes", "2", *args], capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith(f"{short}: explained #") and lines[1].startswith(f"{long}: explained #")
    assert lines[2:] == [f"wrote {out / 'compare-grid.mp4'}", f"wrote {out / 'compare-grid.npz'}",
                         f"wrote {out / 'compare-grid-keyframes.png'}"]
    maps = video_iba.load(str(out / "compare-grid.npz"))
    assert isinstance(maps, video_iba.Comparison)
    assert [(os.path.basename(p.input), p.name, len(p.result.per_source_frame)) for p in maps.panels] == [
        ("a_short.mp4", "saliency", 15), ("a_short.mp4", "gradcam", 15), ("b_long.mp4", "saliency", 60),
        ("b_long.mp4", "gradcam", 60)]
    frames = read_frames(str(out / "compare-grid.mp4"))
    assert len(frames) == 60  # the longest row's 2 s at the fastest row's 30 frames/s
    ph, pw, _ = clip_panel_size(64, 128, 3, GRID_CLIP_PANEL_HEIGHT)
    assert frames[0].shape[1] == 3 * pw  # the wider row sets the width
    top = [f[: ph - 4, :3 * clip_panel_size(64, 96, 3, GRID_CLIP_PANEL_HEIGHT)[1]].astype(float) for f in frames]
    moved = [np.abs(top[k + 1] - top[k]).mean() for k in range(59)]
    # the 15 frames/s row changes every second frame of the grid while it plays, then holds its last
    assert min(moved[1:29:2]) > 5 * max(moved[0:29:2] + moved[30:])
    bottom = [f[-40:].astype(float) for f in frames]  # the long row's strip: its cursor moves to the end
    assert np.abs(bottom[59] - bottom[40]).mean() > 0.1
    # the Python function: a list of videos, titles, and the refusals
    res = compare_grid([long, short], ["saliency"], Settings(model="r3d_18", weights="random"), str(tmp_path / "p"),
                       titles=["long", "short"])
    assert res.output.endswith("compare-grid.mp4") and [p for p, _ in res.rows] == [long, short]
    # the still: a block per video (its title, a column per kept frame), each cell a panel of the grid MP4
    sheet = np.asarray(Image.open(out / "compare-grid-keyframes.png").convert("RGB")).astype(float)
    grid = [f.astype(float) for f in frames]
    sph, spw, _ = clip_panel_size(64, 96, 3, GRID_CLIP_PANEL_HEIGHT)
    assert sheet.shape[1] == STILL_LABELS + 2 * (pw + GRID_GAP)  # the wider block sets the width
    block = 2 * STILL_TIMES + 3 * (sph + GRID_GAP) + GRID_GAP + STRIP_HEIGHT  # title, times, 3 rows, strip
    # (the block's top in the still, the row's top in the MP4 (its two rows are as high), panel size, grid frames
    # showing the kept source frames: the middle of each half, 15 frames/s shown twice at 30)
    for y0, top, h, w, shown in [(0, 0, sph, spw, ((6, 7), (22, 23))),
                                 (block + 4 * GRID_GAP, (len(grid[0]) + GRID_GAP) // 2, ph, pw, ((15,), (45,)))]:
        for col, ks in enumerate(shown):
            y = y0 + 2 * STILL_TIMES + 2 * GRID_GAP + h  # the saliency row of the block
            x = STILL_LABELS + GRID_GAP + col * (w + GRID_GAP)
            cell = sheet[y:y + h, x:x + w]
            diffs = [np.abs(cell - f[top:top + h, w:2 * w]).mean() for f in grid]
            assert int(np.argmin(diffs)) in ks and min(diffs) < 4, (y0, col, ks, int(np.argmin(diffs)), min(diffs))
    with pytest.raises(UserInputError, match="a comparison grid holds 2 to 6 videos, got 7"):
        compare_grid([short] * 7, ["saliency"], Settings(), str(tmp_path / "q"))


def test_a_video_comparison_still_holds_each_method_at_each_keyframe(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from video_iba.render.compare import GRID_GAP, STILL_LABELS, STILL_TIMES, clip_panel_size

    clip = encode(str(tmp_path / "c.mp4"), frames=45, size=(128, 96), fps=30, content=moving_square)
    out = tmp_path / "o"
    code, stdout, err = run_cli(["compare", clip, "--model", "r3d_18", "--weights", "random", "--methods",
                                 "saliency,gradcam", "--keyframes", "3", "--out", str(out)], capsys)
    assert code == 0, err
    still = out / "c-compare-keyframes.png"
    assert f"wrote {still}" in stdout
    sheet = np.asarray(Image.open(still).convert("RGB")).astype(float)
    ph, pw, _ = clip_panel_size(96, 128, 3)
    assert sheet.shape[1] == STILL_LABELS + 3 * (pw + GRID_GAP)
    frames = [f.astype(float) for f in read_frames(str(out / "c-compare.mp4"))]
    for row in (1, 2):  # saliency, gradcam: each cell is the MP4's panel at its frame (of all 45 the nearest)
        for col, pos in enumerate((7, 22, 37)):  # the middle frame of each third
            y, x = STILL_TIMES + GRID_GAP + row * (ph + GRID_GAP), STILL_LABELS + GRID_GAP + col * (pw + GRID_GAP)
            cell = sheet[y:y + ph, x:x + pw]
            diffs = [np.abs(cell - f[:ph, row * pw:(row + 1) * pw]).mean() for f in frames]
            # H.264 (crf 18, preset veryfast) leaves the panel about 3 off its still; other frames 7 or more
            assert int(np.argmin(diffs)) == pos and diffs[pos] < 4, (row, pos, int(np.argmin(diffs)), diffs[pos])
    code, _, err = run_cli(["compare", str(still), "--keyframes", "2", "--out", str(tmp_path / "p")], capsys)
    assert code == 2 and "--keyframes applies to videos" in err  # a photo takes no keyframes


def test_vmax_gives_every_bits_map_one_scale_and_leaves_other_methods_theirs(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from video_iba.render.compare import PANEL
    from video_iba.workflows import compare_grid

    photos = [os.path.join(photo_dir, n) for n in ("coffee.jpg", "chelsea.jpg")]
    fast = Settings(changes={"steps": 1, "samples": 2})
    grids = [np.asarray(Image.open(compare_grid(photos, ["iba", "saliency"], fast, str(tmp_path / str(v)),
                                                Options(vmax=v)).output).convert("RGB")).astype(int)
             for v in (None, 0.05)]
    iba, saliency = slice(PANEL, 2 * PANEL), slice(2 * PANEL, 3 * PANEL)
    assert np.array_equal(grids[0][:PANEL, saliency], grids[1][:PANEL, saliency])  # its own scale either way
    assert np.abs(grids[0][:PANEL, iba] - grids[1][:PANEL, iba]).mean() > 5  # 0.05 bits: far brighter
    assert not np.array_equal(grids[0][PANEL:PANEL + 30, iba], grids[1][PANEL:PANEL + 30, iba])  # its head names it


def test_compare_several_classes_of_one_model(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import torch

    import video_iba
    from video_iba.render.compare import PANEL
    from video_iba.workflows import compare_grid

    photo = os.path.join(photo_dir, "chelsea.jpg")
    net = video_iba.load_model("efficientnet_lite0")
    x, _ = video_iba.preprocess_image(video_iba.read_image(photo), net.video_iba_spec)
    with torch.no_grad():
        top3 = [int(i) for i in net(x)[0].argsort(descending=True)[:3]]
    code, stdout, err = run_cli(["compare", photo, "--targets", "top3", "--methods", "saliency", "--out",
                                 str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert [int(line.split(": explained #")[1].split()[0]) for line in stdout.splitlines()[:3]] == top3
    assert stdout.startswith("Egyptian cat · saliency (|gradient|): explained #285 Egyptian cat\n")
    img = np.asarray(Image.open(tmp_path / "o" / "chelsea-compare.png").convert("RGB"))
    assert img.shape[1] == 4 * PANEL  # the input, then one panel per class
    # each class's panel is the one compare draws for that class alone (only the heads differ)
    for i, t in enumerate(top3):
        alone = compare_file(photo, ["saliency"], Settings(), str(tmp_path / f"a{t}"), Options(target=t))
        single = np.asarray(Image.open(alone.output).convert("RGB"))
        np.testing.assert_array_equal(img[:PANEL, (i + 1) * PANEL:(i + 2) * PANEL], single[:PANEL, PANEL:])
    res = compare_file(photo, ["saliency"], Settings(), str(tmp_path / "named"), targets=["tabby", "285"])
    assert [(name, t) for name, _, t, _ in res.panels] == [("tabby · saliency", 281), ("Egyptian cat · saliency", 285)]
    # a grid: each photo its own K most probable classes
    grid = compare_grid([photo, os.path.join(photo_dir, "coffee.jpg")], ["random"], Settings(), str(tmp_path / "g"),
                        targets=["top2"])
    assert [t for _, _, t, _ in grid.rows[0][1]] == top3[:2]
    assert grid.rows[1][1][0][2] == 967 and grid.rows[1][1][1][2] != 967  # espresso, then coffee's second class


@pytest.mark.parametrize("extra, message", [
    (["--targets", "3"], "--targets compares two or more classes; give one class with --target"),
    (["--targets", "top1"], "--targets takes topK alone, with K >= 2"),
    (["--targets", "top2,3"], "--targets takes topK alone, with K >= 2"),
    (["--targets", "3,03"], "--targets names a class twice"),
    (["--targets", "3,4", "--target", "5"], "give --target or --targets, not both"),
    (["--targets", "3,400"], "target 400 is out of range; the model has 400 classes (0..399); give --targets"),
    (["--targets", "top401"], "--targets top401 asks for more classes than the model's 400"),
    (["--targets", "3,4", "--models", "r3d_18,mc3_18"], "--targets compares classes of one model"),
])
def test_compare_several_classes_refuses_what_cannot_be(extra, message, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "c.mp4"), frames=40, size=(128, 96))
    out = tmp_path / "o"
    code, _, err = run_cli(["compare", clip, "--methods", "random", "--weights", "random", "--out", str(out), *extra]
                           + ([] if "--models" in extra else ["--model", "r3d_18"]), capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_compare_several_classes_on_a_video(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "c.mp4"), frames=40, size=(128, 96), content=moving_square)
    code, stdout, err = run_cli(["compare", clip, "--model", "r3d_18", "--weights", "random", "--methods", "saliency",
                                 "--targets", "3,5", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert [line.split(" · ")[1] for line in stdout.splitlines()[:2]] == [
        "saliency (|gradient|): explained #3 applauding", "saliency (|gradient|): explained #5 archery"]
    frames = read_frames(str(tmp_path / "o" / "c-compare.mp4"))
    assert len(frames) == 40 and frames[0].shape[1] == 3 * 320  # the frame, then a panel per class
    assert not np.array_equal(frames[20][:240, 320:640], frames[20][:240, 640:960])  # saliency depends on the class


@pytest.mark.parametrize("video", [False, True])
def test_a_bits_maps_head_names_the_top_of_its_colour_scale(video, photo_dir, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from video_iba.render import compare

    heads: list[str] = []
    tops: list[float] = []
    monkeypatch.setattr(compare, "labelled", lambda img, lines, *a, **k: heads.extend(lines) or img)
    real_overlay = compare.overlay
    monkeypatch.setattr(compare, "overlay", lambda img, values, vmax, *a, **k: tops.append(vmax) or
                        real_overlay(img, values, vmax, *a, **k))
    if video:
        path = encode(str(tmp_path / "c.mp4"), frames=12, size=(64, 48), fps=12, content=moving_square)
        settings = Settings(model="r3d_18", weights="random", changes={"steps": 2, "samples": 2})
    else:
        path, settings = os.path.join(photo_dir, "coffee.jpg"), Settings(changes={"steps": 2, "samples": 2})
    for vmax in (None, 0.05):
        heads.clear(), tops.clear()
        compare_file(path, ["iba", "saliency"], settings, str(tmp_path / f"o{vmax}"), Options(vmax=vmax))
        iba_top, saliency_top = tops[0], tops[1]  # the first frame's panels (photos: the only ones)
        per = "voxel" if video else "px"
        assert heads[3].split(" · ")[0] == f"bits 0-{iba_top:.3g}/{per}"  # then the layer
        assert heads[5] == "|gradient|" and saliency_top > 0  # other units: by magnitude, no bits scale
        if vmax is not None:
            assert iba_top == vmax


@pytest.mark.parametrize("video", [False, True])
def test_a_shared_scale_is_the_largest_value_of_the_bits_maps(video, photo_dir, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from video_iba.render import compare
    from video_iba.workflows import compare_grid

    tops: list[float] = []
    real_overlay = compare.overlay
    monkeypatch.setattr(compare, "overlay", lambda img, values, vmax, *a, **k: tops.append(vmax) or
                        real_overlay(img, values, vmax, *a, **k))
    if video:  # two classes of one model on a clip: the panels of the first frame
        path = encode(str(tmp_path / "c.mp4"), frames=12, size=(64, 48), fps=12, content=moving_square)
        settings = Settings(model="r3d_18", weights="random", changes={"steps": 6, "samples": 2})

        def run(vmax: object) -> list[float]:
            tops.clear()
            compare_file(path, ["iba", "saliency"], settings, str(tmp_path / f"o{vmax}"), Options(vmax=vmax),
                         targets=["0", "1"])
            return [tops[0], tops[2]]  # each class's IBA panel (then its saliency)
    else:  # a grid of two photos: each row's IBA panel
        photos = [os.path.join(photo_dir, n) for n in ("coffee.jpg", "chelsea.jpg")]
        settings = Settings(changes={"steps": 2, "samples": 2})

        def run(vmax: object) -> list[float]:
            tops.clear()
            compare_grid(photos, ["iba", "saliency"], settings, str(tmp_path / f"o{vmax}"), Options(vmax=vmax))
            return [tops[0], tops[2]]
    own = run(None)
    assert own[0] != own[1]
    assert run("shared") == [max(own), max(own)]


def test_explain_of_one_file_refuses_a_shared_scale_before_any_work(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from video_iba.workflows import Session, explain_file
    from video_iba.workflows.explain import explain_photos

    out = str(tmp_path / "out")
    session = Session.open(Settings(model="efficientnet_lite0"))
    with pytest.raises(UserInputError, match="of a folder or a .txt list of inputs on one colour scale and '.*coffee.jpg' "
                                             "is one file"):
        explain_file(session, os.path.join(photo_dir, "coffee.jpg"), out, Options(vmax="shared"))
    with pytest.raises(UserInputError, match="explain_photos draws each photo on its own"):
        explain_photos(session, [os.path.join(photo_dir, "coffee.jpg")], [out], Options(vmax="shared"))
    assert not os.path.exists(out)


def test_a_shared_scale_ignores_a_map_without_information(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from video_iba.workflows.compare import _bits_top, bits_peak

    zero = video_iba.Attribution(values=torch.zeros(4, 4), unit=Unit.BITS, target=0)
    small = video_iba.Attribution(values=torch.full((4, 4), 0.3), unit=Unit.BITS, target=0)
    cam = video_iba.Attribution(values=torch.full((4, 4), 7.0), unit=Unit.GRAD_CAM, target=0)
    assert bits_peak([zero, small, cam]) == pytest.approx(0.3)  # other units are not bits maps
    # an all-zero map took the default top of 1 and so set the scale of maps peaking below it
    assert _bits_top(Options(vmax="shared"), [zero, small, cam]) == pytest.approx(0.3)
    assert _bits_top(Options(vmax="shared"), [zero]) == 1.0 and _bits_top(Options(vmax="shared"), [cam]) is None
    assert _bits_top(Options(vmax=0.5), [small]) == 0.5 and _bits_top(Options(), [small]) is None
