"""The evaluation's plots: degradation curves, sensitivity-n and parameter randomisation (PNG)."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import numpy as np

from ..files import atomic_write


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


def plot_curves(out_dir: str, metric: str, per_method: dict[str, list[tuple[list[float], list[float], list[float]]]]) -> None:
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


def plot_sensitivity(out_dir: str, per_method: dict[str, list[tuple[list[float], list[float]]]]) -> None:
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


def plot_randomisation(out_dir: str, per_method: dict[str, list[tuple[list[str], list[float]]]]) -> None:
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
