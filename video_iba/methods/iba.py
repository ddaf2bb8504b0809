"""The per-sample information bottleneck (Schulz et al., ICLR 2020): :func:`explain`, and
:func:`estimate` for its statistics."""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time
import weakref
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .._version import __version__
from ..bottleneck.estimator import DEFAULT_MIN_STD, FEW_SAMPLES, Statistics, WelfordEstimator
from ..bottleneck.functional import working_dtype
from ..bottleneck.insertion import HookedForward, Taps, capture_taps, frozen, get_module, layer_parts, upstream_watch
from ..bottleneck.per_sample import PRECISIONS, NonFiniteFit, PrecisionError, fit_inputs, smoothing_sigmas
from ..bottleneck.split import SplitError, split_runner
from ..config import IBAConfig
from ..distributed import gather, rank, world_size
from ..errors import OutOfMemory, UserInputError
from ..models.layouts import TokenLayout, layouts_for
from ..models.pathways import Pack, input_packer, packed
from ..models.registry import modules_digest
from ..results import Attribution, Unit
from .common import (LAYER_HINT, bits_map, check_channels_first, check_input, check_target, layer_names, model_dtype,
                     model_name, split_capacities, target_label)

log = logging.getLogger(__name__)

#: A class the network gives to the bottleneck's noise with at least this probability is reported.
NOISE_CLASS_P = 0.5
_noise_warned: set[tuple[str, tuple[str, ...], int]] = set()  # (model, layers, class): warned once per process
#: The models (and their layers) warned about a one-step fit, each once.
_one_step_warned: weakref.WeakKeyDictionary[nn.Module, set[tuple[str, ...]]] = weakref.WeakKeyDictionary()


