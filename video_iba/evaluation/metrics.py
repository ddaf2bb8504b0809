"""The paper's attribution metrics for images, extended to clips (tiles become tubes).

Everything here works on maps at the model input's resolution, ``(H, W)`` or ``(T, H, W)``, and
on the preprocessed input ``(1, C, H, W)`` / ``(1, C, T, H, W)``. "Replace by the mean" and
"set to 0" act in the model's **normalised** input space: the per-channel mean of the input
itself, and the value 0 (which is the dataset mean colour after normalisation).

Definitions (Schulz et al. 2020, Section 4, extended):

* **Degradation**: the input is split into ``tile x tile`` tiles (clips: ``t_tile x tile x tile``
  tubes); tiles are ranked by their mean attribution and replaced, one after another, by the
  input's per-channel mean, most relevant first (MoRF) or least relevant first (LeRF). The
  target's softmax probability is recorded at ``points`` evenly spaced fractions of removed
  tiles and normalised per input so the original input scores 1 and the fully replaced one 0.
  Score = area between the LeRF and the MoRF curve (trapezoids over the fraction axis).
* **Bounding box** / **tube hit ratio**: with ``n`` the number of cells inside the box (or the
  tube: per-frame boxes over the clip's frames), the fraction of the ``n`` highest-attributed
  cells that lie inside it.
* **Temporal share**: the share of the map's per-frame mass (sum of positive values per frame)
  that falls in the discriminative frame interval.
* **Sensitivity-n**: for each ``n``, ``masks`` random sets of ``n`` tiles are set to 0; the score
  is the Pearson correlation between the attribution summed over the set and the drop of the
  target logit.
* **Parameter randomisation**: stages re-initialised cascading from the output; SSIM between the
  original and the randomised map, both as ``|map| / max |map|`` (clips: SSIM per frame, averaged).

Scores are reported with :func:`bootstrap_ci` (mean, 95 % percentile interval, sample count).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..bottleneck.insertion import frozen, upstream_modules
from ..errors import UserInputError
from ..methods.baselines import perturbation_batch
from ..methods.common import check_target
from ..models.pathways import Pack, input_packer, one_input, packed
from ..results import Attribution
from ..seeding import cuda_devices, derived_seed, seeded


def tile_labels(shape: Sequence[int], tile: int, t_tile: int | None = None) -> np.ndarray:
    """Tile index of every cell of a ``(H, W)`` or ``(T, H, W)`` grid (edge tiles may be smaller)."""
    if tile <= 0 or (t_tile is not None and t_tile <= 0):
        raise UserInputError("tile sizes must be > 0")
    if len(shape) == 2:
        h, w = shape
        ny, nx = math.ceil(h / tile), math.ceil(w / tile)
        yy, xx = np.meshgrid(np.arange(h) // tile, np.arange(w) // tile, indexing="ij")
        return (yy * nx + xx).astype(np.int64)
    if len(shape) == 3:
        t, h, w = shape
        tt = t_tile or t
        ny, nx = math.ceil(h / tile), math.ceil(w / tile)
        ti, y3, x3 = np.meshgrid(np.arange(t) // tt, np.arange(h) // tile, np.arange(w) // tile, indexing="ij")
        return ((ti * ny + y3) * nx + x3).astype(np.int64)
    raise UserInputError(f"maps must be (H, W) or (T, H, W), got shape {tuple(shape)}")


def tile_means(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over each tile of ``labels``."""
    n = int(labels.max()) + 1
    sums = np.bincount(labels.ravel(), weights=values.ravel().astype(np.float64), minlength=n)
    counts = np.bincount(labels.ravel(), minlength=n)
    return sums / np.maximum(counts, 1)


Map = np.ndarray | torch.Tensor | Attribution


def as_map(values: Map) -> np.ndarray:
    """A map as a float64 array: an array, a tensor, or an :class:`~video_iba.results.Attribution`'s
    ``values``."""
    if isinstance(values, Attribution):
        values = values.values
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"a map must be an array, a tensor or an Attribution, got {type(values).__name__}") from exc


def _check_map(values: Map, x: torch.Tensor) -> np.ndarray:
    v = as_map(values)
    if tuple(v.shape) != tuple(x.shape[2:]):
        raise UserInputError(f"the map has shape {tuple(v.shape)} but the input's cells are {tuple(x.shape[2:])}")
    if not np.isfinite(v).all():
        raise UserInputError("the map has non-finite values")
    return v


