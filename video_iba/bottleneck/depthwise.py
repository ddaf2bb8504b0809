"""Depthwise 3-D convolutions whose input gradient is itself a forward convolution.

The suffix of a split network (:mod:`.split`) runs backward at every optimisation step for the
gradient of its input only; the weights are frozen. For depthwise 3-D convolutions (one filter
per channel: MViT's pooling of queries, keys and values, X3D's channel-wise convolutions) the CPU
backward kernel for that gradient is slow: measured here, 5 to 30 times the forward pass on the
same tensors. Yet the input gradient of a depthwise convolution is a depthwise convolution too:
the output gradient, with zeros put between its entries where the stride skipped inputs,
correlated with each filter flipped in every dimension. :func:`fast_depthwise` rewrites a copy
of the traced suffix so that each depthwise ``nn.Conv3d`` computes its input gradient that way.

The rewrite is used only where it was measured to help: on the CPU (on other devices the
module's own convolution runs: not measured there), with frozen weights (where a weight requires
a gradient, the module's own convolution runs, so weight gradients stay exact), and in fp32 for
strides of at most 2 in every dimension and 4 in all (the zero-filled gradient grows with the
stride's product; on MViT-v2-S's first stage, its key and value pooling with strides (1, 4, 4)
and (1, 8, 8) took about 3x as long that way as with the module's own backward). Under bf16
autocast every stride is rewritten: there the CPU's own backward was slower (those poolings and
a smaller (1, 4, 4) one: 1.8-13x the rewrite's time).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .graphs import finished, rewritable_copy

#: The largest stride product for which the rewrite is used.
_MAX_STRIDE_PRODUCT = 4


class _DepthwiseInputGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: tuple[int, int, int], padding: tuple[int, int, int]) -> torch.Tensor:
        y = F.conv3d(x, weight, bias, stride, padding, 1, weight.shape[0])
        ctx.save_for_backward(weight)
        # under autocast the convolution ran in y's type; its gradient is computed in that type
        # and returned in the input's
        ctx.geometry = (tuple(x.shape), stride, padding, y.dtype, x.dtype)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        (weight,) = ctx.saved_tensors
        shape, stride, padding, compute, dtype = ctx.geometry
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        grad_x = input_gradient(grad.to(compute), weight.to(compute), shape, stride, padding)
        return grad_x.to(dtype), None, None, None, None


def input_gradient(grad: torch.Tensor, weight: torch.Tensor, shape: tuple[int, ...],
                   stride: tuple[int, int, int], padding: tuple[int, int, int]) -> torch.Tensor:
    """The gradient of a depthwise ``conv3d`` (dilation 1) with respect to its input of ``shape``,
    given the gradient ``grad`` of its output: one forward depthwise convolution."""
    kernel = weight.shape[2:]
    if any(s > 1 for s in stride):
        # zeros where the stride skipped inputs, and at the end, so that the correlation below
        # returns exactly ``shape``
        size = [n + 2 * p - k + 1 for n, p, k in zip(shape[2:], padding, kernel)]
        spread = grad.new_zeros(*grad.shape[:2], *size)
        spread[(slice(None), slice(None)) + tuple(slice(0, (n - 1) * s + 1, s)
                                                  for n, s in zip(grad.shape[2:], stride))] = grad
        grad = spread
    pad = tuple(k - 1 - p for k, p in zip(kernel, padding))
    return F.conv3d(grad, weight.flip(2, 3, 4), None, 1, pad, 1, weight.shape[0])


class DepthwiseConv3d(nn.Module):
    """Runs ``conv`` (a depthwise ``nn.Conv3d`` on the CPU, :func:`eligible`; shared, not copied)
    with the input gradient of :func:`input_gradient` while its parameters are frozen, where
    that was measured faster (module doc): for its stride, or because it runs in bf16."""

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        self.conv = conv
        self.small_stride = max(conv.stride) <= 2 and math.prod(conv.stride) <= _MAX_STRIDE_PRODUCT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if conv.weight.requires_grad or (conv.bias is not None and conv.bias.requires_grad):
            return conv(x)
        if not self.small_stride and not _in_bf16(x):
            return conv(x)
        return _DepthwiseInputGrad.apply(x, conv.weight, conv.bias, conv.stride, conv.padding)


def _in_bf16(x: torch.Tensor) -> bool:
    """Whether a convolution of ``x`` on the CPU computes in bf16 (its type, or autocast's)."""
    if x.dtype == torch.bfloat16:
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def eligible(conv: nn.Module) -> bool:
    """Whether ``conv`` is a depthwise 3-D convolution the rewrite handles (module doc): any
    stride; :class:`DepthwiseConv3d` decides at run time whether its stride takes the rewrite."""
    if type(conv) is not nn.Conv3d or conv.weight.device.type != "cpu":
        return False
    return (conv.groups == conv.in_channels == conv.out_channels and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and tuple(conv.dilation) == (1, 1, 1)
            and all(p < k for p, k in zip(conv.padding, conv.kernel_size)))


def fast_depthwise(gm: fx.GraphModule) -> fx.GraphModule | None:
    """A copy of ``gm`` in which each call of an eligible depthwise ``nn.Conv3d`` runs through
    :class:`DepthwiseConv3d`, or ``None`` where there is none. Every module stays shared with
    ``gm`` (and so with the user's model), which is not changed."""
    rewritten = rewritable_copy(gm)
    graph = rewritten.graph
    modules = dict(gm.named_modules())
    count = 0
    for node in graph.nodes:
        if node.op != "call_module" or not eligible(modules.get(node.target)):
            continue
        name = f"_depthwise_{count}"
        rewritten.add_submodule(name, DepthwiseConv3d(modules[node.target]))
        node.target = name
        count += 1
    return finished(rewritten, count)
