"""MViT's pooling of token grids read in place, without transposing the tokens first.

torchvision's MViT pools the queries, keys and values of its attention (``Pool``): the grid tokens
``(B, heads, L, C)`` are transposed to ``(B * heads, C, T, H, W)`` and copied contiguous, pooled
by a 3-D convolution, and transposed back before the class token is put in front again. Yet the
tokens read as ``(B * heads, T, H, W, C)`` and permuted to ``(B * heads, C, T, H, W)`` already
are a channels-last 3-D tensor: the convolution reads them where they lie and writes its output
channels-last, which is the token layout again, so neither transpose copies (where the tokens
are not one block in memory, as the queries of several heads, reading them so copies them once,
as the transpose did). Profiled on MViT-v2-S (one forward and input-gradient pass of 2 replicas
at its embedding, this 2-core CPU): 19 % of the pass went to ``copy_``, most of it these
transposes and their gradients.

:func:`pool_in_place` rewrites a copy of the traced suffix (:mod:`.split`): each ``nn.Conv3d``
or ``nn.MaxPool3d`` (the skip connection's pooling) fed by
``contiguous(reshape(transpose(x, 2, 3), (B * N, C, T, H, W)))`` and read back by
``transpose(reshape(y, B, N, C, -1), 2, 3)`` gets its input from :func:`pool_input` and is read
back by :func:`pooled_tokens`. On the CPU they read in place; elsewhere (not measured) they do
what the model does. :class:`~.split.CachedSuffix` checks the rewritten suffix against the
model's logits and keeps the model's own code where they differ.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import fx, nn

from .graphs import finished, rewritable_copy

#: The pooling modules whose calls are rewritten.
_POOLS = (nn.Conv3d, nn.MaxPool3d)


def pool_input(tokens: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The grid ``tokens`` ``(B, N, L, C)`` as the input ``(B * N, C, T, H, W)`` of a pooling
    convolution (``shape``), read in place (channels-last) on the CPU."""
    bn, c, t, h, w = shape
    if tokens.device.type == "cpu":
        return tokens.reshape(bn, t, h, w, c).permute(0, 4, 1, 2, 3)
    return tokens.transpose(2, 3).reshape(bn, c, t, h, w).contiguous()


def pooled_tokens(y: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """The pooled grid ``y`` ``(B * N, C, T, H, W)`` as tokens ``(B, N, T * H * W, C)``: a view
    whether ``y`` is channels-last or contiguous."""
    if y.is_contiguous(memory_format=torch.channels_last_3d) and not y.is_contiguous():
        return y.permute(0, 2, 3, 4, 1).reshape(b, n, -1, y.shape[1])
    return y.reshape(b, n, y.shape[1], -1).transpose(2, 3)


def _method(node: Any, name: str) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_method" and node.target == name


def _match(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, fx.Node, Any, fx.Node, fx.Node] | None:
    """For a pooling ``node`` of the pattern (module doc): the transpose and the reshape before it
    (the contiguous copy is its input), the reshape's shape, and the reshape and transpose after it."""
    if node.op != "call_module" or type(modules.get(str(node.target))) not in _POOLS or len(node.args) != 1:
        return None
    cont = node.args[0]
    if not _method(cont, "contiguous") or len(cont.users) != 1:
        return None
    shaped = cont.args[0]
    if not _method(shaped, "reshape") or len(shaped.users) != 1 or len(shaped.args) != 2:
        return None
    turned, shape = shaped.args
    if not _method(turned, "transpose") or tuple(turned.args[1:]) != (2, 3) or not isinstance(shape, (tuple, list)) \
            or len(shape) != 5:
        return None
    back = [u for u in node.users if _method(u, "reshape")]
    others = [u for u in node.users if u not in back]
    if len(back) != 1 or any(not (u.op == "call_function" and u.target is getattr and u.args[1:] == ("shape",))
                             for u in others):
        return None
    flat = back[0]
    if len(flat.args) != 5 or flat.args[3] != shape[1] or flat.args[4] != -1 or len(flat.users) != 1:
        return None
    turn_back = next(iter(flat.users))
    if not _method(turn_back, "transpose") or tuple(turn_back.args[1:]) != (2, 3):
        return None
    return turned, shaped, shape, flat, turn_back


def pool_in_place(gm: fx.GraphModule) -> fx.GraphModule | None:
    """A copy of ``gm`` whose token poolings read the tokens in place (module doc), or ``None``
    where there is none. Every module stays shared with ``gm`` (and so with the user's model),
    which is not changed."""
    rewritten = rewritable_copy(gm)
    graph = rewritten.graph
    modules = dict(gm.named_modules())
    count = 0
    for node in list(graph.nodes):
        found = _match(node, modules)
        if found is None:
            continue
        turned, shaped, shape, flat, turn_back = found
        cont = node.args[0]
        with graph.inserting_before(shaped):
            given = graph.call_function(pool_input, (turned.args[0], tuple(shape)))
        node.args = (given,)
        graph.erase_node(cont)
        graph.erase_node(shaped)
        if not turned.users:  # its shape is read for B, N and C otherwise
            graph.erase_node(turned)
        with graph.inserting_after(flat):
            tokens = graph.call_function(pooled_tokens, (node, flat.args[1], flat.args[2]))
        turn_back.replace_all_uses_with(tokens)
        graph.erase_node(turn_back)
        graph.erase_node(flat)
        count += 1
    return finished(rewritten, count)


__all__ = ["pool_in_place", "pool_input", "pooled_tokens"]
