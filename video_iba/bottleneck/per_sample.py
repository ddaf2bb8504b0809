"""The per-sample bottleneck: optimise one mask per input (Schulz et al., ICLR 2020, Sec. 3.2)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..config import IBAConfig
from .estimator import Statistics
from .functional import capacity, restrict, smooth, working_dtype
from .insertion import Runner


#: The network pass's floating-point types (``torch.autocast``).
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

#: fp16 gradients of the noisy replicas are this many times too small to be represented: the
#: cross-entropy is scaled up before the network's backward pass and the masks' gradients down after.
FP16_LOSS_SCALE = 2.0**14


class PrecisionError(ArithmeticError):
    """A reduced-precision network pass produced gradients that are not finite."""


class NonFiniteFit(ArithmeticError):
    """The fit's information or the network's loss on the noisy replicas is NaN or infinite."""


@dataclass
class FitResult:
    """Outcome of :func:`fit_per_sample`, one entry per bottleneck.

    Attributes:
        capacities: Information per feature element in nats ``(C, *S)``, from the last step's
            mask (as in the reference implementation: the mask after ``steps - 1`` updates).
        lams: The smoothed masks of that step ``(C, *S)``.
        ce: Cross-entropy per network pass. info: Mean capacity (nats) over all elements per step.
        noise_probs: The network's class probabilities with every bottleneck closed (noise alone),
            averaged over one micro-batch of replicas; ``None`` where not computed.
    """

    capacities: list[torch.Tensor]
    lams: list[torch.Tensor]
    ce: list[float] = field(default_factory=list)
    info: list[float] = field(default_factory=list)
    noise_probs: torch.Tensor | None = None


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
    """Fit the masks of one input, one per bottleneck: :func:`fit_inputs` with one input.

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
    if any(r.shape[0] != 1 for r in rs):
        raise ValueError("fit_per_sample fits one input: each layer output must have batch size 1")
    return fit_inputs(runner, rs, [stats], [target], cfg, [generator], on_step, skip_last_pass, smoothed)[0]


@dataclass
class _Noise:
    """One bottleneck's statistics for K inputs: shared (a data set's) or stacked per input ``(K, ...)``."""

    mean: torch.Tensor
    std: torch.Tensor
    active: torch.Tensor
    stacked: bool

    @classmethod
    def of(cls, per_input: Sequence[Statistics], dims: int, dtype: torch.dtype) -> "_Noise":
        first = per_input[0]
        if all(st is first for st in per_input):
            return cls(first.mean.to(dtype), first.std.to(dtype), first.active.to(dtype), False)

        def stack(ts: list[torch.Tensor]) -> torch.Tensor:  # each broadcastable to (C, *S): pad to `dims` axes
            return torch.stack([t.reshape((1,) * (dims - t.dim()) + tuple(t.shape)).to(dtype) for t in ts])

        return cls(stack([st.mean for st in per_input]), stack([st.std for st in per_input]),
                   stack([st.active for st in per_input]), True)

    def per_replica(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Broadcastable to ``(k, m, C, *S)`` for the inputs ``rows``: the replicas of each input in its row."""
        if not self.stacked:
            return self.mean, self.std, self.active
        return self.mean[rows].unsqueeze(1), self.std[rows].unsqueeze(1), self.active[rows].unsqueeze(1)


def _replicas(rs: Sequence[torch.Tensor], lams: Sequence[torch.Tensor], noises: Sequence[_Noise], group: range,
              m: int, generators: Sequence[torch.Generator], dtypes: Sequence[torch.dtype]) -> list[torch.Tensor]:
    """Each bottleneck's input for ``m`` noisy replicas of each input of ``group`` ``(len(group) * m,
    C, *S)``, input by input, under the masks ``lams`` ``(len(group), C, *S)``; each input's noise
    drawn from its own generator; in the network's types ``dtypes``."""
    rows, zs = slice(group.start, group.stop), []
    for r, lam, n, dtype in zip(rs, lams, noises, dtypes):
        sh = tuple(r.shape[1:])
        noise = torch.stack([torch.randn((m, *sh), generator=generators[i], device=r.device, dtype=r.dtype)
                             for i in group])
        mean, std, active = n.per_replica(rows)
        z = restrict(r[rows].unsqueeze(1), lam.unsqueeze(1), mean, std, noise, active)
        zs.append(z.reshape(len(group) * m, *sh).to(dtype))
    return zs


