"""Attention rollout (Abnar and Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020),
the attention baseline of transformer explanations, and its class-specific, gradient-weighted
relevance (Chefer, Gur and Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal
and Encoder-Decoder Transformers", ICCV 2021: "gae"), for photos and clips.

Rollout: each block's attention probabilities are averaged over heads, ``A``; the residual
connection is accounted for as ``0.5 A + 0.5 I`` (rows normalised to sum to 1), and the blocks'
matrices are multiplied from the last block to the first. The row of what the classification head
reads (the class token; the grid tokens' mean for a head that averages them, as VideoMAE's; both,
with equal shares, for DINOv2's) then says how much of it flows from each input token; the grid
tokens' shares are the map, placed on the input as Grad-CAM's token maps are. The map is the same
for every class (attention carries no class), which is why methods that read the class's gradient
are compared with it.

Gradient-weighted relevance: each block's attention is weighted by the gradient of the target
logit with respect to it and rectified before the heads are averaged, ``Ā = mean_h((∇A ⊙ A)⁺)``;
the relevance starts as ``R = I`` and each block, first to last, adds ``Ā R``. The head's row of
``R - I`` on the grid tokens is the map (see :func:`relevance`): one per class.

The attention probabilities come from the network's ``nn.MultiheadAttention`` self-attention
modules (torchvision's ViTs, networks of one's own: asked for their weights for the duration), or
from a Hugging Face ViT, DeiT, BEiT, DINOv2, VideoMAE or ViViT (its eager attention, which returns
them) or TimeSformer, whose divided attention counts as two layers per block (over each place's
frames, then over each frame's places), each with its residual. Networks whose blocks attend
otherwise (MViT's pooled attention, Swin's windows) are refused: their attention does not
compose into one rollout.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import UserInputError
from ..models.hf import FAMILY_NAMES, ROLLOUT_FAMILIES, HFClassifier, check_full_attention
from ..models.layouts import TokenLayout

#: The share of each block's residual path: ``(1 - RESIDUAL) A + RESIDUAL I``.
RESIDUAL = 0.5
#: The methods' names in messages.
ROLLOUT_NAME = "attention rollout"
RELEVANCE_NAME = "gradient-weighted attention relevance"


def check_rollout(model: nn.Module, name: str | None = None, method: str = ROLLOUT_NAME) -> None:
    """Refuse, before any work, a network whose attention ``method`` (rollout or its gradient-weighted
    relevance) cannot read: one without ``nn.MultiheadAttention`` modules that is not a Hugging Face
    network of :data:`~video_iba.models.hf.ROLLOUT_FAMILIES`."""
    if isinstance(model, HFClassifier):
        check_full_attention(model.base, name, method)
        return
    if not any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        names = [FAMILY_NAMES[f] for f in ROLLOUT_FAMILIES]
        raise UserInputError(f"{method} reads the attention of nn.MultiheadAttention blocks (torchvision's "
                             f"ViTs, networks of your own) or of a Hugging Face {', '.join(names[:-1])} or "
                             f"{names[-1]}, and {name or 'this model'} has no such attention; choose another method")


def attention_rollout(model: nn.Module, x: torch.Tensor, tokens: TokenLayout | None = None) -> torch.Tensor:
    """The attention rollout of ``model`` on ``x`` ``(1, C, [T,] H, W)`` on its token grid:
    ``(1, 1, *grid)``, each grid token's share of what the head reads.

    ``tokens`` is the layout of the attention's tokens (default: the registry spec's layout that
    matches their number); a network of one's own without a spec must give it."""
    check_rollout(model)
    with torch.no_grad():
        _, maps, to_tokens = _attentions(model, x, heads=False)
        blocks = [to_tokens(i, a.float()) for i, a in enumerate(maps)]
    return _on_grid(model, tokens, blocks, rollout, ROLLOUT_NAME)


