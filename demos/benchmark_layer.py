#!/usr/bin/env python3
"""Choose IBA's bottleneck layer for the synthetic benchmark on validation clips, never on test clips.

For each candidate layer of ``TubeNet`` and each spatial smoothing (the paper's sigma = 1 cell,
0.5, none), IBA (beta 10, statistics from the benchmark's 400 statistics clips) explains the
first ``--clips`` clips of ``video_iba.synthetic.VALIDATION_SEEDS``; the table gives the mean
tube hit ratio, temporal share and degradation (8x8x4 tubes). The benchmark's layer
(``video_iba.evaluate.SYNTHETIC_LAYER``) is the one with the best tube hit ratio here.

    python demos/benchmark_layer.py [--clips 20] [--layers block1,block2,block3]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

import video_iba
from video_iba.config import IBAConfig
from video_iba.evaluation import (TUBE_FRAMES, VALIDATION_SEEDS, box_mask, degradation, hit_ratio, load_tubenet,
                                  make_clip, statistics_batches, temporal_share)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--layers", default="block1,block2,block3")
    p.add_argument("--sigmas", default="1,0.5,0")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    model = load_tubenet()
    clips = [make_clip(s) for s in list(VALIDATION_SEEDS)[: args.clips]]
    print("| layer | sigma (cells) | tube hit ratio | temporal share | degradation 8x8x4 | s per clip |")
    print("|---|---|---|---|---|---|")
    for layer in args.layers.split(","):
        stats = video_iba.estimate(model, statistics_batches(), layer=layer)
        for sigma in (float(s) for s in args.sigmas.split(",")):
            cfg = IBAConfig(sigma=sigma)
            hits, shares, degs = [], [], []
            t0 = time.perf_counter()
            for c in clips:
                x = torch.from_numpy(c.x)[None]
                a = video_iba.explain(model, x, c.label, layer=layer, stats=stats, seed=0, config=cfg)
                hits.append(hit_ratio(a.values, box_mask(tuple(a.values.shape), c.boxes)))
                shares.append(temporal_share(a.values, c.interval))
                degs.append(degradation(model, x, a.values, c.label, tile=8, t_tile=TUBE_FRAMES).score)
            per_clip = (time.perf_counter() - t0) / len(clips)
            print(f"| {layer} | {sigma:g} | {np.mean(hits):.3f} | {np.mean(shares):.3f} | {np.mean(degs):.3f} | "
                  f"{per_clip:.1f} |", flush=True)


if __name__ == "__main__":
    main()
