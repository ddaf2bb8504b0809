"""EfficientNet-Lite0 inflated to a 3-D network (I3D-style), from the offline ImageNet weights.

Every spatial ``k x k`` convolution becomes a ``3 x k x k`` convolution whose weights are the 2-D
weights repeated over the three frames and divided by three (Carreira & Zisserman's inflation).
Time is padded by repeating the edge frames, so on a clip of identical frames the network computes
exactly the 2-D network's features and logits at every frame; on a moving clip each layer mixes
neighbouring frames. There is no temporal stride: a feature map has as many frames as the clip.

Module and parameter names mirror the 2-D implementation (``_blocks.4`` is the same block), and
the parameters are the 2-D ones (see :class:`InflatedConv`), so the ImageNet state dict loads as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: (repeats, kernel, stride, expand ratio, input channels, output channels) of EfficientNet-Lite0's stages.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
TEMPORAL_KERNEL = 3
BN_EPS = 1e-3


def _same_pads(k: int, stride: int) -> tuple[int, int, int, int]:
    """TensorFlow "same" padding of a ``k x k`` convolution for even-sized inputs (the extra pixel at the end)."""
    total = max(k - stride, 0)
    return (total // 2, total - total // 2, total // 2, total - total // 2)


def _frames(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, T, H, W)`` to ``(N*T, C, H, W)``."""
    return x.transpose(1, 2).flatten(0, 1)


def _clip(x: torch.Tensor, n: int) -> torch.Tensor:
    """``(N*T, C, H, W)`` back to ``(N, C, T, H, W)``."""
    return x.unflatten(0, (n, -1)).transpose(1, 2)


def _temporal_mean(x: torch.Tensor, n: int) -> torch.Tensor:
    """Mean over 3 neighbouring frames of ``(N*T, C, H, W)``, edge frames repeated."""
    v = x.unflatten(0, (n, -1))
    v = torch.cat([v[:, :1], v, v[:, -1:]], dim=1)
    return ((v[:, :-2] + v[:, 1:-1] + v[:, 2:]) / 3.0).flatten(0, 1)


class InflatedConv(nn.Conv2d):
    """A ``3 x k x k`` convolution inflated from a ``k x k`` one (weights repeated over 3 frames / 3).

    Because the three temporal slices of the inflated kernel are equal, it is computed exactly as
    the 2-D convolution on every frame followed by a mean over 3 neighbouring frames, which uses
    the fast 2-D kernels; the parameters are the 2-D ones. Works on ``(N*T, C, H, W)``.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, temporal: bool = True):
        super().__init__(cin, cout, k, stride=stride, groups=groups, bias=False)
        self.pads = _same_pads(k, stride)
        self.temporal = temporal

    def forward(self, x: torch.Tensor, n: int) -> torch.Tensor:  # type: ignore[override]
        left, right, top, bottom = self.pads
        if left == right and top == bottom:  # stride 1: padded by the convolution itself, without a padded copy
            y = F.conv2d(x, self.weight, None, self.stride, (top, left), 1, self.groups)
        else:
            y = F.conv2d(F.pad(x, self.pads), self.weight, None, self.stride, 0, 1, self.groups)
        return _temporal_mean(y, n) if self.temporal else y


class MBConv3d(nn.Module):
    """Inverted residual block: expand (1x1x1), depthwise (3xkxk), project (1x1x1), identity skip.

    Input and output are ``(N, C, T, H, W)`` clips, so a bottleneck can sit on any block.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = InflatedConv(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        y = _frames(x)
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y, n)))
        y = _clip(self._bn2(self._project_conv(y)), n)
        return y + x if self.skip else y


class EfficientNetLite0I3D(nn.Module):
    """EfficientNet-Lite0 with inflated 3-D convolutions; input ``(N, 3, T, H, W)`` with ``H, W``
    multiples of 32, output ImageNet logits (mean over time and space before the classifier)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = InflatedConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, k, stride, expand, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv3d(cin if i == 0 else cout, cout, k, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = _clip(F.relu6(self._bn0(self._conv_stem(_frames(x), n))), n)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(_frames(x))))
        return self._fc(x.unflatten(0, (n, -1)).mean(dim=(1, 3, 4)))
