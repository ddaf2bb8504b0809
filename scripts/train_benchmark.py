#!/usr/bin/env python3
"""Train the synthetic benchmark's 3-D CNN (video_iba.synthetic.TubeNet) and save its weights.

Deterministic for a given machine and thread count: clips come from fixed seeds, the
initialisation and the batch order from torch.manual_seed. Takes a few minutes on a 2-core CPU
and prints the accuracy on the held-out test seeds.

    python scripts/train_benchmark.py --out video_iba/weights/tubenet.pt
"""

from __future__ import annotations

import argparse
import time

import torch

from video_iba.evaluation.synthetic import CLASSES, TEST_SEEDS, TRAIN_SEEDS, TubeNet, make_batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="video_iba/weights/tubenet.pt")
    p.add_argument("--clips", type=int, default=2400, help="training clips (the first seeds of TRAIN_SEEDS)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    args = p.parse_args()
    torch.manual_seed(0)
    model = TubeNet()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
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
