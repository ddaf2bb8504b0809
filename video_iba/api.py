"""The Python entry points: :func:`explain` and :func:`estimate`."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ._version import __version__
from .attribution import Attribution
from .bottleneck.estimator import DEFAULT_MIN_STD, Statistics, WelfordEstimator
from .bottleneck.insertion import HookedForward, capture, frozen, get_module, layer_output
from .bottleneck.per_sample import fit_per_sample, smoothing_sigmas
from .bottleneck.split import CachedSuffix, SplitError
from .config import IBAConfig
from .errors import UserInputError
from .heatmap import capacity_to_bits

log = logging.getLogger(__name__)

_LAYER_HINT = "list the layers with `video-iba layers --model NAME` or model.named_modules()"


def _default_layer(model: nn.Module, layer: str | None) -> str:
    if layer is not None:
        return layer
    spec = getattr(model, "video_iba_spec", None)
    if spec is not None and spec.default_layer:
        return str(spec.default_layer)
    raise UserInputError("no layer given; pass layer='name' (a dotted module path of the model)")


def _check_input(model: nn.Module, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise UserInputError(f"x must be a preprocessed tensor (1, C, H, W) or (1, C, T, H, W), not {type(x).__name__}")
    if x.dim() not in (4, 5) or x.shape[0] != 1:
        raise UserInputError(f"x must have shape (1, C, H, W) or (1, C, T, H, W), got {tuple(x.shape)}; "
                             f"explain one input at a time (add a batch axis with x[None])")
    if not x.is_floating_point():
        raise UserInputError(f"x must be a float tensor (normalised input), got {x.dtype}")
    p = next(iter(model.parameters()), None)
    if p is not None and p.device != x.device:
        raise UserInputError(f"x is on {x.device} but the model is on {p.device}; move one of them")
    return x.detach()


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
    x: torch.Tensor,
    target: int | None = None,
    *,
    layer: str | None = None,
    stats: Statistics | None = None,
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
        x: One preprocessed input, ``(1, C, H, W)`` or ``(1, C, T, H, W)``.
        target: Class to explain; ``None`` explains the top-1 prediction.
        layer: Dotted module path where the bottleneck goes (e.g. ``"layer2"``); defaults to the
            model's registry default if it came from :func:`video_iba.load_model`.
        stats: Per-neuron statistics from :func:`estimate`; ``None`` uses the input's own
            feature map pooled over its positions (recorded in ``meta["stats"]``).
        steps, samples, beta: Override ``config`` (paper defaults: 10, 10, 10).
        seed: Seeds the noise; ``None`` draws one (recorded in ``meta["seed"]``).
        config: All bottleneck settings, see :class:`~video_iba.config.IBAConfig`.
        split: ``"auto"`` computes the network before the layer once (falls back to the full
            forward pass, with a warning and ``meta["prefix_cached"] = False``, where the model
            cannot be split); ``"hook"`` always runs the full network.
        on_step: Called after each optimisation step with ``(step, ce, info_nats)``.

    Returns:
        :class:`~video_iba.attribution.Attribution` in bits per input cell, total preserved.
    """
    cfg = (config or IBAConfig()).replace(steps=steps, samples=samples, beta=beta)
    if split not in ("auto", "hook"):
        raise UserInputError(f"split must be 'auto' or 'hook', got {split!r}")
    x = _check_input(model, x)
    layer = _default_layer(model, layer)
    module = get_module(model, layer, _LAYER_HINT)
    if seed is None:
        seed = secrets.randbits(31)
    t0 = time.perf_counter()
    with frozen(model), torch.inference_mode(False), torch.enable_grad():
        logits, r = capture(model, module, layer, x)
        target = _check_target(target, logits)
        if stats is None:
            used = Statistics.from_input(r, min_std=cfg.min_std)
        else:
            stats.check(r.shape[1:], layer=layer)
            used = stats
        used = used.to(r.device, r.dtype)

        note = "full forward pass per step (split='hook')"
        runner: Any = None
        if split == "auto":
            try:
                runner = CachedSuffix(model, layer, x, r, logits)
            except SplitError as exc:
                note = f"full forward pass per step: {exc}"
                log.warning("cannot run only the network after '%s' (%s); running the whole network at every step", layer, exc)
        generator = torch.Generator(device=r.device)
        generator.manual_seed(int(seed))
        if runner is not None:
            fit = fit_per_sample(runner, r, used, target, cfg, generator, on_step)
            note = runner.note
        else:
            with HookedForward(model, module, x, note) as hooked:
                fit = fit_per_sample(hooked, r, used, target, cfg, generator, on_step)
    bits = capacity_to_bits(fit.capacity, tuple(x.shape[2:]))
    meta = {
        "method": "iba_per_sample",
        "layer": layer,
        "target": target,
        "beta": cfg.beta, "steps": cfg.steps, "samples": cfg.samples, "lr": cfg.lr,
        "alpha_init": cfg.alpha_init, "smoothing_sigmas": list(smoothing_sigmas(r.dim() - 2, cfg)),
        "min_std": cfg.min_std, "micro_batch": cfg.micro_batch,
        "seed": int(seed),
        "stats": used.describe(), "stats_source": used.source, "stats_samples": used.samples,
        "prefix_cached": runner is not None, "prefix_note": note,
        "feature_shape": list(r.shape[1:]), "input_shape": list(x.shape),
        "total_bits": float(bits.double().sum()),
        "ce_per_step": fit.ce, "info_nats_per_step": fit.info,
        "seconds": round(time.perf_counter() - t0, 3),
        "version": __version__,
    }
    spec = getattr(model, "video_iba_spec", None)
    if spec is not None:
        meta["model"] = spec.name
    return Attribution(values=bits.cpu(), unit="bits", target=target, capacity=fit.capacity.float().cpu(),
                       logits=logits[0].float().cpu(), meta=meta)


