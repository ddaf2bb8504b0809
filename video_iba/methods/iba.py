"""The per-sample information bottleneck (Schulz et al., ICLR 2020): :func:`explain`, and
:func:`estimate` for its statistics."""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .._version import __version__
from ..bottleneck.estimator import DEFAULT_MIN_STD, FEW_SAMPLES, Statistics, WelfordEstimator
from ..bottleneck.insertion import HookedForward, capture, frozen, get_module, layer_outputs
from ..bottleneck.per_sample import fit_per_sample, smoothing_sigmas
from ..bottleneck.split import SplitError, split_runner
from ..config import IBAConfig
from ..distributed import gather, world_size
from ..errors import UserInputError
from ..models.pathways import Pack, input_packer, packed
from ..results import Attribution, Unit
from .common import LAYER_HINT, bits_map, check_channels_first, check_input, check_target, layer_names, model_name

log = logging.getLogger(__name__)


def explain(
    model: nn.Module,
    x: torch.Tensor,
    target: int | None = None,
    *,
    layer: str | Sequence[str] | None = None,
    stats: Statistics | Sequence[Statistics | None] | None = None,
    steps: int | None = None,
    samples: int | None = None,
    beta: float | None = None,
    seed: int | None = None,
    config: IBAConfig | None = None,
    pack: Pack | None = None,
    split: str = "auto",
    on_step: Callable[[int, float, float], None] | None = None,
) -> Attribution:
    """Explain ``model``'s decision for ``x`` with a per-sample information bottleneck.

    The model is left exactly as it was: eval mode is used only for the duration, no hook
    remains, and no gradient is computed for its weights.

    Args:
        model: Any classifier ``nn.Module`` returning logits ``(N, K)``.
        x: One preprocessed input, ``(1, C, H, W)`` or a clip ``(1, C, T, H, W)``.
        target: Class to explain; ``None`` explains the top-1 prediction.
        layer: Dotted module path where the bottleneck goes (e.g. ``"layer2"``), or several (one
            bottleneck each, e.g. one per SlowFast pathway, optimised jointly); defaults to the
            model's registry default if it came from :func:`video_iba.load_model`.
        stats: Per-neuron statistics from :func:`estimate` (one per layer for several layers);
            ``None`` uses each layer's own feature map pooled over its positions (recorded in
            ``meta["stats"]``).
        steps, samples, beta: Override ``config`` (paper defaults: 10, 10, 10).
        seed: Seeds the noise; ``None`` draws one (recorded in ``meta["seed"]``).
        config: All bottleneck settings, see :class:`~video_iba.config.IBAConfig`.
        pack: For a multi-pathway network: builds its pathway list from the clip ``x``
            (registry models such as SlowFast: automatic).
        split: ``"auto"`` computes the network before the layers once (falls back to the full
            forward pass, with a warning and ``meta["prefix_cached"] = False``, where the model
            cannot be split); ``"hook"`` always runs the full network.
        on_step: Called after each optimisation step with ``(step, ce, info_nats)``.

    Returns:
        :class:`~video_iba.results.Attribution` in bits per cell of ``x``, total preserved. With
        several layers, each layer's map is resized to ``x``'s cells and the maps are summed;
        ``capacity`` is then a list and ``meta["bits_per_layer"]`` keeps each layer's share.
    """
    cfg = (config or IBAConfig()).replace(steps=steps, samples=samples, beta=beta)
    spec_mb = getattr(getattr(model, "video_iba_spec", None), "micro_batch", None)
    if cfg.micro_batch is None and spec_mb:
        cfg = cfg.replace(micro_batch=spec_mb)  # registry models too large for all replicas at once
    if split not in ("auto", "hook"):
        raise UserInputError(f"split must be 'auto' or 'hook', got {split!r}")
    x, _, inputs = check_input(model, x, pack)
    layers = layer_names(model, layer)
    modules = [get_module(model, name, LAYER_HINT) for name in layers]
    given = _per_layer_stats(stats, layers)
    if seed is None:
        seed = secrets.randbits(31)
    t0 = time.perf_counter()
    with frozen(model), torch.inference_mode(False), torch.enable_grad():
        logits, rs = capture(model, modules, layers, inputs)
        check_channels_first(rs, x, layers)
        target = check_target(target, logits)
        used = [(Statistics.from_input(r, min_std=cfg.min_std) if st is None else _checked(st, r, name))
                .to(r.device, r.dtype) for name, r, st in zip(layers, rs, given)]
        runner, note = _runner(model, layers, inputs, rs, logits, split)
        generator = torch.Generator(device=rs[0].device)
        generator.manual_seed(int(seed))
        with _memory_errors(cfg):
            if runner is not None:
                fit = fit_per_sample(runner, rs, used, target, cfg, generator, on_step)
                note = runner.note
            else:
                with HookedForward(model, modules, inputs, note) as hooked:
                    fit = fit_per_sample(hooked, rs, used, target, cfg, generator, on_step)
    bits = bits_map(fit.capacities, tuple(x.shape[2:]))
    single = len(layers) == 1

    def per_layer(values: list[Any]) -> Any:
        return values[0] if single else values

    meta = {
        "method": "iba_per_sample", "layer": per_layer(layers), "target": target,
        "beta": cfg.beta, "steps": cfg.steps, "samples": cfg.samples, "lr": cfg.lr, "alpha_init": cfg.alpha_init,
        "smoothing_sigmas": list(smoothing_sigmas(rs[0].dim() - 2, cfg)),
        "min_std": cfg.min_std, "micro_batch": cfg.micro_batch, "seed": int(seed),
        "stats": per_layer([u.describe() for u in used]), "stats_source": per_layer([u.source for u in used]),
        "stats_samples": per_layer([u.samples for u in used]),
        "prefix_cached": runner is not None, "prefix_note": note,
        "feature_shape": per_layer([list(r.shape[1:]) for r in rs]),
        "input_shape": list(inputs.shape) if isinstance(inputs, torch.Tensor) else [list(t.shape) for t in inputs],
        "total_bits": float(bits.double().sum()),
        "bits_per_layer": [float(c.double().sum()) / math.log(2) for c in fit.capacities],
        "ce_per_step": fit.ce, "info_nats_per_step": fit.info,
        "seconds": round(time.perf_counter() - t0, 3), "version": __version__, **model_name(model),
    }
    caps = [c.float().cpu() for c in fit.capacities]
    return Attribution(values=bits.cpu(), unit=Unit.BITS, target=target, capacity=per_layer(caps),
                       logits=logits[0].float().cpu(), meta=meta)


