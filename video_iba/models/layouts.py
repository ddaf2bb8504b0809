"""Token layouts: how a transformer layer's output maps onto a ``(T', H', W')`` grid.

A bottleneck works on channels-first maps ``(N, C, T', H', W')``. A transformer layer gives
instead tokens ``(N, L, C)`` (a prefix of class or register tokens, then one token per grid
cell, in time-major ``t h w`` order as MViT and VideoMAE, or space-major ``h w t`` as
TimeSformer), or a channels-last map ``(N, T', H', W', C)`` (Swin3D; ``(N, H', W', C)`` for
torchvision's image Swin, which becomes ``(N, C, H', W')``), possibly inside a tuple
(MViT's blocks return ``(tokens, thw)``; Hugging Face layers return tuples). A
:class:`TokenLayout` turns such an output into the grid map and the prefix tokens ``(N, C, P)``,
and back: ``join(split(out))`` is ``out``. A wrong order would scramble frames silently, so the
round trip and the frame order are tested for every layout.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from einops import rearrange

from ..errors import UserInputError

ORDERS = ("t h w", "h w t")


def _whole(value: Any) -> int:
    """``value`` as an int; a TypeError for what is not a whole number (a float, a bool, a string)."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a count")
    return operator.index(value)


@dataclass(frozen=True)
class TokenLayout:
    """How one layer's output maps onto a ``(T', H', W')`` grid.

    Attributes:
        grid: ``(T', H', W')``, or ``(H', W')`` for a photo's tokens (maps ``(N, C, H', W')``, as a
            CNN's); ``None`` reads it at run time (from the tuple entry ``grid_index``, e.g. MViT's
            ``thw``, or from a channels-last map's shape).
        prefix: Leading class or register tokens (restricted too, never drawn on the grid).
        order: ``"t h w"`` (time-major) or ``"h w t"`` (space-major) order of the grid tokens.
        channels_last: The output is a map ``(N, T', H', W', C)`` or ``(N, H', W', C)`` rather than
            tokens ``(N, L, C)``.
        index: Position of the token tensor in a tuple output.
        grid_index: Position of the run-time grid ``(T', H', W')`` in a tuple output.
    """

    grid: tuple[int, ...] | None = None
    prefix: int = 0
    order: str = "t h w"
    channels_last: bool = False
    index: int = 0
    grid_index: int | None = None

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise UserInputError(f"token order '{self.order}' is not one of {', '.join(ORDERS)}")
        try:  # whole numbers (numpy's too), the grid as a tuple
            for name in ("prefix", "index", "grid_index"):
                value = getattr(self, name)
                if value is not None:
                    object.__setattr__(self, name, _whole(value))
            if self.grid is not None:
                object.__setattr__(self, "grid", tuple(_whole(v) for v in self.grid))
        except TypeError:
            raise UserInputError(f"a token layout needs whole numbers for grid, prefix and indices, got {self}") from None
        if self.prefix < 0 or (self.grid is not None and (len(self.grid) not in (2, 3) or min(self.grid) < 1)):
            raise UserInputError(f"a token layout needs prefix >= 0 and grid (T, H, W) or (H, W) >= 1, got {self}")
        if self.channels_last and self.prefix:
            raise UserInputError("a channels-last map has no prefix tokens")

    def to_dict(self) -> dict[str, Any]:
        """The layout as plain values (for checkpoints); :meth:`from_dict` reads it back."""
        return {"grid": None if self.grid is None else list(self.grid), "prefix": self.prefix, "order": self.order,
                "channels_last": self.channels_last, "index": self.index, "grid_index": self.grid_index}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TokenLayout":
        grid = d.get("grid")
        return cls(grid=None if grid is None else tuple(int(v) for v in grid),  # type: ignore[arg-type]
                   prefix=int(d.get("prefix", 0)), order=str(d.get("order", "t h w")),
                   channels_last=bool(d.get("channels_last", False)), index=int(d.get("index", 0)),
                   grid_index=None if d.get("grid_index") is None else int(d["grid_index"]))

    def split(self, out: Any, layer: str) -> tuple[list[torch.Tensor], Any]:
        """``([grid (N, C, T, H, W) or (N, C, H, W), prefix (N, C, P) if any], context)`` of a layer
        output."""
        tensor = out[self.index] if isinstance(out, (tuple, list)) else out
        if not isinstance(tensor, torch.Tensor):
            raise UserInputError(f"layer '{layer}' gives {type(tensor).__name__} at position {self.index}, not tokens; "
                                 f"give the token layout's index")
        if self.channels_last:
            if tensor.dim() not in (4, 5):
                raise UserInputError(f"layer '{layer}' outputs {tuple(tensor.shape)}, not a channels-last map "
                                     f"(N, [T,] H, W, C)")
            return [rearrange(tensor, "n ... c -> n c ...")], (out, tuple(tensor.shape[1:-1]))
        if tensor.dim() != 3:
            raise UserInputError(f"layer '{layer}' outputs {tuple(tensor.shape)}, not tokens (N, L, C)")
        grid = self._grid(out, tensor, layer)
        cells = tensor[:, self.prefix:]
        if len(grid) == 2:
            parts = [rearrange(cells, "n (h w) c -> n c h w", h=grid[0], w=grid[1])]
        else:
            t, h, w = grid
            parts = [rearrange(cells, f"n ({self.order}) c -> n c t h w", t=t, h=h, w=w)]
        if self.prefix:
            parts.append(rearrange(tensor[:, :self.prefix], "n p c -> n c p"))
        return parts, (out, grid)

    def join(self, parts: Sequence[torch.Tensor], context: Any) -> Any:
        """The layer output with its grid (and prefix) replaced by ``parts`` (any batch size)."""
        out, _ = context
        if self.channels_last:
            tensor = rearrange(parts[0], "n c ... -> n ... c")
        else:
            if parts[0].dim() == 4:  # a photo's grid
                tokens = rearrange(parts[0], "n c h w -> n (h w) c")
            else:
                tokens = rearrange(parts[0], f"n c t h w -> n ({self.order}) c")
            if self.prefix:
                tokens = torch.cat([rearrange(parts[1], "n c p -> n p c"), tokens], dim=1)
            tensor = tokens
        if not isinstance(out, (tuple, list)):
            return tensor
        n = tensor.shape[0]
        rest = [_batched(v, n) for v in out]
        rest[self.index] = tensor
        return type(out)(rest)

    def _grid(self, out: Any, tensor: torch.Tensor, layer: str) -> tuple[int, ...]:
        grid = self.grid
        if grid is None and self.grid_index is not None and isinstance(out, (tuple, list)):
            grid = tuple(int(v) for v in out[self.grid_index])
        if grid is None:
            raise UserInputError(f"the token layout of layer '{layer}' gives no grid; give grid=(T, H, W) or (H, W)")
        cells = tensor.shape[1] - self.prefix
        if math.prod(grid) != cells:
            raise UserInputError(f"layer '{layer}' has {cells} tokens after {self.prefix} prefix token(s), not the "
                                 f"{'x'.join(map(str, grid))} of its grid; give the layout's grid and prefix")
        return grid


def layouts_for(model: Any, layers: Sequence[str],
                tokens: TokenLayout | Sequence[TokenLayout | None] | None) -> list[TokenLayout | None]:
    """Each layer's token layout: ``tokens`` (one for every layer, or one per layer), else the one
    the registry spec gives the layer, else ``None`` (a feature map)."""
    if isinstance(tokens, TokenLayout):
        return [tokens] * len(layers)
    if tokens is not None:
        given = list(tokens)
        if len(given) != len(layers):
            raise UserInputError(f"got {len(given)} token layouts for {len(layers)} layers; give {{tokens}} one per "
                                 f"layer", options=["tokens"])
        return given
    spec = getattr(model, "video_iba_spec", None)
    return [spec.layout(name) if spec is not None else None for name in layers]


def _batched(v: Any, n: int) -> Any:
    """A tensor with a batch of one repeated to ``n`` (other entries of a tuple output as they are)."""
    if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == 1 and n != 1:
        return v.expand(n, *v.shape[1:])
    return v