def explain(
    model: nn.Module,
    x: torch.Tensor,
    target: int | str | Sequence[int | str | None] | None = None,
    *,
    layer: str | nn.Module | Sequence[str | nn.Module] | None = None,
    stats: Statistics | Sequence[Statistics | None] | None = None,
    steps: int | None = None,
    samples: int | None = None,
    beta: float | None = None,
    seed: int | Sequence[int] | None = 0,
    config: IBAConfig | None = None,
    pack: Pack | None = None,
    tokens: TokenLayout | Sequence[TokenLayout | None] | None = None,
    split: str = "auto",
    precision: str = "fp32",
    on_step: Callable[[int, float, float], None] | None = None,
) -> Any:
    """Explain ``model``'s decision for ``x`` with a per-sample information bottleneck.

    The model is left exactly as it was: eval mode is used only for the duration, no hook
    remains, and no gradient is computed for its weights.

    Args:
        model: Any classifier ``nn.Module`` returning logits ``(N, K)``.
        x: One preprocessed input, ``(1, C, H, W)`` or a clip ``(1, C, T, H, W)``; or K inputs
            ``(K, C, ...)``, fitted together in one optimisation (each network pass runs all their
            noisy replicas at once), each with its own masks, optimiser state and noise: every
            result equals the input's result alone at the same seed, up to floating-point rounding.
        target: Class to explain: an index, or a class name of the model's spec; ``None`` (or
            ``"top1"``) explains the top-1 prediction. For K inputs, one class for all or a list of K
            (entries may be ``None``).
        layer: Dotted module path where the bottleneck goes (e.g. ``"layer2"``; or the submodule
            itself, ``model.layer2``), or several (one bottleneck each, e.g. one per SlowFast
            pathway, optimised jointly); defaults to the model's registry default if it came from
            :func:`video_iba.load_model`.
        stats: Per-neuron statistics from :func:`estimate` (one per layer for several layers);
            ``None`` uses each layer's own feature map pooled over its positions (recorded in
            ``meta["stats"]``), for each input its own.
        steps, samples, beta: Override ``config`` (paper defaults: 10, 10, 10).
        seed: Seeds the noise (default 0, as the command line's ``--seed``: the same call gives
            the same map in every process); ``None`` draws one per input (recorded in
            ``meta["seed"]``). For K inputs, one seed for all (each input's noise then comes from
            its own generator seeded with it, as when it is explained alone) or a list of K.
        config: All bottleneck settings, see :class:`~video_iba.config.IBAConfig`; ``None``: the
            paper's, or a registry model's own defaults (transformers:
            :meth:`~video_iba.config.IBAConfig.for_transformers`). ``micro_batch`` counts the
            replicas of one input per network pass: a pass runs K times as many, or
            ``inputs_per_pass`` times as many where that is set (registry models may set it on a
            CPU).
        pack: For a multi-pathway network: builds its pathway list from the clip ``x``
            (registry models such as SlowFast: automatic).
        tokens: How a transformer layer's output maps onto a ``(T', H', W')`` grid (one layout for
            every layer, or one per layer; registry models know theirs). Its class tokens are
            restricted too, with their own unsmoothed mask, and reported as
            ``meta["prefix_bits"]`` and ``arrays["prefix_bits"]``, never drawn.
        split: ``"auto"`` computes the network before the layers once (falls back to the full
            forward pass, with a warning and ``meta["prefix_cached"] = False``, where the model
            cannot be split); the split is kept for the model's next input of the same shape (not
            traced again while the model's modules and tensors are unchanged; checked against each
            input's logits) until the model is freed; ``"hook"`` always runs the full network.
        precision: ``"fp32"``; or ``"bf16"`` / ``"fp16"``: the network passes of the fit run under
            autocast in that type, the masks, information terms and optimiser in fp32 (see
            :func:`check_precision` for where each is allowed).
        on_step: Called after each optimisation step with ``(step, ce, info_nats)`` (for K inputs,
            their means).

    Returns:
        :class:`~video_iba.results.Attribution` in bits per cell of ``x``, total preserved; a list
        of K of them when ``x`` holds several inputs or ``target`` is a list. With several layers,
        each layer's map is resized to ``x``'s cells and the maps are summed; ``capacity`` is then a
        list and ``meta["bits_per_layer"]`` keeps each layer's share.
    """
    spec = getattr(model, "video_iba_spec", None)
    cfg = (config or (spec.config() if spec is not None else IBAConfig())).replace(steps=steps, samples=samples,
                                                                                    beta=beta)
    spec_mb = getattr(spec, "micro_batch", None)
    if cfg.micro_batch is None and spec_mb:
        cfg = cfg.replace(micro_batch=spec_mb)  # registry models too large for all replicas at once
    if split not in ("auto", "hook"):
        raise UserInputError(f"split must be 'auto' or 'hook', got {split!r}")
    x, _, inputs = check_input(model, x, pack, many=True)
    check_precision(precision, x.device)
    spec_ipp = getattr(spec, "cpu_inputs_per_pass", None)
    if cfg.inputs_per_pass is None and spec_ipp and x.device.type == "cpu":
        cfg = cfg.replace(inputs_per_pass=spec_ipp)  # measured faster per input in smaller passes on a CPU
    k = x.shape[0]
    many = k > 1 or isinstance(target, (list, tuple))
    wanted = _per_input(target, k, "target")
    seeds = [secrets.randbits(31) if sd is None else int(sd) for sd in _per_input(seed, k, "seed")]
    layers = layer_names(model, layer)
    modules = [get_module(model, name, LAYER_HINT) for name in layers]
    given = _per_layer_stats(stats, layers)
    if cfg.steps == 1 and tuple(layers) not in _one_step_warned.setdefault(model, set()):
        _one_step_warned[model].add(tuple(layers))
        log.warning("with 1 step the mask is never updated: the map is the initial mask's information, the same for "
                    "every class; use at least 2 steps (the paper's 10)")
    t0 = time.perf_counter()
    layouts = layouts_for(model, layers, tokens)
    with _memory_errors(cfg, k), frozen(model), torch.inference_mode(False), torch.enable_grad():
        with upstream_watch(model, _recorded(layers, given)) as found:
            logits, taps = capture_taps(model, modules, layers, inputs, layouts)
        upstream = upstream_weights(model, found)
        groups = taps.grouped(taps.parts)
        rs = [g[0] for g in groups]
        check_channels_first([r for r, lay in zip(rs, layouts) if lay is None], x,
                             [n for n, lay in zip(layers, layouts) if lay is None])
        targets = [check_target(t, logits[i:i + 1], model) for i, t in enumerate(wanted)]
        if all(st is not None for st in given):  # a data set's statistics: the same for every input
            used = [part_statistics(layers, groups, given, cfg.min_std, layouts, upstream)] * k
        else:
            used = [part_statistics(layers, [[p[i:i + 1] for p in g] for g in groups], given, cfg.min_std, layouts,
                                    upstream) for i in range(k)]
        runner, note = _runner(model, layers, inputs, taps.parts, logits, split, taps)
        generators = [torch.Generator(device=rs[0].device).manual_seed(sd) for sd in seeds]
        with _precision_errors(precision):
            if runner is not None:
                fits = fit_inputs(runner, taps.parts, used, targets, cfg, generators, on_step, smoothed=taps.is_map,
                                  precision=precision)
                note = runner.note
            else:
                with HookedForward(model, modules, inputs, note, taps) as hooked:
                    fits = fit_inputs(hooked, taps.parts, used, targets, cfg, generators, on_step,
                                      smoothed=taps.is_map, precision=precision)
    seconds = (time.perf_counter() - t0) / k
    single = len(layers) == 1

    def per_layer(values: list[Any]) -> Any:
        return values[0] if single else values

    def attribution(i: int) -> Attribution:
        fit = fits[i]
        cap_groups = taps.grouped(fit.capacities)
        map_caps, prefix_bits = split_capacities(cap_groups, x.dim() == 4, layouts)
        bits = bits_map(map_caps, tuple(x.shape[2:]))
        own = [g[0] for g in taps.grouped(used[i])]  # each layer's map statistics, for the metadata
        input_shape = (list(inputs[i:i + 1].shape) if isinstance(inputs, torch.Tensor)
                       else [list(t[i:i + 1].shape) for t in inputs])
        meta = {
            "method": "iba_per_sample", "layer": per_layer(layers), "target": targets[i],
            "beta": cfg.beta, "steps": cfg.steps, "samples": cfg.samples, "lr": cfg.lr, "alpha_init": cfg.alpha_init,
            "smoothing_sigmas": list(smoothing_sigmas(rs[0].dim() - 2, cfg)),
            "min_std": cfg.min_std, "micro_batch": cfg.micro_batch,
            "inputs_per_pass": cfg.inputs_per_pass, "seed": seeds[i], "precision": precision,
            "stats": per_layer([u.describe() for u in own]), "stats_source": per_layer([u.source for u in own]),
            "stats_samples": per_layer([u.samples for u in own]),
            "prefix_cached": runner is not None, "prefix_note": note,
            "feature_shape": per_layer([list(r.shape[1:]) for r in rs]),
            "input_shape": input_shape,
            "total_bits": float(bits.double().sum()),
            "bits_per_layer": [float(c.double().sum()) / math.log(2) for c in map_caps],
            **({"token_layouts": per_layer([None if lay is None else repr(lay) for lay in layouts])}
               if any(lay is not None for lay in layouts) else {}),
            **({"prefix_bits": float(sum(float(p.double().sum()) for p in prefix_bits))} if prefix_bits else {}),
            "ce_per_step": fit.ce, "info_nats_per_step": fit.info, **_noise_meta(fit.noise_probs, targets[i]),
            "inputs_per_fit": k, "seconds": round(seconds, 3), "version": __version__, **model_name(model),
            **target_label(model, targets[i]),
        }
        caps = [c.float().cpu() for c in map_caps]
        arrays = {"prefix_bits": torch.cat(prefix_bits).numpy()} if prefix_bits else {}
        return Attribution(values=bits.cpu(), unit=Unit.BITS, target=targets[i], capacity=per_layer(caps),
                           logits=logits[i].float().cpu(), meta=meta, arrays=arrays)

    results = [attribution(i) for i in range(k)]
    who = model_name(model).get("model") or f"{type(model).__name__} at {id(model):#x}"
    for a in results:
        _warn_noise_class(a, layers, who)
    return results if many else results[0]


