"""``video-iba evaluate``: methods x metrics over a dataset, resumable, with tables and plots.

Datasets: ``synthetic`` (the ground-truth video benchmark of :mod:`video_iba.synthetic`, its
trained ``TubeNet``, targets = true classes, boxes and intervals known) or a folder of images
or videos with optional annotations (JSON: boxes, tubes, intervals, see :mod:`.datasets`),
explained for the model's top-1 class unless the annotation names a class. A video contributes
one model clip, the centre crop of the clip in the middle of the video unless its annotation
says where the clip starts (or where its clips start). Inputs are read when they are scored.

Every score goes to ``OUT/scores.jsonl`` as soon as it is computed (one JSON object per line:
item, method, metric, value, and curves where the metric has them); a rerun skips what is there,
so an interrupted run loses at most the score in progress. An input that fails is recorded in
``OUT/failures.jsonl`` and the run goes on. Under torchrun each rank scores every world-th
input into its own file, merged by rank 0. The summary (``OUT/results.md``,
``.csv``, ``.json``: mean, 95 % bootstrap interval and number of samples per method and metric)
and the plots (``OUT/degradation*.png``, ``OUT/sensitivity_n.png``, ``OUT/randomisation.png``) are
rewritten atomically from all scores at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..distributed import barrier, rank, shard, world_size
from ..errors import UserInputError, did_you_mean, failure_reason
from ..files import atomic_write, check_writable_dir
from ..io.ledger import Ledger, drop_unfinished_line, read_records
from ..methods.attribute import attribute, attribute_many, check_method
from ..methods.batching import FitBatches
from ..models.pathways import Pack
from ..results import Attribution
from .datasets import Item
from .metrics import (bootstrap_ci, box_mask, degradation, hit_ratio, parameter_randomisation, randomisation_stages,
                      sensitivity_n, stages_reaching, temporal_share)
from .plots import plot_curves, plot_randomisation, plot_sensitivity

log = logging.getLogger(__name__)

METRICS = ("degradation8", "degradation14", "hit_ratio", "temporal_share", "sensitivity_n", "randomisation")
#: Tube length (frames) of the degradation and sensitivity-n tubes on clips.
TUBE_FRAMES = 4


def iba_label(beta: float) -> str:
    """The method label of IBA at a given beta when several betas are compared: ``iba[beta=10]``."""
    return f"iba[beta={beta:g}]"


def base_method(label: str) -> str:
    """The method of a label (``iba[beta=10]`` -> ``iba``)."""
    return label.split("[", 1)[0]


def check_label(label: str) -> str:
    """A method label (``iba`` or ``iba[beta=10]``) with its method's canonical name; a suffix
    other than a positive ``[beta=B]`` on the per-sample bottleneck is refused."""
    method = check_method(base_method(label))
    suffix = label[len(base_method(label)):]
    if suffix and (not method.fitted or label_beta(label) is None):
        raise UserInputError(f"'{label}' is not a method label; give a method name, or iba[beta=B] (B > 0) for IBA at "
                             f"another beta")
    beta = label_beta(label)
    return method.name if beta is None else iba_label(beta)


def label_beta(label: str) -> float | None:
    """The beta a label names (``iba[beta=10]`` -> 10.0), else ``None``."""
    m = re.fullmatch(r"[^\[]+\[beta=([^\]]+)\]", label.strip())
    if m is None:
        return None
    try:
        beta = float(m.group(1))
    except ValueError:
        return None
    return beta if math.isfinite(beta) and beta > 0 else None


def check_metrics(names: Sequence[str]) -> list[str]:
    """The metric names, checked against :data:`METRICS`."""
    out = []
    for n in names:
        key = n.strip().lower()
        if key not in METRICS:
            raise UserInputError(f"unknown metric '{n}'{did_you_mean(key, METRICS)}; choose from {', '.join(METRICS)}")
        out.append(key)
    if not out:
        raise UserInputError(f"no metrics given; choose from {', '.join(METRICS)}")
    return out


def _done(path: str) -> set[tuple[str, str, str]]:
    """The scores already in ``path``; a last line cut short by an interruption is removed."""
    if drop_unfinished_line(path):
        log.warning("dropped an unfinished last score in %s (an interrupted run)", path)
    try:
        return {(r["item"], r["method"], r["metric"]) for r in read_records(path, strict=True)}
    except (ValueError, KeyError) as exc:
        raise UserInputError(f"{path} has a line that is not a score ({type(exc).__name__}: {exc}); remove it or "
                             f"write to another output folder") from exc


def evaluate(
    model: nn.Module,
    items: Sequence[Item],
    methods: Sequence[str],
    metrics: Sequence[str],
    out_dir: str,
    *,
    method_kwargs: Callable[[str], dict[str, Any]] | None = None,
    pack: Pack | None = None,
    restats: Callable[[nn.Module], Any] | None = None,
    stats_layers: Sequence[str] = (),
    points: int = 100,
    masks: int = 100,
    draws: int = 1,
    progress: Callable[[int], None] | None = None,
    batches: FitBatches | None = None,
) -> dict[str, Any]:
    """Score every method on every item with every applicable metric; returns the summary.

    Args:
        method_kwargs: Extra arguments of :func:`~video_iba.methods.attribute.attribute` per method
            (IBA's layer, statistics and config; a baseline's tube length; the readout ...).
        pack: Builds a multi-pathway network's input from the clip (registry models: automatic).
        restats: For the randomisation metric: estimates IBA's statistics again on a partly
            randomised copy of the model; called (and its result passed as ``stats``) whenever a
            randomised stage runs before one of ``stats_layers`` has produced its output, once per
            cascade stage for the whole run (the cascade's networks are the same for every input).
        batches: How many items the per-sample bottleneck fits at once (default: one); each
            item's seconds are then its share of its fit's.
        draws: The randomisation metric's draws of the randomised weights (seeds ``0..draws-1``;
            the same networks for every input and method); its value is the mean over draws and
            stages, ``ssim`` the mean per stage and, for several draws, ``ssim_draws`` each draw's.
    """
    methods = [check_label(m) for m in methods]
    metrics = check_metrics(metrics)
    if not items:
        raise UserInputError("the dataset is empty; give at least one input")
    check_writable_dir(out_dir)
    scores_path = os.path.join(out_dir, "scores.jsonl")
    me, world = rank(), world_size()
    if me == 0:  # the scores of an interrupted run on several ranks, and a line cut short, first
        merge_rank_scores(out_dir)
        done = _done(scores_path)
        for name in _rank_files(out_dir, "failures") + [FAILURES]:  # failed inputs are tried again
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, name))
    barrier()
    if me != 0:
        done = _done(scores_path)
    items = shard(list(items))  # under torchrun: every world-th input from this rank's
    fits = batches or FitBatches(1)
    stage_stats = _StageStatistics(restats) if restats is not None else None

    def todo_of(item: Item, method: str) -> list[str]:
        return [m for m in metrics if (item.name, method, m) not in done and applies(m, item)]

    def kwargs_of(method: str) -> dict[str, Any]:
        return dict(method_kwargs(method)) if method_kwargs else {}

    own = scores_path if world == 1 else os.path.join(out_dir, f"scores.rank{me}.jsonl")
    failures = os.path.join(out_dir, FAILURES if world == 1 else f"failures.rank{me}.jsonl")
    with Ledger(own) as scores, Ledger(failures) as failed:

        def fail(item: Item, method: str | None, exc: Exception) -> None:
            """An input (or one method on it) that could not be scored: recorded, and the run goes on."""
            why = failure_reason(exc)
            log.warning("%s%s failed: %s", item.name, f" ({method})" if method else "", why)
            failed.append({"item": item.name, "method": method, "error": why})

        start = 0
        while start < len(items):
            raw = items[start:start + fits.size]
            start += len(raw)
            block = []
            for item in raw:  # inputs are read as they are scored; one an earlier run scored is not read
                if not any(todo_of(item, method) for method in methods):
                    if progress is not None:
                        for _ in methods:  # a map at a time, as when scored
                            progress(1)
                    continue
                try:
                    block.append(item.loaded())
                except Exception as exc:
                    fail(item, None, exc)
                    if progress is not None:
                        progress(len(methods))
            fitted = _fit_together(model, block, [m for m in methods if check_method(base_method(m)).fitted],
                                   todo_of, kwargs_of, fits, pack)
            for item in block:
                for method in methods:
                    todo = todo_of(item, method)
                    if todo:  # else this method's scores are an earlier run's
                        try:
                            _score_item(scores, model, item, method, todo, kwargs_of(method), fitted, pack, stage_stats,
                                        stats_layers, points, masks, draws)
                        except Exception as exc:
                            fail(item, method, exc)
                    if progress is not None:
                        progress(1)
    if os.path.getsize(failures) == 0:
        os.remove(failures)
    barrier()
    if me != 0:
        return {}
    merge_rank_scores(out_dir)
    return summarise(out_dir)


def _score_item(scores: Ledger, model: nn.Module, item: Item, method: str, todo: Sequence[str], kw: dict[str, Any],
                fitted: dict[tuple[str, str], tuple[Attribution, float] | Exception], pack: Pack | None,
                restats: "_StageStatistics | None", stats_layers: Sequence[str], points: int,
                masks: int, draws: int = 1) -> None:
    """One method's attribution of one input (fitted with others already, or now) and the metrics
    ``todo`` on it, each appended to ``scores``."""
    got = fitted.get((item.name, method))
    if isinstance(got, Exception):
        raise got
    if got is not None:
        a, seconds = got
    else:
        t0 = _clock(item.x)
        a = attribute(base_method(method), model, item.x, item.target, pack=pack, **kw)
        seconds = _clock(item.x) - t0
    for metric in todo:
        t1 = _clock(item.x)
        if metric == "randomisation":
            value, extra = _randomisation(model, item, method, kw, a, pack, restats, stats_layers, draws)
        else:
            value, extra = _score(metric, model, item, a.values, a.target, points, masks, pack)
        scores.append({"item": item.name, "method": method, "metric": metric, "value": value,
                       "attribution_s": round(seconds, 4), "metric_s": round(_clock(item.x) - t1, 4), **extra})


#: The inputs (or methods on them) an evaluation could not score, with why; written when there are any.
FAILURES = "failures.jsonl"


def _rank_files(out_dir: str, stem: str) -> list[str]:
    """The names of the ranks' ``STEM.rankN.jsonl`` files in ``out_dir``, in rank order."""
    pattern = re.escape(stem) + r"\.rank(\d+)\.jsonl"
    found = [(int(m.group(1)), n) for n in os.listdir(out_dir) if (m := re.fullmatch(pattern, n))]
    return [n for _, n in sorted(found)]


