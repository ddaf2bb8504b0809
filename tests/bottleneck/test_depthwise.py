"""Depthwise 3-D convolutions in the suffix compute their input gradient as a forward convolution:
the gradient equals autograd's for every geometry the rewrite accepts, the suffix with the rewrite
gives the model's logits and gradients, weights that require gradients still get exact ones, and
the user's model keeps its own modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from video_iba.bottleneck.depthwise import DepthwiseConv3d, eligible, fast_depthwise, input_gradient

from ..nets import snapshot, suffix_against_whole


@pytest.mark.parametrize("kernel,stride,padding,size", [
    ((3, 3, 3), (1, 1, 1), (1, 1, 1), (5, 7, 6)),
    ((3, 3, 3), (1, 2, 2), (1, 1, 1), (5, 7, 6)),   # odd and even sizes under a stride
    ((3, 3, 3), (2, 1, 2), (0, 1, 1), (6, 5, 9)),
    ((1, 5, 5), (1, 1, 1), (0, 2, 2), (3, 8, 8)),
    ((3, 1, 1), (2, 1, 1), (1, 0, 0), (7, 4, 4)),
])
def test_the_input_gradient_of_a_depthwise_convolution_is_a_convolution(kernel, stride, padding, size) -> None:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 1, *kernel, generator=g)
    x = torch.randn(2, 4, *size, generator=g, requires_grad=True)
    y = F.conv3d(x, weight, None, stride, padding, 1, 4)
    grad = torch.randn(y.shape, generator=g)
    (ref,) = torch.autograd.grad(y, x, grad)
    got = input_gradient(grad, weight, tuple(x.shape), stride, padding)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-5)


def test_only_depthwise_3d_convolutions_are_rewritten() -> None:
    assert eligible(nn.Conv3d(8, 8, 3, padding=1, groups=8))
    assert eligible(nn.Conv3d(8, 8, 3, stride=(1, 2, 2), padding=1, groups=8))
    assert eligible(nn.Conv3d(8, 8, 3, stride=(1, 4, 4), padding=1, groups=8))  # decided at run time
    assert not eligible(nn.Conv3d(8, 8, 3, padding=2, dilation=2, groups=8))
    assert not eligible(nn.Conv3d(8, 8, 3, padding=1, groups=4))
    assert not eligible(nn.Conv3d(8, 16, 3, padding=1, groups=8))
    assert not eligible(nn.Conv3d(8, 8, 3, padding="same", groups=8))
    assert not eligible(nn.Conv3d(8, 8, 3, padding=1, groups=8, padding_mode="reflect"))
    assert not eligible(nn.Conv2d(8, 8, 3, padding=1, groups=8))


def test_weights_that_require_gradients_get_the_modules_own_gradients() -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 4, 3, stride=(1, 2, 2), padding=1, groups=4)
    x = torch.randn(1, 4, 4, 9, 9, requires_grad=True)
    wrapped = DepthwiseConv3d(conv)
    ref = torch.autograd.grad(conv(x).square().sum(), [x, conv.weight, conv.bias])
    got = torch.autograd.grad(wrapped(x).square().sum(), [x, conv.weight, conv.bias])
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-5)
    conv.requires_grad_(False)
    (frozen_grad,) = torch.autograd.grad(wrapped(x).square().sum(), [x])
    assert torch.allclose(frozen_grad, ref[0], atol=1e-5)


def test_under_autocast_the_gradient_is_computed_in_the_convolutions_type() -> None:
    """``--precision bf16`` runs the suffix under autocast: the convolution runs in bf16 and the
    gradient comes back in the input's type, as with the module's own backward."""
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 4, 3, stride=(1, 2, 2), padding=1, groups=4).requires_grad_(False)
    x = torch.randn(2, 4, 4, 9, 9, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, ref = DepthwiseConv3d(conv)(x), conv(x)
    assert got.dtype == ref.dtype == torch.bfloat16 and torch.equal(got, ref)
    (g_got,) = torch.autograd.grad(got.float().square().sum(), [x])
    (g_ref,) = torch.autograd.grad(ref.float().square().sum(), [x])
    assert g_got.dtype == torch.float32
    assert float((g_got - g_ref).abs().max() / g_ref.abs().max()) < 1e-2


@pytest.mark.parametrize("stride", [(1, 2, 2), (1, 4, 4), (2, 8, 8)])
def test_large_strides_take_the_rewrite_in_bf16_only(stride: tuple[int, int, int]) -> None:
    """In fp32 the module's own backward was faster for strides beyond 2 (or a product beyond 4),
    in bf16 the rewrite was faster for every stride; the gradients agree either way."""
    torch.manual_seed(0)
    conv = nn.Conv3d(6, 6, 3, stride=stride, padding=1, groups=6).requires_grad_(False)
    x = torch.randn(2, 6, 5, 19, 19, requires_grad=True)
    wrapped = DepthwiseConv3d(conv)
    large = max(stride) > 2
    y = wrapped(x)
    assert (y.grad_fn.name() == "_DepthwiseInputGradBackward") != large
    (g32,) = torch.autograd.grad(y.square().sum(), [x])
    (ref,) = torch.autograd.grad(conv(x).square().sum(), [x])
    assert torch.allclose(g32, ref, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb, yb_ref = wrapped(x), conv(x)
    assert yb.grad_fn.name() == "_DepthwiseInputGradBackward" and torch.equal(yb, yb_ref)
    (gb,) = torch.autograd.grad(yb.float().square().sum(), [x])
    (gb_ref,) = torch.autograd.grad(yb_ref.float().square().sum(), [x])
    assert gb.dtype == torch.float32
    assert float((gb - gb_ref).abs().max() / gb_ref.abs().max()) < 1e-2


class _ChannelWise(nn.Module):
    """X3D's pattern: pointwise, batch norm, depthwise (stride 1, then (1, 2, 2)), batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 8, (1, 3, 3), padding=(0, 1, 1))
        self.expand = nn.Sequential(nn.Conv3d(8, 16, 1), nn.BatchNorm3d(16), nn.ReLU())
        self.dw1 = nn.Sequential(nn.Conv3d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm3d(16), nn.ReLU())
        self.dw2 = nn.Conv3d(16, 16, 3, stride=(1, 2, 2), padding=1, groups=16)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dw2(self.dw1(self.expand(self.stem(x)))).mean(dim=(2, 3, 4)))


def test_the_suffix_with_depthwise_input_gradients_gives_the_models_logits_and_gradients() -> None:
    torch.manual_seed(0)
    model = _ChannelWise()
    with torch.no_grad():  # batch norm statistics that change the function
        for bn in (model.expand[1], model.dw1[1]):
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    before = snapshot(model)
    x = torch.randn(1, 3, 4, 10, 10, generator=torch.Generator().manual_seed(1))
    run = suffix_against_whole(model, "stem", x)
    assert "depthwise input gradients as convolutions" in run["note"]
    assert torch.allclose(run["out"], run["ref"], atol=1e-5)
    (grad,), (grad_ref,) = run["grads"], run["grads_ref"]
    assert float((grad - grad_ref).abs().max() / grad_ref.abs().max()) < 1e-5
    assert type(model.dw1[0]) is nn.Conv3d and type(model.dw2) is nn.Conv3d  # the user's modules stay
    after = snapshot(model)
    assert after["hooks"] == 0 and after["requires_grad"] == before["requires_grad"]


def test_a_network_without_depthwise_convolutions_is_left_alone() -> None:
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.ReLU(), nn.Conv3d(4, 4, 3, groups=2))
    assert fast_depthwise(torch.fx.symbolic_trace(model)) is None