def _tiles(shape: Sequence[int], tile: int, t_tile: int | None) -> tuple[np.ndarray, int]:
    """:func:`tile_labels` and the number of tiles, refused when there is only one."""
    labels = tile_labels(shape, tile, t_tile)
    n_tiles = int(labels.max()) + 1
    if n_tiles < 2:
        raise UserInputError(f"tile={tile}{'' if t_tile is None else f', t_tile={t_tile}'} makes one tile of the "
                             f"{'x'.join(map(str, shape))} map, which leaves nothing to rank; give smaller tiles")
    return labels, n_tiles


#: Perturbed inputs per network pass of the metrics on a CPU.
CPU_METRIC_BATCH = 32


def metric_batch(model: nn.Module, x: torch.Tensor, pack: Pack | None) -> int:
    """Perturbed inputs per network pass: on a CUDA device as many as fit in the memory budget of
    :func:`~video_iba.methods.baselines.perturbation_batch`, on a CPU :data:`CPU_METRIC_BATCH`."""
    if not x.is_cuda:
        return CPU_METRIC_BATCH
    with torch.no_grad():
        return perturbation_batch(one_input(model, pack), x, gradients=False)


def _forward(model: nn.Module, batch: torch.Tensor, pack: Pack | None) -> torch.Tensor:
    with torch.no_grad():
        return model(packed(batch, pack))


@dataclass
class DegradationResult:
    """MoRF and LeRF curves (normalised probability at each fraction of removed tiles) and the score."""

    fractions: np.ndarray
    morf: np.ndarray
    lerf: np.ndarray
    score: float
    tiles: int
    raw_start: float
    raw_end: float


def degradation(
    model: nn.Module,
    x: torch.Tensor,
    values: Map,
    target: int | str,
    *,
    tile: int = 8,
    t_tile: int | None = None,
    points: int = 100,
    batch: int | None = None,
    pack: Pack | None = None,
) -> DegradationResult:
    """MoRF/LeRF degradation of ``x`` guided by the map ``values`` (an array, a tensor or an
    :class:`~video_iba.results.Attribution`; see the module text) for the class ``target``;
    ``pack`` builds a multi-pathway network's input from the clip (registry models: automatic);
    ``batch`` degraded inputs per network pass (default: :func:`metric_batch`). The network runs
    in eval mode; its own mode and batch-norm statistics are left as they were."""
    v = _check_map(values, x)
    if points < 2:
        raise UserInputError(f"points={points}: a curve needs at least 2 points")
    labels, n_tiles = _tiles(v.shape, tile, t_tile)
    with frozen(model):
        pack = input_packer(model, pack)
        batch = batch or metric_batch(model, x, pack)
        target = check_target(target, _forward(model, x, pack), model)
        return _degradation(model, x, v, labels, n_tiles, target, points, batch, pack)


def _degradation(model: nn.Module, x: torch.Tensor, v: np.ndarray, labels: np.ndarray, n_tiles: int, target: int,
                 points: int, batch: int, pack: Pack | None) -> DegradationResult:
    counts = np.unique(np.rint(np.linspace(0, n_tiles, min(points, n_tiles + 1))).astype(int))
    means = tile_means(v, labels)
    # ties broken by tile index, the same way for both orders, so a constant map gives equal curves
    morf_order = np.lexsort((np.arange(n_tiles), -means))
    lerf_order = np.lexsort((np.arange(n_tiles), means))
    fill = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)  # per-channel mean of the input
    lab = torch.from_numpy(labels).to(x.device)

    def curve(order: np.ndarray) -> np.ndarray:
        rank = np.empty(n_tiles, dtype=np.int64)
        rank[order] = np.arange(n_tiles)
        rank_map = torch.from_numpy(rank).to(x.device)[lab]  # when each cell is removed
        probs = []
        for i in range(0, len(counts), batch):
            ks = torch.as_tensor(counts[i:i + batch], device=x.device)
            removed = (rank_map[None] < ks.view(-1, *[1] * rank_map.dim())).unsqueeze(1)  # (B, 1, *S)
            xb = torch.where(removed, fill, x)
            logits = _forward(model, xb, pack)
            probs.append(torch.softmax(logits.double(), 1)[:, target].cpu().numpy())
        return np.concatenate(probs)

    morf, lerf = curve(morf_order), curve(lerf_order)
    start, end = float(morf[0]), float(morf[-1])
    span = start - end
    if abs(span) < 1e-12:
        span = 1e-12 if span >= 0 else -1e-12
    morf_n, lerf_n = (morf - end) / span, (lerf - end) / span
    fractions = counts / n_tiles
    trapezoid = getattr(np, "trapezoid", None) or getattr(np, "trapz")  # numpy 2 renamed it
    score = float(trapezoid(lerf_n - morf_n, fractions))
    return DegradationResult(fractions, morf_n, lerf_n, score, n_tiles, start, end)


