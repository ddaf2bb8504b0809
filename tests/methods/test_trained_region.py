"""A network trained in the test on data where only one image region decides the class:
the explanation must put most of its bits in that region."""

from __future__ import annotations

import torch
from torch import nn

import video_iba

RED, GREEN = torch.tensor([1.0, -1.0, -1.0]), torch.tensor([-1.0, 1.0, -1.0])


def _make(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """32x32 images with a 6x6 coloured patch in each quadrant; the top-left patch's colour is the label."""
    x = 0.3 * torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    for q, (qy, qx) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)]):
        colour = y if q == 0 else torch.randint(0, 2, (n,), generator=g)
        oy = torch.randint(1, 9, (n,), generator=g) + qy
        ox = torch.randint(1, 9, (n,), generator=g) + qx
        for i in range(n):
            c = GREEN if colour[i] else RED
            x[i, :, oy[i]:oy[i] + 6, ox[i]:ox[i] + 6] = c.view(3, 1, 1)
    return x, y


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
        xb, yb = _make(64, g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()
    net.eval()
    xt, yt = _make(200, g)
    with torch.no_grad():
        acc = (net(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.95, f"the test network did not learn the task (accuracy {acc:.2f})"

    stats = video_iba.estimate(net, [_make(100, g)[0] for _ in range(5)], layer="conv1")
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
