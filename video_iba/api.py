"""The Python entry points: :func:`explain` and :func:`estimate`."""

from __future__ import annotations

import logging
import math
import secrets
import time
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ._version import __version__
from .attribution import Attribution
from .bottleneck.estimator import DEFAULT_MIN_STD, FEW_SAMPLES, Statistics, WelfordEstimator
from .bottleneck.insertion import HookedForward, Inputs, capture, frozen, get_module, layer_outputs
from .bottleneck.per_sample import fit_per_sample, smoothing_sigmas
from .bottleneck.split import SplitError, split_runner
from .config import IBAConfig
from .errors import UserInputError
from .heatmap import capacity_to_bits

log = logging.getLogger(__name__)

_LAYER_HINT = "list the layers with `video-iba layers --model NAME` or model.named_modules()"


def _layers(model: nn.Module, layer: str | Sequence[str] | None, distinct: bool = True) -> list[str]:
    if layer is None:
        spec = getattr(model, "video_iba_spec", None)
        layer = spec.default_layer if spec is not None else None
        if not layer:
            raise UserInputError("no layer given; pass layer='name' (a dotted module path of the model)")
    names = [layer] if isinstance(layer, str) else list(layer)
    if not names or (distinct and len(set(names)) != len(names)):
        raise UserInputError(f"layers must be distinct module paths, got {names}")
    return names


