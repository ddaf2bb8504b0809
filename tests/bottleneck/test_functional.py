"""The pure functions against independent NumPy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from video_iba.bottleneck.functional import capacity, gaussian_kernel1d, nats_to_bits, restrict, smooth
from video_iba.bottleneck.heatmap import bits_per_frame, capacity_to_bits


def _kl_numpy(mu_q: np.ndarray, var_q: np.ndarray) -> np.ndarray:
    # KL(N(mu_q, var_q) || N(0, 1)) = 1/2 (var_q + mu_q^2 - 1 - log var_q)
    return 0.5 * (var_q + mu_q**2 - 1.0 - np.log(var_q))


def test_capacity_is_the_gaussian_kl_in_nats() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(size=(4, 5, 6))
    lam = rng.uniform(0.01, 0.99, size=(4, 5, 6))
    got = capacity(torch.from_numpy(r), torch.from_numpy(lam)).numpy()
    want = _kl_numpy(lam * r, (1 - lam) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert (got >= 0).all()


def test_capacity_extremes_and_active_mask() -> None:
    r = torch.tensor([0.0, 2.0, -3.0])
    assert torch.allclose(capacity(r, torch.zeros(3)), torch.zeros(3))  # all noise: nothing passes
    assert torch.isfinite(capacity(r, torch.ones(3))).all()  # saturated sigmoid stays finite
    assert (capacity(r, torch.full((3,), 0.99)) > 1.0).all()
    active = torch.tensor([1.0, 0.0, 1.0])
    assert capacity(r, torch.full((3,), 0.9), active)[1] == 0


def test_restrict_mixes_signal_and_scaled_noise() -> None:
    r = torch.full((1, 2, 3, 3), 4.0)
    mean, std = torch.full((2, 1, 1), 1.0), torch.full((2, 1, 1), 2.0)
    noise = torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    lam = torch.full((2, 3, 3), 0.25)
    z = restrict(r, lam, mean, std, noise)
    assert z.shape == (5, 2, 3, 3)
    torch.testing.assert_close(z, 0.25 * 4.0 + 0.75 * (noise * 2.0 + 1.0))
    active = torch.tensor([1.0, 0.0]).view(2, 1, 1)
    assert restrict(r, lam, mean, std, noise, active)[:, 1].abs().sum() == 0


def _gauss2d_reflect_numpy(x: np.ndarray, sigma: float) -> np.ndarray:
    half = int(round(2 * sigma))
    t = np.arange(-half, half + 1)
    k1 = np.exp(-0.5 * (t / sigma) ** 2)
    k2 = np.outer(k1, k1)
    k2 /= k2.sum()
    out = np.empty_like(x)
    for c in range(x.shape[0]):
        p = np.pad(x[c], half, mode="reflect")
        for i in range(x.shape[1]):
            for j in range(x.shape[2]):
                out[c, i, j] = (p[i:i + 2 * half + 1, j:j + 2 * half + 1] * k2).sum()
    return out


def test_kernel_matches_reference_size() -> None:
    k = gaussian_kernel1d(1.0)
    assert k.numel() == 5 and math.isclose(float(k.sum()), 1.0, rel_tol=1e-6)


def test_smoothing_equals_a_2d_gaussian_with_reflection_padding() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(3, 9, 11))
    got = smooth(torch.from_numpy(x), (1.0, 1.0)).numpy()
    np.testing.assert_allclose(got, _gauss2d_reflect_numpy(x, 1.0), rtol=1e-10, atol=1e-12)


def test_smoothing_keeps_channels_apart_and_copes_with_one_or_two_frames() -> None:
    x = torch.zeros(2, 7, 7, dtype=torch.float64)
    x[0, 3, 3] = 1.0
    y = smooth(x, (1.0, 1.0))
    assert y[1].abs().sum() == 0 and math.isclose(float(y[0].sum()), 1.0, rel_tol=1e-9)
    for t in (1, 2):
        clip = torch.rand(4, t, 6, 6, dtype=torch.float64)
        out = smooth(clip, (1.0, 1.0, 1.0))
        assert out.shape == clip.shape and torch.isfinite(out).all()
        assert out.min() >= clip.min() - 1e-12 and out.max() <= clip.max() + 1e-12  # a weighted mean of real cells
    const = torch.full((3, 2, 5, 5), 0.7, dtype=torch.float64)
    torch.testing.assert_close(smooth(const, (1.0, 1.0, 1.0)), const)


def test_bits_map_preserves_the_total_and_unit() -> None:
    rng = np.random.default_rng(2)
    cap = rng.uniform(0, 2, size=(6, 7, 7))
    bits = capacity_to_bits(torch.from_numpy(cap), (224, 224))
    assert bits.shape == (224, 224) and bits.dtype == torch.float32
    assert math.isclose(float(bits.double().sum()), cap.sum() / math.log(2), rel_tol=1e-5)
    # a uniform capacity becomes a uniform density: total bits / pixels
    flat = capacity_to_bits(torch.ones(2, 4, 4), (32, 32))
    torch.testing.assert_close(flat, torch.full((32, 32), 2 * 16 / math.log(2) / 1024))
    assert math.isclose(float(nats_to_bits(torch.tensor(math.log(2)))), 1.0)


def test_bits_map_for_clips_and_per_frame_bits() -> None:
    cap = torch.zeros(3, 2, 4, 4)
    cap[:, 1] = 1.0  # information only in the second feature frame
    bits = capacity_to_bits(cap, (8, 16, 16))
    assert bits.shape == (8, 16, 16)
    per_frame = bits_per_frame(bits)
    assert math.isclose(float(per_frame.double().sum()), 3 * 16 / math.log(2), rel_tol=1e-5)
    assert per_frame[:4].sum() < per_frame[4:].sum()


@pytest.mark.parametrize("sigma", [0.0, -1.0])
def test_kernel_rejects_non_positive_sigma(sigma: float) -> None:
    with pytest.raises(ValueError):
        gaussian_kernel1d(sigma)


def test_one_pass_blur_equals_the_axis_by_axis_blur() -> None:
    from video_iba.bottleneck.functional import _smooth_axis

    x = torch.rand(3, 4, 6, 7, dtype=torch.float64)
    for sigmas in [(1.0, 1.0, 1.0), (0.5, 1.0, 2.0), (0.0, 1.0, 1.0)]:
        want = x
        for i, s in enumerate(sigmas):
            if s > 0:
                want = _smooth_axis(want, gaussian_kernel1d(s, dtype=torch.float64), x.dim() - 3 + i)
        torch.testing.assert_close(smooth(x, sigmas), want)


def test_the_masks_adam_is_torchs_adam_to_the_bit(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torchvision

    import video_iba
    from video_iba.bottleneck import per_sample

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        ours = [torch.randn(3, 4, 5, generator=g, dtype=dtype).requires_grad_(True), torch.zeros(7, dtype=dtype,
                                                                                                   requires_grad=True)]
        theirs = [p.detach().clone().requires_grad_(True) for p in ours]
        mine, ref = per_sample.MaskAdam(ours, lr=0.7), torch.optim.Adam(theirs, lr=0.7)
        for step in range(12):
            grads = [torch.randn(p.shape, generator=g, dtype=dtype) * 10.0 ** (step % 5 - 2) for p in ours]
            grads[1][: step % 3] = 0.0
            for opt, params in ((mine, ours), (ref, theirs)):
                opt.zero_grad(set_to_none=True)
                for i, (p, gr) in enumerate(zip(params, grads)):
                    if not (i == 1 and step == 4):  # a mask without a gradient is left as it is
                        p.grad = gr.clone()
                opt.step()
            assert all(torch.equal(a, b) for a, b in zip(ours, theirs)), (dtype, step)
    # and a whole fit: the same map as with torch's optimiser
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64, generator=g)
    mine_map = video_iba.explain(model, x, target=1, layer="layer2", steps=4, samples=2, seed=0).bits
    monkeypatch.setattr(per_sample, "MaskAdam", torch.optim.Adam)
    torch_map = video_iba.explain(model, x, target=1, layer="layer2", steps=4, samples=2, seed=0).bits
    assert torch.equal(mine_map, torch_map) and float(mine_map.std()) > 0
