"""Batch explanation: folders and list files, the manifest, resuming, failures, 2 gloo processes."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from ..helpers import break_one_photo, run_cli, torchrun


def _manifest(out: str) -> list[dict]:
    with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture
def batch_dir(photo_dir, tmp_path):  # type: ignore[no-untyped-def]
    d = tmp_path / "inputs"
    shutil.copytree(photo_dir, d)
    (d / "sub").mkdir()
    shutil.move(str(d / "rocket.jpg"), str(d / "sub" / "rocket.jpg"))
    (d / "broken.jpg").write_bytes(b"not a jpeg")
    return d


def test_folder_manifest_failures_and_resume(batch_dir, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import video_iba.workflows.session as session

    loads = []
    real_load = session.load_model
    monkeypatch.setattr(session, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    out = str(tmp_path / "out")
    code, stdout, err = run_cli(["explain", str(batch_dir), "--method", "saliency", "--out", out], capsys)
    assert code == 0, err
    assert "4 inputs: 3 explained, 0 done before, 1 failed" in stdout
    assert len(loads) == 1  # one model for the whole batch
    # the shared model gives the last input the map it gets on its own
    alone = str(tmp_path / "alone")
    assert run_cli(["explain", str(batch_dir / "sub" / "rocket.jpg"), "--method", "saliency", "--out", alone], capsys)[0] == 0
    with np.load(os.path.join(out, "sub", "rocket.npz")) as a, np.load(os.path.join(alone, "rocket.npz")) as b:
        assert np.array_equal(a["values"], b["values"])
    rows = {os.path.basename(r["input"]): r for r in _manifest(out)}
    assert set(rows) == {"broken.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"}
    assert rows["broken.jpg"]["status"].startswith("error: ") and "broken.jpg" in rows["broken.jpg"]["status"]
    ok = rows["rocket.jpg"]
    assert ok["status"] == "ok" and ok["output"][0] == os.path.join(out, "sub", "rocket.png")  # mirrors the folder
    assert all(os.path.exists(p) for r in rows.values() if r["status"] == "ok" for p in r["output"])
    assert ok["seconds"] > 0 and isinstance(ok["target"], int) and ok["label"] and ok["total_bits"] is None
    before = os.path.getmtime(os.path.join(out, "chelsea.png"))
    # a rerun skips what is done and tries the failure again
    code, stdout, err = run_cli(["explain", str(batch_dir), "--method", "saliency", "--out", out], capsys)
    assert code == 0, err
    assert "4 inputs: 0 explained, 3 done before, 1 failed" in stdout
    assert os.path.getmtime(os.path.join(out, "chelsea.png")) == before
    assert len(_manifest(out)) == 4 and not [n for n in os.listdir(out) if n.startswith("manifest.rank")]


def test_photos_fitted_together_get_their_maps_alone(batch_dir, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fast = ["--model", "resnet18", "--weights", "random", "--steps", "3", "--samples", "2"]
    alone = str(tmp_path / "alone")
    assert run_cli(["explain", str(batch_dir), *fast, "--batch-size", "1", "--out", alone], capsys)[0] == 0
    out = str(tmp_path / "out")
    with monkeypatch.context() as patched:
        break_one_photo(patched, "coffee.jpg")
        code, stdout, err = run_cli(["explain", str(batch_dir), *fast, "--batch-size", "2", "--out", out], capsys)
    assert code == 0, err
    assert "4 inputs: 2 explained, 0 done before, 2 failed" in stdout  # broken.jpg, and coffee.jpg's own bug
    rows = {os.path.basename(r["input"]): r for r in _manifest(out)}
    assert rows["coffee.jpg"]["status"].startswith("error: ZeroDivisionError")
    assert rows["rocket.jpg"]["status"] == "ok" and rows["rocket.jpg"]["inputs_per_fit"] == 2  # fitted with coffee
    assert rows["chelsea.jpg"]["inputs_per_fit"] == 1  # its group's other input could not be read
    for name in ("chelsea", "sub/rocket"):
        with np.load(os.path.join(out, f"{name}.npz")) as a, np.load(os.path.join(alone, f"{name}.npz")) as b:
            assert np.corrcoef(a["values"].ravel(), b["values"].ravel())[0, 1] >= 0.999
            assert abs(a["values"].sum() / b["values"].sum() - 1) < 1e-3
    code, stdout, err = run_cli(["explain", str(batch_dir), *fast, "--batch-size", "3", "--out", out], capsys)
    assert code == 0, err  # the batch size changes no result: what is done stays done
    assert "4 inputs: 1 explained, 2 done before, 1 failed" in stdout


def test_list_file_and_a_killed_run(batch_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two photos and a missing file\n{batch_dir / 'chelsea.jpg'}\ninputs/coffee.jpg\n\n"
                       "inputs/missing.jpg\n")
    out = tmp_path / "out"
    out.mkdir()
    # what a killed run leaves: one finished line and one cut in the middle
    (out / "manifest.rank0.jsonl").write_text(json.dumps({"input": str(batch_dir / "chelsea.jpg"), "status": "ok"})
                                              + "\n" + '{"input": "x", "sta')
    code, stdout, err = run_cli(["explain", str(listing), "--method", "gradcam", "--out", str(out)], capsys)
    assert code == 0, err
    assert "3 inputs: 1 explained, 1 done before, 1 failed" in stdout
    rows = {os.path.basename(r["input"]): r["status"] for r in _manifest(str(out))}
    assert rows["chelsea.jpg"] == "ok" and rows["coffee.jpg"] == "ok" and "does not exist" in rows["missing.jpg"]
    # an input listed twice (by another path to it) is explained once, under its own name (was twice, as coffee.jpg.png)
    twice = tmp_path / "twice.txt"
    twice.write_text("inputs/coffee.jpg\ninputs/../inputs/coffee.jpg\n")
    code, stdout, err = run_cli(["explain", str(twice), "--method", "random", "--out", str(tmp_path / "o2")], capsys)
    assert code == 0 and "1 input: 1 explained" in stdout and "1 entry of " in err and "listed before" in err
    assert sorted(os.listdir(tmp_path / "o2" / "inputs")) == ["coffee.npz", "coffee.png"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    code, _, err = run_cli(["explain", str(empty), "--out", str(out)], capsys)
    assert code == 2 and "names no inputs" in err


def test_batch_on_two_gloo_processes(batch_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "out")
    run = torchrun(["explain", str(batch_dir), "--method", "saliency", "--vmax", "shared", "--out", out])
    assert run.returncode == 0, run.stderr[-3000:]
    assert "4 inputs: 3 explained, 0 done before, 1 failed" in run.stdout
    assert run.stdout.count("one colour scale for all") == 1 and "(2 drawn again for it)" in run.stdout
    scales = [_scale(p) for r in _manifest(out) for p in r.get("output", []) if p.endswith(".npz")]
    assert len(scales) == 3 and {drawn for drawn, _ in scales} == {max(peak for _, peak in scales)}  # over both ranks
    rows = _manifest(out)
    assert sorted(os.path.basename(r["input"]) for r in rows) == ["broken.jpg", "chelsea.jpg", "coffee.jpg",
                                                                   "rocket.jpg"]
    assert {r["rank"] for r in rows} == {0, 1}  # shared out, each input once


def test_a_checkpoint_rewritten_in_place_explains_the_folder_again(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import torch
    import torchvision

    ckpt = tmp_path / "net.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), ckpt)
    out = str(tmp_path / "maps")
    args = ["explain", photo_dir, "--model", "resnet18", "--weights", str(ckpt), "--method", "saliency", "--out", out]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "3 inputs: 3 explained" in stdout, err
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "0 explained, 3 done before" in stdout, err
    torch.manual_seed(1)  # the file at the same path now holds other weights
    torch.save(torchvision.models.resnet18().state_dict(), ckpt)
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "3 explained (3 again as the settings changed)" in stdout, err


def test_options_for_videos_only_explain_the_videos_of_a_folder_again(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ..videos import encode, moving_square

    d = tmp_path / "mixed"
    d.mkdir()
    shutil.copy(os.path.join(photo_dir, "coffee.jpg"), d / "coffee.jpg")
    encode(str(d / "clip.mp4"), frames=20, size=(112, 112), fps=10, content=moving_square)
    out = str(tmp_path / "out")
    base = ["explain", str(d), "--weights", "random", "--method", "saliency", "--out", out]

    def run(*extra: str) -> tuple[str, dict[str, dict]]:
        code, stdout, err = run_cli([*base, *extra], capsys)
        assert code == 0, err
        return stdout.splitlines()[0], {os.path.basename(r["input"]): r for r in _manifest(out)}

    first, rows = run()
    assert first.startswith("2 inputs: 2 explained")
    photo = os.path.getmtime(os.path.join(out, "coffee.png"))
    # the clip's rate, length, range and sheet decide nothing about the photo: the clip alone is explained again
    for extra in (["--sampling-rate", "4"], ["--frames", "4"],
                  ["--end", "1", "--keyframes", "2", "--layout", "overlay"]):
        line, rows = run(*extra)
        assert "1 explained (1 again as the settings changed), 1 done before" in line, line
        assert os.path.getmtime(os.path.join(out, "coffee.png")) == photo
    assert os.path.exists(os.path.join(out, "clip-keyframes.png"))
    assert rows["coffee.jpg"]["settings"] != rows["clip.mp4"]["settings"]
    # an option for both explains both again
    line, _ = run("--end", "1", "--keyframes", "2", "--layout", "overlay", "--target", "3")
    assert "2 explained (2 again as the settings changed)" in line, line


def _scale(npz: str) -> tuple[float, float]:
    """The top of the colour scale an output is drawn with, and its map's largest value drawn."""
    from video_iba.results import load

    res = load(npz)
    values = res.values.numpy() if hasattr(res.values, "numpy") else np.asarray(res.values)
    return float(res.meta["vmax"]), float(res.unit.magnitude(values).max())


