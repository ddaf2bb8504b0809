"""``video-iba evaluate``: methods x metrics over a dataset, resumable, with tables and plots.

Datasets: ``synthetic`` (the ground-truth video benchmark of :mod:`video_iba.synthetic`, its
trained ``TubeNet``, targets = true classes, boxes and intervals known) or a folder of images
or videos with optional box annotations (JSON, see :func:`read_annotations`), explained for the
model's top-1 class unless the annotation names a class. A video contributes one model clip,
the centre crop of the clip in the middle of the video; its box holds in every frame.

Every score goes to ``OUT/scores.jsonl`` as soon as it is computed (one JSON object per line:
item, method, metric, value, and curves where the metric has them); a rerun skips what is there,
so an interrupted run loses at most the score in progress. The summary (``OUT/results.md``,
``.csv``, ``.json``: mean, 95 % bootstrap interval and number of samples per method and metric)
and the plots (``OUT/degradation*.png``, ``OUT/sensitivity_n.png``, ``OUT/randomisation.png``) are
rewritten atomically from all scores at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .baselines import attribute, check_method
from .errors import UserInputError, did_you_mean
from .io.atomic import atomic_write, drop_unfinished_line, ensure_writable_dir
from .metrics import (bootstrap_ci, box_mask, degradation, hit_ratio, parameter_randomisation, randomisation_stages,
                      sensitivity_n, stages_reaching, temporal_share)

log = logging.getLogger(__name__)

METRICS = ("degradation8", "degradation14", "hit_ratio", "temporal_share", "sensitivity_n", "randomisation")
#: Tube length (frames) of the degradation and sensitivity-n tubes on clips.
TUBE_FRAMES = 4
SYNTHETIC_LAYER = "block1"
SYNTHETIC_STATS_SEEDS = range(50_000, 50_400)


@dataclass
class Item:
    """One input of an evaluation: preprocessed ``x`` (1, C, [T,] H, W), target, optional ground truth
    (box(es) in input cells, frame interval)."""

    name: str
    x: torch.Tensor
    target: int | None
    boxes: np.ndarray | None = None
    interval: tuple[int, int] | None = None


def iba_label(beta: float) -> str:
    """The method label of IBA at a given beta when several betas are compared: ``iba[beta=10]``."""
    return f"iba[beta={beta:g}]"


def base_method(label: str) -> str:
    """The method of a label (``iba[beta=10]`` -> ``iba``)."""
    return label.split("[", 1)[0]


def check_label(label: str) -> str:
    base = check_method(base_method(label))
    return base + label[len(base_method(label)):]


def check_metrics(names: Sequence[str]) -> list[str]:
    out = []
    for n in names:
        key = n.strip().lower()
        if key not in METRICS:
            raise UserInputError(f"unknown metric '{n}'{did_you_mean(key, METRICS)}; choose from {', '.join(METRICS)}")
        out.append(key)
    if not out:
        raise UserInputError(f"no metrics given; choose from {', '.join(METRICS)}")
    return out


def load_tubenet() -> nn.Module:
    """The synthetic benchmark's trained 3-D CNN (weights shipped with the package)."""
    from importlib import resources

    from .synthetic import TubeNet

    model = TubeNet()
    path = resources.files("video_iba").joinpath("weights", "tubenet.pt")
    model.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
    return model.eval()


def load_tubenet_readout() -> Any:
    """The readout bottleneck trained for the benchmark's TubeNet at ``block1`` (shipped with the
    package; made by ``video-iba train-readout synthetic --clips 1600 --batch-size 16 --epochs 6
    --lr 1e-2`` (beta 1): the epoch of the lowest loss on the validation clips, the 6th)."""
    from importlib import resources

    from .readout import load_checkpoint

    path = resources.files("video_iba").joinpath("weights", "tubenet_readout.pt")
    return load_checkpoint(str(path))[0]


def synthetic_items(n: int) -> Iterator[Item]:
    from .synthetic import TEST_SEEDS, make_clip

    if not 1 <= n <= len(TEST_SEEDS):
        raise UserInputError(f"--clips must be between 1 and {len(TEST_SEEDS)}, got {n}")
    for seed in list(TEST_SEEDS)[:n]:
        c = make_clip(seed)
        yield Item(f"clip{seed}", torch.from_numpy(c.x)[None], c.label, c.boxes, c.interval)


