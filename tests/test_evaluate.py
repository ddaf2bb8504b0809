"""`video-iba evaluate`: tables, resuming, annotations and bad input."""

from __future__ import annotations

import json
import os

import pytest

from video_iba.cli import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _lines(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_synthetic_evaluation_writes_tables_and_resumes(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "ev")
    argv = ["evaluate", "synthetic", "--clips", "2", "--methods", "random,saliency", "--out", out]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    for name in ("results.md", "results.csv", "results.json", "scores.jsonl", "degradation8.png"):
        assert os.path.exists(os.path.join(out, name)), name
    scores = _lines(os.path.join(out, "scores.jsonl"))
    assert len(scores) == 2 * 2 * 3  # clips x methods x (degradation8, hit_ratio, temporal_share)
    table = json.load(open(os.path.join(out, "results.json")))
    rnd = [t for t in table if t["method"] == "random" and t["metric"] == "hit_ratio"][0]
    assert rnd["n"] == 2 and rnd["ci_low"] <= rnd["mean"] <= rnd["ci_high"] and rnd["mean"] < 0.05
    assert "| saliency |" in stdout
    # an interrupted run: the last line half written; the rerun keeps the finished scores and adds one clip
    with open(os.path.join(out, "scores.jsonl"), "a", encoding="utf-8") as fh:
        fh.write('{"item": "clip100001", "meth')
    code, _, err = _run(["evaluate", "synthetic", "--clips", "3", "--methods", "random,saliency", "--out", out], capsys)
    assert code == 0, err
    assert "unfinished last score" in err
    items = _lines(os.path.join(out, "scores.jsonl"))
    assert len(items) == 3 * 2 * 3 and len({(r["item"], r["method"], r["metric"]) for r in items}) == 18


def test_image_folder_with_annotations(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    files = sorted(os.listdir(photo_dir))
    ann = tmp_path / "boxes.json"
    ann.write_text(json.dumps({files[0]: {"box": [10, 10, 120, 90]}}))
    out = str(tmp_path / "ev")
    code, stdout, err = _run(["evaluate", photo_dir, "--methods", "random,gradcam", "--metrics", "hit_ratio",
                              "--annotations", str(ann), "--out", out], capsys)
    assert code == 0, err
    scores = _lines(os.path.join(out, "scores.jsonl"))
    assert {r["item"] for r in scores} == {files[0]} and len(scores) == 2  # only the annotated photo has a box


@pytest.mark.parametrize("extra, message", [
    (["--metrics", "auc"], "unknown metric 'auc'"),
    (["--methods", "lime"], "unknown method 'lime'"),
    (["--clips", "0"], "expected an integer > 0"),
])
def test_bad_evaluation_arguments(extra, message, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = _run(["evaluate", "synthetic", "--out", str(tmp_path / "ev"), *extra], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_annotations_and_empty_folders(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    files = sorted(os.listdir(photo_dir))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"nothere.jpg": {"box": [0, 0, 5, 5]}}))
    code, _, err = _run(["evaluate", photo_dir, "--annotations", str(wrong), "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "not inputs: nothere.jpg" in err
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({files[0]: {"box": [0, 0, 99999, 5]}}))
    code, _, err = _run(["evaluate", photo_dir, "--annotations", str(outside), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "lies outside" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run(["evaluate", str(empty), "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "no images" in err
