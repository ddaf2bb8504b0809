"""Fused attention in the suffix of torchvision's video transformers.

The suffix of a split network (:mod:`.split`) runs forward and backward at every optimisation
step on every noisy replica. torchvision's MViT and Swin3D compute attention step by step: the
score matrix, position terms added to it (MViT in place, into a slice, which costs a zero-filled
copy of the scores in the backward pass), softmax, the product with the values; autograd keeps the
scores and the softmax of every block. :func:`fuse_attention` rewrites a copy of the traced suffix
so that each attention is one ``torch.nn.functional.scaled_dot_product_attention`` (SDPA), which
computes scores, softmax and product in blocks, forward and backward, without storing the scores:

* Swin3D (``shifted_window_attention_3d``): the relative position bias and the shifted windows'
  mask do not depend on the input; together they are SDPA's additive mask.
* MViT (the score product, ``_add_rel_pos``, softmax, the product with the values): the
  decomposed relative positions add ``q_i . R_t[t_i, t_j] + q_i . R_h[h_i, h_j] + q_i . R_w[w_i,
  w_j]`` to the score of grid query ``i`` and grid key ``j``. That is a dot product of augmented
  vectors: each grid query gets its ``K_t + K_h + K_w`` products with the position tables, each
  grid key the one-hot codes of its own ``(t, h, w)`` (the class token gets zeros on both sides),
  so the scores are ``[s q, e] . [k, onehot]`` at scale 1. The values are padded with zeros to
  the same width (SDPA's fused kernels want one width) and the padding is cut off again.
  MViT's residual pooling (``_add_shortcut``, in place on the attention's output) becomes an
  addition out of place.

Under bf16 autocast on the CPU, Swin3D's window attention computes in fp32 (the rest of the
network stays in bf16): this CPU's bf16 SDPA kernel took 1.5-1.7x as long as its fp32 one,
forward and backward, on its windows (256 windows of 3 heads: 577 against 360 ms; with the casts
to fp32 and back, 467 ms), and one suffix pass of Swin3D-T in bf16 went from 6.55 s to 5.83 s.
MViT's attention stays in bf16, where the two took about as long and the casts made the pass no
faster.

Only modules in eval mode are rewritten (the trace records ``training=False``). The rewritten
suffix computes the same function up to float rounding; :class:`~.split.CachedSuffix` checks it
against the model's logits and keeps the unfused suffix where it does not agree.
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import fx

from .graphs import finished, rewritable_copy

_MVIT = "torchvision.models.video.mvit"
_SWIN = "torchvision.models.video.swin_transformer"
#: Head widths are padded to a multiple of this (CUDA's fused kernels want it).
_WIDTH_MULTIPLE = 8


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None = None,
          upcast: bool = False) -> torch.Tensor:
    """SDPA; with ``upcast``, in fp32 for bf16 inputs on the CPU (module doc), the result in the
    inputs' type."""
    if upcast and q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scale,
                                                 attn_mask=None if mask is None else mask.float())
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, scale=scale, attn_mask=None if mask is None else mask.to(q.dtype))


def _is(target: Any, module: str, name: str) -> bool:
    return getattr(target, "__module__", None) == module and getattr(target, "__name__", None) == name


# ----------------------------------------------------------------------------- Swin3D


def _region_labels(size: int, window: int, shift: int) -> torch.Tensor:
    """Which of the shifted layout's regions each position of a padded axis lies in: the
    positions that the cyclic shift brought from the start of the axis are not neighbours of
    those before them."""
    pos = torch.arange(size)
    if shift == 0:
        return torch.zeros(size, dtype=torch.long)
    return (pos >= size - window).long() + (pos >= size - shift).long()