def read_annotations(path: str, files: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Box annotations: a JSON object mapping each input's file name to ``{"box": [x0, y0, x1, y1]}``
    in the original image's (video's) pixels, optionally with ``"target": index``. Every name must
    be an input."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot read annotations '{path}' ({exc}); give a JSON file as described in "
                             f"`video-iba evaluate --help`") from exc
    if not isinstance(data, dict):
        raise UserInputError(f"annotations '{path}' must be a JSON object mapping file names to boxes")
    names = {os.path.basename(f) for f in files}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserInputError(f"annotations for files that are not inputs: {', '.join(unknown[:3])}"
                             f"{' ...' if len(unknown) > 3 else ''}; fix the names or the folder")
    for name, entry in data.items():
        box = entry.get("box") if isinstance(entry, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise UserInputError(f"annotation of '{name}' needs \"box\": [x0, y0, x1, y1]")
        target = entry.get("target")
        if target is not None and (not isinstance(target, int) or isinstance(target, bool) or target < 0):
            raise UserInputError(f"annotation of '{name}': \"target\" must be a class index >= 0, got {target!r}")
    return data


def _box_in_crop(entry: dict[str, Any] | None, name: str, image_size: tuple[int, int],
                 crop_box: tuple[float, float, float, float], size: int) -> np.ndarray | None:
    """An annotated box (source pixels) in the model input's cells; ``None`` when the crop misses it."""
    if entry is None:
        return None
    x0, y0, x1, y1 = (float(v) for v in entry["box"])
    h, w = image_size
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise UserInputError(f"the box {entry['box']} of '{name}' lies outside its {w}x{h} pixels or is empty; "
                             f"give [x0, y0, x1, y1] with 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}")
    bx0, by0, bx1, by1 = crop_box
    sx, sy = size / (bx1 - bx0), size / (by1 - by0)
    cx0, cy0 = max(0.0, (x0 - bx0) * sx), max(0.0, (y0 - by0) * sy)
    cx1, cy1 = min(float(size), (x1 - bx0) * sx), min(float(size), (y1 - by0) * sy)
    if cx1 <= cx0 or cy1 <= cy0:
        log.warning("the box of '%s' lies outside the model's crop; no box metric for it", name)
        return None
    return np.array([cx0, cy0, cx1, cy1])


def folder_items(folder: str, model_name: str, annotations: str | None,
                 device: torch.device | str = "cpu") -> list[Item]:
    """The inputs of an image model (images) or of a video model (one centre clip per video)."""
    from .models import get_spec
    from .pipeline import find_images, find_videos

    spec = get_spec(model_name)
    files = find_videos(folder) if spec.is_video else find_images(folder)
    if not files:
        kind = "videos" if spec.is_video else "images"
        raise UserInputError(f"no {kind} in '{folder}'; {model_name} is {'a video' if spec.is_video else 'an image'} "
                             f"model, so give a folder of {kind} (or choose another --model)")
    ann = read_annotations(annotations, files) if annotations else {}
    items = []
    for f in files:
        name = os.path.basename(f)
        entry = ann.get(name)
        target = entry.get("target") if entry else None
        if spec.is_video:
            x, size, crop_box = centre_clip(f, spec, device)
            box = _box_in_crop(entry, name, size, crop_box, spec.input_size)
            boxes = None if box is None else np.repeat(box[None], x.shape[2], axis=0)
        else:
            from .io.image import read_image
            from .models import preprocess_image

            x, geo = preprocess_image(read_image(f), spec, name=f"'{f}'")
            boxes = _box_in_crop(entry, name, geo.image_size, geo.box, spec.input_size)
            x = x.to(device)
        items.append(Item(name, x, target, boxes))
    return items


def centre_clip(path: str, spec: Any, device: torch.device | str) -> tuple[torch.Tensor, tuple[int, int],
                                                                           tuple[float, float, float, float]]:
    """The raw (fast-pathway) clip in the middle of a video, its frame size and the crop in source pixels."""
    from .video_pipeline import clip_at, plan_crops, probe_video

    info = probe_video(path)
    span = spec.frames * spec.sampling_rate / info.fps
    start = max(0.0, ((info.duration or 0.0) - span) / 2)
    inputs = clip_at(path, spec, start, device)
    x = inputs[-1] if isinstance(inputs, list) else inputs
    plan = plan_crops(info.height, info.width, spec, "center")
    return x, (info.height, info.width), plan.tiles[0].box


def _done(path: str) -> set[tuple[str, str, str]]:
    """The scores already in ``path``; a last line cut short by an interruption is removed."""
    done: set[tuple[str, str, str]] = set()
    if not os.path.exists(path):
        return done
    if drop_unfinished_line(path):
        log.warning("dropped an unfinished last score in %s (an interrupted run)", path)
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                r = json.loads(line)
                done.add((r["item"], r["method"], r["metric"]))
            except (ValueError, KeyError) as exc:
                raise UserInputError(f"{path} has a line that is not a score ({exc}); remove it or use a new --out") from exc
    return done


def evaluate(
    model: nn.Module,
    items: Sequence[Item],
    methods: Sequence[str],
    metrics: Sequence[str],
    out_dir: str,
    *,
    method_kwargs: Callable[[str], dict[str, Any]] | None = None,
    pack: Callable[[torch.Tensor], Any] | None = None,
    restats: Callable[[nn.Module], Any] | None = None,
    stats_layers: Sequence[str] = (),
    points: int = 100,
    masks: int = 100,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score every method on every item with every applicable metric; returns the summary.

    Args:
        method_kwargs: Extra arguments of :func:`video_iba.baselines.attribute` per method (IBA's
            layer, statistics and config, tube length ...).
        pack: Builds a multi-pathway model's input from the raw clip (SlowFast).
        restats: For the randomisation metric: estimates IBA's statistics again on a partly
            randomised copy of the model; called (and its result passed as ``stats``) whenever a
            randomised stage runs before one of ``stats_layers`` has produced its output.
    """
    methods = [check_label(m) for m in methods]
    metrics = check_metrics(metrics)
    if not items:
        raise UserInputError("the dataset is empty; give at least one input")
    ensure_writable_dir(out_dir)
    scores_path = os.path.join(out_dir, "scores.jsonl")
    done = _done(scores_path)
    with open(scores_path, "a", encoding="utf-8") as out:
        for item in items:
            for method in methods:
                todo = [m for m in metrics if (item.name, method, m) not in done and _applies(m, item)]
                if todo:
                    kw = dict(method_kwargs(method)) if method_kwargs else {}
                    if pack is not None:
                        kw["pack"] = pack
                    t0 = _clock(item.x)
                    a = attribute(base_method(method), model, item.x, item.target, **kw)
                    seconds = _clock(item.x) - t0
                    for metric in todo:
                        t1 = _clock(item.x)
                        if metric == "randomisation":
                            value, extra = _randomisation(model, item, method, kw, a.target, pack, restats,
                                                          stats_layers)
                        else:
                            value, extra = _score(metric, model, item, a.values, a.target, points, masks, pack)
                        out.write(json.dumps({"item": item.name, "method": method, "metric": metric,
                                              "value": value, "attribution_s": round(seconds, 4),
                                              "metric_s": round(_clock(item.x) - t1, 4), **extra}) + "\n")
                        out.flush()
                if progress is not None:
                    progress(1)
    return summarise(out_dir)


def _clock(x: torch.Tensor) -> float:
    """Wall-clock seconds, after the device of ``x`` has finished its queued work."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter()


def _applies(metric: str, item: Item) -> bool:
    if metric == "hit_ratio":
        return item.boxes is not None
    if metric == "temporal_share":
        return item.interval is not None and item.x.dim() == 5
    return True


def _score(metric: str, model: nn.Module, item: Item, values: torch.Tensor, target: int, points: int,
           masks: int, pack: Callable[[torch.Tensor], Any] | None) -> tuple[float, dict[str, Any]]:
    t_tile = TUBE_FRAMES if item.x.dim() == 5 else None
    if metric.startswith("degradation"):
        r = degradation(model, item.x, values, target, tile=int(metric[len("degradation"):]), t_tile=t_tile,
                        points=points, pack=pack)
        return r.score, {"fractions": r.fractions.round(5).tolist(), "morf": r.morf.round(5).tolist(),
                         "lerf": r.lerf.round(5).tolist()}
    if metric == "hit_ratio":
        assert item.boxes is not None
        mask = box_mask(tuple(values.shape), item.boxes)
        return hit_ratio(values, mask), {}
    if metric == "temporal_share":
        assert item.interval is not None
        return temporal_share(values, item.interval), {}
    sn = sensitivity_n(model, item.x, values, target, tile=8, t_tile=t_tile, masks=masks, pack=pack)
    return float(np.nanmean(sn.pearson)), {"n": sn.n.tolist(), "pearson": sn.pearson.round(5).tolist()}


def _randomisation(model: nn.Module, item: Item, method: str, kw: dict[str, Any], target: int,
                   pack: Callable[[torch.Tensor], Any] | None, restats: Callable[[nn.Module], Any] | None,
                   stats_layers: Sequence[str]) -> tuple[float, dict[str, Any]]:
    """SSIM of the map to the maps of cascadingly randomised copies; the value is the mean over stages
    (lower: the map depends more on the learned parameters)."""
    stages = randomisation_stages(model)
    reaching: set[str] = set()
    if base_method(method) == "iba" and restats is not None and stats_layers:
        reaching = stages_reaching(model, pack(item.x) if pack is not None else item.x, stats_layers, stages)

    def attribute_fn(m: nn.Module, randomised: list[str]) -> torch.Tensor:
        args = dict(kw)
        if randomised and reaching.intersection(randomised):
            assert restats is not None
            args["stats"] = restats(m)
        return attribute(base_method(method), m, item.x, target, **args).values

    r = parameter_randomisation(model, attribute_fn, stages=stages)
    return float(np.mean(r.ssim)), {"stages": r.stages, "ssim": r.ssim.round(5).tolist(),
                                    "reestimated": sorted(reaching)}


def summarise(out_dir: str) -> dict[str, Any]:
    """Tables (Markdown, CSV, JSON) and degradation plots from ``scores.jsonl``, written atomically."""
    rows: dict[tuple[str, str], list[float]] = {}
    curves: dict[tuple[str, str], list[tuple[list[float], list[float], list[float]]]] = {}
    sens: dict[str, list[tuple[list[float], list[float]]]] = {}
    rand: dict[str, list[tuple[list[str], list[float]]]] = {}
    attribution_s: dict[tuple[str, str], float] = {}
    metric_s: dict[tuple[str, str], list[float]] = {}
    with open(os.path.join(out_dir, "scores.jsonl"), encoding="utf-8") as fh:
        for line in fh:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            rows.setdefault((r["method"], r["metric"]), []).append(float(r["value"]))
            if "morf" in r:
                curves.setdefault((r["method"], r["metric"]), []).append((r["fractions"], r["morf"], r["lerf"]))
            if "attribution_s" in r:
                attribution_s[(r["method"], r["item"])] = float(r["attribution_s"])
                metric_s.setdefault((r["method"], r["metric"]), []).append(float(r["metric_s"]))
            if "pearson" in r:
                sens.setdefault(r["method"], []).append((r["n"], r["pearson"]))
            if "ssim" in r:
                rand.setdefault(r["method"], []).append((r["stages"], r["ssim"]))
    table: list[dict[str, Any]] = []
    for (method, metric), vals in sorted(rows.items()):
        est = bootstrap_ci(vals)
        table.append({"method": method, "metric": metric, "mean": est.mean, "ci_low": est.low, "ci_high": est.high,
                      "n": est.n})
    with atomic_write(os.path.join(out_dir, "results.json")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(table, fh, indent=1)
    with atomic_write(os.path.join(out_dir, "results.csv")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("method,metric,mean,ci_low,ci_high,n\n")
        for t in table:
            fh.write(f"{t['method']},{t['metric']},{t['mean']:.6f},{t['ci_low']:.6f},{t['ci_high']:.6f},{t['n']}\n")
    metrics: list[str] = sorted({str(t["metric"]) for t in table})
    methods: list[str] = sorted({str(t["method"]) for t in table})
    lines = ["| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for m in methods:
        cells = []
        for k in metrics:
            hit = [t for t in table if t["method"] == m and t["metric"] == k]
            cells.append(f"{hit[0]['mean']:.3f} [{hit[0]['ci_low']:.3f}, {hit[0]['ci_high']:.3f}] (n={hit[0]['n']})"
                         if hit else "")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if attribution_s:
        lines += ["", "Seconds per input (mean): the attribution, and each metric on top of it", "",
                  "| method | attribution | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
        cost = []
        for m in methods:
            att = [v for (mm, _), v in attribution_s.items() if mm == m]
            per = {k: float(np.mean(metric_s[(m, k)])) for k in metrics if (m, k) in metric_s}
            cost.append({"method": m, "attribution_s": float(np.mean(att)) if att else None, "metric_s": per,
                         "inputs": len(att)})
            lines.append(f"| {m} | " + (f"{np.mean(att):.2f}" if att else "") + " | "
                         + " | ".join(f"{per[k]:.2f}" if k in per else "" for k in metrics) + " |")
        with atomic_write(os.path.join(out_dir, "cost.json")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(cost, fh, indent=1)
    with atomic_write(os.path.join(out_dir, "results.md")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    for metric in sorted({k[1] for k in curves}):
        _plot_curves(out_dir, metric, {m: c for (m, k), c in curves.items() if k == metric})
    if sens:
        _plot_sensitivity(out_dir, sens)
    if rand:
        _plot_randomisation(out_dir, rand)
    return {"table": table, "markdown": "\n".join(lines)}


@contextlib.contextmanager
def _figure(path: str, width: float = 7, height: float = 4.5, ncols: int = 1, **kw: Any) -> Iterator[tuple[Any, Any, Any]]:
    """``(pyplot, figure, axes)`` to draw on; written to ``path`` atomically as PNG when the block
    ends without an error, and closed in every case."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), **kw)
    try:
        yield plt, fig, axes
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def _plot_curves(out_dir: str, metric: str, per_method: dict[str, list[tuple[list[float], list[float], list[float]]]]) -> None:
    """Mean MoRF (left) and LeRF (right) curves, one colour per method."""
    with _figure(os.path.join(out_dir, f"{metric}.png"), 10, 4.2, ncols=2, sharey=True) as (plt, fig, (ax_m, ax_l)):
        grid = np.linspace(0, 1, 101)
        cmap = plt.get_cmap("tab20" if len(per_method) > 10 else "tab10")
        for i, (method, cs) in enumerate(sorted(per_method.items())):
            morf = np.mean([np.interp(grid, f, m) for f, m, _ in cs], axis=0)
            lerf = np.mean([np.interp(grid, f, lr) for f, _, lr in cs], axis=0)
            ax_m.plot(grid, morf, color=cmap(i % cmap.N), label=method)
            ax_l.plot(grid, lerf, color=cmap(i % cmap.N), label=method)
        for ax, name in ((ax_m, "MoRF: most relevant removed first (lower is better)"),
                         (ax_l, "LeRF: least relevant removed first (higher is better)")):
            ax.set_xlabel("fraction of tiles replaced")
            ax.set_title(name, fontsize=9)
            ax.axhline(0, color="0.7", lw=0.6)
        ax_m.set_ylabel("target probability (normalised: 1 intact, 0 all replaced)")
        ax_l.legend(fontsize=7, loc="lower left")
        fig.suptitle(f"{metric}: mean curves over {max(len(c) for c in per_method.values())} inputs; score = area "
                     f"between LeRF and MoRF", fontsize=10)


def _plot_sensitivity(out_dir: str, per_method: dict[str, list[tuple[list[float], list[float]]]]) -> None:
    """Mean Pearson correlation per n (inputs with the same tile grid share the n values)."""
    with _figure(os.path.join(out_dir, "sensitivity_n.png")) as (plt, _fig, ax):
        for i, (method, rows) in enumerate(sorted(per_method.items())):
            by_n: dict[float, list[float]] = {}
            for ns, ps in rows:
                for n, p in zip(ns, ps):
                    if p is not None and np.isfinite(p):
                        by_n.setdefault(float(n), []).append(float(p))
            xs = sorted(by_n)
            ax.plot(xs, [np.mean(by_n[n]) for n in xs], marker="o", ms=3, color=plt.get_cmap("tab10")(i % 10),
                    label=method)
        ax.set_xscale("log")
        ax.set_xlabel("n (tiles or tubes set to 0)")
        ax.set_ylabel("Pearson: attribution sum vs target-logit drop")
        ax.set_title(f"sensitivity-n: mean over {max(len(v) for v in per_method.values())} inputs")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.legend(fontsize=7)


def _plot_randomisation(out_dir: str, per_method: dict[str, list[tuple[list[str], list[float]]]]) -> None:
    """Mean SSIM to the original map after each cascade of randomised stages."""
    with _figure(os.path.join(out_dir, "randomisation.png")) as (plt, _fig, ax):
        stages: list[str] = []
        for i, (method, rows) in enumerate(sorted(per_method.items())):
            stages = rows[0][0]
            ssim = np.mean([r for _, r in rows if len(r) == len(stages)], axis=0)
            ax.plot(range(len(stages)), ssim, marker="o", ms=3, color=plt.get_cmap("tab10")(i % 10), label=method)
        ax.set_xticks(range(len(stages)), [f"+{s}" for s in stages], rotation=45, ha="right", fontsize=7)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("stages randomised, cascading from the output")
        ax.set_ylabel("SSIM to the original map (|map| / max)")
        ax.set_title(f"model-parameter randomisation: mean over {max(len(v) for v in per_method.values())} inputs")
        ax.legend(fontsize=7)


__all__ = ["METRICS", "Item", "evaluate", "summarise", "synthetic_items", "read_annotations",
           "load_tubenet", "load_tubenet_readout", "check_metrics", "folder_items"]
