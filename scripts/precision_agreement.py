#!/usr/bin/env python3
"""How far bf16 (or fp16) maps are from fp32 ones: on a real network and on the synthetic benchmark.

1. ``efficientnet_lite0`` with its real ImageNet weights on scikit-image's photos: per photo, the
   Pearson correlation of the bf16 map with the fp32 map, the ratio of their total bits, whether
   the explained class is the same (top-1 of the fp32 run, explained in both).
2. The synthetic benchmark's TubeNet (``--model tubevit``: its video transformer, IBA at the
   tubelet embedding with the transformers' settings) on its test clips: each metric's mean and bootstrap interval
   with fp32 and with the reduced precision (``video-iba evaluate synthetic --methods iba``), and
   the Pearson of the maps clip by clip.

One JSON object per line. On a CPU, bf16 needs native bf16 instructions (the script says so).

    python scripts/precision_agreement.py                          # bf16 on this machine's device
    python scripts/precision_agreement.py --device cuda --precision fp16 --clips 30
    python scripts/precision_agreement.py --parts synthetic --model tubevit
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch

import video_iba
from video_iba.evaluation import synthetic as syn
from video_iba.models import preprocess_image
from video_iba.workflows.evaluate import Evaluation, evaluate_dataset

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "coins", "camera")


def photos(device: str, precision: str) -> None:
    from skimage import data

    model = video_iba.load_model("efficientnet_lite0", device=device)  # the offline ImageNet weights
    for name in PHOTOS:
        rgb = np.asarray(getattr(data, name)())
        if rgb.ndim == 2:
            rgb = np.stack([rgb] * 3, -1)
        x, _ = preprocess_image(rgb[..., :3], model.video_iba_spec)
        x = x.to(device)
        ref = video_iba.explain(model, x, seed=0)
        low = video_iba.explain(model, x, ref.target, seed=0, precision=precision)
        a, b = ref.values.double().numpy().ravel(), low.values.double().numpy().ravel()
        print(json.dumps({"part": "photo", "photo": name, "precision": precision, "target": ref.target,
                          "pearson": round(float(np.corrcoef(a, b)[0, 1]), 6),
                          "total_bits_ratio": round(float(b.sum() / a.sum()), 6)}), flush=True)


def synthetic(device: str, precision: str, clips: int, name: str = "tubenet") -> None:
    vit = name == "tubevit"
    model = (syn.load_tubevit() if vit else syn.load_tubenet()).to(device)
    layer = syn.TUBEVIT_LAYER if vit else syn.SYNTHETIC_LAYER
    config = video_iba.IBAConfig.for_transformers() if vit else video_iba.IBAConfig()  # as `evaluate` uses them
    x, y = syn.make_batch(list(syn.TEST_SEEDS)[:clips])
    stats = video_iba.estimate(model, syn.statistics_batches(device=device), layer=layer)
    maps = {}
    for p in ("fp32", precision):
        maps[p] = video_iba.explain(model, x.to(device), [int(t) for t in y], layer=layer, stats=stats,
                                    config=config, seed=0, precision=p)
    r = [float(np.corrcoef(a.values.double().numpy().ravel(), b.values.double().numpy().ravel())[0, 1])
         for a, b in zip(maps["fp32"], maps[precision])]
    print(json.dumps({"part": "synthetic maps", "model": name, "precision": precision, "clips": clips,
                      "pearson_min": round(min(r), 6), "pearson_mean": round(float(np.mean(r)), 6)}), flush=True)
    for p in ("fp32", precision):
        with tempfile.TemporaryDirectory() as out:
            ev = Evaluation("synthetic", model=name, methods=["iba"], clips=clips, device=device, precision=p,
                            metrics=["hit_ratio", "temporal_share", "degradation8"])
            evaluate_dataset(ev, out)
            with open(f"{out}/results.json", encoding="utf-8") as fh:
                table = json.load(fh)
        for row in table:
            print(json.dumps({"part": "synthetic scores", "model": name, "precision": p, **row}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp16"))
    ap.add_argument("--clips", type=int, default=30)
    ap.add_argument("--model", default="tubenet", choices=("tubenet", "tubevit"), help="the synthetic benchmark's model")
    ap.add_argument("--parts", default="photos,synthetic", help="comma-separated: photos, synthetic")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    video_iba.keep_freed_memory()
    torch.manual_seed(0)
    if "photos" in parts:
        photos(args.device, args.precision)
    if "synthetic" in parts:
        synthetic(args.device, args.precision, args.clips, args.model)


if __name__ == "__main__":
    main()