def _noise_meta(probs: torch.Tensor | None, target: int) -> dict[str, Any]:
    """What the network predicts from the noise alone (every bottleneck closed), for the metadata."""
    if probs is None:
        return {}
    return {"noise_top1": int(probs.argmax()), "noise_p_top1": round(float(probs.max()), 4),
            "noise_p_target": round(float(probs[target]), 4)}


def _warn_noise_class(a: Attribution, layers: Sequence[str], who: str) -> None:
    """Once per model, layers and class: a warning where the network gives the explained class to
    the bottleneck's noise alone (the fit can then keep it with almost nothing let through)."""
    m = a.meta
    if m.get("noise_top1") != a.target or float(m.get("noise_p_target", 0.0)) < NOISE_CLASS_P:
        return
    key = (who, tuple(layers), int(a.target))
    if key in _noise_warned:
        return
    _noise_warned.add(key)
    log.warning("the network gives class %d to the bottleneck's noise alone at %s (p=%.2f): IBA can keep that class "
                "with few bits, and a map of few bits then says that it needs little evidence, not where the "
                "evidence is", a.target, ", ".join(layers), m["noise_p_target"])


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision where it does not pay: fp16 and bf16 run on CUDA devices; on a CPU only
    bf16, and only with native bf16 instructions (AVX-512 BF16 or AMX), where it was measured 1.6-2.8x
    faster than fp32 (fp16 there was 18x slower; see docs/performance.md)."""
    if precision not in PRECISIONS:
        raise UserInputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}",
                             options=["precision"])
    if precision == "fp32" or device.type == "cuda":
        return
    if device.type != "cpu" or precision == "fp16":
        raise UserInputError(f"{{precision}} {precision} is slower than fp32 on {device.type}; use fp32 there, or "
                             f"bf16 on a CPU with native bf16 or any precision on a CUDA device", options=["precision"])
    if not native_cpu_bf16():
        raise UserInputError("{precision} bf16 on this CPU would be emulated (no AVX-512 BF16 or AMX), slower than "
                             "fp32; use fp32", options=["precision"])


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@contextlib.contextmanager
def _precision_errors(precision: str) -> Iterator[None]:
    try:
        yield
    except PrecisionError as exc:
        raise UserInputError(f"{exc}; use {{precision}} bf16 (fp32's range) or fp32",
                             options=["precision"]) from exc
    except NonFiniteFit as exc:
        other = "" if precision == "fp32" else f", or {{precision}} fp32 instead of {precision}"
        raise UserInputError(f"IBA cannot be fitted: {exc}; choose another {{layer}} (`video-iba layers` lists "
                             f"them){other}", options=["layer", "precision"]) from exc


def _per_input(value: Any, k: int, name: str) -> list[Any]:
    """One value per input: a list of K as given, or the single value K times."""
    if isinstance(value, (list, tuple)):
        if len(value) != k:
            raise UserInputError(f"{{{name}}} lists {len(value)} entries for {k} inputs; give one per input or a "
                                 f"single value for all", options=[name])
        return list(value)
    return [value] * k


def part_statistics(layers: Sequence[str], groups: Sequence[Sequence[torch.Tensor]],
                     given: Sequence[Statistics | None], min_std: float,
                     layouts: Sequence[TokenLayout | None] | None = None,
                     upstream: dict[str, str] | None = None) -> list[Statistics]:
    """The statistics of every bottleneck tensor: a layer's map (given, or its own positions pooled)
    and its class tokens (given with the map's, or the map's per-channel statistics). Given ones
    are checked against the layer's output, its token ``layouts`` and the digest of the weights up
    to it (``upstream``, by layer, where known)."""
    out = []
    for name, group, st, layout in zip(layers, groups, given, layouts or [None] * len(layers)):
        r = group[0]
        if st is not None:
            order = layout.order if layout is not None and not layout.channels_last else None
            st.check(r.shape[1:], layer=name, token_order=order, upstream=(upstream or {}).get(name),
                     feature_dtype=r.dtype)
        grid = Statistics.from_input(r, min_std=min_std) if st is None else st
        out.append(grid.to(r.device, working_dtype(r.dtype)))
        for tokens in group[1:]:
            prefix = st.prefix if st is not None and st.prefix is not None else grid.per_channel(tokens.dim() - 2)
            out.append(prefix.to(tokens.device, working_dtype(tokens.dtype)))
    return out


@contextlib.contextmanager
def _memory_errors(cfg: IBAConfig, k: int = 1) -> Iterator[None]:
    """Running out of memory for the noisy replicas is reported with the settings that decide it."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not isinstance(exc, MemoryError) and "memory" not in str(exc).lower():
            raise
        per_pass = cfg.micro_batch or cfg.samples
        inputs = min(k, cfg.inputs_per_pass or k)
        if inputs > 1:
            raise OutOfMemory(f"out of memory with {inputs * per_pass} noisy replicas per network pass ({inputs} "
                              f"inputs x {per_pass}); explain fewer inputs at once or set {{inputs_per_pass}} or "
                              f"{{micro_batch}}", options=["inputs_per_pass", "micro_batch"]) from exc
        raise OutOfMemory(f"out of memory with {per_pass} noisy replicas per network pass ({cfg.samples} samples); "
                          f"lower {{samples}} or set {{micro_batch}}", options=["samples", "micro_batch"]) from exc


