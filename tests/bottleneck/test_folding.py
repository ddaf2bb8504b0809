"""Folds of the split suffix for networks ported from TensorFlow (EfficientNet-Lite's modules): a
zero padding before a convolution done by the convolution itself, and a batch norm after a
convolution called as a function folded into its weights; what is folded, what is kept, that the
explanation does not change and the user's model is left as it was."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import video_iba
from video_iba.bottleneck.insertion import frozen

from ..nets import split_suffix


class Padded(nn.Module):
    """Paddings of every kind the suffix may meet after ``stem``."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pad_a = nn.ZeroPad2d(1)  # as TensorFlow ports pad a stride-1 convolution: folded
        self.w_a = nn.Parameter(torch.randn(8, 1, 3, 3, generator=g) * 0.3)
        self.pad_b = nn.ZeroPad2d((1, 1, 2, 2))  # the same on both sides of each dimension: folded
        self.conv_b = nn.Conv2d(8, 8, (5, 3))
        self.w_e = nn.Parameter(torch.randn(8, 8, 3, 3, generator=g) * 0.2)
        self.pad_c = nn.ZeroPad2d((0, 1, 0, 1))  # one-sided: kept
        self.conv_c = nn.Conv2d(8, 8, 3, stride=2)
        self.pad_d = nn.ConstantPad2d(1, 0.5)  # not zeros: kept
        self.conv_d = nn.Conv2d(8, 8, 3)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(F.conv2d(self.pad_a(x), self.w_a, None, 1, 0, 1, 8))
        x = torch.relu(self.conv_b(self.pad_b(x)))
        x = torch.relu(F.conv2d(F.pad(x, (1, 1, 1, 1)), self.w_e, padding=1))  # pads added to the conv's own
        shared = F.pad(x, (2, 2, 2, 2))  # read twice: kept
        x = torch.relu(F.conv2d(shared, self.w_e, padding=0))[..., :16, :16] + shared[..., 2:18, 2:18]
        x = torch.relu(self.conv_c(self.pad_c(x)))
        x = self.conv_d(self.pad_d(x))
        return self.head(x.mean(dim=(2, 3)))


def _pads(gm: torch.fx.GraphModule) -> list[str]:
    modules = dict(gm.named_modules())
    return sorted(str(n.target) if n.op == "call_module" else "F.pad" for n in gm.graph.nodes
                  if (n.op == "call_module" and isinstance(modules[n.target], nn.ConstantPad2d))
                  or n.target is F.pad)


def test_only_zero_paddings_equal_on_both_sides_and_read_once_are_folded() -> None:
    torch.manual_seed(0)
    model = Padded().eval()
    x = torch.randn(1, 3, 16, 16)
    with frozen(model):
        runner, taps, logits = split_suffix(model, "stem", x)
        assert "zero padding done by the convolutions" in runner.note
        assert _pads(runner._suffix) == ["F.pad", "pad_c", "pad_d"]  # the shared one, one-sided, not zeros
        with torch.no_grad():
            z = taps.parts[0] * 0.7 + 0.1
            torch.testing.assert_close(runner([z]), _whole_after_stem(model, z), rtol=0, atol=1e-5)
    assert isinstance(model.pad_a, nn.ZeroPad2d) and model.conv_b.padding == (0, 0)  # the model as it was


def _whole_after_stem(model: Padded, z: torch.Tensor) -> torch.Tensor:
    handle = model.stem.register_forward_hook(lambda *_: z)
    try:
        return model(torch.zeros(z.shape[0], 3, 16, 16))
    finally:
        handle.remove()


def test_an_explanation_is_the_same_with_the_paddings_folded() -> None:
    torch.manual_seed(0)
    model = Padded().eval()
    x = torch.randn(1, 3, 16, 16)
    folded = video_iba.explain(model, x, layer="stem", seed=3, steps=3)
    assert "zero padding done by the convolutions" in folded.meta["prefix_note"]
    whole = video_iba.explain(model, x, layer="stem", seed=3, steps=3, split="hook")
    torch.testing.assert_close(folded.bits, whole.bits, rtol=1e-4, atol=1e-6)


class SamePadConv(nn.Conv2d):
    """A convolution that pads itself first, as TensorFlow's "same" (EfficientNet-Lite's module)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride=stride, groups=groups, bias=False)
        total = max(k - stride, 0)
        self.static_padding = nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.static_padding(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class Ported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand, self.bn0 = SamePadConv(8, 24, 1), nn.BatchNorm2d(24)
        self.depthwise, self.bn1 = SamePadConv(24, 24, 3, groups=24), nn.BatchNorm2d(24)
        self.down, self.bn2 = SamePadConv(24, 8, 3, stride=2), nn.BatchNorm2d(8)  # one-sided padding, kept
        self.head = nn.Linear(8, 5)
        g = torch.Generator().manual_seed(1)
        for bn in (self.bn0, self.bn1, self.bn2):  # statistics of a trained network, not the identity
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.data.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.data.copy_(torch.randn(bn.num_features, generator=g) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = F.relu6(self.bn0(self.expand(x)))
        x = F.relu6(self.bn1(self.depthwise(x)))
        x = self.bn2(self.down(x))
        return self.head(x.mean(dim=(2, 3)))


def test_a_batch_norm_after_a_convolution_called_as_a_function_is_folded_in_a_private_copy() -> None:
    torch.manual_seed(0)
    model = Ported().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 16, 16)
    with frozen(model):
        runner, taps, logits = split_suffix(model, "stem", x)
        modules = dict(runner._suffix.named_modules())
        left = [str(n.target) for n in runner._suffix.graph.nodes
                if n.op == "call_module" and isinstance(modules[n.target], nn.BatchNorm2d)]
        assert left == [] and "batch norm folded into the convolutions" in runner.note
        assert _pads(runner._suffix) == ["down.static_padding"]  # the depthwise one folded
        with torch.no_grad():
            z = taps.parts[0] * 0.7 + 0.1
            torch.testing.assert_close(runner([z]), _whole_after_stem(model, z), rtol=1e-5, atol=1e-5)
    attr = video_iba.explain(model, x, layer="stem", seed=3, steps=3)
    whole = video_iba.explain(model, x, layer="stem", seed=3, steps=3, split="hook")
    torch.testing.assert_close(attr.bits, whole.bits, rtol=1e-3, atol=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
