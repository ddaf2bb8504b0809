#!/usr/bin/env python3
"""FLOPs of one optimisation pass: the project's split suffix against the naive loop.

Counts, with ``torch.utils.flop_counter``, one forward and backward pass of ``--replicas`` noisy
replicas at the model's default layer: the fit's suffix (the network after the layer, gradients
for the bottleneck only) against the naive loop (the whole network with a hook, gradients for the
weights too). The suffix keeps the model's own attention code (``fuse=False``), so both sides do
the same attention arithmetic and the ratio is what skipping work alone can give (fused attention
changes the time, not the arithmetic). Random weights; the inputs of ``scripts/bench.py``.

    python scripts/suffix_flops.py --models mvit_v2_s,swin3d_t
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import layer_taps  # noqa: E402  (the benchmark's model, input and layer outputs)

from video_iba.bottleneck.insertion import HookedForward, frozen  # noqa: E402
from video_iba.bottleneck.split import CachedSuffix  # noqa: E402


def _flops(fn) -> int:  # type: ignore[no-untyped-def]
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count(name: str, replicas: int) -> dict[str, object]:
    model, inputs, layers, modules, logits, taps = layer_taps(name)
    with frozen(model):
        suffix = CachedSuffix(model, layers, inputs, taps.parts, logits, taps, fuse=False)
        zs = [p.expand(replicas, *p.shape[1:]).clone().requires_grad_(True) for p in taps.parts]
        fit = _flops(lambda: suffix(zs)[:, 0].sum().backward())
    with HookedForward(model, modules, inputs, taps=taps) as whole:  # weights keep requires_grad=True
        naive = _flops(lambda: whole(zs)[:, 0].sum().backward())
    model.zero_grad(set_to_none=True)
    return {"model": name, "layer": layers, "replicas": replicas, "fit_gflop": round(fit / 1e9, 1),
            "naive_gflop": round(naive / 1e9, 1), "ratio": round(fit / naive, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mvit_v2_s,swin3d_t")
    ap.add_argument("--replicas", type=int, default=2)
    args = ap.parse_args()
    for name in args.models.split(","):
        print(json.dumps(count(name, args.replicas)), flush=True)


if __name__ == "__main__":
    main()