def _runner(model: nn.Module, layers: Sequence[str], inputs: Any, rs: Sequence[torch.Tensor], logits: torch.Tensor,
            split: str, taps: Taps | None = None) -> tuple[Any, str]:
    """The network after the layers with its prefix cached (``split="auto"``, where the model can be
    split), or ``None`` and why the whole network runs at every step."""
    if split != "auto":
        return None, "full forward pass per step (split='hook')"
    try:
        return split_runner(model, layers, inputs, rs, logits, taps), ""
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
    layer: str | nn.Module | Sequence[str | nn.Module] | None = None,
    pool: tuple[int, ...] | None = None,
    pools: Sequence[tuple[int, ...] | None] | None = None,
    min_std: float = DEFAULT_MIN_STD,
    max_samples: int | None = None,
    meta: dict[str, Any] | None = None,
    pack: Pack | None = None,
    tokens: TokenLayout | Sequence[TokenLayout | None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    across_ranks: bool = True,
) -> Any:
    """Estimate per-neuron mean and std of a layer's output over a data set.

    Only the network up to the layer(s) runs. The model is left as it was. Inside a
    torch.distributed process group (``torchrun``), every rank passes its own shard of the data
    and all ranks return the statistics of the union (the ranks' running sums are combined in
    rank order); every rank must call it. With ``across_ranks=False`` the statistics are this
    process's data alone, with no communication (for a rank that estimates on its own, when the
    others may not).

    Args:
        model: The network.
        batches: Iterable of preprocessed input batches ``(N, C, H, W)`` or clips ``(N, C, T, H, W)``;
            or one such batch, a tensor.
        layer: Dotted module path or submodule (registry default if omitted for a registry
            model), or a list of them (one estimate each, from the same forward passes).
        pool: Axes of one feature sample ``(C, *S)`` sharing statistics; default: none for
            images and token grids (position embeddings), time ``(1,)`` for ``(C, T, H, W)`` maps,
            channels-last ones (Swin3D) included (clips of any length can then use them); ``()``
            keeps one estimate per ``(c, t, h, w)``.
        pools: Instead of ``pool``, one per layer (``None``: that layer's default). A layer may
            then be listed more than once with different pools (one forward pass for all).
        min_std: Lower bound of the std.
        max_samples: Stop after this many inputs.
        meta: Provenance to record (model name, input shape, ...).
        pack: For a multi-pathway network: builds its pathway list from each clip batch
            (registry models such as SlowFast: automatic).
        tokens: Token layouts of transformer layers, as for :func:`explain`; class tokens get their
            own per-token statistics (``Statistics.prefix``).
        on_batch: Called with the batch size after each batch (progress bars).
        across_ranks: Under torchrun, combine the ranks' shards (every rank must call it), or
            keep to this process's data (``False``).

    Returns:
        :class:`~video_iba.bottleneck.estimator.Statistics` (savable with ``.save(path)``) for one
        layer, or a list of them, in the order of ``layer``, for several.
    """
    names = layer_names(model, layer, distinct=pools is None)
    if isinstance(batches, torch.Tensor):  # one batch (iterating it would give its inputs without a batch axis)
        batches = [batches]
    per_layer = _pools(names, pool, pools)
    unique = list(dict.fromkeys(names))
    modules = [get_module(model, name, LAYER_HINT) for name in unique]
    layouts = dict(zip(names, layouts_for(model, names, tokens)))
    pk = input_packer(model, pack)
    ests: list[WelfordEstimator] | None = None
    owners: list[tuple[int, int]] = []  # (entry of ``names``, part) of every estimator
    input_shape: list[int] | None = None
    digests: dict[str, str] = {}  # from the first batch's pass
    with frozen(model):
        dtype = model_dtype(model)
        for xb in batches:
            xb = _checked_batch(_batch_inputs(xb), dtype)
            seen = ests[0].samples if ests is not None else 0
            if max_samples is not None and seen >= max_samples:
                break
            if max_samples is not None:  # the first batch too
                xb = xb[:max_samples - seen]
            input_shape = _like_the_first(xb, input_shape)
            with upstream_watch(model, unique if ests is None else []) as found:
                outs = dict(zip(unique, layer_parts(model, modules, unique, packed(xb, pk),
                                                    [layouts[n] for n in unique])))
            digests = digests or upstream_weights(model, found)
            feats = [(i, j, part) for i, n in enumerate(names) for j, part in enumerate(outs[n])]
            if ests is None:
                ests = [WelfordEstimator(pool=_default_pool(per_layer[i], f, layouts[names[i]]) if j == 0 else ())
                        for i, j, f in feats]
                owners = [(i, j) for i, j, _ in feats]
            for est, (_, _, f) in zip(ests, feats):
                est.update(f)
            if on_batch is not None:
                on_batch(int(feats[0][2].shape[0]))
    if across_ranks and world_size() > 1:  # under torchrun: every rank saw its own shard; combine them
        ests, owners, input_shape, digests = _merge_ranks(ests, owners, input_shape, digests)
    if ests is None:
        raise UserInputError("no inputs to estimate statistics from; give at least 2 inputs")
    orders = {n: lay.order for n, lay in layouts.items() if lay is not None and not lay.channels_last}
    out = _finalised(ests, [(names[i], j) for i, j in owners],
                     {"input_shape": input_shape, **model_name(model), **(meta or {})}, min_std, orders, digests)
    per_position = [e for e in ests if e.feature_shape is not None and len(e.pool) < len(e.feature_shape) - 1]
    merged = across_ranks and world_size() > 1  # every process holds the same statistics: the first one says so
    if per_position and per_position[0].samples < FEW_SAMPLES and not (merged and rank() != 0):  # per-channel: plenty
        log.warning("statistics estimated from only %d samples (%d recommended)", per_position[0].samples,
                    10 * FEW_SAMPLES)
    return out[0] if isinstance(layer, (str, nn.Module)) or (layer is None and len(names) == 1) else out


