"""Where and when: a 3-D CNN trained here on clips whose class is decided in a known tube.

Every clip holds noise, a square moving at a random place in a random direction through all
frames, and a square at the tube's place in frames 0, 1 and 7 (random motion). Only in the tube
(rows 4-12, columns 16-30, frames 3-5) does the square's direction decide the class (right: 1,
left: 0). The network computes per-frame features first (temporal kernel 1), so a feature frame
is an input frame and the bottleneck after them can say *when* as well as *where*.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from video_iba import explain
from video_iba import estimate

T, S = 8, 32
TUBE_T, TUBE_Y, TUBE_X = (3, 6), (4, 12), (16, 30)


def _square(clip: torch.Tensor, t: int, y: int, x: int) -> None:
    clip[:, t, y:y + 4, x:x + 4] += 1.5


def make_clips(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 3, T, S, S, generator=g) * 0.3
    y = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        d = 1 if y[i] else -1
        for k, t in enumerate(range(*TUBE_T)):
            _square(x[i], t, 6, (20 if d > 0 else 22) + d * 2 * k)
        d2 = 1 if torch.rand(1, generator=g) < 0.5 else -1
        yy, xs = int(torch.randint(16, 28, (1,), generator=g)), int(torch.randint(4, 12, (1,), generator=g))
        for t in range(T):
            _square(x[i], t, yy, xs + d2 * t)
        d3 = 1 if torch.rand(1, generator=g) < 0.5 else -1
        for k, t in enumerate((0, 1, 7)):
            _square(x[i], t, 6, 21 + d3 * 2 * (k % 2))
    return x, y


class FramesThenTime(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(3, 16, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(),
                                      nn.Conv3d(16, 16, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU())
        self.head = nn.Sequential(nn.Conv3d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool3d((1, 4, 4)),
                                  nn.Flatten(), nn.Linear(16 * T * 8 * 8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    xtr, ytr = make_clips(600, g)
    xte, yte = make_clips(60, g)
    net = FramesThenTime()
    opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(3):
        perm = torch.randperm(len(xtr), generator=g)
        for b in range(0, len(xtr), 50):
            idx = perm[b:b + 50]
            # label smoothing keeps the network from being certain under any noise (see the image test)
            loss = nn.functional.cross_entropy(net(xtr[idx]), ytr[idx], label_smoothing=0.2)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item()
    assert acc > 0.95, f"the tube task was not learned (accuracy {acc:.2f})"
    return net, xtr, xte, yte


def test_bits_land_in_the_tube_place_and_frames(trained) -> None:  # type: ignore[no-untyped-def]
    net, xtr, xte, yte = trained
    stats = estimate(net, [xtr[i:i + 100] for i in range(0, 600, 100)], layer="features.3")
    volume = (TUBE_T[1] - TUBE_T[0]) * (TUBE_Y[1] - TUBE_Y[0]) * (TUBE_X[1] - TUBE_X[0]) / (T * S * S)
    for i in range(4):
        a = explain(net, xte[i:i + 1], int(yte[i]), layer="features.3", stats=stats, seed=0, steps=30)
        b = a.values.double()
        assert b.shape == (T, S, S)
        tube = b[TUBE_T[0]:TUBE_T[1], TUBE_Y[0]:TUBE_Y[1], TUBE_X[0]:TUBE_X[1]].sum() / b.sum()
        assert tube > 0.6, f"clip {i}: {tube:.2f} of the bits in the tube ({volume:.3f} of the volume)"
        # when: the tube's frames hold most of the per-frame bits; the decoy frames at the same
        # place (0, 1, 7) hold little
        per_frame = b.sum(dim=(1, 2)) / b.sum()
        assert per_frame[TUBE_T[0]:TUBE_T[1]].sum() > 0.6
        assert per_frame[[0, 1, 7]].sum() < 0.15
        # where: the tube's place, all frames, beats the moving distractor's rows
        assert b[:, TUBE_Y[0]:TUBE_Y[1]].sum() / b.sum() > 0.8
    assert np.isfinite(a.total_bits)
