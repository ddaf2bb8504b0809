#!/usr/bin/env python3
"""Every attribution method on CUDA against the same method on the CPU.

For a few clips of the synthetic benchmark (its trained TubeNet) and one random-weight r3d_18
clip, each method runs on both devices at the same seed; the table gives the Pearson
correlation of the two maps, their totals and the seconds on each device (after a warm-up
run). Deterministic methods should agree to float32 rounding (r > 0.999); IBA, SmoothGrad and
Random draw their noise from per-device generators, so they agree in distribution, not in
value: their r shows how much a map depends on the noise.

Then the registry's video transformers on CUDA (random weights, one clip each): IBA with the
fused attention in the suffix against the whole network run step by step (``split="hook"``), at
the same seed on the same device, in fp32, bf16 and fp16 (Pearson of the maps, totals, seconds).

    python scripts/cuda_check.py [--clips 3]
    python scripts/cuda_check.py --transformers-only
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from video_iba import METHODS, attribute
from video_iba.evaluation.synthetic import (SYNTHETIC_LAYER, TEST_SEEDS, load_tubenet, load_tubenet_readout, make_clip,
                                            statistics_batches)


def _timed(fn):  # type: ignore[no-untyped-def]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=3)
    p.add_argument("--transformers-only", action="store_true", help="only the transformers' fused attention")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("CUDA is not available here")
    import video_iba

    if args.transformers_only:
        transformers()
        return

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    cpu = load_tubenet()
    gpu = load_tubenet().cuda()
    batches = list(statistics_batches())
    readout_cpu, readout_gpu = load_tubenet_readout(), load_tubenet_readout().to_device("cuda")
    stats_cpu = video_iba.estimate(cpu, batches, layer=SYNTHETIC_LAYER)
    stats_gpu = video_iba.estimate(gpu, (b.cuda() for b in batches), layer=SYNTHETIC_LAYER)
    diff = float((stats_cpu.mean - stats_gpu.mean.cpu()).abs().max())
    print(f"statistics at {SYNTHETIC_LAYER}: max |mean_cpu - mean_cuda| = {diff:.2e}")
    print("| method | clips | Pearson r (mean, min) | total cpu / cuda | s cpu | s cuda |")
    print("|---|---|---|---|---|---|")
    clips = [make_clip(s) for s in list(TEST_SEEDS)[: args.clips]]
    for method in [m for m in METHODS if m != "lrp"]:  # LRP: VGG and ResNet photos only
        rs, totals, t_cpu, t_gpu = [], [], [], []
        for c in clips:
            x = torch.from_numpy(c.x)[None]
            kw_c: dict = {"layer": SYNTHETIC_LAYER, "stats": stats_cpu} if method == "iba" else {}
            kw_g: dict = {"layer": SYNTHETIC_LAYER, "stats": stats_gpu} if method == "iba" else {}
            if method == "readout":
                kw_c, kw_g = {"readout": readout_cpu}, {"readout": readout_gpu}
            attribute(method, gpu, x.cuda(), c.label, **kw_g)  # warm-up
            a, tc = _timed(lambda: attribute(method, cpu, x, c.label, **kw_c))  # noqa: B023
            b, tg = _timed(lambda: attribute(method, gpu, x.cuda(), c.label, **kw_g))  # noqa: B023
            va, vb = a.values.numpy().ravel(), b.values.cpu().numpy().ravel()
            rs.append(float(np.corrcoef(va, vb)[0, 1]) if va.std() > 0 and vb.std() > 0 else float("nan"))
            totals.append((va.sum(), vb.sum()))
            t_cpu.append(tc)
            t_gpu.append(tg)
        tot = np.mean(totals, axis=0)
        print(f"| {method} | {len(clips)} | {np.nanmean(rs):.4f}, {np.nanmin(rs):.4f} | {tot[0]:.4g} / {tot[1]:.4g} | "
              f"{np.mean(t_cpu):.3f} | {np.mean(t_gpu):.3f} |", flush=True)
    model = video_iba.load_model("r3d_18", weights="random", device="cuda")
    x = torch.randn(1, 3, 16, 112, 112, device="cuda")
    a, t = _timed(lambda: video_iba.explain(model, x, 0))
    a, t = _timed(lambda: video_iba.explain(model, x, 0))
    print(f"r3d_18 (random weights) IBA on CUDA: {t:.3f} s, {float(a.bits.sum()):.1f} bits, "
          f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    transformers()


def transformers() -> None:
    """Fused attention on CUDA: the fused suffix's map against the whole network's, same seed."""
    import video_iba

    print("| model | precision | suffix | Pearson r | total fused / whole | s fused | s whole |")
    print("|---|---|---|---|---|---|---|")
    for name, frames in (("mvit_v2_s", 16), ("swin3d_t", 32)):
        model = video_iba.load_model(name, weights="random", device="cuda")
        x = torch.randn(1, 3, frames, 224, 224, generator=torch.Generator().manual_seed(0)).cuda()
        for precision in ("fp32", "bf16", "fp16"):
            try:
                video_iba.explain(model, x, 0, seed=0, steps=2, precision=precision)  # warm-up
                a, tf = _timed(lambda: video_iba.explain(model, x, 0, seed=0, precision=precision))  # noqa: B023
                b, tw = _timed(lambda: video_iba.explain(model, x, 0, seed=0, precision=precision,  # noqa: B023
                                                         split="hook"))
            except video_iba.UserInputError as exc:  # e.g. an fp16 gradient overflow, named by the error
                print(f"| {name} | {precision} | failed: {exc} | | | | |", flush=True)
                continue
            va, vb = a.bits.cpu().double().numpy().ravel(), b.bits.cpu().double().numpy().ravel()
            r = float(np.corrcoef(va, vb)[0, 1])
            print(f"| {name} | {precision} | {a.meta['prefix_note']} | {r:.5f} | {va.sum():.4g} / {vb.sum():.4g} | "
                  f"{tf:.3f} | {tw:.3f} |", flush=True)


if __name__ == "__main__":
    main()
