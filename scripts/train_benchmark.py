#!/usr/bin/env python3
"""Train one of the synthetic benchmark's networks and save its weights: the 3-D CNN
(video_iba.evaluation.TubeNet) or the small video transformer (video_iba.evaluation.TubeViT).

Deterministic for a given machine and thread count: clips come from fixed seeds, the
initialisation and the batch order from torch.manual_seed. Takes a few minutes on a 2-core CPU
and prints the accuracy on the held-out test seeds.

    python scripts/train_benchmark.py --model tubenet --out video_iba/weights/tubenet.pt
    python scripts/train_benchmark.py --model tubevit --clips 3000 --epochs 10 --lr 2e-3 --weight-decay 0.05 \
        --clip-grad 1 --out video_iba/weights/tubevit.pt
"""

from __future__ import annotations

import argparse
import time

import torch

from video_iba.evaluation.synthetic import CLASSES, TEST_SEEDS, TRAIN_SEEDS, TubeNet, TubeViT, make_batch

NETWORKS = {"tubenet": TubeNet, "tubevit": TubeViT}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(NETWORKS), default="tubenet")
    p.add_argument("--out", required=True)
    p.add_argument("--clips", type=int, default=2400, help="training clips (the first seeds of TRAIN_SEEDS)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (0: Adam)")
    p.add_argument("--clip-grad", type=float, default=0.0, help="gradient norm limit (0: none)")
    args = p.parse_args()
    torch.manual_seed(0)
    model = NETWORKS[args.model]()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    seeds = list(TRAIN_SEEDS)[: args.clips]
    steps = args.epochs * ((len(seeds) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(seeds)).tolist()
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(seeds), args.batch):
            x, y = make_batch([seeds[j] for j in order[i:i + args.batch]])
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            if args.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            opt.step()
            sched.step()
            total += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(y)
        print(f"epoch {epoch + 1}: loss {loss_sum / total:.4f}, train accuracy {correct / total:.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        x, y = make_batch(TEST_SEEDS)
        acc = float((model(x).argmax(1) == y).float().mean())
    print(f"test accuracy on {len(TEST_SEEDS)} held-out clips ({len(CLASSES)} classes, chance 0.25): {acc:.3f}")
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
