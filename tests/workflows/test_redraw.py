"""`video-iba redraw`: an explanation drawn again from its .npz, as explain would have drawn it."""

from __future__ import annotations

import importlib
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import video_iba
from video_iba.cli import main
from video_iba.results import ClipAttribution, load

from ..helpers import read_npz, run_cli
from ..videos import encode, moving_square

FAST = ["--steps", "1", "--samples", "2"]
VIDEO = ["--model", "r3d_18", "--weights", "random", "--stride", "0.5", "--coverage", "tiles", *FAST]


def _bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _same_npz(a: str, b: str, but: tuple[str, ...] = ()) -> None:
    da, db = read_npz(a), read_npz(b)
    assert set(da) == set(db)
    for k in da:
        if k == "meta":
            ma, mb = json.loads(str(da[k])), json.loads(str(db[k]))
            assert {x: v for x, v in ma.items() if x not in but} == {x: v for x, v in mb.items() if x not in but}
        elif k not in but:
            np.testing.assert_array_equal(da[k], db[k], err_msg=k)


def _listing(folder: str) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.fixture(scope="module")
def explained_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A clip explained twice with the same fit: as drawn by default, and with another scale,
    layout and keyframe sheet."""
    d = tmp_path_factory.mktemp("redraw-clip")
    clip = encode(str(d / "clip.mp4"), frames=45, size=(160, 112), fps=30, content=moving_square)
    assert main(["explain", clip, *VIDEO, "--keyframes", "2", "--out", str(d / "a")]) == 0
    assert main(["explain", clip, *VIDEO, "--vmax", "0.5", "--layout", "overlay", "--keyframes", "3",
                 "--out", str(d / "b")]) == 0
    return {"dir": str(d), "clip": clip, "a": str(d / "a"), "b": str(d / "b")}


def test_a_video_redrawn_without_options_is_the_same_files(explained_clip, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    a = explained_clip["a"]
    code, out, err = run_cli(["redraw", os.path.join(a, "clip.npz"), "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert "(45 frames)" in out and "colour scale 0 to" in out
    assert _listing(str(tmp_path)) == ["clip-keyframes.png", "clip.mp4", "clip.npz"]
    for name in ("clip.mp4", "clip-keyframes.png"):
        assert _bytes(os.path.join(a, name)) == _bytes(str(tmp_path / name)), name
    _same_npz(os.path.join(a, "clip.npz"), str(tmp_path / "clip.npz"))


def test_a_video_redrawn_with_options_is_what_explain_draws_with_them(explained_clip, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    a, b = explained_clip["a"], explained_clip["b"]
    for name in os.listdir(a):  # redrawn in place: the drawing and the .npz replaced
        shutil.copy(os.path.join(a, name), tmp_path / name)
    code, _, err = run_cli(["redraw", str(tmp_path / "clip.npz"), "--vmax", "0.5", "--layout", "overlay",
                            "--keyframes", "3"], capsys)
    assert code == 0, err
    for name in ("clip.mp4", "clip-keyframes.png"):
        assert _bytes(os.path.join(b, name)) == _bytes(str(tmp_path / name)), name
    _same_npz(os.path.join(b, "clip.npz"), str(tmp_path / "clip.npz"), but=("seconds_explaining", "window_seconds"))
    res = load(str(tmp_path / "clip.npz"))
    assert isinstance(res, ClipAttribution) and res.meta["vmax"] == 0.5 and res.meta["layout"] == "overlay"
    assert len(res.meta["keyframes"]) == 3 and res.class_names is not None and len(res.class_names) == 400


def test_a_moved_video_is_found_with_source_and_a_different_one_refused(explained_clip, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    npz = str(tmp_path / "clip.npz")
    shutil.copy(os.path.join(explained_clip["a"], "clip.npz"), npz)
    moved = str(tmp_path / "moved.mp4")
    shutil.copy(explained_clip["clip"], moved)
    meta = json.loads(str(read_npz(npz)["meta"]))
    meta["input"] = str(tmp_path / "gone.mp4")
    d = read_npz(npz)
    d["meta"] = np.array(json.dumps(meta))
    np.savez(npz, **d)
    out = str(tmp_path / "o")
    code, _, err = run_cli(["redraw", npz, "--out", out], capsys)
    assert code == 2 and "gone.mp4', which is not there any more; give the video with --source" in err
    other = encode(str(tmp_path / "other.mp4"), frames=40, size=(160, 112), fps=30, content=moving_square)
    code, _, err = run_cli(["redraw", npz, "--out", out, "--source", other], capsys)
    assert code == 2 and "is not the video" in err and "40 frames at 30 fps, the explained video 45 at 30" in err
    code, _, err = run_cli(["redraw", npz, "--out", out, "--source", str(tmp_path / "clip.npz")], capsys)
    assert code == 2 and "--source '" in err and "clip.npz' is not a video; give the video" in err
    wide = encode(str(tmp_path / "wide.mp4"), frames=45, size=(224, 112), fps=30, content=moving_square)
    code, _, err = run_cli(["redraw", npz, "--out", out, "--source", wide], capsys)
    assert code == 2 and "224x112 pixels, another shape" in err
    assert _listing(out) == []
    code, _, err = run_cli(["redraw", npz, "--out", out, "--source", moved], capsys)
    assert code == 0, err
    assert _bytes(os.path.join(out, "clip.mp4")) == _bytes(os.path.join(explained_clip["a"], "clip.mp4"))
    assert load(os.path.join(out, "clip.npz")).meta["input"] == moved


@pytest.fixture(scope="module")
def explained_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two photos (one large enough to be decoded at a reduced size) explained with IBA, and one with
    saliency."""
    from skimage import data

    d = tmp_path_factory.mktemp("redraw-photos")
    Image.fromarray(np.asarray(data.chelsea())).save(d / "cat.jpg", quality=92)
    big = Image.fromarray(np.asarray(data.coffee())).resize((1600, 1200))
    big.save(d / "coffee.jpg", quality=90)
    for name in ("cat.jpg", "coffee.jpg"):
        assert main(["explain", str(d / name), *FAST, "--out", str(d / "a")]) == 0
    assert main(["explain", str(d / "cat.jpg"), *FAST, "--vmax", "0.05", "--out", str(d / "b")]) == 0
    assert main(["explain", str(d / "cat.jpg"), "--method", "saliency", "--out", str(d / "s")]) == 0
    return {"dir": str(d), "a": str(d / "a"), "b": str(d / "b"), "s": str(d / "s")}


