"""Pure tensor functions of the information bottleneck.

Every function here is rank-generic: feature maps are ``(N, C, *S)`` where ``S`` is the spatial
``(H, W)`` of image networks or the spatiotemporal ``(T, H, W)`` of video networks. Statistics
(``mean``, ``std``, ``active``) broadcast against one sample ``(C, *S)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

#: Largest mask value used inside the logarithm of the capacity. ``sigmoid`` saturates to exactly
#: 1.0 in float32 for ``alpha > ~17``, where ``log((1 - lambda)^2)`` would be ``-inf``.
LAMBDA_MAX = 1.0 - 1e-6


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type the bottleneck's masks, noise and information are computed in for a feature map of
    ``dtype``: at least float32 (in float16, ``(1 - LAMBDA_MAX)^2`` is 0 and its logarithm ``-inf``;
    a half-precision network gets its restricted map back in its own type)."""
    return torch.promote_types(dtype, torch.float32)


def capacity(r_norm: torch.Tensor, lam: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """Information passed by each feature element, in nats.

    The closed form of ``KL(N(lam * r, (1 - lam)^2) || N(0, 1))`` with ``r = (R - mu) / sigma``::

        -1/2 * (1 + log((1 - lam)^2) - (lam * r)^2 - (1 - lam)^2)

    Args:
        r_norm: Standardised feature map ``(R - mu) / sigma``, shape ``(..., C, *S)``.
        lam: Mask in ``[0, 1]`` broadcastable to ``r_norm``.
        active: Optional 0/1 mask of active neurons; inactive ones carry no information.

    Returns:
        Tensor of the broadcast shape, non-negative, in nats.
    """
    lam = lam.clamp(max=LAMBDA_MAX)
    var_z = (1.0 - lam) ** 2
    mu_z = lam * r_norm
    kl = -0.5 * (1.0 + torch.log(var_z) - mu_z**2 - var_z)
    if active is not None:
        kl = kl * active
    return kl


def restrict(
    r: torch.Tensor,
    lam: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    noise: torch.Tensor,
    active: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replace part of the signal by noise: ``Z = lam * R + (1 - lam) * eps``, ``eps ~ N(mu, sigma^2)``.

    Computed as ``Z = (lam * R + (1 - lam) * mu) + ((1 - lam) * sigma) * noise``: the two
    per-element terms are formed once at the size of one sample, and the batch of replicas costs
    a single fused multiply-add.

    Args:
        r: Feature map ``(1, C, *S)`` or ``(N, C, *S)``.
        lam: Mask broadcastable to ``r``.
        mean, std: Per-neuron statistics broadcastable to ``(C, *S)``.
        noise: Standard normal samples ``(N, C, *S)``; one row per noisy replica.
        active: Optional 0/1 mask; inactive neurons output 0.

    Returns:
        ``(N, C, *S)`` restricted feature map.
    """
    keep = 1.0 - lam
    base = lam * r + keep * mean
    scale = keep * std
    if active is not None:
        base, scale = base * active, scale * active
    return torch.addcmul(base, scale, noise)


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian of size ``2 * round(2 * sigma) + 1`` (5 taps for ``sigma = 1``)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    half = int(round(2.0 * sigma))
    x = torch.arange(-half, half + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _smooth_axis(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Convolve ``x`` along ``dim`` with a normalised 1-D kernel.

    Reflection padding where the axis is long enough (as in the reference implementation);
    on shorter axes (e.g. a feature map of 1-2 frames) the kernel is truncated to the cells
    that exist and renormalised, so the result is still a weighted mean of real values.
    """
    half = kernel.numel() // 2
    n = x.shape[dim]
    if half == 0 or n == 1:
        return x
    moved = x.movedim(dim, -1)
    flat = moved.reshape(-1, 1, n)
    w = kernel.to(dtype=x.dtype, device=x.device).view(1, 1, -1)
    if n > half:
        out = F.conv1d(F.pad(flat, (half, half), mode="reflect"), w)
    else:
        padded = F.pad(flat, (half, half))
        ones = F.pad(torch.ones_like(flat[:1]), (half, half))
        out = F.conv1d(padded, w) / F.conv1d(ones, w)
    return out.reshape(moved.shape).movedim(-1, dim)


def smooth(x: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Gaussian blur over the trailing axes, each channel on its own.

    Equal to a separable blur with one normalised 1-D Gaussian per axis and reflection padding.
    Where every blurred axis is long enough to reflect (the usual case), the blur runs as one
    depthwise 2-D or 3-D convolution; otherwise axis by axis, short axes with a truncated,
    renormalised kernel.

    Args:
        x: ``(..., *S)`` tensor; the last ``len(sigmas)`` axes are smoothed.
        sigmas: One standard deviation per trailing axis, in feature cells; 0 leaves an axis as is.

    Returns:
        Tensor of the same shape.
    """
    nd = len(sigmas)
    if nd > x.dim():
        raise ValueError(f"cannot smooth {nd} axes of a {x.dim()}-D tensor")
    if all(s <= 0 for s in sigmas):
        return x
    kernels = [gaussian_kernel1d(s, dtype=x.dtype, device=x.device) if s > 0 else None for s in sigmas]
    sizes = x.shape[x.dim() - nd:]
    if nd in (2, 3) and all(k is None or n > k.numel() // 2 for k, n in zip(kernels, sizes)):
        return _smooth_nd(x, kernels)
    for i, k in enumerate(kernels):
        if k is not None:
            x = _smooth_axis(x, k, x.dim() - nd + i)
    return x


def _smooth_nd(x: torch.Tensor, kernels: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Depthwise convolution with the outer product of ``kernels`` (``None``: no blur on that axis)."""
    nd = len(kernels)
    ones = torch.ones(1, dtype=x.dtype, device=x.device)
    ks = [k if k is not None else ones for k in kernels]
    weight = ks[0]
    for k in ks[1:]:
        weight = torch.tensordot(weight, k, dims=0)
    spatial = x.shape[x.dim() - nd:]
    flat = x.reshape(1, -1, *spatial)
    pads: list[int] = []
    for k in reversed(ks):
        half = k.numel() // 2
        pads += [half, half]
    padded = F.pad(flat, pads, mode="reflect") if any(pads) else flat
    conv = F.conv2d if nd == 2 else F.conv3d
    channels = flat.shape[1]
    out = conv(padded, weight.expand(channels, 1, *weight.shape), groups=channels)
    return out.reshape(x.shape)


def nats_to_bits(x: torch.Tensor) -> torch.Tensor:
    """Convert nats to bits."""
    return x / math.log(2.0)