def _bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def test_a_folder_on_one_colour_scale(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "out")
    args = ["explain", photo_dir, "--method", "saliency", "--vmax", "shared", "--out", out]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    scales = {n: _scale(os.path.join(out, f"{n}.npz")) for n in ("chelsea", "coffee", "rocket")}
    top = max(peak for _drawn, peak in scales.values())
    assert all(drawn == top for drawn, _peak in scales.values())  # every one at the largest value of all
    assert sum(peak < top for _drawn, peak in scales.values()) == 2
    assert f"one colour scale for all: 0 to {top:.4g}, the largest value of their maps (2 drawn again for it)" in stdout
    # drawn as explain draws the photo alone with that number
    low = min(scales, key=lambda n: scales[n][1])
    alone = str(tmp_path / "alone")
    assert run_cli(["explain", os.path.join(photo_dir, f"{low}.jpg"), "--method", "saliency", "--vmax", repr(top),
                    "--out", alone], capsys)[0] == 0
    assert _bytes(os.path.join(out, f"{low}.png")) == _bytes(os.path.join(alone, f"{low}.png"))
    # a rerun with nothing new draws nothing again
    before = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out) if n.endswith(".png")}
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "0 explained, 3 done before" in stdout and "(0 drawn again for it)" in stdout, err
    assert before == {n: os.path.getmtime(os.path.join(out, n)) for n in before}
    # one file has no other to share a scale with
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "coffee.jpg"), "--vmax", "shared", "--out",
                            str(tmp_path / "one")], capsys)
    assert code == 2 and "--vmax shared puts the outputs of a folder or a .txt list" in err
    assert "coffee.jpg' is one file; give a number" in err and not os.path.exists(tmp_path / "one")