def attention_relevance(model: nn.Module, x: torch.Tensor, target: int,
                        tokens: TokenLayout | None = None) -> torch.Tensor:
    """Chefer, Gur and Wolf's gradient-weighted attention relevance of ``model``'s logit ``target``
    on ``x`` ``(1, C, [T,] H, W)`` on its token grid: ``(1, 1, *grid)``. ``tokens`` as for
    :func:`attention_rollout`."""
    check_rollout(model, method=RELEVANCE_NAME)
    probe = x.detach().clone().requires_grad_(True)  # the network's weights may be frozen: the graph starts here
    weighted: list[torch.Tensor | None] = []

    def keep(i: int, a: torch.Tensor) -> Callable[[torch.Tensor], None]:
        def weigh(g: torch.Tensor) -> None:  # as the gradient passes: one head-averaged map kept, the gradient freed
            weighted[i] = to_tokens(i, (a.detach().float() * g.float()).clamp(min=0)).double()
        return weigh

    with torch.enable_grad():
        logits, maps, to_tokens = _attentions(model, probe, heads=True)
        weighted.extend([None] * len(maps))
        handles = [a.register_hook(keep(i, a)) for i, a in enumerate(maps)]
        try:  # every block's attention lies between the logit and the input: each hook sees its block's gradient
            torch.autograd.grad(logits[0, target], probe, allow_unused=True)
        finally:
            for h in handles:
                h.remove()
    blocks = [w if w is not None else to_tokens(i, torch.zeros_like(a, dtype=torch.float64))
              for i, (a, w) in enumerate(zip(maps, weighted))]
    del maps
    if not any(bool(w.sum() > 0) for w in blocks):
        raise UserInputError(f"{RELEVANCE_NAME}: no attention weight raises the logit of class {target} (the "
                             f"gradient with respect to every block's attention is zero or negative where the "
                             f"attention is; a model with random weights and a zero-initialised head, as "
                             f"torchvision's ViTs, has the same logits for every input); use trained weights")
    return _on_grid(model, tokens, blocks, relevance, RELEVANCE_NAME)


