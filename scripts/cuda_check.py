#!/usr/bin/env python3
"""Every attribution method on CUDA against the same method on the CPU.

For a few clips of the synthetic benchmark (its trained TubeNet; for Grad-CAM on tokens, attention
rollout and ``gae`` its trained TubeViT) and one random-weight r3d_18 clip, each method runs on
both devices at the same seed; the table gives the Pearson
correlation of the two maps, their totals and the seconds on each device (after a warm-up
run). Deterministic methods should agree to float32 rounding (r > 0.999); IBA, SmoothGrad and
Random draw their noise from per-device generators, so they agree in distribution, not in
value: their r shows how much a map depends on the noise.

Then the registry's video transformers on CUDA (random weights, one clip each): IBA with the
fused attention in the suffix against the whole network run step by step (``split="hook"``), at
the same seed on the same device, in fp32, bf16 and fp16 (Pearson of the maps, totals, seconds).

    python scripts/cuda_check.py [--clips 3]
    python scripts/cuda_check.py --transformers-only
    python scripts/cuda_check.py --device cpu --clips 1     # the script itself, on a machine without CUDA
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch

from video_iba import METHODS, attribute
from video_iba.evaluation.synthetic import (SYNTHETIC_LAYER, TEST_SEEDS, TUBEVIT_CAM_LAYER, TUBEVIT_LAYOUT, load_tubenet,
                                            load_tubenet_readout, load_tubevit, make_clip, statistics_batches)
from video_iba.methods.baselines import ATTENTION_METHODS


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
    p.add_argument("--device", default="cuda", help="the device compared with the CPU (default cuda; cpu checks "
                                                    "this script on a machine without one)")
    args = p.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available here")
    import video_iba

    if args.transformers_only:
        transformers()
        return

    print(f"device: {torch.cuda.get_device_name() if dev.type == 'cuda' else dev}, torch {torch.__version__}")
    cpu = load_tubenet()
    gpu = load_tubenet().to(dev)
    batches = list(statistics_batches())
    readout_cpu, readout_gpu = load_tubenet_readout(), load_tubenet_readout().to_device(dev)
    stats_cpu = video_iba.estimate(cpu, batches, layer=SYNTHETIC_LAYER)
    stats_gpu = video_iba.estimate(gpu, (b.to(dev) for b in batches), layer=SYNTHETIC_LAYER)
    diff = float((stats_cpu.mean - stats_gpu.mean.cpu()).abs().max())
    print(f"statistics at {SYNTHETIC_LAYER}: max |mean_cpu - mean_{dev.type}| = {diff:.2e}")
    print(f"| model | method | clips | Pearson r (mean, min) | total cpu / {dev.type} | s cpu | s {dev.type} |")
    print("|---|---|---|---|---|---|---|")
    clips = [make_clip(s) for s in list(TEST_SEEDS)[: args.clips]]

    def tubenet_kwargs(method: str, on_gpu: bool) -> dict:
        if method == "iba":
            return {"layer": SYNTHETIC_LAYER, "stats": stats_gpu if on_gpu else stats_cpu}
        return {"readout": readout_gpu if on_gpu else readout_cpu} if method == "readout" else {}

    # LRP: VGG and ResNet photos only; the attention methods: on the transformer below
    _devices("tubenet", [m for m in METHODS if m not in ("lrp", *ATTENTION_METHODS)], cpu, gpu, clips, dev,
             tubenet_kwargs)
    layout = {"tokens": TUBEVIT_LAYOUT}
    _devices("tubevit", ["gradcam", *ATTENTION_METHODS], load_tubevit(), load_tubevit().to(dev), clips, dev,
             lambda m, _g: {**layout, "cam_layer": TUBEVIT_CAM_LAYER} if m == "gradcam" else layout)
    if dev.type != "cuda":
        return
    model = video_iba.load_model("r3d_18", weights="random", device="cuda")
    x = torch.randn(1, 3, 16, 112, 112, device="cuda")
    a, t = _timed(lambda: video_iba.explain(model, x, 0))
    a, t = _timed(lambda: video_iba.explain(model, x, 0))
    print(f"r3d_18 (random weights) IBA on CUDA: {t:.3f} s, {float(a.bits.sum()):.1f} bits, "
          f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    transformers()


def _devices(name: str, methods: list[str], cpu: torch.nn.Module, gpu: torch.nn.Module, clips: list, dev: torch.device,
             kwargs: Callable[[str, bool], dict]) -> None:
    """One table row per method: the maps of ``cpu`` and of ``gpu`` (on ``dev``) for the same clips."""
    for method in methods:
        rs, totals, t_cpu, t_gpu = [], [], [], []
        for c in clips:
            x = torch.from_numpy(c.x)[None]
            attribute(method, gpu, x.to(dev), c.label, **kwargs(method, True))  # warm-up
            a, tc = _timed(lambda: attribute(method, cpu, x, c.label, **kwargs(method, False)))  # noqa: B023
            b, tg = _timed(lambda: attribute(method, gpu, x.to(dev), c.label, **kwargs(method, True)))  # noqa: B023
            va, vb = a.values.numpy().ravel(), b.values.cpu().numpy().ravel()
            rs.append(float(np.corrcoef(va, vb)[0, 1]) if va.std() > 0 and vb.std() > 0 else float("nan"))
            totals.append((va.sum(), vb.sum()))
            t_cpu.append(tc)
            t_gpu.append(tg)
        tot = np.mean(totals, axis=0)
        print(f"| {name} | {method} | {len(clips)} | {np.nanmean(rs):.4f}, {np.nanmin(rs):.4f} | {tot[0]:.4g} / "
              f"{tot[1]:.4g} | {np.mean(t_cpu):.3f} | {np.mean(t_gpu):.3f} |", flush=True)


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
