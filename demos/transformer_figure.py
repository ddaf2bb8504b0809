#!/usr/bin/env python3
"""A 3-D CNN and a video transformer explained on the same clip: ``docs/synthetic-transformer.png``.

Both networks are the synthetic benchmark's, trained offline on the same clips (TubeNet, the 3-D
CNN; TubeViT, the transformer with a class token); the clip is a test clip. Rows: the input,
IBA on TubeNet (its benchmark layer ``block1``, the paper's settings), IBA on TubeViT (its
tubelet embedding, the default depth for transformers, with the transformers' default settings), Grad-CAM on TubeViT's token grid (``blocks.2``, the class token
left out); columns: frames around the discriminative interval (*); the last column is the bits
per frame of the two IBA maps over the whole clip, the interval shaded.

    python demos/transformer_figure.py [--out docs/synthetic-transformer.png] [--seed 100003]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import video_iba
from video_iba.evaluation import (SYNTHETIC_LAYER, TUBEVIT_LAYOUT, load_tubenet, load_tubevit, make_clip,
                                  statistics_batches)
from video_iba.evaluation.synthetic import CLASSES


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/synthetic-transformer.png")
    p.add_argument("--seed", type=int, default=100_003)
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    c = make_clip(args.seed)
    x = torch.from_numpy(c.x)[None]
    cnn, vit = load_tubenet(), load_tubevit()
    rows = []
    st = video_iba.estimate(cnn, statistics_batches(), layer=SYNTHETIC_LAYER)
    a = video_iba.explain(cnn, x, c.label, layer=SYNTHETIC_LAYER, stats=st, seed=0)
    rows.append((f"IBA, 3-D CNN\n{a.total_bits:.0f} bits", a.bits.numpy(), True))
    st = video_iba.estimate(vit, statistics_batches(), layer="embed")
    a = video_iba.explain(vit, x, c.label, layer="embed", stats=st, seed=0,
                          config=video_iba.IBAConfig.for_transformers())
    rows.append((f"IBA, transformer\n{a.total_bits:.0f} bits", a.bits.numpy(), True))
    g = video_iba.attribute("gradcam", vit, x, c.label, cam_layer="blocks.2", tokens=TUBEVIT_LAYOUT)
    rows.append(("Grad-CAM, transformer\n(token grid)", g.values.numpy(), False))
    t0, t1 = c.interval
    frames = [max(0, t0 - 2)] + list(np.linspace(t0, t1 - 1, 4).astype(int)) + [min(c.x.shape[1] - 1, t1 + 1)]
    n = len(frames)
    fig, axes = plt.subplots(len(rows) + 1, n + 1, figsize=(1.5 * n + 3.2, 1.5 * (len(rows) + 1)),
                             gridspec_kw={"width_ratios": [1] * n + [2.2]})
    rgb = np.clip(c.x * 0.25 + 0.5, 0, 1).transpose(1, 2, 3, 0)
    for j, t in enumerate(frames):
        axes[0, j].imshow(rgb[t])
        axes[0, j].set_title(f"frame {t}" + (" *" if t0 <= t < t1 else ""), fontsize=8)
        for i, (_, v, _) in enumerate(rows, start=1):
            axes[i, j].imshow(rgb[t].mean(axis=2), cmap="gray", vmin=0, vmax=1)
            axes[i, j].imshow(v[t], cmap="inferno", alpha=0.75, vmin=0, vmax=float(v.max()) or 1.0)
        for i in range(len(rows) + 1):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if t0 <= t < t1:
                bx0, by0, bx1, by1 = c.boxes[t]
                axes[i, j].add_patch(Rectangle((bx0 - 0.5, by0 - 0.5), bx1 - bx0, by1 - by0, fill=False, ec="lime",
                                               lw=0.8))
    axes[0, 0].set_ylabel("input", fontsize=8)
    for i, (label, v, is_bits) in enumerate(rows, start=1):
        axes[i, 0].set_ylabel(label, fontsize=7)
        ax = axes[i, n]
        per_frame = v.sum(axis=(1, 2))
        ax.axvspan(t0 - 0.5, t1 - 0.5, color="lime", alpha=0.2)
        ax.bar(np.arange(len(per_frame)), per_frame, color="#c04020" if is_bits else "#707070", width=0.8)
        share = per_frame[t0:t1].sum() / max(per_frame.sum(), 1e-12)
        ax.set_title(f"{'bits' if is_bits else 'Grad-CAM'} per frame: {share:.0%} in the interval", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0, n].axis("off")
    fig.suptitle(f"test clip {args.seed}: class '{CLASSES[c.label]}', the target square moves in frames "
                 f"{t0}-{t1 - 1} (*, box in green); each map on its own scale", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