def merge_rank_scores(out_dir: str) -> None:
    """Append the scores of every rank's file (``scores.rankN.jsonl``, written under torchrun) to
    ``scores.jsonl`` and remove them (a line cut short by an interruption is dropped, a score
    already there is not added again); the ranks' ``failures.rankN.jsonl`` go to
    :data:`FAILURES` the same way."""
    _merge_rank_files(out_dir, "failures", FAILURES)
    path = os.path.join(out_dir, "scores.jsonl")
    if _rank_files(out_dir, "scores"):
        _merge_rank_files(out_dir, "scores", "scores.jsonl", _done(path))  # a merge cut short is not appended twice


def _merge_rank_files(out_dir: str, stem: str, target: str, have: set[tuple[str, str, str]] | None = None) -> None:
    """Append the records of the ranks' ``STEM.rankN.jsonl`` to ``target`` in rank order and remove
    them; with ``have``, a score whose (item, method, metric) it holds is left out."""
    names = _rank_files(out_dir, stem)
    if not names:
        return
    with Ledger(os.path.join(out_dir, target)) as merged:
        for name in names:
            part = os.path.join(out_dir, name)
            drop_unfinished_line(part)
            for record in read_records(part):
                if have is not None:
                    key = (record["item"], record["method"], record["metric"])
                    if key in have:
                        continue
                    have.add(key)
                merged.append(record)
    for name in names:
        os.remove(os.path.join(out_dir, name))