def _finalised(ests: Sequence[WelfordEstimator], owners: Sequence[tuple[str, int]], meta: dict[str, Any],
               min_std: float, orders: dict[str, str], digests: dict[str, str]) -> list[Statistics]:
    """The statistics of each layer from its estimators: ``owners`` gives each estimator's layer and
    part (0: the layer's map or grid tokens, 1: its prefix tokens, kept as the first's ``prefix``);
    a token layer's statistics record the order of its grid tokens (``orders``), and each the
    digest of the weights its layer's output depends on (``digests``, see :func:`upstream_weights`)."""
    out: list[Statistics] = []
    for est, (layer, part) in zip(ests, owners):
        order = {"token_order": orders[layer]} if layer in orders else {}
        st = est.finalize(min_std=min_std, meta={"layer": layer, **order, "upstream_digest": digests[layer], **meta})
        if part == 0:
            out.append(st)
        else:
            out[-1].prefix = st
    return out


def upstream_weights(model: nn.Module, found: dict[str, list[str]]) -> dict[str, str]:
    """For each layer, the digest of the weights its output depends on, from the modules
    :func:`upstream_watch` found for it. Statistics record it, so that statistics are not used
    with a network that gives their layer other weights, while the layers after it may differ (as
    in the parameter-randomisation metric)."""
    return {layer: modules_digest(model, names) for layer, names in found.items()}