def box_mask(shape: Sequence[int], boxes: np.ndarray) -> np.ndarray:
    """Boolean mask of a box ``(x0, y0, x1, y1)`` on ``(H, W)``, or of per-frame boxes ``(T, 4)``
    (rows of NaN: no box in that frame) on ``(T, H, W)``; coordinates in cells, ends exclusive."""
    b = np.asarray(boxes, dtype=np.float64)
    if len(shape) == 2:
        b = b.reshape(1, 4)
        frames = [(0, b[0])]
        mask = np.zeros((1, *shape), dtype=bool)
    else:
        if b.shape != (shape[0], 4):
            raise UserInputError(f"per-frame boxes must have shape ({shape[0]}, 4), got {b.shape}")
        frames = list(enumerate(b))
        mask = np.zeros(tuple(shape), dtype=bool)
    h, w = shape[-2], shape[-1]
    for t, (x0, y0, x1, y1) in frames:
        if np.isnan([x0, y0, x1, y1]).any():
            continue
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise UserInputError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w}x{h} input or is empty; "
                                 f"give boxes inside the frame with x0 < x1 and y0 < y1")
        mask[t, int(math.floor(y0)):int(math.ceil(y1)), int(math.floor(x0)):int(math.ceil(x1))] = True
    return mask[0] if len(shape) == 2 else mask


def hit_ratio(values: Map, mask: np.ndarray) -> float:
    """Fraction of the ``n`` highest-attributed cells inside ``mask``, ``n`` = cells in the mask
    (the bounding-box score for images, the tube hit ratio for clips). Ties are broken by cell
    order, so a constant map scores the mask's share of the cells it happens to list first."""
    v = as_map(values)
    m = np.asarray(mask, dtype=bool)
    if v.shape != m.shape:
        raise UserInputError(f"map {v.shape} and mask {m.shape} differ in shape")
    n = int(m.sum())
    if n == 0:
        raise UserInputError("the box or tube is empty")
    order = np.argsort(-v.ravel(), kind="stable")[:n]
    return float(m.ravel()[order].mean())


def temporal_share(values: Map, interval: tuple[int, int]) -> float:
    """Share of the per-frame mass (positive values summed per frame) in frames ``[t0, t1)``."""
    v = as_map(values)
    if v.ndim != 3:
        raise UserInputError(f"temporal share needs a clip map (T, H, W), got {v.shape}")
    t0, t1 = interval
    if not 0 <= t0 < t1 <= v.shape[0]:
        raise UserInputError(f"frame interval ({t0}, {t1}) does not fit the clip's {v.shape[0]} frames; give "
                             f"0 <= t0 < t1 <= {v.shape[0]} (frames [t0, t1))")
    per_frame = np.clip(v, 0, None).sum(axis=(1, 2))
    total = per_frame.sum()
    return float(per_frame[t0:t1].sum() / total) if total > 0 else 0.0


@dataclass
class SensitivityResult:
    n: np.ndarray
    pearson: np.ndarray
    masks: int
    tiles: int