def fit_inputs(
    runner: Runner,
    rs: Sequence[torch.Tensor],
    stats: Sequence[Sequence[Statistics]],
    targets: Sequence[int],
    cfg: IBAConfig,
    generators: Sequence[torch.Generator],
    on_step: Callable[[int, float, float], None] | None = None,
    skip_last_pass: bool = True,
    smoothed: Sequence[bool] | None = None,
    precision: str = "fp32",
) -> list[FitResult]:
    """Fit the masks of K inputs in one optimisation, each as if it were fitted alone.

    Every input has its own masks, its own Adam state (Adam works element by element, so one
    optimiser over ``(K, ...)`` masks is K independent ones) and its own noise, drawn from its own
    generator in the order one input alone draws it. The objective is the sum of the inputs' own
    objectives, so each mask gets the gradient it would get alone. Each network pass runs the
    replicas of ``g`` inputs together: ``g * m`` rows, input by input, where ``m`` is the micro-batch
    (``cfg.micro_batch``, else ``cfg.samples``) and ``g`` is ``cfg.inputs_per_pass`` (else all K).

    Args:
        runner: Evaluates the network from the layers on; it must map row ``k * m + j`` to input
            ``k`` (see :func:`~video_iba.bottleneck.insertion.expand_batch`), and with
            ``cfg.inputs_per_pass < K`` take the range of inputs a pass holds as second argument.
        rs: Each bottleneck tensor for the K inputs, ``(K, C_i, *S_i)``.
        stats: Per input, the statistics of each bottleneck tensor (the same objects for every
            input when they come from a data set).
        targets: Per input, the class to explain.
        cfg, on_step, skip_last_pass, smoothed: As for :func:`fit_per_sample`; ``on_step`` gets the
            inputs' mean ``ce`` and ``info``.
        generators: Per input, the source of its noise.
        precision: ``"fp32"``, or ``"bf16"`` / ``"fp16"``: the network passes run under autocast
            in that type; masks, capacities and the optimiser stay in the masks' type. fp16
            scales the network's loss by :data:`FP16_LOSS_SCALE` against underflow and raises
            :class:`PrecisionError` where a gradient overflows.

    Returns:
        One :class:`FitResult` per input.
    """
    _check_fit(rs, stats, targets, generators, precision)
    k = len(targets)
    shapes = [tuple(r.shape[1:]) for r in rs]
    dtypes = [r.dtype for r in rs]  # the network's; the fit runs in at least float32
    rs = [r.to(working_dtype(r.dtype)) for r in rs]
    sigmas = [smoothing_sigmas(len(sh) - 1, cfg) if smooth_it else (0.0,) * (len(sh) - 1)
              for sh, smooth_it in zip(shapes, smoothed if smoothed is not None else [True] * len(shapes))]
    noises = [_Noise.of([st[b] for st in stats], len(sh), r.dtype) for b, (sh, r) in enumerate(zip(shapes, rs))]
    r_norms = [((r - n.mean) / n.std).detach() for r, n in zip(rs, noises)]
    alphas = [torch.full((k, *sh), float(cfg.alpha_init), device=r.device, dtype=r.dtype, requires_grad=True)
              for sh, r in zip(shapes, rs)]
    total = float(sum(math.prod(sh) for sh in shapes))
    opt = MaskAdam(alphas, lr=cfg.lr)
    per_pass = cfg.inputs_per_pass or k
    groups = [range(a, min(a + per_pass, k)) for a in range(0, k, per_pass)]
    passes = _Passes(runner, rs, noises, generators, dtypes, groups, _chunks(cfg.samples, cfg.micro_batch or cfg.samples),
                     cfg.samples, torch.tensor(list(targets), device=rs[0].device, dtype=torch.long), precision)
    results = [FitResult(capacities=[], lams=[]) for _ in range(k)]
    for step in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        lams = [smooth(torch.sigmoid(a), sg) for a, sg in zip(alphas, sigmas)]
        caps = [capacity(rn, lam, n.active) for rn, lam, n in zip(r_norms, lams, noises)]
        info = torch.stack([c.reshape(k, -1).sum(1) for c in caps]).sum(0) / total  # (K,): each input's mean
        if not bool(torch.isfinite(info).all()):
            raise NonFiniteFit(f"the bottleneck's information is not finite at step {step} (a feature map or its "
                               f"statistics hold NaN or infinite values)")
        infos = info.detach().tolist()
        for i, res in enumerate(results):
            res.capacities = [c[i].detach() for c in caps]
            res.lams = [lam[i].detach() for lam in lams]
        if skip_last_pass and step == cfg.steps - 1:
            for res, value in zip(results, infos):
                res.info.append(float(value))
            if on_step is not None:
                on_step(step, float("nan"), sum(infos) / k)
            break
        ce_rows, lam_grads = passes.gradients(lams, step)
        surrogate = cfg.beta * info.sum() + sum((lam * g).sum() for lam, g in zip(lams, lam_grads))
        surrogate.backward()
        opt.step()
        for res, ce_i, value in zip(results, ce_rows.tolist(), infos):
            res.ce.append(float(ce_i))
            res.info.append(float(value))
        if on_step is not None:
            on_step(step, float(ce_rows.mean()), sum(infos) / k)
    for res, probs in zip(results, passes.noise_probs()):
        res.noise_probs = probs
    return results


