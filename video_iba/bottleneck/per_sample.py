"""The per-sample bottleneck: optimise one mask per input (Schulz et al., ICLR 2020, Sec. 3.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..config import IBAConfig
from .estimator import Statistics
from .functional import capacity, restrict, smooth
from .insertion import Runner


@dataclass
class FitResult:
    """Outcome of :func:`fit_per_sample`, one entry per bottleneck.

    Attributes:
        capacities: Information per feature element in nats ``(C, *S)``, from the last step's
            mask (as in the reference implementation: the mask after ``steps - 1`` updates).
        lams: The smoothed masks of that step ``(C, *S)``.
        ce: Cross-entropy per network pass. info: Mean capacity (nats) over all elements per step.
    """

    capacities: list[torch.Tensor]
    lams: list[torch.Tensor]
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
    rs: Sequence[torch.Tensor],
    stats: Sequence[Statistics],
    target: int,
    cfg: IBAConfig,
    generator: torch.Generator,
    on_step: Callable[[int, float, float], None] | None = None,
    skip_last_pass: bool = True,
    smoothed: Sequence[bool] | None = None,
) -> FitResult:
    """Fit the masks of one input, one per bottleneck.

    Minimises ``CE(runner(Z_1..Z_k), target) + beta * mean(capacity)`` over the ``alpha`` of every
    bottleneck with Adam, where ``Z_i = lam_i * R_i + (1 - lam_i) * eps_i`` for ``cfg.samples``
    independent noise draws per step, ``lam_i = smooth(sigmoid(alpha_i))``, and the mean runs
    over the elements of all bottlenecks together.

    Args:
        runner: Evaluates the network from the layers on: ``[(N, C_i, *S_i)] -> (N, K)`` logits.
        rs: Each layer's output for the input, ``(1, C_i, *S_i)``.
        stats: Per-neuron statistics of each layer, broadcastable to ``(C_i, *S_i)``, on its device.
        target: Class index to explain.
        cfg: Settings (beta, steps, samples, lr, alpha_init, smoothing, micro_batch).
        generator: Source of the noise (seeded by the caller for reproducible maps).
        on_step: Called after each update with ``(step, ce, info)``.
        skip_last_pass: The result is the capacity of the last step, which depends only on the
            masks and ``R``; that step's network pass and update change nothing in it and are
            skipped (its ``ce`` is then not recorded). ``False`` runs them, as the reference does.
        smoothed: Per bottleneck tensor, whether its mask is smoothed (maps: yes; a transformer's
            class tokens ``(1, C, P)``: no). Default: all.

    Returns:
        :class:`FitResult` with the capacities in nats.
    """
    if len(rs) != len(stats) or not rs:
        raise ValueError("need one statistics object per bottleneck")
    shapes = [tuple(r.shape[1:]) for r in rs]
    sigmas = [smoothing_sigmas(len(sh) - 1, cfg) if smooth_it else (0.0,) * (len(sh) - 1)
              for sh, smooth_it in zip(shapes, smoothed if smoothed is not None else [True] * len(shapes))]
    r_norms = [((r[0] - st.mean) / st.std).detach() for r, st in zip(rs, stats)]
    alphas = [torch.full(sh, float(cfg.alpha_init), device=r.device, dtype=r.dtype, requires_grad=True)
              for sh, r in zip(shapes, rs)]
    total = float(sum(r.numel() for r in r_norms))
    opt = torch.optim.Adam(alphas, lr=cfg.lr)
    chunks = _chunks(cfg.samples, cfg.micro_batch or cfg.samples)
    result = FitResult(capacities=[], lams=[])
    for step in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        lams = [smooth(torch.sigmoid(a), sg) for a, sg in zip(alphas, sigmas)]
        caps = [capacity(rn, lam, st.active) for rn, lam, st in zip(r_norms, lams, stats)]
        info = torch.stack([c.sum() for c in caps]).sum() / total
        result.capacities, result.lams = [c.detach() for c in caps], [lam.detach() for lam in lams]
        if skip_last_pass and step == cfg.steps - 1:
            result.info.append(float(info.detach()))
            if on_step is not None:
                on_step(step, float("nan"), result.info[-1])
            break
        ce_total = 0.0
        for i, m in enumerate(chunks):
            zs = []
            for r, lam, st, sh in zip(rs, lams, stats, shapes):
                noise = torch.randn((m, *sh), generator=generator, device=r.device, dtype=r.dtype)
                zs.append(restrict(r, lam, st.mean, st.std, noise, st.active))
            logits = runner(zs)
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