def _recorded(layers: Sequence[str], given: Sequence[Statistics | None]) -> list[str]:
    """The layers whose given statistics record the digest of the weights up to them."""
    return [layer for layer, st in zip(layers, given) if st is not None and "upstream_digest" in st.meta]


def _pools(names: Sequence[str], pool: tuple[int, ...] | None,
           pools: Sequence[tuple[int, ...] | None] | None) -> list[tuple[int, ...] | None]:
    """The pool of each layer of ``names``: ``pool`` for all, or ``pools``, one each, checked."""
    if pools is None:
        return [pool] * len(names)
    if pool is not None:
        raise UserInputError("give {pool} or {pools}, not both", options=["pool", "pools"])
    if len(pools) != len(names):
        raise UserInputError(f"give one pool per layer: {len(pools)} pools for {len(names)} layers")
    keys = [(n, None if p is None else tuple(p)) for n, p in zip(names, pools)]
    if len(set(keys)) != len(keys):
        raise UserInputError(f"each (layer, pool) pair must be distinct, got {keys}")
    return list(pools)


def _checked_batch(xb: Any, dtype: torch.dtype) -> torch.Tensor:
    """Refuse a batch that is not a tensor of images or clips in the model's type."""
    if not isinstance(xb, torch.Tensor):
        raise UserInputError(f"batches must be tensors (N, C, H, W) or clips (N, C, T, H, W), got "
                             f"{type(xb).__name__}; a multi-pathway model builds its pathways with {{pack}}",
                             options=["pack"])
    if xb.dim() not in (4, 5):
        raise UserInputError(f"a batch must be (N, C, H, W) or clips (N, C, T, H, W), got shape "
                             f"{tuple(xb.shape)}; add a batch axis to one input with x[None]")
    if xb.dtype != dtype:
        fix = ("preprocess the pixels with preprocess_image or preprocess_clip" if not xb.is_floating_point()
               else f"convert them with x.to({dtype})")
        raise UserInputError(f"a batch is {xb.dtype} but the model's parameters are {dtype}; {fix}")
    return xb


