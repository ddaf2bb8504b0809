"""torch.distributed: estimation sharded over 2 gloo processes equals one process; Welford merging."""

from __future__ import annotations

import os

import pytest
import torch

import video_iba
from video_iba.bottleneck.estimator import Statistics, WelfordEstimator
from video_iba.cli import main

from .helpers import torchrun


def test_welford_merge_equals_one_pass() -> None:
    torch.manual_seed(0)
    data = torch.randn(23, 4, 3, 5) * 3 + 1
    data[:, 1] = 0.0  # an inactive channel
    whole = WelfordEstimator(pool=(1,))
    whole.update(data)
    parts = [WelfordEstimator(pool=(1,)) for _ in range(3)]
    for est, chunk in zip(parts, (data[:5], data[5:6], data[6:])):
        est.update(chunk)
    merged = WelfordEstimator(pool=(1,))
    for est in parts:
        merged.merge(est.state())
    merged.merge(WelfordEstimator(pool=(1,)).state())  # an empty shard changes nothing
    a, b = whole.finalize(), merged.finalize()
    assert merged.samples == 23 and merged.n == whole.n
    for k in ("mean", "std", "active"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="pooled"):
        WelfordEstimator(pool=()).merge(parts[0].state())


def test_estimate_on_two_processes_equals_one(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    single, double = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    assert main(["estimate", photo_dir, "--batch-size", "2", "--out", single]) == 0
    capsys.readouterr()
    run = torchrun(["estimate", photo_dir, "--batch-size", "2", "--out", double])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("estimated statistics") == 1  # rank 0 reports and writes
    a, b = Statistics.load(single), Statistics.load(double)
    assert a.samples == b.samples == 3  # every photo once: no padding, no duplicates
    assert b.meta["processes"] == 2 and a.meta["processes"] == 1
    # the same up to float32 rounding of the network's activations (batches differ between the runs)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(a.std, b.std, rtol=1e-4, atol=5e-5)
    assert torch.equal(a.active, b.active)


def test_evaluate_on_two_processes_scores_each_input_once_as_one_process_does(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json
    import os

    from .helpers import read_jsonl

    # a hit ratio needs no network pass beyond the explanation: the cheapest score (a degradation curve
    # took 5 s per map here); each photo gets its own box
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({name: {"box": [20 + 10 * i, 30, 200 + 20 * i, 250]}
                                 for i, name in enumerate(sorted(os.listdir(photo_dir)))}))
    args = [photo_dir, "--model", "efficientnet_lite0", "--methods", "random,saliency", "--metrics", "hit_ratio",
            "--annotations", str(boxes)]
    single, double = str(tmp_path / "one"), str(tmp_path / "two")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: other thread counts round the gradients otherwise, and a
    try:  # saliency map's near-equal cells can then swap places in the hit ratio's order
        assert main(["evaluate", *args, "--out", single]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    run = torchrun(["evaluate", *args, "--out", double])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("| method |") == 2  # rank 0 prints the tables once (scores, seconds)
    key = ("item", "method", "metric")
    one = {tuple(r[k] for k in key): r["value"] for r in read_jsonl(os.path.join(single, "scores.jsonl"))}
    rows = read_jsonl(os.path.join(double, "scores.jsonl"))
    two = {tuple(r[k] for k in key): r["value"] for r in rows}
    assert len(rows) == len(two) == 6 and two.keys() == one.keys()  # 3 photos x 2 methods, each scored once
    # the same scores up to float32 rounding
    assert all(two[k] == pytest.approx(one[k], rel=1e-5, abs=1e-6) for k in one)
    assert sorted(os.listdir(double)) == sorted(os.listdir(single))  # no rank's file left
    tables = [json.load(open(os.path.join(d, "results.json"))) for d in (single, double)]
    assert [(r["method"], r["metric"], r["n"]) for r in tables[0]] == [(r["method"], r["metric"], r["n"])
                                                                       for r in tables[1]]
    # a rerun resumes: nothing is scored again
    run = torchrun(["evaluate", *args, "--out", double])
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(read_jsonl(os.path.join(double, "scores.jsonl"))) == 6


def test_randomisation_on_more_ranks_than_inputs_scores_as_one_process(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import os

    from .helpers import read_jsonl

    # one clip on two ranks: rank 1 scores nothing, and rank 0 re-estimates IBA's statistics for the
    # randomised stages alone (they were combined across ranks, so rank 0 waited for rank 1 forever)
    args = ["evaluate", "synthetic", "--clips", "1", "--methods", "iba", "--metrics", "randomisation", "--steps", "3"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*args, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    run = torchrun([*args, "--out", str(tmp_path / "two")], timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (read_jsonl(os.path.join(str(tmp_path / d), "scores.jsonl")) for d in ("one", "two"))
    assert len(one) == len(two) == 1 and one[0]["reestimated"] and one[0]["reestimated"] == two[0]["reestimated"]
    assert two[0]["ssim"] == pytest.approx(one[0]["ssim"], abs=1e-4)  # the same statistics: one process's


def test_scores_of_ranks_merge_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from video_iba.evaluation.harness import merge_rank_scores

    rec = {"item": "a.jpg", "method": "random", "metric": "degradation8", "value": 0.1}
    (tmp_path / "scores.jsonl").write_text(json.dumps(rec) + "\n")
    # a merge cut short by a kill left rank 1's file after appending it: its score is not added twice
    (tmp_path / "scores.rank1.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "item": "b.jpg"}) + "\n")
    (tmp_path / "scores.rank0.jsonl").write_text(json.dumps({**rec, "item": "c.jpg"}) + "\n" + '{"item": "d.j')
    merge_rank_scores(str(tmp_path))
    lines = [json.loads(x) for x in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [r["item"] for r in lines] == ["a.jpg", "c.jpg", "b.jpg"]  # the cut line dropped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]


def test_one_input_under_torchrun_is_explained_once_by_the_first_process(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    photo = os.path.join(photo_dir, "chelsea.jpg")
    run = torchrun(["explain", photo, "--steps", "2", "--out", str(tmp_path / "o")])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote") == 2 and run.stdout.count("predicted:") == 1  # one PNG and one NPZ, once
    assert run.stderr.count("runs on the first process alone; 1 other started by torchrun has nothing") == 1
    assert video_iba.load(tmp_path / "o" / "chelsea.npz").total_bits > 0
    assert sorted(os.listdir(tmp_path / "o")) == ["chelsea.npz", "chelsea.png"]


def test_processes_whose_models_differ_before_the_layer_are_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import video_iba.methods.iba as iba

    from .nets import Tiny3D

    torch.manual_seed(0)
    net, data = Tiny3D().eval(), [torch.randn(2, 3, 8, 16, 16)]
    alone = video_iba.estimate(net, data, layer="block")
    others = {"same": lambda own: own, "none": lambda own: None,  # a process with no inputs
              "other": lambda own: (*own[:3], {k: "0" * 16 for k in own[3]})}  # other weights up to the layer
    monkeypatch.setattr(iba, "world_size", lambda: 2)
    for kind, other in others.items():
        monkeypatch.setattr(iba, "gather", lambda own, other=other: [own, other(own)])
        if kind == "other":
            with pytest.raises(video_iba.UserInputError, match="the processes' models give 'block' other weights; "
                                                               "load the same weights in every process"):
                video_iba.estimate(net, data, layer="block")
            continue
        merged = video_iba.estimate(net, data, layer="block")
        assert merged.meta["upstream_digest"] == alone.meta["upstream_digest"]
        assert merged.samples == (4 if kind == "same" else 2)
