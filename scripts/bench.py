#!/usr/bin/env python3
"""Seconds per explanation: the project's fit against the same algorithm run naively.

"naive" is the reference implementation's loop: the whole network runs at every step and the
model's weights get gradients. "fit" is ``video_iba.explain``: the network before the bottleneck
runs once, and no weight gradient is computed. Both use the paper's settings (10 steps, 10 noisy
samples, beta 10) at the same seed on the same real photo (scikit-image's chelsea), with random
weights (pretrained weights change nothing in the cost).

Each run is its own subprocess, so each variant's peak RSS is its own; variants are interleaved
and the median of the repeats is reported.

    python scripts/bench.py                      # table
    python scripts/bench.py --json               # one JSON object per model per line
    python scripts/bench.py --models resnet50 --repeats 5
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

import numpy as np

DEFAULT_MODELS = ("resnet50", "vgg16")


def _input(name: str):  # type: ignore[no-untyped-def]
    from skimage import data

    from video_iba.models import get_spec, preprocess_image

    x, _ = preprocess_image(np.asarray(data.chelsea()), get_spec(name))
    return x


def worker(name: str, variant: str, out: str) -> None:
    import torch

    import video_iba
    from video_iba.bottleneck import HookedForward, Statistics, capture, fit_per_sample, get_module

    torch.manual_seed(0)
    model = video_iba.load_model(name, weights="random")
    spec = model.video_iba_spec
    x = _input(name)
    with torch.no_grad():
        target = int(model(x).argmax())  # warm-up pass, not timed
    t0 = time.perf_counter()
    if variant == "fit":
        bits = video_iba.explain(model, x, target, seed=0).bits
    else:
        layer = spec.default_layer
        module = get_module(model, layer)
        _, (r,) = capture(model, [module], [layer], x)
        stats = Statistics.from_input(r)
        gen = torch.Generator().manual_seed(0)
        with HookedForward(model, [module], x) as run:
            fit = fit_per_sample(run, [r], [stats], target, video_iba.IBAConfig(), gen, skip_last_pass=False)
        bits = video_iba.heatmap.capacity_to_bits(fit.capacities[0], tuple(x.shape[2:]))
    seconds = time.perf_counter() - t0
    np.save(out, bits.numpy())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss_mb}))


def _run(name: str, variant: str, out: str) -> dict[str, float]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, variant, out]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{name} {variant} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench(name: str, repeats: int) -> dict[str, object]:
    runs: dict[str, list[dict[str, float]]] = {"fit": [], "naive": []}
    with tempfile.TemporaryDirectory() as tmp:
        maps = {v: os.path.join(tmp, f"{v}.npy") for v in runs}
        for _ in range(repeats):
            for variant in runs:
                runs[variant].append(_run(name, variant, maps[variant]))
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
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated registry names")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats per variant (median reported)")
    p.add_argument("--json", action="store_true", help="one JSON object per model per line")
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if not args.json:
        print(f"{'model':<12} {'fit s':>8} {'naive s':>8} {'ratio':>6} {'pearson':>8} {'RSS MB':>8} {'naive RSS':>9}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = bench(name, args.repeats)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['model']:<12} {r['seconds']:>8.2f} {r['naive_seconds']:>8.2f} {r['ratio']:>6.3f} "
                  f"{r['pearson']:>8.4f} {r['peak_rss_mb']:>8.0f} {r['naive_peak_rss_mb']:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
