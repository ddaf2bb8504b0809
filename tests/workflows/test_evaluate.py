"""`video-iba evaluate`: tables, resuming, annotations and bad input."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import video_iba
import video_iba.cli
import video_iba.workflows.evaluate as evaluate_workflow

from ..helpers import run_cli, read_jsonl


def progress_lines(err: str) -> list[str]:
    return [line.rsplit(",", 1)[0] for line in err.splitlines() if line.startswith("video-iba: evaluating:")]


def test_synthetic_evaluation_writes_tables_and_resumes(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(video_iba.cli, "PROGRESS_EVERY", 0.0)  # a progress line for every map
    out = str(tmp_path / "ev")
    argv = ["evaluate", "synthetic", "--clips", "2", "--methods", "random,saliency", "--out", out]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert progress_lines(err) == [f"video-iba: evaluating: {n}/4 map(s)" for n in (1, 2, 3, 4)]
    with Image.open(os.path.join(out, "degradation8.png")) as plot:  # MoRF | LeRF side by side
        assert plot.size[0] > plot.size[1] > 200
    with open(os.path.join(out, "results.csv"), encoding="utf-8") as fh:
        rows = fh.read().splitlines()
    assert rows[0] == "method,metric,mean,ci_low,ci_high,n" and len(rows) == 1 + 2 * 3
    with open(os.path.join(out, "results.md"), encoding="utf-8") as fh:
        assert "| random |" in fh.read()
    scores = read_jsonl(os.path.join(out, "scores.jsonl"))
    assert len(scores) == 2 * 2 * 3  # clips x methods x (degradation8, hit_ratio, temporal_share)
    table = json.load(open(os.path.join(out, "results.json")))
    rnd = [t for t in table if t["method"] == "random" and t["metric"] == "hit_ratio"][0]
    assert rnd["n"] == 2 and rnd["ci_low"] <= rnd["mean"] <= rnd["ci_high"] and rnd["mean"] < 0.05
    assert "| saliency |" in stdout and "Seconds per input" in stdout
    cost = {c["method"]: c for c in json.load(open(os.path.join(out, "cost.json")))}
    assert cost["saliency"]["inputs"] == 2 and cost["saliency"]["attribution_s"] > 0
    assert set(cost["random"]["metric_s"]) == {"degradation8", "hit_ratio", "temporal_share"}
    # an interrupted run: the last line half written; the rerun keeps the finished scores and adds one clip
    with open(os.path.join(out, "scores.jsonl"), "a", encoding="utf-8") as fh:
        fh.write('{"item": "clip100001", "meth')
    code, _, err = run_cli(["evaluate", "synthetic", "--clips", "3", "--methods", "random,saliency", "--out", out], capsys)
    assert code == 0, err
    assert "unfinished last score" in err
    # the maps scored before count as done: the count reaches the total once
    assert progress_lines(err) == [f"video-iba: evaluating: {n}/6 map(s)" for n in range(1, 7)]
    items = read_jsonl(os.path.join(out, "scores.jsonl"))
    assert len(items) == 3 * 2 * 3 and len({(r["item"], r["method"], r["metric"]) for r in items}) == 18


def test_a_method_the_models_cannot_take_is_refused_before_anything_is_scored(photo_dir, tmp_path, capsys,
                                                                             monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def no_statistics(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("statistics were estimated before the evaluation was refused")

    monkeypatch.setattr(evaluate_workflow, "_synthetic_statistics", no_statistics)
    code, _, err = run_cli(["evaluate", "synthetic", "--clips", "2", "--methods", "iba,lrp", "--out",
                            str(tmp_path / "s")], capsys)
    assert code == 2 and "LRP is available for images only" in err and not (tmp_path / "s").exists()
    code, _, err = run_cli(["evaluate", photo_dir, "--methods", "saliency,guided_gradcam", "--out",
                            str(tmp_path / "f")], capsys)  # EfficientNet-Lite0's activations are ReLU6
    assert code == 2 and "Guided Grad-CAM rewrites nn.ReLU modules" in err
    assert not (tmp_path / "f" / "scores.jsonl").exists()


def test_image_folder_with_annotations(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    files = sorted(os.listdir(photo_dir))
    ann = tmp_path / "boxes.json"
    # with a byte-order mark, as some Windows editors write (was refused as a JSONDecodeError)
    ann.write_bytes(("\ufeff" + json.dumps({files[0]: {"box": [10, 10, 120, 90]}})).encode("utf-8"))
    out = str(tmp_path / "ev")
    code, stdout, err = run_cli(["evaluate", photo_dir, "--methods", "random,gradcam", "--metrics", "hit_ratio",
                              "--annotations", str(ann), "--out", out], capsys)
    assert code == 0, err
    scores = read_jsonl(os.path.join(out, "scores.jsonl"))
    assert {r["item"] for r in scores} == {files[0]} and len(scores) == 2  # only the annotated photo has a box


def test_a_box_reaching_past_the_frame_is_clipped_and_an_empty_one_refused(photo_dir, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from video_iba.evaluation.datasets import folder_items

    def box_of(box: list[float]) -> np.ndarray:
        ann = tmp_path / "a.json"
        ann.write_text(json.dumps({"chelsea.jpg": {"box": box}}))  # 451 x 300 pixels
        return {i.name: i for i in folder_items(photo_dir, "efficientnet_lite0", str(ann))}["chelsea.jpg"].boxes

    with caplog.at_level("WARNING"):
        past = box_of([-5, 100, 460, 300])
    assert "reaches past its 451x300 pixels; clipped to [0, 100, 451, 300]" in caplog.text
    np.testing.assert_allclose(past, box_of([0, 100, 451, 300]))
    for box, message in (([10, 10, 5, 20], r"is empty; give its corners \[x0, y0, x1, y1\]"),
                         ([500, 0, 600, 5], "lies outside its 451x300 pixels")):
        with pytest.raises(video_iba.UserInputError, match=message):
            box_of(box)


@pytest.mark.parametrize("extra, message", [
    (["--metrics", "auc"], "unknown metric 'auc'"),
    (["--methods", "lime"], "unknown method 'lime'"),
    (["--clips", "0"], "expected an integer > 0"),
])
def test_bad_evaluation_arguments(extra, message, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_cli(["evaluate", "synthetic", "--out", str(tmp_path / "ev"), *extra], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_annotations_and_empty_folders(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    files = sorted(os.listdir(photo_dir))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"nothere.jpg": {"box": [0, 0, 5, 5]}}))
    code, _, err = run_cli(["evaluate", photo_dir, "--annotations", str(wrong), "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "not inputs: nothere.jpg" in err
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({files[0]: {"box": [99999, 0, 100000, 5]}}))
    code, _, err = run_cli(["evaluate", photo_dir, "--annotations", str(outside), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "lies outside" in err
    code, _, err = run_cli(["evaluate", photo_dir, "--metrics", "hit_ratio", "--out", str(tmp_path / "n")], capsys)
    assert code == 2 and "no input of the folder can be scored with hit_ratio: it needs --annotations" in err
    assert not os.path.exists(tmp_path / "n")  # refused before anything is computed or written
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({files[0]: {"box": [100, 100, 200, 200]}}))
    code, _, err = run_cli(["evaluate", photo_dir, "--metrics", "hit_ratio,temporal_share", "--annotations", str(boxes),
                            "--out", str(tmp_path / "n")], capsys)
    assert code == 2 and "can be scored with temporal_share: it needs --annotations with videos annotated" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["evaluate", str(empty), "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "no images" in err


def test_randomisation_and_sensitivity_plots_and_iba_restatistics(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from video_iba.evaluation import synthetic

    monkeypatch.setattr(synthetic, "SYNTHETIC_STATS_SEEDS", range(50_000, 50_050))  # a smaller dataset, same code path
    estimated: list[int] = []
    real_estimate = evaluate_workflow.estimate

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        estimated.append(1)
        return real_estimate(*args, **kwargs)

    monkeypatch.setattr(evaluate_workflow, "estimate", counted)
    out = str(tmp_path / "ev")
    code, stdout, err = run_cli(["evaluate", "synthetic", "--clips", "2", "--methods", "iba,saliency", "--metrics",
                              "randomisation,sensitivity_n", "--masks", "5", "--draws", "2", "--layer", "block2",
                                 "--out", out], capsys)
    assert code == 0, err
    for name in ("randomisation.png", "sensitivity_n.png"):
        assert os.path.getsize(os.path.join(out, name)) > 1000, name
    rows = {(r["method"], r["metric"]): r for r in read_jsonl(os.path.join(out, "scores.jsonl"))}
    iba, sal = rows[("iba", "randomisation")], rows[("saliency", "randomisation")]
    assert iba["stages"] == ["fc", "block3", "block2", "block1"] and len(iba["ssim"]) == 4
    assert iba["reestimated"] == ["block1", "block2"] and sal["reestimated"] == []  # IBA sits at block2
    # the statistics: once for the model, then once per re-estimated stage and draw for both clips (not per clip)
    assert len(estimated) == 1 + 2 * 2
    draws = np.asarray(iba["ssim_draws"])  # two draws of the randomised weights: the value is their mean
    assert draws.shape == (2, 4) and not np.allclose(draws[0], draws[1])
    assert iba["ssim"] == pytest.approx(draws.mean(axis=0), abs=1e-5) and iba["value"] == pytest.approx(draws.mean(), abs=1e-5)
    assert json.load(open(os.path.join(out, "evaluation.json")))["randomisation_draws"] == 2
    code, _, err = run_cli(["evaluate", "synthetic", "--clips", "1", "--metrics", "degradation8", "--draws", "2",
                            "--out", str(tmp_path / "d")], capsys)
    assert code == 2 and "--draws counts the draws of the metric randomisation" in err
    assert all(-1 <= v <= 1 for v in iba["ssim"] + sal["ssim"])
    sn = rows[("iba", "sensitivity_n")]
    assert sn["n"][0] == 1 and sn["n"] == sorted(sn["n"]) and len(sn["pearson"]) == len(sn["n"])
    assert "| iba |" in stdout and "randomisation" in stdout


def test_video_folder_boxes_map_into_the_model_clip(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from video_iba.evaluation.datasets import folder_items
    from video_iba.io.clips import read_clip
    from video_iba.models import get_spec
    from video_iba.models import plan_crops

    from ..videos import encode, moving_square

    folder = tmp_path / "clips"
    folder.mkdir()
    encode(str(folder / "a.mp4"), frames=40, size=(160, 120), fps=20, content=moving_square)
    encode(str(folder / "b.mp4"), frames=40, size=(160, 120), fps=20, content=moving_square)
    ann = tmp_path / "boxes.json"
    ann.write_text(json.dumps({"a.mp4": {"box": [0, 0, 80, 120], "target": 3}}))
    items = folder_items(str(folder), "r3d_18", str(ann))
    spec = get_spec("r3d_18")
    bx0, _, bx1, _ = plan_crops(120, 160, spec, "center").tiles[0].box
    a, b = items
    assert a.name == "a.mp4" and a.target == 3 and a.x is None  # read when scored, not held for the whole folder
    x = a.loaded().x
    assert tuple(x.shape) == (1, 3, 16, 112, 112) and torch.equal(x, read_clip(str(folder / "a.mp4"), spec, None)[0])
    assert a.boxes is not None and a.boxes.shape == (16, 4) and b.boxes is None and b.target is None
    np.testing.assert_allclose(a.boxes[5], [0, 0, (80 - bx0) * 112 / (bx1 - bx0), 112], atol=1e-6)
    out = str(tmp_path / "ev")
    code, stdout, err = run_cli(["evaluate", str(folder), "--model", "r3d_18", "--weights", "random", "--methods",
                              "random,saliency", "--metrics", "hit_ratio", "--annotations", str(ann), "--out", out],
                             capsys)
    assert code == 0, err
    scores = read_jsonl(os.path.join(out, "scores.jsonl"))
    assert {(r["item"], r["method"]) for r in scores} == {("a.mp4", "random"), ("a.mp4", "saliency")}
    # a video model on a folder of photos, and a synthetic run given a model: clear errors
    code, _, err = run_cli(["evaluate", str(tmp_path / "ev"), "--model", "r3d_18", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "no videos" in err
    code, _, err = run_cli(["evaluate", "synthetic", "--model", "r3d_18", "--out", str(tmp_path / "y")], capsys)
    assert code == 2 and "models are tubenet, tubevit, not 'r3d_18'" in err


def test_the_synthetic_benchmark_scores_its_video_transformer(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "ev")
    code, stdout, err = run_cli(["evaluate", "synthetic", "--model", "tubevit", "--clips", "2", "--methods",
                                 "iba,gradcam,rollout,gae", "--metrics", "hit_ratio,temporal_share", "--out", out],
                                capsys)
    assert code == 0, err
    scores = read_jsonl(os.path.join(out, "scores.jsonl"))
    assert {(r["method"], r["metric"]) for r in scores} == {(m, k) for m in ("iba", "gradcam", "rollout", "gae")
                                                            for k in ("hit_ratio", "temporal_share")}
    assert all(0 <= r["value"] <= 1 for r in scores) and len(scores) == 16
    # the attention methods read the network's blocks on its token grid (the benchmark gives the layout);
    # measured on these two clips: rollout 0.37 and 0.57, gae 0.083 and 0.097 (a random map 0.003)
    hits = {(r["item"], r["method"]): r["value"] for r in scores if r["metric"] == "hit_ratio"}
    assert all(v > (0.1 if m == "rollout" else 0.05) for (_, m), v in hits.items() if m in ("rollout", "gae"))
    out = str(tmp_path / "r")  # the readout shipped for TubeViT
    code, _, err = run_cli(["evaluate", "synthetic", "--model", "tubevit", "--clips", "2", "--methods", "readout",
                            "--metrics", "hit_ratio,temporal_share", "--out", out], capsys)
    assert code == 0, err
    rows = read_jsonl(os.path.join(out, "scores.jsonl"))
    assert len(rows) == 4 and all(0 <= r["value"] <= 1 for r in rows)
    assert all(r["value"] > 0.1 for r in rows if r["metric"] == "hit_ratio")  # it finds the target (random: 0.003)


def test_a_readout_trained_on_the_video_transformer_is_scored(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    ro = str(tmp_path / "ro")
    code, _, err = run_cli(["train-readout", "synthetic", "--model", "tubevit", "--clips", "8", "--epochs", "1",
                            "--batch-size", "8", "--validation", "none", "--out", ro], capsys)
    assert code == 0, err
    readout = video_iba.load_readout(os.path.join(ro, "readout.pt"), "tubevit")
    # the embedding's map and the token grid of the Grad-CAM block, its class token left out
    assert readout.spec.layers == ["embed"] and readout.spec.readouts == ["embed", "blocks.2"]
    grid = readout.spec.layouts(["embed", "blocks.2"])
    assert grid[0] is None and grid[1] is not None and (grid[1].grid, grid[1].prefix) == ((8, 8, 8), 1)
    out = str(tmp_path / "ev")
    code, _, err = run_cli(["evaluate", "synthetic", "--model", "tubevit", "--clips", "2", "--methods", "readout",
                            "--readout", os.path.join(ro, "readout.pt"), "--metrics", "hit_ratio,temporal_share",
                            "--out", out], capsys)
    assert code == 0, err
    scores = read_jsonl(os.path.join(out, "scores.jsonl"))
    assert len(scores) == 4 and all(0 <= r["value"] <= 1 and r["method"] == "readout" for r in scores)
    code, _, err = run_cli(["evaluate", "synthetic", "--clips", "1", "--methods", "readout", "--readout",
                            os.path.join(ro, "readout.pt"), "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "tubevit" in err and "Traceback" not in err  # a TubeViT readout on TubeNet


def test_bad_input_on_a_rerun_keeps_the_earlier_scores(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "ev")
    code, _, err = run_cli(["evaluate", "synthetic", "--clips", "1", "--methods", "random", "--out", out], capsys)
    assert code == 0, err
    path = os.path.join(out, "scores.jsonl")
    before = open(path, encoding="utf-8").read()
    for extra, message in ((["--metrics", "hit_ratio,auroc"], "unknown metric 'auroc'"),
                           (["--methods", "random,gradcamm"], "unknown method 'gradcamm'"),
                           (["--beta", "-1"], "expected a finite number > 0")):
        code, _, err = run_cli(["evaluate", "synthetic", "--clips", "1", "--out", out, *extra], capsys)
        assert code == 2 and message in err and "Traceback" not in err, (extra, err)
    assert open(path, encoding="utf-8").read() == before


def test_iba_scores_do_not_depend_on_the_items_fitted_together(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    values = {}
    for k in ("1", "3"):
        out = str(tmp_path / f"k{k}")
        code, _, err = run_cli(["evaluate", "synthetic", "--clips", "3", "--methods", "iba", "--metrics",
                                "hit_ratio,temporal_share", "--batch-size", k, "--device", "cpu", "--out", out], capsys)
        assert code == 0, err
        rows = read_jsonl(os.path.join(out, "scores.jsonl"))
        assert len(rows) == 6 and all(r["attribution_s"] > 0 for r in rows)
        values[k] = {(r["item"], r["metric"]): r["value"] for r in rows}
    assert values["1"].keys() == values["3"].keys()
    for key, v in values["1"].items():
        assert abs(values["3"][key] - v) < 0.02, key
    code, _, err = run_cli(["evaluate", "synthetic", "--clips", "1", "--methods", "iba", "--precision", "fp16",
                            "--device", "cpu", "--out", str(tmp_path / "h")], capsys)
    assert code == 2 and "--precision fp16 is slower than fp32 on cpu" in err and "Traceback" not in err


def test_a_rerun_resumes_only_with_the_same_settings(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "ev")
    base = ["evaluate", "synthetic", "--clips", "1", "--metrics", "hit_ratio", "--out", out]
    code, _, err = run_cli([*base, "--methods", "random,gradcam"], capsys)
    assert code == 0, err
    scores = os.path.join(out, "scores.jsonl")
    before = open(scores, encoding="utf-8").read()
    for extra, message in ((["--methods", "random,gradcam", "--cam-layer", "block2"],
                            "gradcam cam_layer was None, now 'block2'"),
                           (["--methods", "random", "--model", "tubevit"], "model was 'tubenet', now 'tubevit'")):
        code, _, err = run_cli([*base, *extra], capsys)
        assert code == 2 and message in err and "another output folder" in err and "Traceback" not in err, err
        assert open(scores, encoding="utf-8").read() == before  # nothing mixed in
    code, _, err = run_cli([*base, "--methods", "random,gradcam,saliency"], capsys)  # a method added: resumes
    assert code == 0, err
    assert sorted(r["method"] for r in read_jsonl(scores)) == ["gradcam", "random", "saliency"]
    record = json.load(open(os.path.join(out, "evaluation.json")))
    assert record["model"] == "tubenet" and set(record["methods"]) == {"random", "gradcam", "saliency"}
    code, _, err = run_cli(["evaluate", "synthetic", "--clips", "1", "--metrics", "hit_ratio", "--methods", "gradcam",
                            "--cam-layer", "block2", "--out", str(tmp_path / "b2")], capsys)
    assert code == 0, err
    other = read_jsonl(os.path.join(tmp_path / "b2", "scores.jsonl"))[0]["value"]
    first = [r for r in read_jsonl(scores) if r["method"] == "gradcam"][0]["value"]
    assert other != first  # Grad-CAM read another layer


def test_ibas_settings_are_used_recorded_and_kept_on_resume(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    base = ["evaluate", "synthetic", "--clips", "1", "--metrics", "hit_ratio", "--methods", "iba"]
    values = {}
    for name, extra in (("two", ["--steps", "2"]), ("default", [])):
        out = str(tmp_path / name)
        code, _, err = run_cli([*base, *extra, "--out", out], capsys)
        assert code == 0, err
        values[name] = read_jsonl(os.path.join(out, "scores.jsonl"))[0]["value"]
        record = json.load(open(os.path.join(out, "evaluation.json")))["methods"]["iba"]
        assert record["steps"] == (2 if extra else 10) and record["samples"] == 10 and record["beta"] == 10.0
    assert values["two"] != values["default"]  # two steps fit another map
    two = str(tmp_path / "two")
    config = tmp_path / "c.yaml"
    config.write_text("steps: 2\nbeta: 10\n")
    code, _, err = run_cli([*base, "--config", str(config), "--micro-batch", "5", "--out", two], capsys)
    assert code == 0, err  # the same settings (micro-batches give the same maps): resumed
    code, _, err = run_cli([*base, "--out", two], capsys)
    assert code == 2 and "iba steps was 2, now 10" in err and "Traceback" not in err
    code, _, err = run_cli([*base[:-1], "random", "--steps", "2", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--steps, --samples, --micro-batch or --config applies to the method iba only" in err
    with pytest.raises(video_iba.UserInputError, match="changes: unknown setting 'stepz'"):
        evaluate_workflow.evaluate_dataset(evaluate_workflow.Evaluation("synthetic", methods="iba", clips=1,
                                                                        changes={"stepz": 2}), str(tmp_path / "p"))


def test_an_iba_label_is_fitted_at_its_beta(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    values = {}
    for name, extra in (("label", ["--methods", "iba[beta=1000]"]), ("flag", ["--methods", "iba", "--beta", "1000"]),
                        ("default", ["--methods", "iba"])):
        out = str(tmp_path / name)
        code, _, err = run_cli(["evaluate", "synthetic", "--clips", "1", "--metrics", "hit_ratio", "--out", out,
                                *extra], capsys)
        assert code == 0, err
        values[name] = read_jsonl(os.path.join(out, "scores.jsonl"))[0]["value"]
    assert values["label"] == values["flag"] != values["default"]
    for label in ("iba[beta=0]", "saliency[beta=3]", "iba[steps=3]"):
        code, _, err = run_cli(["evaluate", "synthetic", "--methods", label, "--out", str(tmp_path / "x")], capsys)
        assert code == 2 and f"'{label}' is not a method label" in err and "Traceback" not in err


@pytest.mark.parametrize("extra, message", [
    (["--methods", "random,saliency", "--layer", "block2"], "--layer applies to the method iba only"),
    (["--methods", "random", "--beta", "3"], "--beta applies to the method iba only"),
    (["--methods", "random", "--batch-size", "2"], "--batch-size applies to the method iba only"),
    (["--methods", "iba,saliency", "--cam-layer", "block2"], "--cam-layer applies to gradcam and guided_gradcam"),
])
def test_settings_no_listed_method_uses_are_refused(extra, message, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_cli(["evaluate", "synthetic", "--clips", "1", "--out", str(tmp_path / "ev"), *extra], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "ev" / "scores.jsonl")


def test_video_tubes_and_intervals_fall_on_the_clip_frames_they_cover(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from video_iba.evaluation.datasets import folder_items
    from video_iba.io.clips import read_clip
    from video_iba.models import get_spec, plan_crops

    from ..videos import encode, moving_square

    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.mp4", "b.mp4", "sub/a.mp4"):
        encode(str(folder / name), frames=60, size=(160, 120), fps=20, content=moving_square)
    spec = get_spec("r3d_18")  # 16 frames every 2 at 30 fps: a clip spans 1.07 s
    ann = tmp_path / "tubes.json"
    ann.write_text(json.dumps({
        "a.mp4": {"tube": [[0.5, 0, 0, 40, 40], [0.9, 40, 0, 80, 40]], "start": 0.2, "target": 1},
        "b.mp4": {"box": [0, 0, 80, 120], "interval": [1.0, 1.5]},  # the middle clip: 0.97 .. 2.03 s
        "sub/a.mp4": {"box": [0, 0, 80, 120]}}))
    a, b, sub = folder_items(str(folder), "r3d_18", str(ann))
    assert (a.name, b.name, sub.name) == ("a.mp4", "b.mp4", "sub/a.mp4") and a.target == 1
    bx0, by0, bx1, by1 = plan_crops(120, 160, spec, "center").tiles[0].box
    sx, sy = 112 / (bx1 - bx0), 112 / (by1 - by0)
    times = np.asarray(read_clip(str(folder / "a.mp4"), spec, start=0.2)[1].times)
    inside = (times >= 0.5 - 0.025) & (times <= 0.9 + 0.025)  # within half a source frame (20 fps)
    assert a.interval is not None and 0 < inside.sum() < 16
    assert list(range(*a.interval)) == list(np.flatnonzero(inside))
    assert np.isnan(a.boxes[~inside]).all() and not np.isnan(a.boxes[inside]).any()
    for t in np.flatnonzero(inside):  # the keyframes' boxes, interpolated at the frame's time, in crop cells
        x0 = np.interp(times[t], [0.5, 0.9], [0, 40])
        want = [max(0.0, (x0 - bx0) * sx), 0, min(112.0, (x0 + 40 - bx0) * sx), (40 - by0) * sy]
        np.testing.assert_allclose(a.boxes[t], want, atol=1e-6)
    b_times = np.asarray(read_clip(str(folder / "b.mp4"), spec, start=None)[1].times)
    b_in = np.flatnonzero((b_times >= 1.0 - 0.025) & (b_times < 1.5 - 0.025))
    assert b.interval == (int(b_in[0]), int(b_in[-1]) + 1) and np.isnan(b.boxes[:b_in[0]]).all()
    assert sub.interval is None and not np.isnan(sub.boxes).any()  # a box alone holds in every frame
    late = tmp_path / "late.json"
    late.write_text(json.dumps({"b.mp4": {"box": [0, 0, 80, 120], "start": 10}}))
    with pytest.raises(video_iba.UserInputError, match=re.escape("annotation of 'b.mp4': \"start\" 10 s is after the "
                                                                 "video's last frame (2.95 s); give a start within")):
        folder_items(str(folder), "r3d_18", str(late))
    out = str(tmp_path / "ev")
    code, _, err = run_cli(["evaluate", str(folder), "--model", "r3d_18", "--weights", "random", "--methods", "random",
                            "--metrics", "hit_ratio,temporal_share", "--annotations", str(ann), "--out", out], capsys)
    assert code == 0, err
    scored = {(r["item"], r["metric"]) for r in read_jsonl(os.path.join(out, "scores.jsonl"))}
    assert scored == {("a.mp4", "hit_ratio"), ("a.mp4", "temporal_share"), ("b.mp4", "hit_ratio"),
                      ("b.mp4", "temporal_share"), ("sub/a.mp4", "hit_ratio")}
    # edited annotations are other ground truth: the folder's scores are not resumed with them
    edited = json.loads(ann.read_text())
    edited["b.mp4"]["interval"] = [1.0, 1.6]
    ann.write_text(json.dumps(edited))
    code, _, err = run_cli(["evaluate", str(folder), "--model", "r3d_18", "--weights", "random", "--methods", "random",
                            "--metrics", "hit_ratio,temporal_share", "--annotations", str(ann), "--out", out], capsys)
    assert code == 2 and "annotations_sha256 was" in err and "another output folder" in err
    # a folder scored when inputs were named by file name alone is not resumed under their paths
    record = os.path.join(out, "evaluation.json")
    old = json.load(open(record))
    del old["item_names"], old["annotations_sha256"]
    json.dump(old, open(record, "w"))
    code, _, err = run_cli(["evaluate", str(folder), "--model", "r3d_18", "--weights", "random", "--methods", "random",
                            "--metrics", "hit_ratio,temporal_share", "--annotations", str(ann), "--out", out], capsys)
    assert code == 2 and "scored under their file names alone, now under their paths" in err


def test_a_long_tube_is_scored_on_every_clip_covering_it(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from video_iba.evaluation.datasets import folder_items
    from video_iba.io.clips import read_clip, timeline
    from video_iba.models import get_spec

    from ..videos import encode, moving_square

    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("long.mp4", "short.mp4", "listed.mp4"):
        encode(str(folder / name), frames=100, size=(160, 120), fps=20, content=moving_square)  # 5 s
    spec = get_spec("r3d_18")  # a clip spans 1.07 s
    ann = tmp_path / "tubes.json"
    ann.write_text(json.dumps({
        "long.mp4": {"tube": [[0.5, 0, 0, 40, 40], [3.5, 100, 0, 140, 40]], "start": "tube"},
        "short.mp4": {"box": [0, 0, 80, 120], "interval": [2.0, 2.5], "start": "tube"},
        "listed.mp4": {"box": [0, 0, 80, 120], "interval": [1.0, 4.0], "start": [0.5, 3.0]}}))
    items = folder_items(str(folder), "r3d_18", str(ann))
    names = [i.name for i in items]
    # the tube's 0.5 .. 3.55 s: consecutive clips from its start, the last aligned to its end
    longs = [i for i in items if i.name.startswith("long.mp4@")]
    assert [n for n in names if n.startswith("long")] == ["long.mp4@0.50s", "long.mp4@1.55s", "long.mp4@2.50s"]
    assert names[-1] == "short.mp4" and names[:2] == ["listed.mp4@0.50s", "listed.mp4@3.00s"]
    windows = timeline(str(folder / "long.mp4")).windows(spec, start=0.5, end=3.55)  # as explain covers the range
    assert len(windows) == 3
    for item, w in zip(longs, windows):
        x, geo = read_clip(str(folder / "long.mp4"), spec, start=w.start)
        assert torch.equal(item.loaded().x, x)
        inside = (np.asarray(geo.times) >= 0.5 - 0.025) & (np.asarray(geo.times) <= 3.5 + 0.025)
        assert np.isnan(item.boxes[~inside]).all() and not np.isnan(item.boxes[inside]).any()
    assert geo.times[-1] >= 3.5 - 0.05  # the last clip reaches the tube's end
    # a tube shorter than a clip: one clip centred on it, so that the temporal share sees both sides
    (short,) = [i for i in items if i.name == "short.mp4"]
    assert short.interval is not None and 0 < short.interval[0] and short.interval[1] < 16
    out = str(tmp_path / "ev")
    code, _, err = run_cli(["evaluate", str(folder), "--model", "r3d_18", "--weights", "random", "--methods", "random",
                            "--metrics", "hit_ratio,temporal_share", "--annotations", str(ann), "--out", out], capsys)
    assert code == 0, err
    assert "only annotated frames" not in err  # the covering clips inside the tube are expected
    scored = {(r["item"], r["metric"]) for r in read_jsonl(os.path.join(out, "scores.jsonl"))}
    assert {("long.mp4@1.55s", "hit_ratio"), ("short.mp4", "temporal_share"),
            ("listed.mp4@3.00s", "temporal_share")} <= scored
    assert ("long.mp4@1.55s", "temporal_share") not in scored  # all its frames are the tube's


@pytest.mark.parametrize("entries, message", [
    ({"x.jpg": {"box": [0, 0, 5, 5]}}, "the annotation 'x.jpg' fits 2 inputs (a/x.jpg, b/x.jpg); key it by the "
                                       "input's path in the folder"),
    ({"a/x.jpg": {"box": [0, 0, 5, 5], "intervall": [0, 1]}}, "unknown key 'intervall' (did you mean 'interval'?)"),
    ({"a/x.jpg": {"tube": [[0, 0, 0, 5, 5]]}}, "'tube' applies to videos and the inputs are photos"),
    ({"a/x.jpg": {"target": 3}}, "needs \"box\": [x0, y0, x1, y1]"),
    ({"a/x.jpg": {"box": [0, 0, 5, 5]}, "b/x.jpg": {"box": [0, 0, 5]}}, "annotation of 'b/x.jpg' needs \"box\""),
])
def test_annotations_name_inputs_by_their_path_in_the_folder(entries, message, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from video_iba.evaluation.datasets import read_annotations

    path = tmp_path / "a.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(video_iba.UserInputError, match=re.escape(message)):
        read_annotations(str(path), ["a/x.jpg", "b/x.jpg", "c/y.jpg"])
    path.write_text(json.dumps({"./y.jpg": {"box": [0, 0, 5, 5]}, "a/./x.jpg": {"box": [1, 1, 5, 5]}}))
    assert set(read_annotations(str(path), ["a/x.jpg", "b/x.jpg", "c/y.jpg"])) == {"c/y.jpg", "a/x.jpg"}  # "./" too


@pytest.mark.parametrize("entry, message", [
    ({"tube": [[1.0, 0, 0, 5, 5], [0.5, 0, 0, 5, 5]]}, "keyframe times must be >= 0 and increasing"),
    ({"tube": [[0, 0, 0, 5, 5]], "interval": [0, 1]}, "a tube's keyframes give its times; drop \"interval\""),
    ({"box": [0, 0, 5, 5], "interval": [2, 1]}, "\"interval\" must be [t0, t1] in seconds with 0 <= t0 < t1"),
    ({"box": [0, 0, 5, 5], "start": -1}, "\"start\" must be a clip's start in seconds >= 0"),
    ({"box": [0, 0, 5, 5], "start": [1, 1]}, "a list of up to 64 distinct starts"),
    ({"box": [0, 0, 5, 5], "start": []}, "\"start\" must be a clip's start"),
    ({"box": [0, 0, 5, 5], "start": "tube"}, "\"start\": \"tube\" scores the clips covering the annotated times; give"),
    ({"box": [0, 0, 5, 5], "tube": [[0, 0, 0, 5, 5]]}, "not both"),
])
def test_bad_video_annotations_are_refused(entry, message, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from video_iba.evaluation.datasets import read_annotations

    path = tmp_path / "a.json"
    path.write_text(json.dumps({"v.mp4": entry}))
    with pytest.raises(video_iba.UserInputError, match=re.escape(message)):
        read_annotations(str(path), ["v.mp4"], video=True)


def test_a_checkpoint_rewritten_in_place_is_not_resumed(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import torch
    import torchvision

    ckpt = tmp_path / "net.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), ckpt)
    ann = tmp_path / "boxes.json"
    ann.write_text(json.dumps({"coffee.jpg": {"box": [100, 100, 300, 300]}}))
    out = str(tmp_path / "ev")
    args = ["evaluate", photo_dir, "--model", "resnet18", "--weights", str(ckpt), "--methods", "random",
            "--metrics", "hit_ratio", "--annotations", str(ann), "--out", out]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), ckpt)
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "weights_sha256 was" in err and "another output folder" in err


def test_an_input_that_fails_when_scored_is_recorded_and_the_run_goes_on(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ..videos import encode, moving_square

    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        encode(str(folder / name), frames=40, size=(160, 120), fps=20, content=moving_square)
    good = (folder / "b.mp4").read_bytes()
    broken = bytearray(good)  # its container reads, its frames do not: found only when it is scored
    start = broken.find(b"mdat") + 8
    broken[start:] = bytes(len(broken) - start)
    (folder / "b.mp4").write_bytes(bytes(broken))
    ann = tmp_path / "boxes.json"
    ann.write_text(json.dumps({name: {"box": [0, 0, 80, 120]} for name in ("a.mp4", "b.mp4")}))
    out = str(tmp_path / "ev")
    args = ["evaluate", str(folder), "--model", "r3d_18", "--weights", "random", "--methods", "random",
            "--metrics", "hit_ratio", "--annotations", str(ann), "--out", out]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert {r["item"] for r in read_jsonl(os.path.join(out, "scores.jsonl"))} == {"a.mp4"}
    (failure,) = read_jsonl(os.path.join(out, "failures.jsonl"))
    assert failure["item"] == "b.mp4" and failure["method"] is None and "cannot decode" in failure["error"]
    assert "Not scored: 1 input(s) failed" in stdout and "'b.mp4'" in stdout
    assert "Not scored" in open(os.path.join(out, "results.md")).read()
    # a rerun tries it again: repaired, it is scored, a is not scored twice, and no failure is left
    (folder / "b.mp4").write_bytes(good)
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert sorted(r["item"] for r in read_jsonl(os.path.join(out, "scores.jsonl"))) == ["a.mp4", "b.mp4"]
    assert not os.path.exists(os.path.join(out, "failures.jsonl")) and "Not scored" not in stdout
    # a third run has nothing to score and reads no input: a video broken since is not even noticed
    (folder / "a.mp4").write_bytes(bytes(broken))
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert not os.path.exists(os.path.join(out, "failures.jsonl")) and "Not scored" not in stdout


def test_the_benchmarks_statistics_are_estimated_once_per_weights_layers_device_and_threads(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from video_iba.evaluation.synthetic import SYNTHETIC_LAYER, load_tubenet

    calls = []

    def counted(model, batches, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw["layer"])
        return {"mean": torch.zeros(2), "estimate": len(calls)}

    monkeypatch.setattr(evaluate_workflow, "estimate", counted)
    monkeypatch.setattr(evaluate_workflow, "_SYNTHETIC_STATISTICS", {})
    model = load_tubenet()

    def stats(layers=(SYNTHETIC_LAYER,)):  # type: ignore[no-untyped-def]
        return evaluate_workflow._synthetic_statistics(model, "cpu", list(layers), [None] * len(layers))

    first = stats()
    first["mean"] += 1  # a caller changing its copy changes nothing kept
    again = stats()
    assert len(calls) == 1 and again["estimate"] == 1 and float(again["mean"].sum()) == 0
    stats(("block2",))  # another layer
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)  # another thread count rounds otherwise
    try:
        stats()
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)  # other weights
    stats()
    assert len(calls) == 4 and stats()["estimate"] == 4