class MaskAdam:
    """Adam (Kingma and Ba, ICLR 2015) over the masks at torch's defaults (betas 0.9 and 0.999, eps
    1e-8): ``torch.optim.Adam``'s single-tensor arithmetic, operation for operation, so the same
    values to the bit (the test compares them). Written out because building a torch optimiser
    imports torch's compiler, seconds on a process's first fit."""

    BETAS = (0.9, 0.999)
    EPS = 1e-8

    def __init__(self, params: Sequence[torch.Tensor], lr: float) -> None:
        self.params, self.lr = list(params), float(lr)
        self.state = [[0, torch.zeros_like(p), torch.zeros_like(p)] for p in self.params]  # steps, moments

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.BETAS
        for p, state in zip(self.params, self.state):
            if p.grad is None:  # as torch's: its step count stays
                continue
            state[0] += 1
            steps, mean, square = state
            mean.lerp_(p.grad, 1 - b1)
            square.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denominator = (square.sqrt() / (1 - b2 ** steps) ** 0.5).add_(self.EPS)
            p.addcdiv_(mean, denominator, value=-(self.lr / (1 - b1 ** steps)))


def _check_fit(rs: Sequence[torch.Tensor], stats: Sequence[Sequence[Statistics]], targets: Sequence[int],
               generators: Sequence[torch.Generator], precision: str) -> None:
    k = len(targets)
    if not rs or k == 0 or len(stats) != k or len(generators) != k:
        raise ValueError("need targets, generators and statistics for every input")
    if any(len(st) != len(rs) for st in stats):
        raise ValueError("need one statistics object per bottleneck")
    if any(r.shape[0] != k for r in rs):
        raise ValueError(f"every bottleneck tensor needs {k} rows, one per input")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


class _Passes:
    """The network passes of a fit: the noisy replicas of each group of inputs, micro-batch by
    micro-batch (``chunks``), under autocast in ``precision``."""

    def __init__(self, runner: Runner, rs: Sequence[torch.Tensor], noises: Sequence[_Noise],
                 generators: Sequence[torch.Generator], dtypes: Sequence[torch.dtype], groups: Sequence[range],
                 chunks: Sequence[int], samples: int, targets: torch.Tensor, precision: str) -> None:
        self.runner, self.rs, self.noises, self.generators, self.dtypes = runner, rs, noises, generators, dtypes
        self.groups, self.chunks, self.samples = groups, chunks, samples
        self.targets, self.precision = targets, precision
        self.loss_scale = FP16_LOSS_SCALE if precision == "fp16" else 1.0

    def _run(self, zs: list[torch.Tensor], group: range) -> torch.Tensor:
        autocast = (torch.autocast(device_type=zs[0].device.type, dtype=PRECISIONS[self.precision])
                    if self.precision != "fp32" else contextlib.nullcontext())
        with autocast:
            return self.runner(zs) if len(self.groups) == 1 else self.runner(zs, group)

    def gradients(self, lams: Sequence[torch.Tensor], step: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Each input's cross-entropy ``(K,)`` (float64) and the gradient of their sum with respect
        to each mask ``lams``. Each network pass is differentiated with respect to the masks alone
        and its graph freed at once; the masks' own graph (sigmoid, smoothing, capacity) is left to
        the caller, differentiated once."""
        ce_rows = torch.zeros(len(self.targets), dtype=torch.float64, device=self.targets.device)
        lam_grads = [torch.zeros_like(lam) for lam in lams]
        for group in self.groups:
            rows, kg = slice(group.start, group.stop), len(group)
            for m in self.chunks:
                leaves = [lam[rows].detach().requires_grad_(True) for lam in lams]
                zs = _replicas(self.rs, leaves, self.noises, group, m, self.generators, self.dtypes)
                logits = self._run(zs, group)
                per_row = F.cross_entropy(logits.float(), self.targets[rows].repeat_interleave(m), reduction="none")
                ce = per_row.reshape(kg, m).sum(1) / self.samples
                ce_rows[rows] += ce.detach().double()
                grads = torch.autograd.grad(ce.sum() * self.loss_scale, leaves, allow_unused=True)
                for acc, g in zip(lam_grads, grads):
                    if g is not None:  # None: a bottleneck the logits do not depend on
                        acc[rows] += g
        if not bool(torch.isfinite(ce_rows).all()):
            raise NonFiniteFit(f"the network's loss on the noisy feature maps is not finite at step {step} (it "
                               f"computes NaN or infinity from noise the input itself never gives)")
        if self.loss_scale != 1.0:
            for g in lam_grads:
                g /= self.loss_scale
            if not all(bool(torch.isfinite(g).all()) for g in lam_grads):
                raise PrecisionError(f"the network's gradients overflowed in {self.precision} at step {step}")
        return ce_rows, lam_grads

    def noise_probs(self) -> list[torch.Tensor]:
        """What the network makes of the noise alone, every bottleneck closed: each input's class
        probabilities over one micro-batch of replicas (after the fit: its draws change none of the fit's)."""
        m, out = self.chunks[0], []
        with torch.no_grad():
            for group in self.groups:
                closed = [torch.zeros((len(group), *r.shape[1:]), device=r.device, dtype=r.dtype) for r in self.rs]
                zs = _replicas(self.rs, closed, self.noises, group, m, self.generators, self.dtypes)
                logits = self._run(zs, group)
                out.extend(logits.float().softmax(-1).reshape(len(group), m, -1).mean(1).cpu())
        return out