def _check_tensor(model_device: torch.device | None, x: Any, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise UserInputError(f"{what} must be a preprocessed tensor (1, C, H, W) or (1, C, T, H, W), not {type(x).__name__}")
    if x.dim() not in (4, 5) or x.shape[0] != 1:
        raise UserInputError(f"{what} must have shape (1, C, H, W) or (1, C, T, H, W), got {tuple(x.shape)}; "
                             f"explain one input at a time (add a batch axis with x[None])")
    if not x.is_floating_point():
        raise UserInputError(f"{what} must be a float tensor (normalised input), got {x.dtype}")
    if model_device is not None and model_device != x.device:
        raise UserInputError(f"{what} is on {x.device} but the model is on {model_device}; move one of them")
    return x.detach()


def _check_input(model: nn.Module, x: Any) -> Inputs:
    p = next(iter(model.parameters()), None)
    dev = p.device if p is not None else None
    if isinstance(x, (list, tuple)):
        if not x:
            raise UserInputError("x is an empty list; give one tensor per pathway")
        return [_check_tensor(dev, t, f"x[{i}]") for i, t in enumerate(x)]
    return _check_tensor(dev, x, "x")


def _map_size(x: Inputs) -> tuple[int, ...]:
    """The resolution maps are given at: the input's, or for pathway lists the largest pathway's (SlowFast: fast)."""
    if isinstance(x, torch.Tensor):
        return tuple(x.shape[2:])
    return tuple(max(x, key=lambda t: t[0, 0].numel()).shape[2:])


def _check_target(target: int | None, logits: torch.Tensor) -> int:
    k = logits.shape[1]
    if target is None:
        return int(logits[0].argmax())
    if isinstance(target, bool) or not isinstance(target, int):
        raise UserInputError(f"target must be a class index (int), got {target!r}")
    if not 0 <= target < k:
        raise UserInputError(f"target {target} is out of range; the model has {k} classes (0..{k - 1})")
    return target


def explain(
    model: nn.Module,
    x: Inputs,
    target: int | None = None,
    *,
    layer: str | Sequence[str] | None = None,
    stats: Statistics | Sequence[Statistics | None] | None = None,
    steps: int | None = None,
    samples: int | None = None,
    beta: float | None = None,
    seed: int | None = None,
    config: IBAConfig | None = None,
    split: str = "auto",
    on_step: Callable[[int, float, float], None] | None = None,
) -> Attribution:
    """Explain ``model``'s decision for ``x`` with a per-sample information bottleneck.

    The model is left exactly as it was: eval mode is used only for the duration, no hook
    remains, and no gradient is computed for its weights.

    Args:
        model: Any classifier ``nn.Module`` returning logits ``(N, K)``.
        x: One preprocessed input, ``(1, C, H, W)`` or ``(1, C, T, H, W)``, or a list of such
            tensors for multi-pathway models (SlowFast: ``[slow, fast]``); lists are passed to
            the model as a new list on every call.
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
        split: ``"auto"`` computes the network before the layers once (falls back to the full
            forward pass, with a warning and ``meta["prefix_cached"] = False``, where the model
            cannot be split); ``"hook"`` always runs the full network.
        on_step: Called after each optimisation step with ``(step, ce, info_nats)``.

    Returns:
        :class:`~video_iba.attribution.Attribution` in bits per input cell, total preserved. With
        several layers, each layer's map is resized to the largest input (SlowFast: the fast
        pathway's ``(T, H, W)``) and the maps are summed; ``capacity`` is then a list.
    """
    cfg = (config or IBAConfig()).replace(steps=steps, samples=samples, beta=beta)
    spec_mb = getattr(getattr(model, "video_iba_spec", None), "micro_batch", None)
    if cfg.micro_batch is None and spec_mb:
        cfg = cfg.replace(micro_batch=spec_mb)  # registry models too large for all replicas at once
    if split not in ("auto", "hook"):
        raise UserInputError(f"split must be 'auto' or 'hook', got {split!r}")
    x = _check_input(model, x)
    layers = _layers(model, layer)
    modules = [get_module(model, name, _LAYER_HINT) for name in layers]
    if isinstance(stats, Statistics) and len(layers) > 1:
        raise UserInputError(f"{len(layers)} layers need {len(layers)} statistics (a list), one per layer")
    given = [stats] * len(layers) if stats is None or isinstance(stats, Statistics) else list(stats)
    if len(given) != len(layers):
        raise UserInputError(f"got {len(given)} statistics for {len(layers)} layers; give one per layer")
    if seed is None:
        seed = secrets.randbits(31)
    t0 = time.perf_counter()
    with frozen(model), torch.inference_mode(False), torch.enable_grad():
        logits, rs = capture(model, modules, layers, x)
        target = _check_target(target, logits)
        used = []
        for name, r, st in zip(layers, rs, given):
            if st is None:
                st = Statistics.from_input(r, min_std=cfg.min_std)
            else:
                st.check(r.shape[1:], layer=name)
            used.append(st.to(r.device, r.dtype))

        note = "full forward pass per step (split='hook')"
        runner: Any = None
        if split == "auto":
            try:
                runner = split_runner(model, layers, x, rs, logits)
            except SplitError as exc:
                note = f"full forward pass per step: {exc}"
                log.warning("cannot run only the network after %s (%s); running the whole network at every step",
                            ", ".join(f"'{n}'" for n in layers), exc)
        generator = torch.Generator(device=rs[0].device)
        generator.manual_seed(int(seed))
        if runner is not None:
            fit = fit_per_sample(runner, rs, used, target, cfg, generator, on_step)
            note = runner.note
        else:
            with HookedForward(model, modules, x, note) as hooked:
                fit = fit_per_sample(hooked, rs, used, target, cfg, generator, on_step)
    size = _map_size(x)
    bits = capacity_to_bits(fit.capacities[0], size)
    for cap in fit.capacities[1:]:
        bits = bits + capacity_to_bits(cap, size)
    single = len(layers) == 1
    meta = {
        "method": "iba_per_sample",
        "layer": layers[0] if single else layers,
        "target": target,
        "beta": cfg.beta, "steps": cfg.steps, "samples": cfg.samples, "lr": cfg.lr,
        "alpha_init": cfg.alpha_init,
        "smoothing_sigmas": list(smoothing_sigmas(rs[0].dim() - 2, cfg)),
        "min_std": cfg.min_std, "micro_batch": cfg.micro_batch,
        "seed": int(seed),
        "stats": used[0].describe() if single else [u.describe() for u in used],
        "stats_source": used[0].source if single else [u.source for u in used],
        "stats_samples": used[0].samples if single else [u.samples for u in used],
        "prefix_cached": runner is not None, "prefix_note": note,
        "feature_shape": list(rs[0].shape[1:]) if single else [list(r.shape[1:]) for r in rs],
        "input_shape": list(x.shape) if isinstance(x, torch.Tensor) else [list(t.shape) for t in x],
        "total_bits": float(bits.double().sum()),
        "bits_per_layer": [float(c.double().sum()) / math.log(2) for c in fit.capacities],
        "ce_per_step": fit.ce, "info_nats_per_step": fit.info,
        "seconds": round(time.perf_counter() - t0, 3),
        "version": __version__,
    }
    spec = getattr(model, "video_iba_spec", None)
    if spec is not None:
        meta["model"] = spec.name
    caps = [c.float().cpu() for c in fit.capacities]
    return Attribution(values=bits.cpu(), unit="bits", target=target, capacity=caps[0] if single else caps,
                       logits=logits[0].float().cpu(), meta=meta)


def estimate(
    model: nn.Module,
    batches: Iterable[Inputs],
    *,
    layer: str | Sequence[str] | None = None,
    pool: tuple[int, ...] | None = None,
    pools: Sequence[tuple[int, ...] | None] | None = None,
    min_std: float = DEFAULT_MIN_STD,
    max_samples: int | None = None,
    meta: dict[str, Any] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Any:
    """Estimate per-neuron mean and std of a layer's output over a data set.

    Only the network up to the layer(s) runs. The model is left as it was. Inside a
    torch.distributed process group (``torchrun``), every rank passes its own shard of the data
    and all ranks return the statistics of the union (the ranks' running sums are combined in
    rank order); every rank must call it.

    Args:
        model: The network.
        batches: Iterable of preprocessed input batches ``(N, C, H, W)`` or ``(N, C, T, H, W)``,
            or lists of pathway batches (SlowFast).
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
        on_batch: Called with the batch size after each batch (progress bars).

    Returns:
        :class:`~video_iba.bottleneck.estimator.Statistics` (savable with ``.save(path)``) for one
        layer, or a list of them, in the order of ``layer``, for several.
    """
    names = _layers(model, layer, distinct=pools is None)
    if pools is not None:
        if pool is not None:
            raise UserInputError("give pool or pools, not both")
        if len(pools) != len(names):
            raise UserInputError(f"give one pool per layer: {len(pools)} pools for {len(names)} layers")
        keys = [(n, None if p is None else tuple(p)) for n, p in zip(names, pools)]
        if len(set(keys)) != len(keys):
            raise UserInputError(f"each (layer, pool) pair must be distinct, got {keys}")
    per_layer = list(pools) if pools is not None else [pool] * len(names)
    unique = list(dict.fromkeys(names))
    modules = [get_module(model, name, _LAYER_HINT) for name in unique]
    ests: list[WelfordEstimator] | None = None
    input_shape: list[Any] | None = None
    with frozen(model):
        for xb in batches:
            if max_samples is not None and ests is not None and ests[0].samples >= max_samples:
                break
            if max_samples is not None and ests is not None:
                keep = max_samples - ests[0].samples
                xb = xb[:keep] if isinstance(xb, torch.Tensor) else [t[:keep] for t in xb]
            if input_shape is None:
                input_shape = [1, *xb.shape[1:]] if isinstance(xb, torch.Tensor) else [[1, *t.shape[1:]] for t in xb]
            outs = dict(zip(unique, layer_outputs(model, modules, unique, xb)))
            feats = [outs[n] for n in names]
            if ests is None:
                ests = [WelfordEstimator(pool=p if p is not None else ((1,) if f.dim() == 5 else ()))
                        for p, f in zip(per_layer, feats)]
            for est, f in zip(ests, feats):
                est.update(f)
            if on_batch is not None:
                on_batch(int(feats[0].shape[0]))
    from . import distributed

    if distributed.world_size() > 1:  # under torchrun: every rank saw its own shard; combine them
        states = distributed.gather(None if ests is None else [e.state() for e in ests])
        merged: list[WelfordEstimator] | None = None
        for st in states:
            if st is None:
                continue
            if merged is None:
                merged = [WelfordEstimator(pool=tuple(s["pool"])) for s in st]
            for est, s in zip(merged, st):
                est.merge(s)
        ests = merged
        shapes = [s for s in distributed.gather(input_shape) if s is not None]
        input_shape = shapes[0] if shapes else None
    if ests is None:
        raise UserInputError("no inputs to estimate statistics from; give at least 2 inputs")
    spec = getattr(model, "video_iba_spec", None)
    out = []
    for name, est in zip(names, ests):
        info = {"layer": name, "input_shape": input_shape, **({"model": spec.name} if spec is not None else {}),
                **(meta or {})}
        out.append(est.finalize(min_std=min_std, meta=info))
    per_position = [e for e in ests if e.feature_shape is not None and len(e.pool) < len(e.feature_shape) - 1]
    if per_position and per_position[0].samples < FEW_SAMPLES:  # once per call; per-channel statistics have plenty
        log.warning("statistics estimated from only %d samples (%d recommended)", per_position[0].samples,
                    10 * FEW_SAMPLES)
    return out[0] if isinstance(layer, str) or (layer is None and len(names) == 1) else out