def shift_mask(padded: Sequence[int], window: Sequence[int], shift: Sequence[int],
               device: torch.device) -> torch.Tensor:
    """``(windows, L, L)``: 0 between tokens of one region of a shifted window, -100 between
    regions (the value torchvision's Swin3D adds), windows in ``(t, h, w)`` order."""
    lt, lh, lw = (_region_labels(p, w, s) for p, w, s in zip(padded, window, shift))
    labels = (lt[:, None, None] * 9 + lh[None, :, None] * 3 + lw[None, None, :])
    nt, nh, nw = (p // w for p, w in zip(padded, window))
    labels = labels.view(nt, window[0], nh, window[1], nw, window[2]).permute(0, 2, 4, 1, 3, 5)
    labels = labels.reshape(nt * nh * nw, -1).to(device)
    differ = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, -100.0)


def window_attention_3d(input: torch.Tensor, qkv_weight: torch.Tensor, proj_weight: torch.Tensor,
                        relative_position_bias: torch.Tensor, window_size: Sequence[int], num_heads: int,
                        shift_size: Sequence[int], attention_dropout: float = 0.0, dropout: float = 0.0,
                        qkv_bias: torch.Tensor | None = None, proj_bias: torch.Tensor | None = None,
                        training: bool = False) -> torch.Tensor:
    """Swin3D's shifted-window attention (same arguments, eval mode) with one fused SDPA call.

    ``input`` ``(B, T, H, W, C)``; ``relative_position_bias`` ``(1, heads, L, L)`` with ``L`` the
    window's volume.
    """
    if training and (attention_dropout > 0 or dropout > 0):
        raise ValueError("the fused window attention is for eval mode only")
    b, t, h, w, c = input.shape
    ws = [int(v) for v in window_size]
    shift = [int(v) for v in shift_size]
    pad = [(-n) % k for n, k in zip((t, h, w), ws)]
    x = F.pad(input, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
    padded = x.shape[1:4]
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1], -shift[2]), dims=(1, 2, 3))
    nt, nh, nw = (p // k for p, k in zip(padded, ws))
    windows, length, d = nt * nh * nw, ws[0] * ws[1] * ws[2], c // num_heads
    x = x.view(b, nt, ws[0], nh, ws[1], nw, ws[2], c).permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, windows, length, c)
    qkv = F.linear(x, qkv_weight, qkv_bias).view(b, windows, length, 3, num_heads, d)
    qkv = qkv.permute(3, 0, 1, 4, 2, 5)  # (3, B, windows, heads, L, d)
    if sum(shift) > 0:
        # windows differ in their mask: windows x heads as SDPA's heads, the mask shared by the batch
        q, k, v = (p.reshape(b, windows * num_heads, length, d) for p in qkv.unbind(0))
        mask = relative_position_bias + shift_mask(padded, ws, shift, input.device)[:, None]
        mask = mask.reshape(1, windows * num_heads, length, length)
    else:
        q, k, v = (p.reshape(b * windows, num_heads, length, d) for p in qkv.unbind(0))
        mask = relative_position_bias.reshape(1, num_heads, length, length)
    out = _sdpa(q, k, v, d ** -0.5, mask, upcast=True)
    out = out.view(b, windows, num_heads, length, d).transpose(2, 3).reshape(b, windows, length, c)
    out = F.linear(out, proj_weight, proj_bias)
    out = out.view(b, nt, nh, nw, ws[0], ws[1], ws[2], c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    out = out.reshape(b, *padded, c)
    if sum(shift) > 0:
        out = torch.roll(out, shifts=(shift[0], shift[1], shift[2]), dims=(1, 2, 3))
    return out[:, :t, :h, :w, :].contiguous()


# ----------------------------------------------------------------------------- MViT


def resampled_rows(table: torch.Tensor, n: int) -> torch.Tensor:
    """A table of positions ``(n0, C)`` linearly resampled to ``n`` rows, each row standing for the
    middle of its share of the axis, as MViT resamples its relative tables; ``table`` itself where
    it has ``n`` rows."""
    if table.shape[0] == n:
        return table
    return F.interpolate(table.t().unsqueeze(0), size=n, mode="linear").squeeze(0).t()


def _relative_rows(table: torch.Tensor, nq: int, nk: int) -> torch.Tensor:
    """``(nq, nk, C)``: the table's row for each query/key offset along one axis, the coarser of
    the two grids scaled to the finer."""
    table = resampled_rows(table, int(2 * max(nq, nk) - 1))
    q_ratio, k_ratio = max(nk / nq, 1.0), max(nq / nk, 1.0)
    offset = torch.arange(nq)[:, None] * q_ratio - (torch.arange(nk)[None, :] + (1.0 - nk)) * k_ratio
    return table[offset.long()]


def _key_codes(k_thw: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """``(1 + T*H*W, T + H + W)``: one-hot codes of each key's ``t``, ``h`` and ``w``, a zero row
    for the class token."""
    kt, kh, kw = (int(v) for v in k_thw)
    t, h, w = torch.meshgrid(torch.arange(kt), torch.arange(kh), torch.arange(kw), indexing="ij")
    codes = torch.cat([F.one_hot(t.reshape(-1), kt), F.one_hot(h.reshape(-1), kh),
                       F.one_hot(w.reshape(-1), kw)], dim=1)
    return F.pad(codes, (0, 0, 1, 0)).to(device=like.device, dtype=like.dtype)


def _width(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`_WIDTH_MULTIPLE`."""
    return -(-n // _WIDTH_MULTIPLE) * _WIDTH_MULTIPLE


def _padded(t: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(t, (0, width - t.shape[-1])) if t.shape[-1] < width else t


def mvit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                   q_thw: Sequence[int] | None = None, k_thw: Sequence[int] | None = None,
                   rel_pos_h: torch.Tensor | None = None, rel_pos_w: torch.Tensor | None = None,
                   rel_pos_t: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(scale q k^T [+ decomposed relative positions]) v`` for MViT's tokens
    ``(B, heads, 1 + T*H*W, d)`` (a class token first), with one fused SDPA call."""
    d = q.shape[-1]
    if rel_pos_h is None or rel_pos_w is None or rel_pos_t is None or q_thw is None or k_thw is None:
        width = _width(d)
        out = _sdpa(_padded(q, width), _padded(k, width), _padded(v, width), scale)
        return out[..., :d]
    qt, qh, qw = (int(n) for n in q_thw)
    kt, kh, kw = (int(n) for n in k_thw)
    b, heads = q.shape[:2]
    grid_q = q[:, :, 1:].reshape(b, heads, qt, qh, qw, d)
    products = [
        torch.einsum("bnthwc,tkc->bnthwk", grid_q, _relative_rows(rel_pos_t, qt, kt)),
        torch.einsum("bnthwc,hkc->bnthwk", grid_q, _relative_rows(rel_pos_h, qh, kh)),
        torch.einsum("bnthwc,wkc->bnthwk", grid_q, _relative_rows(rel_pos_w, qw, kw)),
    ]
    extra = F.pad(torch.cat(products, dim=-1).reshape(b, heads, qt * qh * qw, kt + kh + kw), (0, 0, 1, 0))
    codes = _key_codes(k_thw, k).expand(b, heads, -1, -1)
    width = _width(d + kt + kh + kw)
    qa = _padded(torch.cat([q * scale, extra.to(q.dtype)], dim=-1), width)
    ka = _padded(torch.cat([k, codes], dim=-1), width)
    out = _sdpa(qa, ka, _padded(v, width), 1.0)
    return out[..., :d]


def shortcut_added(x: torch.Tensor, shortcut: torch.Tensor, with_class_token: bool) -> torch.Tensor:
    """MViT's residual pooling out of place: ``x + shortcut``, the class token's row only if
    ``with_class_token``."""
    if with_class_token:
        return x + shortcut
    return x + F.pad(shortcut[:, :, 1:], (0, 0, 1, 0))


def _const(node: Any) -> bool:
    return not isinstance(node, fx.Node)


def _mvit_chain(product: fx.Node) -> tuple[list[fx.Node], dict[str, Any]] | None:
    """The nodes of ``softmax(matmul(s * q, k.transpose(2, 3)) [-> _add_rel_pos]) @ v`` ending at
    ``product`` (the last matmul) and the arguments of :func:`mvit_attention`, or ``None``."""
    if product.op != "call_function" or product.target is not torch.matmul or len(product.args) != 2:
        return None
    soft, v = product.args
    if not isinstance(soft, fx.Node) or soft.op != "call_method" or soft.target != "softmax" \
            or len(soft.users) != 1 or soft.kwargs.get("dim", soft.args[1] if len(soft.args) > 1 else None) != -1:
        return None
    scores = soft.args[0]
    rel: dict[str, Any] = {}
    nodes = [product, soft]
    if isinstance(scores, fx.Node) and scores.op == "call_function" and _is(scores.target, _MVIT, "_add_rel_pos"):
        if len(scores.args) != 7 or len(scores.users) != 1 or scores.kwargs:
            return None
        attn, q_rel, q_thw, k_thw, rh, rw, rt = scores.args
        rel = {"q_thw": q_thw, "k_thw": k_thw, "rel_pos_h": rh, "rel_pos_w": rw, "rel_pos_t": rt}
        nodes.append(scores)
        scores = attn
    else:
        q_rel = None
    if not isinstance(scores, fx.Node) or scores.op != "call_function" or scores.target is not torch.matmul \
            or len(scores.users) != 1:
        return None
    scaled, kt = scores.args
    if not isinstance(scaled, fx.Node) or scaled.op != "call_function" or scaled.target is not operator.mul \
            or len(scaled.users) != 1:
        return None
    a, b = scaled.args
    scale, q = (a, b) if _const(a) else (b, a)
    if not isinstance(scale, float) or not isinstance(q, fx.Node) or (q_rel is not None and q_rel is not q):
        return None
    if not isinstance(kt, fx.Node) or kt.op != "call_method" or kt.target != "transpose" or len(kt.users) != 1 \
            or tuple(kt.args[1:]) not in ((2, 3), (-2, -1), (3, 2), (-1, -2)):
        return None
    nodes += [scores, scaled, kt]
    return nodes, {"q": q, "k": kt.args[0], "v": v, "scale": scale, **rel}


def fuse_attention(gm: fx.GraphModule) -> fx.GraphModule | None:
    """A copy of ``gm`` with torchvision's MViT and Swin3D attention fused (module doc), or
    ``None`` where there is none. Every module stays shared with ``gm``."""
    rewritten = rewritable_copy(gm)
    graph = rewritten.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if _is(node.target, _SWIN, "shifted_window_attention_3d"):
            training = node.kwargs.get("training", node.args[11] if len(node.args) > 11 else True)
            if training is False:
                node.target = window_attention_3d
                count += 1
        elif _is(node.target, _MVIT, "_add_shortcut") and len(node.args) == 3 and not node.kwargs \
                and isinstance(node.args[2], bool) and isinstance(node.args[0], fx.Node):
            # in place on the attention's output: later readers of that output read the sum
            x = node.args[0]
            readers = [u for u in x.users if u is not node]
            node.target = shortcut_added
            for u in readers:
                u.replace_input_with(x, node)
            count += 1
    for node in list(graph.nodes):
        chain = _mvit_chain(node) if node.op == "call_function" else None
        if chain is None:
            continue
        nodes, kwargs = chain
        with graph.inserting_before(node):
            fused = graph.call_function(mvit_attention, kwargs=kwargs)
        node.replace_all_uses_with(fused)
        for n in nodes:  # last use first
            graph.erase_node(n)
        count += 1
    return finished(rewritten, count)
