"""From capacity in nats at feature resolution to bits per input pixel or voxel."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .functional import nats_to_bits


def capacity_to_bits(capacity: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bits per input cell, with the total number of bits preserved.

    The capacity is summed over channels and converted to bits, giving bits per feature cell;
    it is resized (bilinear for ``(H, W)``, trilinear for ``(T, H, W)``) to ``size`` and rescaled
    so that the map sums to exactly the bottleneck's total information.

    Args:
        capacity: ``(C, *S)`` in nats, ``S`` being ``(H', W')`` or ``(T', H', W')``.
        size: Target ``(H, W)`` or ``(T, H, W)``, the model input's resolution.

    Returns:
        float32 tensor of shape ``size`` in bits per input cell.
    """
    per_cell = nats_to_bits(capacity.detach().to(torch.float64).sum(0))
    if per_cell.dim() != len(size):
        raise ValueError(f"capacity of {per_cell.dim()} spatial dims cannot be resized to {tuple(size)}")
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    up = F.interpolate(per_cell[None, None], size=tuple(size), mode=mode, align_corners=False)[0, 0]
    total = per_cell.sum()
    s = up.sum()
    up = up * (total / s) if s > 0 else torch.zeros_like(up)
    return up.to(torch.float32)


def bits_per_frame(bits: torch.Tensor) -> torch.Tensor:
    """Sum a ``(T, H, W)`` bits map over space: which frames carry information."""
    return bits.sum(dim=(-2, -1))