def _fit_together(model: nn.Module, block: Sequence[Item], methods: Sequence[str],
                  todo_of: Callable[[Item, str], list[str]], kwargs_of: Callable[[str], dict[str, Any]],
                  fits: FitBatches, pack: Pack | None) -> dict[tuple[str, str], tuple[Attribution, float] | Exception]:
    """The per-sample bottleneck's attributions of the block's items still to score, fitted
    together where there are several, with each item's share of its fit's seconds (or the
    exception its fit failed with, the item's failure)."""
    out: dict[tuple[str, str], tuple[Attribution, float] | Exception] = {}
    for method in methods:
        need = [it for it in block if todo_of(it, method)]
        if len(need) < 2:
            continue
        kw = kwargs_of(method)

        def fit(group: Sequence[Item], method: str = method, kw: dict[str, Any] = kw) -> list[Attribution]:
            return attribute_many(base_method(method), model, [i.x for i in group], [i.target for i in group],
                                  pack=pack, **kw)

        for item, res, seconds in fits.map(need, fit):
            out[(item.name, method)] = res if isinstance(res, Exception) else (res, seconds)
    return out


def _clock(x: torch.Tensor) -> float:
    """Wall-clock seconds, after the device of ``x`` has finished its queued work."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter()


def applies(metric: str, item: Item) -> bool:
    """Whether ``metric`` can score ``item``: a box metric needs its box or tube, the temporal
    share a clip's annotated frames."""
    if metric == "hit_ratio":
        return item.boxes is not None
    if metric == "temporal_share":
        return item.interval is not None  # clips only
    return True