def estimate(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    layer: str | None = None,
    pool: tuple[int, ...] | None = None,
    min_std: float = DEFAULT_MIN_STD,
    max_samples: int | None = None,
    meta: dict[str, Any] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Statistics:
    """Estimate per-neuron mean and std of ``layer``'s output over a data set.

    Only the network up to the layer runs. The model is left as it was.

    Args:
        model: The network.
        batches: Iterable of preprocessed input batches ``(N, C, H, W)`` or ``(N, C, T, H, W)``.
        layer: Dotted module path (registry default if omitted for a registry model).
        pool: Axes of one feature sample ``(C, *S)`` sharing statistics; default: none for
            images, time ``(1,)`` for ``(C, T, H, W)`` maps.
        min_std: Lower bound of the std.
        max_samples: Stop after this many inputs.
        meta: Provenance to record (model name, input shape, ...).
        on_batch: Called with the batch size after each batch (progress bars).

    Returns:
        :class:`~video_iba.bottleneck.estimator.Statistics`, savable with ``.save(path)``.
    """
    layer = _default_layer(model, layer)
    module = get_module(model, layer, _LAYER_HINT)
    est: WelfordEstimator | None = None
    input_shape: list[int] | None = None
    with frozen(model):
        for xb in batches:
            if max_samples is not None and est is not None and est.samples >= max_samples:
                break
            if max_samples is not None and est is not None:
                xb = xb[: max_samples - est.samples]
            if input_shape is None:
                input_shape = [1, *xb.shape[1:]]
            feats = layer_output(model, module, layer, xb)
            if est is None:
                est = WelfordEstimator(pool=pool if pool is not None else ((1,) if feats.dim() == 5 else ()))
            est.update(feats)
            if on_batch is not None:
                on_batch(int(xb.shape[0]))
    if est is None:
        raise UserInputError("no inputs to estimate statistics from; give at least 2 inputs")
    spec = getattr(model, "video_iba_spec", None)
    info = {"layer": layer, "input_shape": input_shape, **({"model": spec.name} if spec is not None else {}), **(meta or {})}
    return est.finalize(min_std=min_std, meta=info)
