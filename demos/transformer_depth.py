#!/usr/bin/env python3
"""Where to put the bottleneck in a video transformer: depth x steps x beta x statistics, measured on
the synthetic benchmark's TubeViT (validation clips only, never the test clips).

For every setting, IBA explains the first ``--clips`` clips of ``VALIDATION_SEEDS`` for their true
class; the table gives the mean temporal share (the map's share in the discriminative frames;
0.375 for a map spread evenly over the 16 frames, as the interval holds 6 of them) and the tube
hit ratio (share of the map inside the target's tube), with the seconds per clip. Grad-CAM on the
token grid (class token left out) and at the embedding are the references.

Statistics: ``token`` = one mean and std per (channel, t, h, w) (the default for token grids),
``time`` = pooled over the time axis, both from the benchmark's 400 statistics clips.

    python demos/transformer_depth.py [--clips 20] [--layers embed,blocks.0,blocks.1,blocks.2]
        [--betas 1,10] [--steps 10,30] [--stats token,time] [--temporal-sigmas 1] [--lrs 1] [--alpha-inits 5]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time

import numpy as np
import torch

import video_iba
from video_iba.config import IBAConfig
from video_iba.evaluation import (TUBEVIT_LAYOUT, VALIDATION_SEEDS, box_mask, hit_ratio, load_tubevit, make_clip,
                                  statistics_batches, temporal_share)


def _scores(values: torch.Tensor, clip: video_iba.evaluation.synthetic.Clip) -> tuple[float, float]:
    return (temporal_share(values, clip.interval), hit_ratio(values, box_mask(tuple(values.shape), clip.boxes)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--layers", default="embed,blocks.0,blocks.1,blocks.2")
    p.add_argument("--betas", default="1,10")
    p.add_argument("--steps", default="10,30")
    p.add_argument("--stats", default="token,time")
    p.add_argument("--temporal-sigmas", default="1", help="temporal smoothing of the mask, in grid frames")
    p.add_argument("--lrs", default="1", help="Adam learning rates")
    p.add_argument("--alpha-inits", default="5", help="initial mask parameters")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_tubevit()
    clips = [make_clip(s) for s in list(VALIDATION_SEEDS)[: args.clips]]
    with torch.no_grad():
        x = torch.from_numpy(np.stack([c.x for c in clips]))
        acc = float((model(x).argmax(1) == torch.tensor([c.label for c in clips])).float().mean())
    print(f"TubeViT accuracy on these {len(clips)} validation clips: {acc:.2f}\n")
    print("| method | layer | statistics | beta | steps | temporal sigma | lr | alpha init | temporal share "
          "| tube hit ratio | s per clip |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cam_layer in ("blocks.2", "embed"):
        tokens = TUBEVIT_LAYOUT if cam_layer.startswith("blocks") else None
        scores, t0 = [], time.perf_counter()
        for c in clips:
            a = video_iba.attribute("gradcam", model, torch.from_numpy(c.x)[None], c.label, cam_layer=cam_layer,
                                    tokens=tokens)
            scores.append(_scores(a.values, c))
        share, hit = np.mean(scores, axis=0)
        print(f"| Grad-CAM | {cam_layer} | | | | | | | {share:.3f} | {hit:.3f} | "
              f"{(time.perf_counter() - t0) / len(clips):.2f} |", flush=True)
    for layer in args.layers.split(","):
        tokens = TUBEVIT_LAYOUT if layer.startswith("blocks") else None
        for stats_kind in args.stats.split(","):
            pool = () if stats_kind == "token" else (1,)
            stats = video_iba.estimate(model, statistics_batches(), layer=layer, tokens=tokens, pool=pool)
            for beta, steps, tsig, lr, a0 in itertools.product([float(b) for b in args.betas.split(",")],
                                                               [int(s) for s in args.steps.split(",")],
                                                               [float(s) for s in args.temporal_sigmas.split(",")],
                                                               [float(v) for v in args.lrs.split(",")],
                                                               [float(v) for v in args.alpha_inits.split(",")]):
                cfg = IBAConfig(beta=beta, steps=steps, temporal_sigma=tsig, lr=lr, alpha_init=a0)
                scores, t0 = [], time.perf_counter()
                for c in clips:
                    a = video_iba.explain(model, torch.from_numpy(c.x)[None], c.label, layer=layer, tokens=tokens,
                                          stats=stats, seed=0, config=cfg)
                    scores.append(_scores(a.values, c))
                share, hit = np.mean(scores, axis=0)
                print(f"| IBA | {layer} | {stats_kind} | {beta:g} | {steps} | {tsig:g} | {lr:g} | {a0:g} | {share:.3f} | {hit:.3f} | "
                      f"{(time.perf_counter() - t0) / len(clips):.1f} |", flush=True)


if __name__ == "__main__":
    main()