def _like_the_first(xb: torch.Tensor, input_shape: list[int] | None) -> list[int]:
    """The shape of one input, ``[1, C, ...]``, checked against the first batch's
    (``input_shape``; ``None`` for the first batch); the values must be finite."""
    if input_shape is not None and list(xb.shape[1:]) != input_shape[1:]:
        raise UserInputError(f"a batch has inputs of shape {tuple(xb.shape[1:])}, the first had "
                             f"{tuple(input_shape[1:])}; give inputs of one size (resized and cropped alike)")
    if not bool(torch.isfinite(xb).all()):
        raise UserInputError("a batch contains NaN or infinite values; check how the inputs were read and "
                             "preprocessed")
    return [1, *xb.shape[1:]]


def _batch_inputs(batch: Any) -> Any:
    """The inputs of a batch: the batch itself, or the first entry of a data loader's ``(inputs,
    labels, ...)`` (a tensor of inputs followed by entries that are not: labels, indices, names)."""
    if (isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor) and batch[0].dim() in (4, 5)
            and all(not isinstance(b, torch.Tensor) or b.dim() <= 1 for b in batch[1:])):
        return batch[0]
    return batch


def _default_pool(pool: tuple[int, ...] | None, feature: torch.Tensor, layout: TokenLayout | None) -> tuple[int, ...]:
    """Pooled axes of a map: as given; else time for a clip's feature map, channels-first or
    channels-last (Swin3D's, which has no absolute positions), nothing for images and token grids
    (each grid position has its own position embedding)."""
    if pool is not None:
        return tuple(pool)
    return (1,) if feature.dim() == 5 and (layout is None or layout.channels_last) else ()


_Merged = tuple[list[WelfordEstimator] | None, list[tuple[int, int]], list[int] | None, dict[str, str]]


def _merge_ranks(ests: list[WelfordEstimator] | None, owners: list[tuple[int, int]], input_shape: list[int] | None,
                 digests: dict[str, str]) -> _Merged:
    """Every rank's running sums combined in rank order, with what each estimator belongs to, the
    input shape and the digests of the layers' weights (the same result on every rank, a rank that
    had no inputs included); ranks whose models give a layer other weights are refused."""
    states = gather(None if ests is None else ([e.state() for e in ests], owners, input_shape, digests))
    merged: list[WelfordEstimator] | None = None
    for st in states:
        if st is None:
            continue
        if merged is None:
            merged = [WelfordEstimator(pool=tuple(s["pool"])) for s in st[0]]
            owners, input_shape, digests = [(int(i), int(j)) for i, j in st[1]], st[2], dict(st[3])
        differ = [layer for layer, d in st[3].items() if digests.get(layer) != d]
        if differ:
            raise UserInputError(f"the processes' models give '{differ[0]}' other weights; load the same weights in "
                                 f"every process")
        for est, s in zip(merged, st[0]):
            est.merge(s)
    return merged, owners, input_shape, digests
