#!/usr/bin/env python3
"""Seconds to build the split suffix the fit runs: for a model's first input (traced, rewritten, each
rewrite checked against the logits) and for its next inputs of the same shape (the kept split,
checked once). Random weights, the inputs of ``scripts/bench.py``, the model's default layer; one
JSON object per model.

    python scripts/split_build.py --models resnet50,efficientnet_lite0,r3d_18,mvit_v2_s --repeats 3
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

from video_iba.bottleneck.insertion import frozen  # noqa: E402
from video_iba.bottleneck.split import split_runner  # noqa: E402


def measure(name: str, repeats: int) -> dict[str, object]:
    model, inputs, layers, _, logits, taps = layer_taps(name)
    times = []
    with frozen(model):
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            runner = split_runner(model, layers, inputs, taps.parts, logits, taps)
            times.append(time.perf_counter() - t0)
    return {"model": name, "layer": layers, "runner": type(runner).__name__, "first_seconds": round(times[0], 3),
            "kept_seconds": round(statistics.median(times[1:]), 3), "kept_runs": [round(t, 3) for t in times[1:]],
            "note": runner.note, "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet50,efficientnet_lite0,r3d_18", help="comma-separated registry names")
    p.add_argument("--repeats", type=int, default=3, help="builds for the next inputs (median reported)")
    args = p.parse_args()
    for name in args.models.split(","):
        print(json.dumps(measure(name, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