def sensitivity_n(
    model: nn.Module,
    x: torch.Tensor,
    values: Map,
    target: int | str,
    *,
    tile: int = 8,
    t_tile: int | None = None,
    ns: int | Sequence[int] | None = None,
    masks: int = 100,
    seed: int = 0,
    batch: int | None = None,
    pack: Pack | None = None,
) -> SensitivityResult:
    """Sensitivity-n with tiles (clips: tubes) set to 0; ``ns`` default: 10 values log-spaced in
    ``[1, 0.8 * tiles]``; ``values``, ``target``, ``pack`` and ``batch`` as for :func:`degradation`."""
    v = _check_map(values, x)
    if masks < 2:
        raise UserInputError(f"masks={masks}: a correlation needs at least 2 masks per n")
    labels, n_tiles = _tiles(v.shape, tile, t_tile)
    if ns is None:
        ns = sorted({int(round(k)) for k in np.geomspace(1, max(1, 0.8 * n_tiles), 10)})
    elif isinstance(ns, (int, np.integer)):
        ns = [int(ns)]
    for n in ns:
        if not 1 <= n <= n_tiles:
            raise UserInputError(f"n = {n} outside 1..{n_tiles} tiles")
    with frozen(model):
        pack = input_packer(model, pack)
        batch = batch or metric_batch(model, x, pack)
        logits = _forward(model, x, pack)
        target = check_target(target, logits, model)
        base = float(logits[0, target])
        sums = np.bincount(labels.ravel(), weights=v.ravel(), minlength=n_tiles)
        rng = np.random.default_rng(seed)
        lab = torch.from_numpy(labels).to(x.device)
        out = [_sensitivity(model, x, pack, lab, sums, rng.choice, n, masks, batch, target, base) for n in ns]
    return SensitivityResult(np.asarray(ns), np.asarray(out), masks, n_tiles)


def _sensitivity(model: nn.Module, x: torch.Tensor, pack: Pack | None, lab: torch.Tensor, sums: np.ndarray,
                 choice: Callable[..., np.ndarray], n: int, masks: int, batch: int, target: int, base: float) -> float:
    """Pearson correlation, over ``masks`` random sets of ``n`` tiles, of the map's sum over the set
    and the drop of the target logit when the set is set to 0."""
    n_tiles = len(sums)
    chosen = np.stack([choice(n_tiles, size=n, replace=False) for _ in range(masks)])
    attr_sum = sums[chosen].sum(axis=1)
    drops = []
    for i in range(0, masks, batch):
        sel = torch.zeros((min(batch, masks - i), n_tiles), dtype=torch.bool, device=x.device)
        rows = torch.arange(sel.shape[0], device=x.device).repeat_interleave(n)
        sel[rows, torch.from_numpy(chosen[i:i + batch].ravel()).to(x.device)] = True
        off = sel[:, lab].unsqueeze(1)  # (B, 1, *S)
        xb = torch.where(off, torch.zeros((), device=x.device, dtype=x.dtype), x)
        drops.append(base - _forward(model, xb, pack)[:, target].double().cpu().numpy())
    d = np.concatenate(drops)
    return float(np.corrcoef(attr_sum, d)[0, 1]) if attr_sum.std() > 0 and d.std() > 0 else float("nan")


def normalise_map(values: Map) -> np.ndarray:
    """The rule maps are compared by in the randomisation check: absolute value divided by its maximum."""
    v = np.abs(as_map(values))
    top = v.max()
    return v / top if top > 0 else v


def map_ssim(a: Map, b: Map) -> float:
    """SSIM of two maps after :func:`normalise_map` (data range 1); clips: the mean over frames."""
    from skimage.metrics import structural_similarity

    x, y = normalise_map(a), normalise_map(b)
    if x.shape != y.shape:
        raise UserInputError(f"maps of shapes {x.shape} and {y.shape} cannot be compared")
    frames = [(x, y)] if x.ndim == 2 else list(zip(x, y))
    win = min(7, *[d if d % 2 else d - 1 for d in x.shape[-2:]])
    return float(np.mean([structural_similarity(p, q, data_range=1.0, win_size=win) for p, q in frames]))


def randomisation_stages(model: nn.Module) -> list[str]:
    """The stages of the cascade, from the output back to the input: the model's top-level children
    that hold parameters; when there are fewer than three of them (pytorchvideo's single ``blocks``,
    VGG's ``features`` and ``classifier``), each ``Sequential``/``ModuleList`` among them is
    replaced by its own parameterised children."""
    def has_params(m: nn.Module) -> bool:
        return any(True for _ in m.parameters())

    top = [(n, c) for n, c in model.named_children() if has_params(c)]
    out = []
    for name, child in top:
        if len(top) < 3 and isinstance(child, (nn.Sequential, nn.ModuleList)):
            out += [f"{name}.{n}" for n, c in child.named_children() if has_params(c)]
        else:
            out.append(name)
    return out[::-1]


