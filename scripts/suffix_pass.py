#!/usr/bin/env python3
"""Seconds of one optimisation pass of the split suffix, with every rewrite or one left out.

One forward and input-gradient pass of ``--replicas`` noisy replicas of the default layer's
output, through the suffix the fit builds (``CachedSuffix``: batch norms folded, attention fused,
MViT's token poolings read in place, depthwise input gradients as convolutions, each where it
applies), timed ``--repeats`` times after one warm-up pass; the median is printed with the
suffix's note (the rewrites it uses) and the sum of the input gradient. ``--without NAME`` leaves
one rewrite out (``pool_in_place``, ``fuse_attention``, ``fast_depthwise``), so that its effect
is measured in the same conditions: run the two variants one after the other, several times, as
this machine's speed drifts. ``--bf16`` runs the passes under bf16 autocast. Random weights; the
inputs of ``scripts/bench.py``.

    python scripts/suffix_pass.py --models mvit_v2_s
    python scripts/suffix_pass.py --models mvit_v2_s --without pool_in_place
    python scripts/suffix_pass.py --models mvit_v2_s --layer blocks.3 --bf16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import layer_taps  # noqa: E402  (the benchmark's model, input and layer outputs)

import video_iba  # noqa: E402
import video_iba.bottleneck.split as split  # noqa: E402
from video_iba.bottleneck.insertion import frozen  # noqa: E402

REWRITES = ("pool_in_place", "fuse_attention", "fast_depthwise")


def measure(name: str, layers: list[str] | None, replicas: int, repeats: int, bf16: bool) -> dict[str, object]:
    model, inputs, layers, _, logits, taps = layer_taps(name, layers)
    with frozen(model):
        suffix = split.CachedSuffix(model, layers, inputs, taps.parts, logits, taps)
        noise = torch.Generator().manual_seed(1)
        zs = [(p.expand(replicas, *p.shape[1:]) + 0.1 * torch.randn(replicas, *p.shape[1:], generator=noise))
              .requires_grad_(True) for p in taps.parts]
        seconds = []
        for i in range(repeats + 1):
            for z in zs:
                z.grad = None
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = suffix(zs)[:, 0].sum()
            out.backward()
            if i:  # the first pass warms up
                seconds.append(time.perf_counter() - t0)
    return {"model": name, "layers": layers, "replicas": replicas, "bf16": bf16, "note": suffix.note,
            "pass_seconds": round(statistics.median(seconds), 3), "all": [round(s, 3) for s in seconds],
            "grad_abs_sum": float(sum(float(z.grad.abs().sum()) for z in zs))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mvit_v2_s")
    ap.add_argument("--layer", action="append", help="bottleneck layer (default: the model's)")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--without", choices=REWRITES, help="leave this rewrite of the suffix out")
    ap.add_argument("--bf16", action="store_true", help="passes under bf16 autocast")
    args = ap.parse_args()
    video_iba.keep_freed_memory()  # as the command line runs
    if args.without:
        setattr(split, args.without, lambda gm: None)  # the rewrite finds nothing to rewrite
    for name in args.models.split(","):
        row = measure(name, args.layer, args.replicas, args.repeats, args.bf16)
        print(json.dumps({**row, "without": args.without}), flush=True)


if __name__ == "__main__":
    main()