def test_photos_redrawn_as_explain_draws_them(explained_photos, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    a, b = explained_photos["a"], explained_photos["b"]
    code, _, err = run_cli(["redraw", a, "--out", str(tmp_path / "same")], capsys)  # a folder: both
    assert code == 0, err
    for name in ("cat.png", "coffee.png"):  # coffee was decoded at a reduced size
        assert _bytes(os.path.join(a, name)) == _bytes(str(tmp_path / "same" / name)), name
        _same_npz(os.path.join(a, name[:-4] + ".npz"), str(tmp_path / "same" / (name[:-4] + ".npz")))
    code, _, err = run_cli(["redraw", os.path.join(a, "cat.npz"), "--vmax", "0.05", "--out", str(tmp_path / "v")],
                           capsys)
    assert code == 0, err
    assert _bytes(os.path.join(b, "cat.png")) == _bytes(str(tmp_path / "v" / "cat.png"))
    assert load(str(tmp_path / "v" / "cat.npz")).meta["vmax"] == 0.05


def test_shared_scale_is_the_largest_value_of_all_files(explained_photos, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    a = explained_photos["a"]
    peaks = [float(load(os.path.join(a, n)).values.max()) for n in ("cat.npz", "coffee.npz")]
    code, out, err = run_cli(["redraw", os.path.join(a, "cat.npz"), os.path.join(a, "coffee.npz"), "--vmax", "shared",
                              "--out", str(tmp_path)], capsys)
    assert code == 0, err
    for n in ("cat.npz", "coffee.npz"):
        assert load(str(tmp_path / n)).meta["vmax"] == pytest.approx(max(peaks))
    assert out.count(f"colour scale 0 to {max(peaks):.4g} bits per pixel") == 2


def test_refusals_write_nothing(explained_photos, explained_clip, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    a = explained_photos["a"]
    saliency = str(tmp_path / "cat-saliency.npz")
    shutil.copy(os.path.join(explained_photos["s"], "cat.npz"), saliency)
    out = str(tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["redraw", os.path.join(a, "cat.npz"), saliency, "--vmax", "shared"],
         "needs maps in one unit and these are in bits and |gradient|"),
        (["redraw", os.path.join(a, "cat.npz"), "--keyframes", "3"],
         "--keyframes applies to videos and"),
        (["redraw", os.path.join(a, "cat.npz"), "--layout", "overlay", "--keyframes", "2"],
         "--layout, --keyframes apply to videos"),
        (["redraw", os.path.join(a, "cat.npz"), os.path.join(a, "coffee.npz"), "--source", os.path.join(a, "cat.png")],
         "--source names the input of one .npz and 2 were given; give it the folder holding the inputs"),
        (["redraw", os.path.join(a, "cat.npz"), "--source", os.path.join(explained_photos["dir"], "coffee.jpg")],
         "is not the photo"),
        (["redraw", os.path.join(a, "cat.png")], "is not an .npz file"),
        (["redraw", str(empty)], "no .npz files found in"),
        (["redraw", os.path.join(a, "cat.npz"), "--vmax", "-1"], "expected a finite number > 0 or 'shared'"),
    ]
    for argv, message in cases:
        code, _, err = run_cli([*argv, "--out", out], capsys)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
    assert _listing(out) == []


def test_a_photo_comparison_redrawn_is_what_compare_draws(explained_photos, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    cat = os.path.join(explained_photos["dir"], "cat.jpg")
    args = ["compare", cat, "--methods", "iba,gradcam", *FAST]
    assert run_cli([*args, "--out", str(tmp_path / "a")], capsys)[0] == 0
    assert run_cli([*args, "--vmax", "0.05", "--out", str(tmp_path / "b")], capsys)[0] == 0
    code, out, err = run_cli(["redraw", str(tmp_path / "a" / "cat-compare.npz"), "--out", str(tmp_path / "same")],
                             capsys)
    assert code == 0, err
    assert "cat-compare.npz: a comparison of 1 input × iba, gradcam" in out
    assert _bytes(str(tmp_path / "a" / "cat-compare.png")) == _bytes(str(tmp_path / "same" / "cat-compare.png"))
    _same_npz(str(tmp_path / "a" / "cat-compare.npz"), str(tmp_path / "same" / "cat-compare.npz"))
    code, _, err = run_cli(["redraw", str(tmp_path / "a" / "cat-compare.npz"), "--vmax", "0.05"], capsys)  # in place
    assert code == 0, err
    assert _bytes(str(tmp_path / "b" / "cat-compare.png")) == _bytes(str(tmp_path / "a" / "cat-compare.png"))
    assert video_iba.load(str(tmp_path / "a" / "cat-compare.npz")).meta["bits_vmax"] == 0.05
    code, _, err = run_cli(["redraw", str(tmp_path / "a" / "cat-compare.npz"), "--keyframes", "2", "--out",
                            str(tmp_path / "k")], capsys)
    assert code == 2 and "--keyframes does not apply to" in err and "a comparison of photos; drop it" in err
    by_hand = video_iba.Comparison([video_iba.Panel(cat, "iba", load(os.path.join(explained_photos["a"], "cat.npz")))])
    by_hand.save(tmp_path / "hand.npz")
    code, _, err = run_cli(["redraw", str(tmp_path / "hand.npz"), "--out", str(tmp_path / "k")], capsys)
    assert code == 2 and "lacks what its drawing needs (rows, model inputs)" in err
    assert _listing(str(tmp_path / "k")) == []


def test_a_video_comparison_redrawn_is_what_compare_draws(explained_clip, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["compare", explained_clip["clip"], "--methods", "iba,saliency", "--model", "r3d_18", "--weights", "random",
            "--stride", "0.5", *FAST]
    assert run_cli([*args, "--keyframes", "2", "--out", str(tmp_path / "a")], capsys)[0] == 0
    assert run_cli([*args, "--keyframes", "3", "--vmax", "shared", "--out", str(tmp_path / "b")], capsys)[0] == 0
    npz = str(tmp_path / "a" / "clip-compare.npz")
    code, _, err = run_cli(["redraw", npz, "--out", str(tmp_path / "same")], capsys)
    assert code == 0, err
    for name in ("clip-compare.mp4", "clip-compare-keyframes.png"):
        assert _bytes(str(tmp_path / "a" / name)) == _bytes(str(tmp_path / "same" / name)), name
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(explained_clip["clip"], moved / "clip.mp4")
    code, _, err = run_cli(["redraw", npz, "--keyframes", "3", "--vmax", "shared", "--source", str(moved), "--out",
                            str(tmp_path / "c")], capsys)
    assert code == 0, err
    for name in ("clip-compare.mp4", "clip-compare-keyframes.png"):
        assert _bytes(str(tmp_path / "b" / name)) == _bytes(str(tmp_path / "c" / name)), name
    back = video_iba.load(str(tmp_path / "c" / "clip-compare.npz"))
    assert isinstance(back, video_iba.Comparison) and back.meta["keyframes"] == 3
    assert {p.input for p in back.panels} == {str(moved / "clip.mp4")}
    other = encode(str(tmp_path / "other.mp4"), frames=40, size=(160, 112), fps=30, content=moving_square)
    two = video_iba.Comparison([*back.panels, *(video_iba.Panel(other, p.name, p.result, p.note) for p in back.panels)],
                               {**back.meta, "rows": back.meta["rows"] * 2})
    two.save(tmp_path / "two.npz")  # a grid of two videos
    for npz_, argv, message in ((npz, ["--source", other], "is not the video"),
                                (npz, ["--layout", "overlay"], "--layout does not apply to"),
                                (str(tmp_path / "two.npz"), ["--source", other],
                                 "--source names one video and '" + str(tmp_path / "two.npz") + "' compares 2")):
        code, _, err = run_cli(["redraw", npz_, *argv, "--out", str(tmp_path / "d")], capsys)
        assert code == 2 and message in err, err
    assert _listing(str(tmp_path / "d")) == []


def test_an_older_file_without_what_the_drawing_needs_is_refused(explained_clip, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    d = read_npz(os.path.join(explained_clip["a"], "clip.npz"))
    del d["class_names"]
    meta = json.loads(str(d["meta"]))
    del meta["title"]
    meta["version"] = "0.2.0"
    d["meta"] = np.array(json.dumps(meta))
    old = str(tmp_path / "old.npz")
    np.savez(old, **d)
    code, _, err = run_cli(["redraw", old], capsys)
    assert code == 2 and "lacks what its drawing needs (title, class names): it was written by video-iba 0.2.0" in err
    assert _listing(str(tmp_path)) == ["old.npz"]


def test_a_video_shorter_than_a_clip_is_redrawn_without_its_warning_again(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "short.mp4"), frames=20, size=(128, 96), fps=30, content=moving_square)
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", *FAST,
                            "--out", str(tmp_path / "a")], capsys)
    assert code == 0 and "shorter than one clip" in err
    code, _, err = run_cli(["redraw", str(tmp_path / "a" / "short.npz"), "--out", str(tmp_path / "b")], capsys)
    assert code == 0 and "shorter than one clip" not in err, err
    assert _bytes(str(tmp_path / "a" / "short.mp4")) == _bytes(str(tmp_path / "b" / "short.mp4"))


def test_a_folder_is_mirrored_into_out_and_outputs_written_twice_are_refused(explained_photos, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    a = explained_photos["a"]
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    shutil.copy(os.path.join(a, "cat.npz"), tree / "cat.npz")
    shutil.copy(os.path.join(a, "coffee.npz"), tree / "sub" / "cat.npz")  # the same name in a subfolder
    talk = tree / "talk"  # inside the folder redrawn
    code, _, err = run_cli(["redraw", str(tree), "--out", str(talk)], capsys)
    assert code == 0, err
    assert _listing(str(talk)) == ["cat.npz", "cat.png", "sub"] and _listing(str(talk / "sub")) == ["cat.npz", "cat.png"]
    assert load(str(talk / "sub" / "cat.npz")).meta["target_label"] == load(os.path.join(a, "coffee.npz")).meta[
        "target_label"]
    code, _, err = run_cli(["redraw", str(tree), "--out", str(talk)], capsys)  # again: talk/ is not redrawn into itself
    assert code == 0, err
    assert _listing(str(talk)) == ["cat.npz", "cat.png", "sub"]
    code, _, err = run_cli(["redraw", str(tree / "cat.npz"), str(tree / "sub" / "cat.npz"), "--out",
                            str(tmp_path / "flat")], capsys)
    assert code == 2 and "would both be drawn as" in err and "into separate folders (--out)" in err
    assert _listing(str(tmp_path / "flat")) == []


def test_redraw_from_python_takes_one_path(explained_photos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    done = video_iba.redraw(Path(explained_photos["a"]) / "cat.npz", video_iba.Redraw(vmax=0.05, out_dir=tmp_path))
    assert [os.path.basename(p) for p in done[0].outputs] == ["cat.png", "cat.npz"] and done[0].label == "Egyptian cat"
    assert _bytes(os.path.join(explained_photos["b"], "cat.png")) == _bytes(str(tmp_path / "cat.png"))
    with pytest.raises(video_iba.UserInputError, match="must be a finite number > 0 or 'shared'"):
        video_iba.Redraw(vmax="largest")


def test_inputs_are_found_by_name_in_a_source_folder(explained_photos, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    a = explained_photos["a"]
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("cat.jpg", "coffee.jpg"):
        shutil.copy(os.path.join(explained_photos["dir"], name), moved / name)
    code, _, err = run_cli(["redraw", a, "--source", str(moved), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    for name in ("cat.png", "coffee.png"):
        assert _bytes(os.path.join(a, name)) == _bytes(str(tmp_path / "o" / name)), name
    assert load(str(tmp_path / "o" / "cat.npz")).meta["input"] == str(moved / "cat.jpg")
    os.remove(moved / "coffee.jpg")
    code, _, err = run_cli(["redraw", a, "--source", str(moved), "--out", str(tmp_path / "p")], capsys)
    assert code == 2 and "explains 'coffee.jpg', which is not in --source" in err and "give the folder holding it" in err
    assert _listing(str(tmp_path / "p")) == []


def test_maps_only_writes_the_npz_alone_and_redraw_draws_what_explain_draws(explained_clip, explained_photos,
                                                                            tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip, a = explained_clip["clip"], explained_clip["a"]
    maps = str(tmp_path / "maps")
    code, out, err = run_cli(["explain", clip, *VIDEO, "--maps-only", "--out", maps], capsys)
    assert code == 0, err
    assert _listing(maps) == ["clip.npz"] and f"wrote {os.path.join(maps, 'clip.npz')}\n" in out and "frames)" not in out
    res = load(os.path.join(maps, "clip.npz"))
    assert isinstance(res, ClipAttribution) and "output_frames" not in res.meta and "keyframes" not in res.meta
    assert res.meta["layout"] == "side-by-side" and res.meta["vmax"] == pytest.approx(res.peak())
    photos = explained_photos["dir"]
    code, out, err = run_cli(["explain", os.path.join(photos, "cat.jpg"), *FAST, "--maps-only", "--out", maps], capsys)
    assert code == 0, err
    assert _listing(maps) == ["cat.npz", "clip.npz"]
    # drawn later, in two processes, as explain draws them
    code, out, err = run_cli(["redraw", maps, "--workers", "2"], capsys)
    assert code == 0, err
    assert _listing(maps) == ["cat.npz", "cat.png", "clip.mp4", "clip.npz"]
    assert _bytes(os.path.join(a, "clip.mp4")) == _bytes(os.path.join(maps, "clip.mp4"))
    _same_npz(os.path.join(a, "clip.npz"), os.path.join(maps, "clip.npz"),
              but=("seconds_explaining", "window_seconds", "keyframes"))  # a's has a keyframe sheet
    assert _bytes(os.path.join(explained_photos["a"], "cat.png")) == _bytes(os.path.join(maps, "cat.png"))
    _same_npz(os.path.join(explained_photos["a"], "cat.npz"), os.path.join(maps, "cat.npz"), but=("seconds",))
    assert out.index("cat.png") < out.index("clip.mp4")  # reported in the files' order


def test_maps_only_in_a_batch_and_its_refusals(explained_clip, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(explained_clip["clip"], folder / "clip.mp4")
    out = str(tmp_path / "out")
    args = ["explain", str(folder), *VIDEO, "--out", out]
    code, printed, err = run_cli([*args, "--maps-only"], capsys)
    assert code == 0, err
    assert _listing(out) == ["clip.npz", "manifest.jsonl"]
    assert f"maps only: `video-iba redraw {out}` draws them" in printed
    with open(os.path.join(out, "manifest.jsonl")) as fh:
        (line,) = [json.loads(x) for x in fh]
    assert line["status"] == "ok" and line["output"] == [os.path.join(out, "clip.npz")]
    code, printed, err = run_cli([*args, "--maps-only"], capsys)
    assert code == 0 and "0 explained, 1 done before" in printed
    code, printed, err = run_cli(args, capsys)  # drawn now: other outputs, so explained again
    assert code == 0 and "1 explained (1 again as the settings changed)" in printed, printed
    assert _listing(out) == ["clip.mp4", "clip.npz", "manifest.jsonl"]
    for extra, says in ((["--keyframes", "2"], "--keyframes draws a keyframe sheet and --maps-only draws nothing"),
                        (["--vmax", "shared"], "--vmax shared puts the drawings on one scale and --maps-only draws")):
        code, _, err = run_cli([*args, "--maps-only", *extra, "--out", str(tmp_path / "no")], capsys)
        assert code == 2 and says in err and "Traceback" not in err, err
    assert not os.path.exists(tmp_path / "no")
    with pytest.raises(ValueError, match="maps_only= takes True or False"):
        video_iba.Options(maps_only=1)  # type: ignore[arg-type]
    for compare in (video_iba.compare_file, video_iba.compare_grid):  # a comparison is nothing but its drawing
        with pytest.raises(ValueError, match="a comparison is its drawing and maps_only= draws nothing"):
            compare(explained_clip["clip"], ["saliency"], None, str(tmp_path / "no"), video_iba.Options(maps_only=True))
    assert not os.path.exists(tmp_path / "no")


def test_a_drawing_failing_in_a_worker_is_raised_with_its_message_and_the_others_are_drawn(explained_photos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for name in ("cat.npz", "coffee.npz"):
        shutil.copy(os.path.join(explained_photos["a"], name), tmp_path / name)
    (tmp_path / "cat.png").mkdir()  # the figure cannot replace a folder: refused in the worker drawing it
    (tmp_path / "cat.png" / "keep").write_text("")
    with pytest.raises(video_iba.UserInputError, match="cat.png' is a folder; give the path of a file"):
        video_iba.redraw(str(tmp_path), workers=2)
    assert _bytes(str(tmp_path / "coffee.png")) == _bytes(os.path.join(explained_photos["a"], "coffee.png"))
    assert sorted(os.listdir(tmp_path)) == ["cat.npz", "cat.png", "coffee.npz", "coffee.png"]  # no temporary file
    with pytest.raises(ValueError, match="workers= must be an integer >= 1"):
        video_iba.redraw(str(tmp_path), workers=0)


def _killed(*_args: object) -> None:
    os.kill(os.getpid(), 9)  # as the kernel ends a process out of memory


def test_a_drawing_process_killed_is_reported_in_one_line(explained_photos, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    module = importlib.import_module("video_iba.workflows.redraw")
    for name in ("cat.npz", "coffee.npz"):
        shutil.copy(os.path.join(explained_photos["a"], name), tmp_path / name)
    monkeypatch.setattr(module, "_redraw_one", _killed)  # what the workers are given to run
    with pytest.raises(video_iba.UserInputError, match=r"a drawing process ended abruptly .*draw fewer files at once "
                                                         r"\(workers=\)"):
        video_iba.redraw(str(tmp_path), workers=2)
    assert sorted(os.listdir(tmp_path)) == ["cat.npz", "coffee.npz"]
