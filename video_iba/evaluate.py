"""``video-iba evaluate``: methods x metrics over a dataset, resumable, with tables and plots.

Datasets: ``synthetic`` (the ground-truth video benchmark of :mod:`video_iba.synthetic`, its
trained ``TubeNet``, targets = true classes, boxes and intervals known) or a folder of images
with optional box annotations (JSON, see :func:`read_annotations`), explained for the model's
top-1 class unless the annotation names a class.

Every score goes to ``OUT/scores.jsonl`` as soon as it is computed (one JSON object per line:
item, method, metric, value, and curves where the metric has them); a rerun skips what is there,
so an interrupted run loses at most the score in progress. The summary (``OUT/results.md``,
``.csv``, ``.json``: mean, 95 % bootstrap interval and number of samples per method and metric)
and the plots (``OUT/degradation*.png``) are rewritten atomically from all scores at the end.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .baselines import attribute, check_method
from .errors import UserInputError, did_you_mean
from .io.atomic import atomic_write, ensure_writable_dir
from .metrics import bootstrap_ci, box_mask, degradation, hit_ratio, sensitivity_n, temporal_share

log = logging.getLogger(__name__)

METRICS = ("degradation8", "degradation14", "hit_ratio", "temporal_share", "sensitivity_n")
#: Tube length (frames) of the degradation and sensitivity-n tubes on clips.
TUBE_FRAMES = 4
SYNTHETIC_LAYER = "block2"
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


def synthetic_items(n: int) -> Iterator[Item]:
    from .synthetic import TEST_SEEDS, make_clip

    if not 1 <= n <= len(TEST_SEEDS):
        raise UserInputError(f"--clips must be between 1 and {len(TEST_SEEDS)}, got {n}")
    for seed in list(TEST_SEEDS)[:n]:
        c = make_clip(seed)
        yield Item(f"clip{seed}", torch.from_numpy(c.x)[None], c.label, c.boxes, c.interval)


def read_annotations(path: str, files: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Box annotations: a JSON object mapping each image's file name to ``{"box": [x0, y0, x1, y1]}``
    in the original image's pixels (optionally ``"target": index``). Every name must be an input."""
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
    return data


def image_items(folder: str, model_name: str, annotations: str | None) -> list[Item]:
    from .io.image import read_image
    from .models import get_spec, preprocess_image
    from .pipeline import find_images

    files = find_images(folder)
    spec = get_spec(model_name)
    ann = read_annotations(annotations, files) if annotations else {}
    items = []
    for f in files:
        rgb = read_image(f)
        x, geo = preprocess_image(rgb, spec, name=f"'{f}'")
        entry = ann.get(os.path.basename(f))
        boxes = None
        if entry is not None:
            x0, y0, x1, y1 = (float(v) for v in entry["box"])
            h, w = geo.image_size
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                raise UserInputError(f"the box {entry['box']} of '{os.path.basename(f)}' lies outside its {w}x{h} "
                                     f"pixels or is empty")
            bx0, by0, bx1, by1 = geo.box
            sx, sy = spec.input_size / (bx1 - bx0), spec.input_size / (by1 - by0)
            cx0, cy0 = max(0.0, (x0 - bx0) * sx), max(0.0, (y0 - by0) * sy)
            cx1, cy1 = min(spec.input_size, (x1 - bx0) * sx), min(spec.input_size, (y1 - by0) * sy)
            if cx1 > cx0 and cy1 > cy0:
                boxes = np.array([cx0, cy0, cx1, cy1])
        target = entry.get("target") if entry else None
        items.append(Item(os.path.basename(f), x, int(target) if target is not None else None, boxes))
    return items


