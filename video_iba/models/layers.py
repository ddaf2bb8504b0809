"""Layer discovery: output shapes of every module, and the default bottleneck layer of a CNN."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..errors import UserInputError
from .layouts import TokenLayout
from .pathways import PackedModel


@dataclass(frozen=True)
class LayerInfo:
    """One module call: dotted name, class name, output shape (of the first tensor of a tuple output;
    ``None`` if there is none), nesting depth, and for token layers the grid ``(T', H', W')`` and
    the number of prefix tokens their layout gives."""

    name: str
    kind: str
    shape: tuple[int, ...] | None
    depth: int
    grid: tuple[int, ...] | None = None
    prefix: int = 0
    layout: TokenLayout | None = None

    def describe_tokens(self) -> str:
        """``"grid 8x56x56 (t h w) + 1 prefix"``, ``"grid 16x56x56 (channels last)"``, ``"grid 14x14 +
        1 prefix"`` (a photo's grid or one frame: no order to tell) or ``""`` (a map)."""
        if self.layout is None or self.grid is None:
            return ""
        grid = "x".join(map(str, self.grid))
        if self.layout.channels_last:
            return f"grid {grid} (channels last)"
        if len(self.grid) == 2 or self.grid[0] == 1:  # a photo's grid, or one frame
            head = f"grid {'x'.join(map(str, self.grid[-2:]))}"
        else:
            head = f"grid {grid} ({self.layout.order})"
        return head + (f" + {self.prefix} prefix" if self.prefix else "")


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((v for v in out if isinstance(v, torch.Tensor)), None)
    return None


def layer_table(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str | None = None,
                prefix: str = "", layout: Callable[[str], TokenLayout | None] | None = None) -> list[LayerInfo]:
    """Run one input of ``input_shape`` and record each module's output, in the order the calls end.

    Works on models built on the ``meta`` device (no memory, no compute). A module called
    several times is listed once, with its first output. Only modules under ``prefix`` are
    listed, with the prefix removed (for wrappers). ``layout`` gives a layer's token layout, whose
    grid is then read from the output (a layout that does not fit the output is reported as none).
    """
    p = next(iter(model.parameters()), None)
    if device is None:
        device = p.device if p is not None else "cpu"
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32  # a half network runs in half
    seen: dict[str, LayerInfo] = {}
    handles = []

    def make_hook(name: str, module: nn.Module) -> Any:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if name not in seen:
                first = _first_tensor(out)
                shape = tuple(first.shape) if first is not None else None
                info = LayerInfo(name, type(module).__name__, shape, name.count("."))
                lay = layout(name) if layout is not None else None
                if lay is not None:
                    try:
                        parts, _ = lay.split(out, name)
                    except UserInputError:
                        parts = []
                    if parts:
                        info = LayerInfo(name, info.kind, shape, info.depth, tuple(parts[0].shape[2:]),
                                         parts[1].shape[2] if len(parts) > 1 else 0, lay)
                seen[name] = info
        return hook

    try:
        for name, module in model.named_modules():
            if name.startswith(prefix) and len(name) > len(prefix):
                handles.append(module.register_forward_hook(make_hook(name[len(prefix):], module)))
        flags = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(input_shape, device=device, dtype=dtype))
        finally:
            for m, f in flags:
                m.training = f
    finally:
        for h in handles:
            h.remove()
    return list(seen.values())


def auto_layer(table: list[LayerInfo], side: int, model_name: str = "the model") -> str:
    """The default bottleneck layer of an image CNN: the paper's choice for ResNet-50 generalised.

    Among modules whose output is a square ``(1, C, h, h)`` feature map with ``h`` nearest to
    ``side / 8`` (stride 8, ResNet-50's conv3_x resolution; within a factor 1.5), take the
    shallowest in the module tree and, among those, the last to finish.
    """
    target = side / 8.0
    maps = [li for li in table if li.shape is not None and len(li.shape) == 4 and li.shape[-1] == li.shape[-2]]
    sizes = {li.shape[-1] for li in maps if li.shape is not None and abs(math.log(li.shape[-1] / target)) <= math.log(1.5)}
    if not sizes:
        raise UserInputError(f"{model_name} has no convolutional feature map near stride 8 to place a bottleneck on "
                             f"by default; name a layer with {{layer}} (see `video-iba layers`)", options=["layer"])
    best = min(sizes, key=lambda h: abs(math.log(h / target)))
    cands = [li for li in maps if li.shape is not None and li.shape[-1] == best]
    depth = min(li.depth for li in cands)
    return [li for li in cands if li.depth == depth][-1].name


def vgg_conv4_1(model: nn.Module) -> str:
    """Index of conv4_1 in a torchvision VGG's ``features``: the first conv after the third max-pool."""
    pools = 0
    for name, m in model.features.named_children():  # type: ignore[union-attr]
        if isinstance(m, nn.MaxPool2d):
            pools += 1
        elif isinstance(m, nn.Conv2d) and pools == 3:
            return f"features.{name}"
    raise UserInputError("this VGG has no conv4_1; name a layer with {layer}", options=["layer"])


def cam_layer_of(model: nn.Module, x: torch.Tensor) -> str:
    """The last module (in call order) whose output is a spatial feature map ``(1, C, [T,] h, w)``
    with ``h, w > 1``, among the shallowest such modules (e.g. ResNet ``layer4``): Grad-CAM's layer.

    ``model`` may be a :class:`~video_iba.models.pathways.PackedModel`; names are then those of the
    wrapped network.
    """
    prefix = "model." if isinstance(model, PackedModel) else ""
    table = layer_table(model, tuple(x.shape), device=x.device, prefix=prefix)
    maps = [li for li in table if li.shape is not None and len(li.shape) == x.dim() and li.shape[-1] > 1
            and li.shape[-2] > 1]
    if not maps:
        raise UserInputError("the model has no spatial feature map for Grad-CAM; name one with {cam_layer}",
                             options=["cam_layer"])
    depth = min(li.depth for li in maps)
    return [li for li in maps if li.depth == depth][-1].name