def _score(metric: str, model: nn.Module, item: Item, values: torch.Tensor, target: int, points: int,
           masks: int, pack: Pack | None) -> tuple[float, dict[str, Any]]:
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


def _randomisation(model: nn.Module, item: Item, method: str, kw: dict[str, Any], attr: Attribution,
                   pack: Pack | None, restats: "_StageStatistics | None",
                   stats_layers: Sequence[str], draws: int = 1) -> tuple[float, dict[str, Any]]:
    """SSIM of the map ``attr`` to the maps of cascadingly randomised copies, in ``draws`` draws of
    the randomised weights; the value is the mean over draws and stages (lower: the map depends
    more on the learned parameters)."""
    stages = randomisation_stages(model)
    reaching: set[str] = set()
    if check_method(base_method(method)).uses_statistics and restats is not None and stats_layers:
        reaching = stages_reaching(model, item.x, stats_layers, stages, pack)
    runs = []
    for seed in range(draws):

        def attribute_fn(m: nn.Module, randomised: list[str], seed: int = seed) -> torch.Tensor:
            args = dict(kw)
            if randomised and reaching.intersection(randomised):
                assert restats is not None
                args["stats"] = restats(m, randomised, seed)
            return attribute(base_method(method), m, item.x, attr.target, pack=pack, **args).values

        runs.append(parameter_randomisation(model, attribute_fn, stages=stages, seed=seed, base=attr.values))
    ssim = np.stack([r.ssim for r in runs])  # (draws, stages)
    extra: dict[str, Any] = {"stages": runs[0].stages, "ssim": ssim.mean(axis=0).round(5).tolist(),
                             "reestimated": sorted(reaching)}
    if draws > 1:
        extra["ssim_draws"] = ssim.round(5).tolist()
    return float(ssim.mean()), extra


class _StageStatistics:
    """IBA's statistics re-estimated once per randomised network of the cascade, for all inputs.

    :func:`~.metrics.parameter_randomisation` draws each stage from its seed alone, so the draw's
    seed and the stages randomised so far name one network whatever the input and the method; the
    estimate, which reads every evaluated input, is made at its first use.
    """

    def __init__(self, restats: Callable[[nn.Module], Any]) -> None:
        self._restats = restats
        self._done: dict[tuple[Any, ...], Any] = {}

    def __call__(self, model: nn.Module, randomised: Sequence[str], seed: int = 0) -> Any:
        key = (seed, *randomised)
        if key not in self._done:
            self._done[key] = self._restats(model)
        return self._done[key]


