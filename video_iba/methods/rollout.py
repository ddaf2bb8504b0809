"""Attention rollout (Abnar and Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020),
the attention baseline of transformer explanations, for photos and clips.

Each block's attention probabilities are averaged over heads, ``A``; the residual connection is
accounted for as ``0.5 A + 0.5 I`` (rows normalised to sum to 1), and the blocks' matrices are
multiplied from the last block to the first. The row of what the classification head reads (the
class token; the grid tokens' mean for a head that averages them, as VideoMAE's; both, with equal
shares, for DINOv2's) then says how much of it flows from each input token; the grid tokens' shares
are the map, placed on the input as Grad-CAM's token maps are. The map is the same for every class
(attention carries no class), which is why methods that read the class's gradient are compared
with it.

The attention probabilities come from the network's ``nn.MultiheadAttention`` self-attention
modules (torchvision's ViTs, networks of one's own: asked for their weights for the duration), or
from a Hugging Face ViT, DeiT, BEiT, DINOv2, VideoMAE or ViViT (its eager attention, which returns
them). Networks whose blocks attend otherwise (MViT's pooled attention, Swin's windows,
TimeSformer's divided attention) are refused: their attention does not compose into one rollout.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..errors import UserInputError
from ..models.hf import FAMILY_NAMES, ROLLOUT_FAMILIES, HFClassifier, check_full_attention
from ..models.layouts import TokenLayout

#: The share of each block's residual path: ``(1 - RESIDUAL) A + RESIDUAL I``.
RESIDUAL = 0.5


def check_rollout(model: nn.Module, name: str | None = None) -> None:
    """Refuse, before any work, a network whose attention rollout cannot read: one without
    ``nn.MultiheadAttention`` modules that is not a Hugging Face network of
    :data:`~video_iba.models.hf.ROLLOUT_FAMILIES`."""
    if isinstance(model, HFClassifier):
        check_full_attention(model.base, name)
        return
    if not any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        names = [FAMILY_NAMES[f] for f in ROLLOUT_FAMILIES]
        raise UserInputError(f"attention rollout reads the attention of nn.MultiheadAttention blocks (torchvision's "
                             f"ViTs, networks of your own) or of a Hugging Face {', '.join(names[:-1])} or "
                             f"{names[-1]}, and {name or 'this model'} has no such attention; choose another method")


def attention_rollout(model: nn.Module, x: torch.Tensor, tokens: TokenLayout | None = None) -> torch.Tensor:
    """The attention rollout of ``model`` on ``x`` ``(1, C, [T,] H, W)`` on its token grid:
    ``(1, 1, *grid)``, each grid token's share of what the head reads.

    ``tokens`` is the layout of the attention's tokens (default: the registry spec's layout that
    matches their number); a network of one's own without a spec must give it."""
    check_rollout(model)
    with torch.no_grad():
        maps = _attentions(model, x)
    length = maps[0].shape[-1]
    layout = _layout(model, tokens, length)
    reads, mean = model.head_reads() if isinstance(model, HFClassifier) else (((0,), False) if layout.prefix
                                                                              else ((), True))
    flow = rollout(maps, head_row(length, layout.prefix, reads, mean))
    parts, _ = layout.split(flow[:, :, None].float(), "attention rollout")
    grid = parts[0]
    return grid[:, :, None] if grid.dim() == 4 else grid  # a photo's grid (1, 1, H', W') as one frame


def head_row(length: int, prefix: int, reads: Sequence[int], mean: bool) -> torch.Tensor:
    """What the head reads as a row over ``length`` tokens (summing to 1): equal shares for each
    token of ``reads`` and, where ``mean``, for the grid tokens' mean (after ``prefix`` tokens)."""
    parts = len(reads) + int(mean)
    row = torch.zeros(length, dtype=torch.float64)
    for i in reads:
        row[i] += 1.0 / parts
    if mean:
        row[prefix:] += 1.0 / parts / (length - prefix)
    return row


