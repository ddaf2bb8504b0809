"""The per-sample bottleneck: optimise one mask per input (Schulz et al., ICLR 2020, Sec. 3.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import IBAConfig
from .estimator import Statistics
from .functional import capacity, restrict, smooth
from .insertion import Runner


@dataclass
class FitResult:
    """Outcome of :func:`fit_per_sample`.

    Attributes:
        capacity: Information per feature element in nats ``(C, *S)``, from the last step's forward
            pass (as in the reference implementation: the mask after ``steps - 1`` updates).
        lam: The smoothed mask of that pass ``(C, *S)``.
        ce: Cross-entropy per network pass. info: Mean capacity (nats) per step.
    """

    capacity: torch.Tensor
    lam: torch.Tensor
    ce: list[float] = field(default_factory=list)
    info: list[float] = field(default_factory=list)


def smoothing_sigmas(spatial_dims: int, cfg: IBAConfig) -> tuple[float, ...]:
    """Per-axis smoothing of a ``(C, *S)`` mask: ``(sigma, sigma)`` for images, ``(temporal, sigma, sigma)`` for video."""
    if spatial_dims == 2:
        return (cfg.sigma, cfg.sigma)
    if spatial_dims == 3:
        return (cfg.temporal_sigma, cfg.sigma, cfg.sigma)
    return (cfg.sigma,) * spatial_dims


def _chunks(n: int, size: int) -> list[int]:
    return [min(size, n - i) for i in range(0, n, size)]


def fit_per_sample(
    runner: Runner,
    r: torch.Tensor,
    stats: Statistics,
    target: int,
    cfg: IBAConfig,
    generator: torch.Generator,
    on_step: Callable[[int, float, float], None] | None = None,
    skip_last_pass: bool = True,
) -> FitResult:
    """Fit the mask of one input.

    Minimises ``CE(runner(Z), target) + beta * mean(capacity)`` over ``alpha`` with Adam, where
    ``Z = lam * R + (1 - lam) * eps`` for ``cfg.samples`` independent noise draws per step and
    ``lam = smooth(sigmoid(alpha))``.

    Args:
        runner: Evaluates the network from the layer on: ``(N, C, *S) -> (N, K)`` logits.
        r: The layer's output for the input, ``(1, C, *S)``.
        stats: Per-neuron statistics broadcastable to ``(C, *S)``, on ``r``'s device.
        target: Class index to explain.
        cfg: Settings (beta, steps, samples, lr, alpha_init, smoothing, micro_batch).
        generator: Source of the noise (seeded by the caller for reproducible maps).
        on_step: Called after each update with ``(step, ce, info)``.
        skip_last_pass: The result is the capacity of the last step, which depends only on the
            mask and ``R``; that step's network pass and update change nothing in it and are
            skipped (its ``ce`` is then not recorded). ``False`` runs them, as the reference does.

    Returns:
        :class:`FitResult` with the capacity in nats.
    """
    shape = tuple(r.shape[1:])
    sigmas = smoothing_sigmas(len(shape) - 1, cfg)
    mean, std, active = stats.mean, stats.std, stats.active
    r_norm = ((r[0] - mean) / std).detach()
    alpha = torch.full(shape, float(cfg.alpha_init), device=r.device, dtype=r.dtype, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=cfg.lr)
    chunks = _chunks(cfg.samples, cfg.micro_batch or cfg.samples)
    result = FitResult(capacity=torch.empty(0), lam=torch.empty(0))
    for step in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        lam = smooth(torch.sigmoid(alpha), sigmas)
        cap = capacity(r_norm, lam, active)
        info = cap.mean()
        result.capacity, result.lam = cap.detach(), lam.detach()
        if skip_last_pass and step == cfg.steps - 1:
            result.info.append(float(info.detach()))
            if on_step is not None:
                on_step(step, float("nan"), result.info[-1])
            break
        ce_total = 0.0
        for i, m in enumerate(chunks):
            noise = torch.randn((m, *shape), generator=generator, device=r.device, dtype=r.dtype)
            z = restrict(r, lam, mean, std, noise, active)
            logits = runner(z)
            targets = torch.full((m,), target, device=logits.device, dtype=torch.long)
            ce = F.cross_entropy(logits.float(), targets, reduction="sum") / cfg.samples
            ce_total += float(ce.detach())
            if i == len(chunks) - 1:
                (ce + cfg.beta * info).backward()
            else:
                ce.backward(retain_graph=True)
        opt.step()
        result.ce.append(ce_total)
        result.info.append(float(info.detach()))
        if on_step is not None:
            on_step(step, ce_total, result.info[-1])
    return result