@contextlib.contextmanager
def _memory_errors(cfg: IBAConfig) -> Iterator[None]:
    """Running out of memory for the noisy replicas is reported with the settings that decide it."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not isinstance(exc, MemoryError) and "memory" not in str(exc).lower():
            raise
        per_pass = cfg.micro_batch or cfg.samples
        raise UserInputError(f"out of memory with {per_pass} noisy replicas per network pass ({cfg.samples} samples); "
                             f"lower {{samples}} or set {{micro_batch}}", options=["samples", "micro_batch"]) from exc


def _checked(st: Statistics, r: torch.Tensor, layer: str) -> Statistics:
    st.check(r.shape[1:], layer=layer)
    return st


def _runner(model: nn.Module, layers: Sequence[str], inputs: Any, rs: Sequence[torch.Tensor], logits: torch.Tensor,
            split: str) -> tuple[Any, str]:
    """The network after the layers with its prefix cached (``split="auto"``, where the model can be
    split), or ``None`` and why the whole network runs at every step."""
    if split != "auto":
        return None, "full forward pass per step (split='hook')"
    try:
        return split_runner(model, layers, inputs, rs, logits), ""
    except SplitError as exc:
        log.warning("cannot run only the network after %s (%s); running the whole network at every step",
                    ", ".join(f"'{n}'" for n in layers), exc)
        return None, f"full forward pass per step: {exc}"


def _per_layer_stats(stats: Statistics | Sequence[Statistics | None] | None,
                     layers: Sequence[str]) -> list[Statistics | None]:
    if isinstance(stats, Statistics) and len(layers) > 1:
        raise UserInputError(f"{len(layers)} layers need {len(layers)} statistics, one per layer: give {{stats}} a "
                             f"list", options=["stats"])
    given = [stats] * len(layers) if stats is None or isinstance(stats, Statistics) else list(stats)
    if len(given) != len(layers):
        raise UserInputError(f"got {len(given)} statistics for {len(layers)} layers; give {{stats}} one per layer",
                             options=["stats"])
    return given


def estimate(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    layer: str | Sequence[str] | None = None,
    pool: tuple[int, ...] | None = None,
    pools: Sequence[tuple[int, ...] | None] | None = None,
    min_std: float = DEFAULT_MIN_STD,
    max_samples: int | None = None,
    meta: dict[str, Any] | None = None,
    pack: Pack | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Any:
    """Estimate per-neuron mean and std of a layer's output over a data set.

    Only the network up to the layer(s) runs. The model is left as it was. Inside a
    torch.distributed process group (``torchrun``), every rank passes its own shard of the data
    and all ranks return the statistics of the union (the ranks' running sums are combined in
    rank order); every rank must call it.

    Args:
        model: The network.
        batches: Iterable of preprocessed input batches ``(N, C, H, W)`` or clips ``(N, C, T, H, W)``.
        layer: Dotted module path (registry default if omitted for a registry model), or a list
            of paths (one estimate each, from the same forward passes).
        pool: Axes of one feature sample ``(C, *S)`` sharing statistics; default: none for
            images, time ``(1,)`` for ``(C, T, H, W)`` maps (clips of any length can then use
            them); ``()`` keeps one estimate per ``(c, t, h, w)``.
        pools: Instead of ``pool``, one per layer (``None``: that layer's default). A layer may
            then be listed more than once with different pools (one forward pass for all).
        min_std: Lower bound of the std.
        max_samples: Stop after this many inputs.
        meta: Provenance to record (model name, input shape, ...).
        pack: For a multi-pathway network: builds its pathway list from each clip batch
            (registry models such as SlowFast: automatic).
        on_batch: Called with the batch size after each batch (progress bars).

    Returns:
        :class:`~video_iba.bottleneck.estimator.Statistics` (savable with ``.save(path)``) for one
        layer, or a list of them, in the order of ``layer``, for several.
    """
    names = layer_names(model, layer, distinct=pools is None)
    if pools is not None:
        if pool is not None:
            raise UserInputError("give {pool} or {pools}, not both", options=["pool", "pools"])
        if len(pools) != len(names):
            raise UserInputError(f"give one pool per layer: {len(pools)} pools for {len(names)} layers")
        keys = [(n, None if p is None else tuple(p)) for n, p in zip(names, pools)]
        if len(set(keys)) != len(keys):
            raise UserInputError(f"each (layer, pool) pair must be distinct, got {keys}")
    per_layer = list(pools) if pools is not None else [pool] * len(names)
    unique = list(dict.fromkeys(names))
    modules = [get_module(model, name, LAYER_HINT) for name in unique]
    pk = input_packer(model, pack)
    ests: list[WelfordEstimator] | None = None
    input_shape: list[int] | None = None
    with frozen(model):
        for xb in batches:
            if not isinstance(xb, torch.Tensor):
                raise UserInputError(f"batches must be tensors (N, C, H, W) or clips (N, C, T, H, W), got "
                                     f"{type(xb).__name__}; a multi-pathway model builds its pathways with {{pack}}",
                                     options=["pack"])
            if max_samples is not None and ests is not None and ests[0].samples >= max_samples:
                break
            if max_samples is not None and ests is not None:
                xb = xb[:max_samples - ests[0].samples]
            if input_shape is None:
                input_shape = [1, *xb.shape[1:]]
            outs = dict(zip(unique, layer_outputs(model, modules, unique, packed(xb, pk))))
            feats = [outs[n] for n in names]
            if ests is None:
                ests = [WelfordEstimator(pool=p if p is not None else ((1,) if f.dim() == 5 else ()))
                        for p, f in zip(per_layer, feats)]
            for est, f in zip(ests, feats):
                est.update(f)
            if on_batch is not None:
                on_batch(int(feats[0].shape[0]))
    if world_size() > 1:  # under torchrun: every rank saw its own shard; combine them
        ests, input_shape = _merge_ranks(ests, input_shape)
    if ests is None:
        raise UserInputError("no inputs to estimate statistics from; give at least 2 inputs")
    out = []
    for name, est in zip(names, ests):
        info = {"layer": name, "input_shape": input_shape, **model_name(model), **(meta or {})}
        out.append(est.finalize(min_std=min_std, meta=info))
    per_position = [e for e in ests if e.feature_shape is not None and len(e.pool) < len(e.feature_shape) - 1]
    if per_position and per_position[0].samples < FEW_SAMPLES:  # once per call; per-channel statistics have plenty
        log.warning("statistics estimated from only %d samples (%d recommended)", per_position[0].samples,
                    10 * FEW_SAMPLES)
    return out[0] if isinstance(layer, str) or (layer is None and len(names) == 1) else out


def _merge_ranks(ests: list[WelfordEstimator] | None,
                 input_shape: list[int] | None) -> tuple[list[WelfordEstimator] | None, list[int] | None]:
    """Every rank's running sums combined in rank order (the same result on every rank)."""
    states = gather(None if ests is None else [e.state() for e in ests])
    merged: list[WelfordEstimator] | None = None
    for st in states:
        if st is None:
            continue
        if merged is None:
            merged = [WelfordEstimator(pool=tuple(s["pool"])) for s in st]
        for est, s in zip(merged, st):
            est.merge(s)
    shapes = [s for s in gather(input_shape) if s is not None]
    return merged, (shapes[0] if shapes else None)