def rollout(attentions: Sequence[torch.Tensor], row: torch.Tensor) -> torch.Tensor:
    """``row @ Â_L @ ... @ Â_1`` ``(N, L)`` for the blocks' head-averaged attentions ``(N, L, L)``
    (first block first), ``Â = (1 - RESIDUAL) A + RESIDUAL I`` with rows normalised; computed from
    the last block back, one vector-matrix product per block, in float64."""
    n, length = attentions[0].shape[0], attentions[0].shape[-1]
    flow = row.to(torch.float64).expand(n, 1, length).to(attentions[0].device)
    eye = torch.eye(length, dtype=torch.float64, device=flow.device)
    for a in reversed(attentions):
        mixed = (1.0 - RESIDUAL) * a.to(torch.float64) + RESIDUAL * eye
        flow = flow @ (mixed / mixed.sum(dim=-1, keepdim=True))
    return flow[:, 0]


def _layout(model: nn.Module, tokens: TokenLayout | None, length: int) -> TokenLayout:
    """The layout of the attention's ``length`` tokens: ``tokens``, else the spec's that fits."""
    if tokens is not None:
        if tokens.channels_last or tokens.grid is None or tokens.prefix + math.prod(tokens.grid) != length:
            raise UserInputError(f"the attention runs over {length} tokens, which the layout {tokens} does not "
                                 f"describe; give {{tokens}} their grid and prefix (prefix + T' x H' x W' = "
                                 f"{length})", options=["tokens"])
        return tokens
    spec = getattr(model, "video_iba_spec", None)
    found = [lay for _, lay in (spec.layouts if spec is not None else ()) if lay is not None and lay.grid is not None
             and not lay.channels_last and lay.prefix + math.prod(lay.grid) == length]
    if not found:
        raise UserInputError(f"attention rollout places the attention's {length} tokens on a grid: give {{tokens}} "
                             f"their layout (video_iba.TokenLayout(grid=(T', H', W'), prefix=P))", options=["tokens"])
    return max(found, key=lambda lay: lay.prefix)


def _attentions(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every block's attention probabilities averaged over heads, ``(N, L, L)``, first block first."""
    if isinstance(model, HFClassifier):
        return [a.float().mean(dim=1) for a in model.attentions(x)]
    found: list[torch.Tensor] = []
    with _weights_of(model, found):
        model(x)
    if not found:
        raise RuntimeError("attention rollout recorded no attention: no nn.MultiheadAttention module ran")
    lengths = {tuple(a.shape[-2:]) for a in found}
    if len(lengths) != 1 or any(q != k for q, k in lengths):
        raise UserInputError(f"attention rollout needs self-attention over the same tokens in every block, and this "
                             f"model's attention maps have shapes {sorted(lengths)} (queries x keys); choose another "
                             f"method")
    return found


#: ``nn.MultiheadAttention.forward``'s arguments after ``query, key, value, key_padding_mask``.
_LATER_ARGUMENTS = ("need_weights", "attn_mask", "average_attn_weights", "is_causal")


@contextlib.contextmanager
def _weights_of(model: nn.Module, found: list[torch.Tensor]) -> Iterator[None]:
    """Every ``nn.MultiheadAttention`` of ``model`` returns its head-averaged weights for the
    duration (its callers may ask for none), recorded in ``found`` in the order they run; the
    fused path of ``nn.TransformerEncoderLayer``, which skips the module, is off meanwhile."""

    def ask(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs = {**dict(zip(_LATER_ARGUMENTS, args[4:])), **kwargs, "need_weights": True,
                  "average_attn_weights": True}
        return tuple(args[:4]), kwargs

    def record(_m: nn.Module, _args: Any, _kwargs: Any, out: Any) -> None:
        found.append(out[1].detach().float())

    modules = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    handles = []
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha is not None else None
    try:
        for m in modules:
            handles.append(m.register_forward_pre_hook(ask, with_kwargs=True))
            handles.append(m.register_forward_hook(record, with_kwargs=True))
        if mha is not None:
            mha.set_fastpath_enabled(False)
        yield
    finally:
        for h in handles:
            h.remove()
        if mha is not None:
            mha.set_fastpath_enabled(fast)


__all__ = ["RESIDUAL", "attention_rollout", "check_rollout", "head_row", "rollout"]
