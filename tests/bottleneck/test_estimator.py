"""Welford statistics against NumPy, pooling, provenance checks and files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from video_iba import Statistics, UserInputError
from video_iba.bottleneck.estimator import WelfordEstimator


def test_batched_welford_equals_numpy_over_all_samples() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(53, 4, 5, 6)).astype(np.float32)
    data[:, 0] = 0.0  # a dead channel
    data[:2, 1, 0, 0] = 1.0  # non-zero in 2 of 53 samples (3.8 %): active
    est = WelfordEstimator()
    for chunk in np.array_split(data, [7, 8, 30]):  # uneven batches, one of size 1
        est.update(torch.from_numpy(chunk))
    s = est.finalize(min_std=0.01)
    np.testing.assert_allclose(s.mean.numpy(), data.mean(0), rtol=1e-5, atol=1e-6)
    want_std = np.maximum(data.std(0, ddof=1), 0.01)
    np.testing.assert_allclose(s.std.numpy(), want_std, rtol=1e-5, atol=1e-6)
    assert s.samples == 53
    assert s.active[0].sum() == 0 and s.active[2:].all()
    assert s.active[1, 0, 0] == 1  # 2 of 53 samples non-zero: above the 1 % threshold
    assert (s.std[0] == 0.01).all()  # clamped from below


def test_activity_threshold_is_one_percent() -> None:
    x = torch.zeros(300, 1, 1, 1)
    x[:3] = 1.0  # exactly 1 %: not active
    est = WelfordEstimator()
    est.update(x)
    assert est.finalize().active.sum() == 0
    x[3] = 1.0
    est = WelfordEstimator()
    est.update(x)
    assert est.finalize().active.sum() == 1


def test_time_pooling_for_clips() -> None:
    rng = np.random.default_rng(1)
    clips = rng.normal(size=(6, 3, 4, 2, 2)).astype(np.float32)  # (N, C, T, H, W)
    est = WelfordEstimator(pool=(1,))
    est.update(torch.from_numpy(clips))
    s = est.finalize()
    assert s.mean.shape == (3, 1, 2, 2)
    pooled = clips.transpose(0, 2, 1, 3, 4).reshape(-1, 3, 2, 2)
    np.testing.assert_allclose(s.mean[:, 0].numpy(), pooled.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.std[:, 0].numpy(), pooled.std(0, ddof=1), rtol=1e-5)
    assert s.samples == 6


def test_statistics_of_one_input_pool_over_positions() -> None:
    r = torch.randn(1, 5, 7, 7)
    s = Statistics.from_input(r)
    assert s.source == "input" and s.mean.shape == (5, 1, 1)
    torch.testing.assert_close(s.mean[:, 0, 0], r[0].mean(dim=(1, 2)))
    torch.testing.assert_close(s.std[:, 0, 0], r[0].std(dim=(1, 2)).clamp(min=0.01))


def test_save_load_roundtrip_and_refusals(tmp_path) -> None:  # type: ignore[no-untyped-def]
    est = WelfordEstimator()
    est.update(torch.randn(10, 4, 3, 3))
    s = est.finalize(meta={"model": "m1", "layer": "a.b", "input_shape": [1, 3, 12, 12]})
    path = tmp_path / "stats.pt"
    s.save(path)
    back = Statistics.load(path)
    torch.testing.assert_close(back.mean, s.mean)
    assert back.samples == 10 and back.meta["layer"] == "a.b"
    back.check((4, 3, 3), layer="a.b", model="m1", input_shape=[1, 3, 12, 12])
    with pytest.raises(UserInputError, match="model 'm1'"):
        back.check((4, 3, 3), model="other")
    with pytest.raises(UserInputError, match="layer 'a.b'"):
        back.check((4, 3, 3), layer="c")
    with pytest.raises(UserInputError, match="inputs of shape"):
        back.check((4, 3, 3), input_shape=[1, 3, 16, 16])
    with pytest.raises(UserInputError, match="does not fit the layer"):
        back.check((4, 5, 5))
    for name in ("stats", ".stats", "stats.v2.pt"):  # any name a user gives (torch names its archive after a path)
        s.save(tmp_path / name)
        torch.testing.assert_close(Statistics.load(tmp_path / name).std, s.std)
    assert sorted(os.listdir(tmp_path)) == [".stats", "stats", "stats.pt", "stats.v2.pt"]  # no temporary file left
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(UserInputError, match="not a readable statistics file"):
        Statistics.load(junk)
    with pytest.raises(UserInputError, match="does not exist"):
        Statistics.load(tmp_path / "missing.pt")


def test_needs_two_samples_and_says_how_many_the_inputs_gave() -> None:
    est = WelfordEstimator()
    est.update(torch.randn(1, 2, 3, 3))
    with pytest.raises(UserInputError, match=r"at least 2 samples of each feature; 1 input\(s\) gave 1 \(each feature "
                                             r"is estimated on its own: one sample per input\); give more inputs"):
        est.finalize()
    pooled = WelfordEstimator(pool=(1,))  # one input of a single frame: 1 sample even pooled over time
    pooled.update(torch.randn(1, 2, 1, 3, 3))
    with pytest.raises(UserInputError, match=r"1 input\(s\) gave 1; give more inputs"):
        pooled.finalize()