@dataclass
class _Scores:
    """The content of ``scores.jsonl``, grouped for the tables and plots."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    curves: dict[tuple[str, str], list[tuple[list[float], list[float], list[float]]]] = field(default_factory=dict)
    sensitivity: dict[str, list[tuple[list[float], list[float]]]] = field(default_factory=dict)
    randomisation: dict[str, list[tuple[list[str], list[float]]]] = field(default_factory=dict)
    attribution_s: dict[tuple[str, str], float] = field(default_factory=dict)
    metric_s: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str) -> "_Scores":
        out = cls()
        for r in read_records(path):
            key = (r["method"], r["metric"])
            out.values.setdefault(key, []).append(float(r["value"]))
            if "morf" in r:
                out.curves.setdefault(key, []).append((r["fractions"], r["morf"], r["lerf"]))
            if "attribution_s" in r:
                out.attribution_s[(r["method"], r["item"])] = float(r["attribution_s"])
                out.metric_s.setdefault(key, []).append(float(r["metric_s"]))
            if "pearson" in r:
                out.sensitivity.setdefault(r["method"], []).append((r["n"], r["pearson"]))
            if "ssim" in r:
                out.randomisation.setdefault(r["method"], []).append((r["stages"], r["ssim"]))
        return out


def summarise(out_dir: str) -> dict[str, Any]:
    """Tables (Markdown, CSV, JSON), costs and plots from ``scores.jsonl``, written atomically."""
    scores = _Scores.read(os.path.join(out_dir, "scores.jsonl"))
    table: list[dict[str, Any]] = []
    for (method, metric), vals in sorted(scores.values.items()):
        est = bootstrap_ci(vals)
        table.append({"method": method, "metric": metric, "mean": est.mean, "ci_low": est.low, "ci_high": est.high,
                      "n": est.n})
    _write_text(os.path.join(out_dir, "results.json"), json.dumps(table, indent=1))
    _write_text(os.path.join(out_dir, "results.csv"), "method,metric,mean,ci_low,ci_high,n\n" + "".join(
        f"{t['method']},{t['metric']},{t['mean']:.6f},{t['ci_low']:.6f},{t['ci_high']:.6f},{t['n']}\n" for t in table))
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
    if scores.attribution_s:
        lines += _cost_table(out_dir, scores, methods, metrics)
    failed = list(read_records(os.path.join(out_dir, FAILURES)))
    if failed:
        first = failed[0]
        lines += ["", f"Not scored: {len({r['item'] for r in failed})} input(s) failed ({len(failed)} record(s) in "
                      f"{FAILURES}; a rerun tries them again), first '{first['item']}'"
                      + (f" ({first['method']})" if first.get("method") else "") + f": {first['error']}"]
    _write_text(os.path.join(out_dir, "results.md"), "\n".join(lines) + "\n")
    for metric in sorted({k[1] for k in scores.curves}):
        plot_curves(out_dir, metric, {m: c for (m, k), c in scores.curves.items() if k == metric})
    if scores.sensitivity:
        plot_sensitivity(out_dir, scores.sensitivity)
    if scores.randomisation:
        plot_randomisation(out_dir, scores.randomisation)
    return {"table": table, "markdown": "\n".join(lines), "failed": failed}


def _cost_table(out_dir: str, scores: _Scores, methods: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """Markdown lines of the seconds per input (and ``cost.json``)."""
    lines = ["", "Seconds per input (mean): the attribution, and each metric on top of it", "",
             "| method | attribution | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    cost = []
    for m in methods:
        att = [v for (mm, _), v in scores.attribution_s.items() if mm == m]
        per = {k: float(np.mean(scores.metric_s[(m, k)])) for k in metrics if (m, k) in scores.metric_s}
        cost.append({"method": m, "attribution_s": float(np.mean(att)) if att else None, "metric_s": per,
                     "inputs": len(att)})
        lines.append(f"| {m} | " + (f"{np.mean(att):.2f}" if att else "") + " | "
                     + " | ".join(f"{per[k]:.2f}" if k in per else "" for k in metrics) + " |")
    _write_text(os.path.join(out_dir, "cost.json"), json.dumps(cost, indent=1))
    return lines


def _write_text(path: str, text: str) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


__all__ = ["METRICS", "TUBE_FRAMES", "applies", "evaluate", "summarise", "check_metrics", "check_label", "iba_label",
           "label_beta", "base_method"]
