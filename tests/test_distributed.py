"""torch.distributed: estimation sharded over 2 gloo processes equals one process; Welford merging."""

from __future__ import annotations


import pytest
import torch

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
