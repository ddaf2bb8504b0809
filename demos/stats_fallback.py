#!/usr/bin/env python3
"""How far are maps made without a dataset from maps made with dataset statistics?

Without ``--stats``, ``explain`` draws the bottleneck's noise from the explained photo's own
feature map, per channel, pooled over its positions. This script compares that fallback with
per-neuron statistics estimated over a dataset, on the real photos that ship with scikit-image,
using the real ImageNet EfficientNet-Lite0 (bottleneck at ``_blocks.4``, paper settings, seed 0).

Leave-one-out: the statistics for a photo are estimated over random crops (scale 0.25-1, aspect
3/4-4/3, flips) of the *other* photos, so the explained photo is never part of its own dataset.

    python demos/stats_fallback.py [--crops 1200]

Prints a Markdown table: Pearson correlation of the two bits maps, overlap (IoU) of their most
informative 10 % of pixels, and both totals in bits.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

import video_iba
from _photos import crops as _crops
from _photos import photo as _photo
from video_iba.models import preprocess_image

EXPLAINED = ("chelsea", "coffee", "rocket", "astronaut")
OTHERS = ("immunohistochemistry", "hubble_deep_field", "retina", "colorwheel", "camera", "brick", "grass",
          "gravel", "coins", "moon", "clock", "cell", "page", "text")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crops", type=int, default=1200, help="crops in each leave-one-out dataset")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    model = video_iba.load_model("efficientnet_lite0")
    spec = model.video_iba_spec
    photos = {n: _photo(n) for n in EXPLAINED + OTHERS}
    print(f"| photo | Pearson r | top-10 % IoU | bits (input stats) | bits (dataset stats, {args.crops} crops) |")
    print("|---|---|---|---|---|")
    rs, ious = [], []
    for name in EXPLAINED:
        rng = np.random.default_rng(0)
        others = [photos[n] for n in photos if n != name]
        stats = video_iba.estimate(model, _crops(others, args.crops, spec, rng), layer=spec.default_layer)
        x, _ = preprocess_image(photos[name], spec)
        a = video_iba.explain(model, x, seed=0).bits.numpy().ravel()
        b = video_iba.explain(model, x, seed=0, stats=stats).bits.numpy().ravel()
        r = float(np.corrcoef(a, b)[0, 1])
        k = a.size // 10
        ta, tb = set(np.argsort(a)[-k:]), set(np.argsort(b)[-k:])
        iou = len(ta & tb) / len(ta | tb)
        rs.append(r)
        ious.append(iou)
        print(f"| {name} | {r:.3f} | {iou:.3f} | {a.sum():.0f} | {b.sum():.0f} |", flush=True)
    print(f"| mean | {np.mean(rs):.3f} | {np.mean(ious):.3f} | | |")


if __name__ == "__main__":
    main()