def stages_reaching(model: nn.Module, x: torch.Tensor, layers: Sequence[str], stages: Sequence[str],
                    pack: Pack | None = None) -> set[str]:
    """The ``stages`` whose computation starts before one of ``layers`` has produced its output in a
    forward pass on ``x`` (a stage containing a layer counts): randomising them changes what the
    layers output, so statistics estimated there must be estimated again. A stage starts when any
    of its modules does (a ``ModuleList`` such as MViT's ``blocks`` never runs a forward of its own)."""
    with frozen(model):
        upstream = upstream_modules(model, list(layers), packed(x, input_packer(model, pack)))
    started = {name for names in upstream.values() for name in names}
    return {stage for stage in stages if any(n == stage or n.startswith(stage + ".") for n in started)}


@dataclass
class RandomisationResult:
    """SSIM between the original map and the map after randomising each cascade of stages."""

    stages: list[str]
    ssim: np.ndarray


def parameter_randomisation(
    model: nn.Module,
    attribute_fn: Callable[[nn.Module, "list[str]"], Map],
    *,
    stages: str | Sequence[str] | None = None,
    seed: int = 0,
    base: Map | None = None,
) -> RandomisationResult:
    """Model-parameter randomisation (Adebayo et al. 2018), cascading from the top.

    A copy of ``model`` is randomised stage after stage (every submodule's ``reset_parameters``,
    seeded; batch-norm statistics reset too); after each stage ``attribute_fn(copy, randomised)``
    gives the map (an array, a tensor or an Attribution), compared with the original map by :func:`map_ssim`. ``randomised`` lists the
    stages randomised so far, so that a method with dataset statistics (IBA) can re-estimate
    them when a randomised stage lies before its bottleneck. The user's model is not touched.

    Stage ``i`` draws its weights from a generator seeded with ``(seed, i)`` alone, whatever
    ``attribute_fn`` draws in between, and the caller's random state is left as it was: the same
    ``model``, ``stages`` and ``seed`` give the same randomised networks for every input and method
    (another ``seed``: another draw of them). ``base``: the original map, where already computed
    (else ``attribute_fn(model, [])``).
    """
    names = ([stages] if isinstance(stages, str) else list(stages)) if stages is not None else randomisation_stages(model)
    if not names:
        raise UserInputError("the model has no stages with parameters to randomise")
    if base is None:
        base = attribute_fn(model, [])
    m = copy.deepcopy(model)
    out, done = [], []
    for i, name in enumerate(names):
        try:
            stage = m.get_submodule(name)
        except AttributeError as exc:
            raise UserInputError(f"no module '{name}' to randomise") from exc
        with seeded(derived_seed(seed, i), cuda_devices([*stage.parameters(), *stage.buffers()])):
            for sub in stage.modules():
                for method in ("reset_parameters", "reset_running_stats"):
                    fn = getattr(sub, method, None)
                    if callable(fn):
                        fn()
        done.append(name)
        out.append(map_ssim(base, attribute_fn(m, list(done))))
    return RandomisationResult(done, np.asarray(out))


@dataclass(frozen=True)
class Estimate:
    """A score over samples: mean, 95 % bootstrap interval, and the number of samples."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def bootstrap_ci(values: Sequence[float], *, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Mean with a percentile bootstrap interval (NaN values are dropped)."""
    if not 0 < level < 1 or resamples < 1:
        raise UserInputError(f"level={level}, resamples={resamples}: give 0 < level < 1 (0.95: a 95 % interval) and "
                             f"resamples >= 1")
    v = np.asarray([a for a in values if not math.isnan(a)], dtype=np.float64)
    if len(v) == 0:
        raise UserInputError("no scores to summarise")
    if len(v) == 1:
        return Estimate(float(v[0]), float(v[0]), float(v[0]), 1)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    a = (1 - level) / 2
    return Estimate(float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a)), len(v))


__all__ = ["tile_labels", "tile_means", "degradation", "DegradationResult", "box_mask", "hit_ratio", "temporal_share",
           "sensitivity_n", "SensitivityResult", "bootstrap_ci", "Estimate", "normalise_map", "map_ssim",
           "randomisation_stages", "stages_reaching", "parameter_randomisation", "RandomisationResult"]
