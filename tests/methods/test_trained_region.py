"""A network trained in the test on data where only one image region decides the class:
the explanation must put most of its bits in that region."""

from __future__ import annotations

import torch
from torch import nn

import video_iba

from ..nets import quadrant_photos


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(16 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv2(self.conv1(x)), 1))


def test_bits_concentrate_where_the_class_is_decided() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(250):
        xb, yb = quadrant_photos(64, g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()
    net.eval()
    xt, yt = quadrant_photos(200, g)
    with torch.no_grad():
        acc = (net(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.95, f"the test network did not learn the task (accuracy {acc:.2f})"

    stats = video_iba.estimate(net, [quadrant_photos(100, g)[0] for _ in range(5)], layer="conv1")
    shares = []
    for i in range(6):
        # This small network is far more confident than an ImageNet model (its cross-entropy is ~0
        # even under heavy noise), so the first updates squeeze every region alike; it needs more
        # than the paper's 10 steps for the cross-entropy to pull the decisive region back.
        attr = video_iba.explain(net, xt[i:i + 1], int(yt[i]), layer="conv1", stats=stats, seed=i, steps=30)
        shares.append(float(attr.bits[:16, :16].sum() / attr.bits.sum()))
        assert attr.meta["ce_per_step"][-1] < 0.1  # the explained class survives the bottleneck
    # the decisive quadrant is a quarter of the image; it must hold most of the information
    assert min(shares) > 0.8, shares