def _done(path: str) -> set[tuple[str, str, str]]:
    """The scores already in ``path``; a last line cut short by an interruption is removed."""
    done: set[tuple[str, str, str]] = set()
    if not os.path.exists(path):
        return done
    with open(path, "rb+") as fb:
        data = fb.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("dropping an unfinished last score in %s (an interrupted run)", path)
            fb.truncate(keep)
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
    points: int = 100,
    masks: int = 100,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score every method on every item with every applicable metric; returns the summary."""
    methods = [check_method(m) for m in methods]
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
                    kw = method_kwargs(method) if method_kwargs else {}
                    a = attribute(method, model, item.x, item.target, **kw)
                    for metric in todo:
                        value, extra = _score(metric, model, item, a.values, a.target, points, masks)
                        out.write(json.dumps({"item": item.name, "method": method, "metric": metric,
                                              "value": value, **extra}) + "\n")
                        out.flush()
                if progress is not None:
                    progress(1)
    return summarise(out_dir)


def _applies(metric: str, item: Item) -> bool:
    if metric == "hit_ratio":
        return item.boxes is not None
    if metric == "temporal_share":
        return item.interval is not None and item.x.dim() == 5
    return True


def _score(metric: str, model: nn.Module, item: Item, values: torch.Tensor, target: int, points: int,
           masks: int) -> tuple[float, dict[str, Any]]:
    t_tile = TUBE_FRAMES if item.x.dim() == 5 else None
    if metric.startswith("degradation"):
        r = degradation(model, item.x, values, target, tile=int(metric[len("degradation"):]), t_tile=t_tile,
                        points=points)
        return r.score, {"fractions": r.fractions.round(5).tolist(), "morf": r.morf.round(5).tolist(),
                         "lerf": r.lerf.round(5).tolist()}
    if metric == "hit_ratio":
        assert item.boxes is not None
        mask = box_mask(tuple(values.shape), item.boxes)
        return hit_ratio(values, mask), {}
    if metric == "temporal_share":
        assert item.interval is not None
        return temporal_share(values, item.interval), {}
    sn = sensitivity_n(model, item.x, values, target, tile=8, t_tile=t_tile, masks=masks)
    return float(np.nanmean(sn.pearson)), {"n": sn.n.tolist(), "pearson": sn.pearson.round(5).tolist()}


def summarise(out_dir: str) -> dict[str, Any]:
    """Tables (Markdown, CSV, JSON) and degradation plots from ``scores.jsonl``, written atomically."""
    rows: dict[tuple[str, str], list[float]] = {}
    curves: dict[tuple[str, str], list[tuple[list[float], list[float], list[float]]]] = {}
    with open(os.path.join(out_dir, "scores.jsonl"), encoding="utf-8") as fh:
        for line in fh:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            rows.setdefault((r["method"], r["metric"]), []).append(float(r["value"]))
            if "morf" in r:
                curves.setdefault((r["method"], r["metric"]), []).append((r["fractions"], r["morf"], r["lerf"]))
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
    with atomic_write(os.path.join(out_dir, "results.md")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    for metric in sorted({k[1] for k in curves}):
        _plot_curves(out_dir, metric, {m: c for (m, k), c in curves.items() if k == metric})
    return {"table": table, "markdown": "\n".join(lines)}


def _plot_curves(out_dir: str, metric: str, per_method: dict[str, list[tuple[list[float], list[float], list[float]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        grid = np.linspace(0, 1, 101)
        for i, (method, cs) in enumerate(sorted(per_method.items())):
            morf = np.mean([np.interp(grid, f, m) for f, m, _ in cs], axis=0)
            lerf = np.mean([np.interp(grid, f, lr) for f, _, lr in cs], axis=0)
            colour = plt.get_cmap("tab10")(i % 10)
            ax.plot(grid, morf, color=colour, ls="-", label=f"{method} MoRF")
            ax.plot(grid, lerf, color=colour, ls="--", label=f"{method} LeRF")
        ax.set_xlabel("fraction of tiles replaced")
        ax.set_ylabel("target probability (normalised)")
        ax.set_title(f"{metric}: mean curves over {len(next(iter(per_method.values())))} inputs")
        ax.legend(fontsize=7, ncol=2)
        with atomic_write(os.path.join(out_dir, f"{metric}.png")) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


__all__ = ["METRICS", "Item", "evaluate", "summarise", "synthetic_items", "image_items", "read_annotations",
           "load_tubenet", "check_metrics"]
