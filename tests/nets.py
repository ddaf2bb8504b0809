"""Tiny networks for the tests, and a record of a model's state (to check that nothing changed it)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from video_iba.bottleneck import get_module
from video_iba.bottleneck.insertion import HookedForward, Taps, capture_taps, frozen
from video_iba.bottleneck.split import CachedSuffix


_RED, _GREEN = torch.tensor([1.0, -1.0, -1.0]), torch.tensor([-1.0, 1.0, -1.0])


def quadrant_photos(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """32x32 images with a 6x6 coloured patch in each quadrant; the top-left patch's colour is the label."""
    x = 0.3 * torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    for q, (qy, qx) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)]):
        colour = y if q == 0 else torch.randint(0, 2, (n,), generator=g)
        oy = torch.randint(1, 9, (n,), generator=g) + qy
        ox = torch.randint(1, 9, (n,), generator=g) + qx
        for i in range(n):
            c = _GREEN if colour[i] else _RED
            x[i, :, oy[i]:oy[i] + 6, ox[i]:ox[i] + 6] = c.view(3, 1, 1)
    return x, y


def seeded_init(net: nn.Module, seed: int) -> nn.Module:
    """``net``'s weights drawn again from ``seed`` by torch's own layer initialisation (parameters of
    no torch layer, such as class tokens and positions: normal, std 0.02), so that a network trained
    in a test starts the same whatever initialisation its library version applies."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset) and type(m).__module__.startswith("torch.nn"):
                reset()
            elif not callable(reset):
                for p in m.parameters(recurse=False):
                    p.normal_(0.0, 0.02)
    return net


class TinyCNN(nn.Module):
    """A small image classifier with in-place ReLUs, batch norm and dropout (eval/train differ)."""

    def __init__(self, classes: int = 5, channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.flatten(self.pool(self.features(x)), 1)))


class Tiny3D(nn.Module):
    """A small clip classifier on (N, C, T, H, W)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv3d(8, 8, 3, padding=1, stride=(2, 2, 2)), nn.ReLU())
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3, 4)))


class Untraceable(TinyCNN):
    """Data-dependent control flow defeats torch.fx; explain must fall back and say so."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        if float(h.detach().mean()) > -1e9:
            h = h * 1.0
        return self.fc(self.drop(torch.flatten(self.pool(h), 1)))


class TwoPath(nn.Module):
    """Slow and fast pathways; like pytorchvideo's multipathway blocks, it overwrites the list it gets."""

    def __init__(self, classes: int = 5, overwrite: bool = True) -> None:
        super().__init__()
        self.overwrite = overwrite
        self.slow = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU())
        self.fast = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU())
        self.slow2 = nn.Conv3d(8, 8, 3, padding=1)
        self.fast2 = nn.Conv3d(4, 4, 3, padding=1)
        self.head = nn.Linear(12, classes)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        if self.overwrite:  # defeats torch.fx: explain falls back to the full forward pass
            x[0] = self.slow(x[0])
            x[1] = self.fast(x[1])
            h = x
        else:
            h = [self.slow(x[0]), self.fast(x[1])]
        s = self.slow2(h[0]).mean(dim=(2, 3, 4))
        f = self.fast2(h[1]).mean(dim=(2, 3, 4))
        return self.head(torch.cat([s, f], 1))


def snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: p.grad for n, p in model.named_parameters()},
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()),
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def split_suffix(model: nn.Module, layer: str, x: torch.Tensor,
                 layout: Any = None) -> tuple[CachedSuffix, Taps, torch.Tensor]:
    """The split network after ``layer`` for ``x``, built as the fit builds it (call it inside
    ``frozen(model)``): the runner, the layer's taps and the model's logits."""
    with torch.no_grad():
        logits = model(x)
    _, taps = capture_taps(model, [get_module(model, layer)], [layer], x, [layout])
    return CachedSuffix(model, [layer], x, taps.parts, logits, taps), taps, logits


def suffix_against_whole(model: nn.Module, layer: str, x: torch.Tensor, layout: Any = None,
                         replicas: int = 3) -> dict[str, Any]:
    """The split suffix at ``layer`` and the whole hooked network on the same noisy replicas of the
    layer's parts: the suffix's note, both outputs and both gradients of a class-weighted sum of the
    logits with respect to the parts (computed with the model frozen, as the fit does)."""
    with frozen(model):
        runner, taps, logits = split_suffix(model, layer, x, layout)
        zs = [(p.expand(replicas, *p.shape[1:]) + 0.3 * torch.randn(replicas, *p.shape[1:])).requires_grad_(True)
              for p in taps.parts]  # every part: the grid and, for a block's tokens, the class token
        weights = torch.arange(1.0, logits.shape[1] + 1.0)
        out = runner(zs)
        grads = torch.autograd.grad((out * weights).sum(), zs)
        with HookedForward(model, [get_module(model, layer)], x, taps=taps) as whole:
            ref = whole(zs)
            grads_ref = torch.autograd.grad((ref * weights).sum(), zs)
    return {"note": runner.note, "out": out.detach(), "ref": ref.detach(), "grads": grads, "grads_ref": grads_ref}


def mixed_state(model: nn.Module) -> None:
    model.train()
    model.features[0].training = False  # a module with its own flag
    model.fc.weight.requires_grad_(False)


class TinyViViT(nn.Module):
    """A small video transformer: a tubelet embedding (a strided 3-D convolution), a class token,
    learned positions, ``blocks`` encoder layers, the class token's head. Tokens are time-major
    ``(t h w)``; with ``space_major`` they are ordered ``(h w t)`` as TimeSformer's."""

    def __init__(self, classes: int = 4, dim: int = 16, frames: int = 8, size: int = 32,
                 tubelet: tuple[int, int, int] = (2, 8, 8), blocks: int = 2, space_major: bool = False) -> None:
        super().__init__()
        self.grid = (frames // tubelet[0], size // tubelet[1], size // tubelet[2])
        self.space_major = space_major
        self.embed = nn.Conv3d(3, dim, tubelet, stride=tubelet)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 1 + self.grid[0] * self.grid[1] * self.grid[2], dim) * 0.1)
        self.blocks = nn.ModuleList([nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True)
                                     for _ in range(blocks)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x)  # (N, C, T, H, W)
        if self.space_major:
            t = t.permute(0, 1, 3, 4, 2)  # (N, C, H, W, T)
        tokens = t.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens[:, 0]))