def _on_grid(model: nn.Module, tokens: TokenLayout | None, blocks: list[torch.Tensor],
             read: Callable[[Sequence[torch.Tensor], torch.Tensor], torch.Tensor], method: str) -> torch.Tensor:
    """The head's row through the ``blocks`` (``read``: :func:`rollout` or :func:`relevance`), its grid
    tokens ``(1, 1, *grid)`` (a photo's as one frame)."""
    length = blocks[0].shape[-1]
    layout = _layout(model, tokens, length, method)
    reads, mean = model.head_reads() if isinstance(model, HFClassifier) else (((0,), False) if layout.prefix
                                                                              else ((), True))
    flow = read(blocks, head_row(length, layout.prefix, reads, mean))
    parts, _ = layout.split(flow[:, :, None].float(), method)
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

    def step(flow: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        mixed = (1.0 - RESIDUAL) * a + RESIDUAL * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        return flow @ (mixed / mixed.sum(dim=-1, keepdim=True))

    return _back(attentions, row, step)


def relevance(weighted: Sequence[torch.Tensor], row: torch.Tensor) -> torch.Tensor:
    """``row @ ((I + Ā_L) @ ... @ (I + Ā_1) - I)`` ``(N, L)`` for the blocks' gradient-weighted
    attentions ``(N, L, L)`` (first block first): the head's row of Chefer et al.'s relevance ``R``
    (``R = I``, then ``R += Ā R`` block by block) less the identity it starts from, which gives each
    token only itself: for a class-token head the same on the grid tokens, for a head that reads the
    grid tokens' mean it takes away an even floor of ``1 / L`` whose size against ``Ā``'s (in logit
    units) would depend on the logits' scale. Computed from the last block back, in float64."""
    return _back(weighted, row, lambda flow, a: flow + flow @ a) - row.to(torch.float64).to(weighted[0].device)


def _back(blocks: Sequence[torch.Tensor], row: torch.Tensor,
          step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``row`` ``(L,)`` taken through ``blocks`` ``(N, L, L)`` from the last to the first by ``step``."""
    n, length = blocks[0].shape[0], blocks[0].shape[-1]
    flow = row.to(torch.float64).expand(n, 1, length).to(blocks[0].device)
    for a in reversed(blocks):
        flow = step(flow, a.to(torch.float64))
    return flow[:, 0]


def _layout(model: nn.Module, tokens: TokenLayout | None, length: int, method: str) -> TokenLayout:
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
        raise UserInputError(f"{method} places the attention's {length} tokens on a grid: give {{tokens}} "
                             f"their layout (video_iba.TokenLayout(grid=(T', H', W'), prefix=P))", options=["tokens"])
    return max(found, key=lambda lay: lay.prefix)


def _attentions(model: nn.Module, x: torch.Tensor, heads: bool
                ) -> tuple[torch.Tensor, list[torch.Tensor], Callable[[int, torch.Tensor], torch.Tensor]]:
    """The logits, every attention layer's probabilities in the order they run, and the function
    that takes the ``i``-th (or anything of its shape) to one ``(N, L, L)`` matrix over the tokens,
    averaged over heads. The probabilities are averaged over heads already, or (``heads``) each
    head's as the layers used them, so that gradients reach them (Hugging Face: ``(rows, heads, n,
    n)``; ``nn.MultiheadAttention``: ``(N x heads, L, L)``)."""
    n = x.shape[0]
    if isinstance(model, HFClassifier):
        logits, found = model.attentions(x, mean_heads=not heads)
        return logits, found, lambda i, a: model.token_attention(i, a.mean(dim=1), n)
    found: list[torch.Tensor] = []
    with _weights_of(model, found, heads):
        logits = model(x)
    if not found:
        raise RuntimeError("no attention was recorded: no nn.MultiheadAttention module ran")
    lengths = {tuple(a.shape[-2:]) for a in found}
    if len(lengths) != 1 or any(q != k for q, k in lengths):
        raise UserInputError(f"attention rollout and its relevance need self-attention over the same tokens in every "
                             f"block, and this model's attention maps have shapes {sorted(lengths)} (queries x keys); "
                             f"choose another method")
    return logits, found, lambda _i, a: a.reshape(n, -1, *a.shape[-2:]).mean(dim=1)


#: ``nn.MultiheadAttention.forward``'s arguments after ``query, key, value, key_padding_mask``.
_LATER_ARGUMENTS = ("need_weights", "attn_mask", "average_attn_weights", "is_causal")


@contextlib.contextmanager
def _weights_of(model: nn.Module, found: list[torch.Tensor], heads: bool) -> Iterator[None]:
    """Every ``nn.MultiheadAttention`` of ``model`` returns its weights for the duration (its callers
    may ask for none), recorded in ``found`` in the order they run: averaged over heads and
    detached, or (``heads``) each head's ``(N x heads, L, L)``, the tensor the module multiplied its
    values with (the weights it returns are a view of it, which gradients do not reach). The fused
    path of ``nn.TransformerEncoderLayer``, which skips the module, is off meanwhile."""

    def ask(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs = {**dict(zip(_LATER_ARGUMENTS, args[4:])), **kwargs, "need_weights": True,
                  "average_attn_weights": not heads}
        return tuple(args[:4]), kwargs

    def record(_m: nn.Module, _args: Any, _kwargs: Any, out: Any) -> None:
        if not heads:
            found.append(out[1].detach().float())
            return
        used = out[1]._base  # what the returned weights are a view of
        if used is None or used.numel() != out[1].numel() or not used.requires_grad:
            raise RuntimeError("this torch's nn.MultiheadAttention returns attention weights that gradients do not "
                               "reach; gradient-weighted attention relevance cannot read them")
        found.append(used)

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


__all__ = ["RELEVANCE_NAME", "RESIDUAL", "ROLLOUT_NAME", "attention_relevance", "attention_rollout", "check_rollout",
           "head_row", "relevance", "rollout"]