def test_videos_of_a_folder_on_one_colour_scale(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ..videos import encode, moving_square

    d = tmp_path / "clips"
    d.mkdir()
    encode(str(d / "a.mp4"), frames=20, size=(112, 112), fps=10, content=moving_square)
    encode(str(d / "b.mp4"), frames=30, size=(160, 112), fps=15, content=lambda i, s: moving_square(i, s)[::-1])
    fast = ["--model", "r3d_18", "--weights", "random", "--method", "saliency", "--keyframes", "2"]
    out = str(tmp_path / "out")
    code, stdout, err = run_cli(["explain", str(d), *fast, "--vmax", "shared", "--out", out], capsys)
    assert code == 0, err
    scales = {n: _scale(os.path.join(out, f"{n}.npz")) for n in ("a", "b")}
    top = max(peak for _drawn, peak in scales.values())
    assert {drawn for drawn, _peak in scales.values()} == {top} and "(1 drawn again for it)" in stdout
    low = min(scales, key=lambda n: scales[n][1])
    alone = str(tmp_path / "alone")
    code, _, err = run_cli(["explain", str(d / f"{low}.mp4"), *fast, "--vmax", repr(top), "--out", alone], capsys)
    assert code == 0, err
    for name in (f"{low}.mp4", f"{low}-keyframes.png"):
        assert _bytes(os.path.join(out, name)) == _bytes(os.path.join(alone, name)), name


def test_drawing_processes_draw_what_one_process_draws(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ..helpers import read_npz
    from ..videos import encode, moving_square

    d = tmp_path / "in"
    d.mkdir()
    encode(str(d / "a.mp4"), frames=12, size=(112, 112), fps=10, content=moving_square)
    encode(str(d / "b.mp4"), frames=10, size=(144, 112), fps=12, content=lambda i, s: moving_square(i, s)[::-1])
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(os.path.join(photo_dir, name), d / name)
    args = ["explain", str(d), "--method", "saliency", "--keyframes", "2"]
    outs = {n: str(tmp_path / f"out{n}") for n in (1, 2)}
    for n, out in outs.items():
        code, stdout, err = run_cli([*args, "--workers", str(n), "--out", out], capsys)
        assert code == 0, err
        assert "4 inputs: 4 explained, 0 done before, 0 failed" in stdout
    names = sorted(os.listdir(outs[1]))
    assert names == sorted(os.listdir(outs[2])) and "a-keyframes.png" in names and "chelsea.png" in names
    for name in names:
        one, two = (os.path.join(out, name) for out in outs.values())
        if name.endswith(".npz"):  # the same maps and metadata but for the seconds each step took
            a, b = read_npz(one), read_npz(two)
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a
                                                if k != "meta" and "seconds" not in k), name
            ma, mb = (json.loads(str(x["meta"])) for x in (a, b))
            assert {k: v for k, v in ma.items() if "seconds" not in k} == \
                   {k: v for k, v in mb.items() if "seconds" not in k}, name
        elif name != "manifest.jsonl":
            assert _bytes(one) == _bytes(two), name  # the MP4s, figures and keyframe sheets byte for byte
    lines = [{r["input"]: r for r in _manifest(out)} for out in outs.values()]
    for key in ("status", "target", "label"):
        assert {p: r[key] for p, r in lines[0].items()} == {p: r[key] for p, r in lines[1].items()}, key
    written = [{p: [os.path.relpath(o, out) for o in r["output"]] for p, r in rows.items()}
               for out, rows in zip(outs.values(), lines)]
    assert written[0] == written[1] and sorted(written[1][str(d / "a.mp4")]) == ["a-keyframes.png", "a.mp4", "a.npz"]
    assert all(r["seconds"] > 0 for r in lines[1].values())
    # a rerun resumes: every input done, nothing drawn
    code, stdout, err = run_cli([*args, "--workers", "2", "--out", outs[2]], capsys)
    assert code == 0 and "0 explained, 4 done before" in stdout, err
    for extra, message in ((["--maps-only"], "--workers draws the outputs and --maps-only draws none; drop one"),
                           ([], "--workers draws the outputs of a folder or list of inputs and")):
        target = str(d / "a.mp4") if not extra else str(d)
        code, _, err = run_cli(["explain", target, "--method", "saliency", "--workers", "2", *extra, "--out",
                                str(tmp_path / "no")], capsys)
        assert code == 2 and message in err and not (tmp_path / "no").exists(), err


def test_a_drawing_that_fails_is_recorded_and_a_process_that_ended_stops_the_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    import video_iba
    from video_iba.workflows.batch import Drawing, run_batch

    inputs = [str(tmp_path / f"{n}.jpg") for n in "abc"]

    def drawn(outcome: object) -> Future:
        future: Future = Future()
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
        return future

    outcomes = {"a": ([str(tmp_path / "a.png"), str(tmp_path / "a.npz")], 0.5), "b": OSError("disk full"),
                "c": ([str(tmp_path / "c.png")], 0.25)}

    def explain_group(paths, subs):  # type: ignore[no-untyped-def]
        return [Drawing({"output": ["maps only"], "target": 1}, drawn(outcomes[os.path.basename(p)[0]])) for p in paths]

    out = str(tmp_path / "out")
    os.makedirs(out)
    counts = run_batch(inputs, str(tmp_path), out, explain_group)
    assert (counts["done"], counts["failed"]) == (2, 1)
    rows = {os.path.basename(r["input"]): r for r in _manifest(out)}
    assert rows["a.jpg"]["output"] == outcomes["a"][0] and rows["a.jpg"]["target"] == 1  # type: ignore[index]
    assert rows["a.jpg"]["seconds"] >= 0.5 and rows["b.jpg"]["status"] == "error: OSError: disk full"
    outcomes["a"] = BrokenProcessPool("a child process terminated abruptly")
    with pytest.raises(video_iba.UserInputError, match="a drawing process ended abruptly"):
        run_batch(inputs, str(tmp_path), out, explain_group)
