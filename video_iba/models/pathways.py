"""Multi-pathway inputs (SlowFast): one convention for every method.

Everything in the package takes the **clip** ``(N, 3, T, S, S)``: the model input for
single-pathway networks. A multi-pathway network is fed through a *pack*, a function from the
clip to the pathway list the network takes; registry models know theirs (SlowFast: ``[slow,
fast]``, the slow pathway taking every ``alpha``-th frame), a user's own network gets
``pack=``. Maps are then at the clip's resolution (for SlowFast: the fast pathway's), and a tube
removed from the clip by a metric disappears from every pathway at once.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import UserInputError

#: Builds a multi-pathway network's input list from the clip.
Pack = Callable[[torch.Tensor], "list[torch.Tensor]"]


def slow_and_fast(clip: torch.Tensor, alpha: int) -> list[torch.Tensor]:
    """SlowFast's ``[slow, fast]``: the slow pathway takes ``T / alpha`` evenly spaced frames of the clip."""
    t = clip.shape[2]
    idx = torch.linspace(0, t - 1, max(1, t // alpha), device=clip.device).long()
    return [clip.index_select(2, idx), clip]


def pathways(spec: Any, clip: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
    """The network input for a preprocessed clip ``(N, 3, T, S, S)`` of the registry model ``spec``:
    the clip itself, or for SlowFast ``[slow, fast]``."""
    return slow_and_fast(clip, spec.slowfast_alpha) if spec.slowfast_alpha else clip


def input_packer(model: nn.Module, pack: Pack | None = None) -> Pack | None:
    """The pack of ``model``: ``pack`` when given, else the registry spec's (SlowFast), else ``None``
    (a single-pathway network takes the clip itself)."""
    if pack is not None:
        if not callable(pack):
            raise UserInputError(f"{{pack}} must be a function from the clip to the pathway list, got "
                                 f"{type(pack).__name__}", options=["pack"])
        return pack
    spec = getattr(model, "video_iba_spec", None)
    alpha = getattr(spec, "slowfast_alpha", 0)
    if alpha:
        return lambda clip: slow_and_fast(clip, alpha)
    return None


def packed(x: torch.Tensor, pack: Pack | None) -> torch.Tensor | list[torch.Tensor]:
    """The network input for the clip ``x``."""
    return pack(x) if pack is not None else x


class PackedModel(nn.Module):
    """A multi-pathway network as a single-input one: ``forward(clip)`` = ``model(pack(clip))``
    (for Captum, layer listings and Grad-CAM, which take one input tensor)."""

    def __init__(self, model: nn.Module, pack: Pack) -> None:
        super().__init__()
        self.model = model
        self.pack = pack

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model(self.pack(clip))


def one_input(model: nn.Module, pack: Pack | None) -> nn.Module:
    """``model`` itself, or wrapped as :class:`PackedModel` when it takes pathways."""
    return PackedModel(model, pack) if pack is not None else model
