"""MViT's token poolings read in place in the split suffix: the same tokens as the model's own
transposes, for tokens laid out in one block and for the queries of several heads (a view of the
projection), channels-last and contiguous outputs; every pooling of a small MViT rewritten, none
of another network."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.video.mvit import MSBlockConfig, MViT

from video_iba.bottleneck.insertion import frozen
from video_iba.bottleneck.split import _LeafTracer
from video_iba.bottleneck.token_pool import pool_in_place, pool_input, pooled_tokens

from ..nets import split_suffix


def _own_pooling(tokens: torch.Tensor, pool: nn.Module, thw: tuple[int, int, int]) -> torch.Tensor:
    """torchvision's ``Pool`` without its class token and norm: transpose, copy, pool, transpose."""
    b, n, _, c = tokens.shape
    y = pool(tokens.transpose(2, 3).reshape((b * n, c) + thw).contiguous())
    return y.reshape(b, n, c, -1).transpose(2, 3)


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("pool", [nn.Conv3d(8, 8, 3, stride=(1, 2, 2), padding=1, groups=8, bias=False),
                                  nn.MaxPool3d(3, stride=(1, 2, 2), padding=1)])
def test_tokens_read_in_place_pool_as_the_models_transposes(heads: int, pool: nn.Module) -> None:
    torch.manual_seed(0)
    thw = (2, 6, 6)
    # the keys of `heads` heads as the attention makes them: a view of one projection
    qkv = torch.randn(2, 72, 3, heads, 8, requires_grad=True)
    keys = qkv.transpose(1, 3).unbind(2)[1]  # (2, heads, 72, 8)
    got = pooled_tokens(pool(pool_input(keys, (2 * heads, 8) + thw)), 2, heads)
    want = _own_pooling(keys, pool, thw)
    assert got.shape == want.shape == (2, heads, 18, 8)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    (g_got,) = torch.autograd.grad(got, qkv, g)
    (g_want,) = torch.autograd.grad(want, qkv, g)
    torch.testing.assert_close(g_got, g_want)


def test_pooled_tokens_are_a_view_of_either_layout() -> None:
    y = torch.randn(4, 8, 2, 3, 3)
    last = y.contiguous(memory_format=torch.channels_last_3d)
    for out in (y, last):
        tokens = pooled_tokens(out, 2, 2)
        assert tokens.data_ptr() == out.data_ptr()  # no copy
        torch.testing.assert_close(tokens, y.reshape(2, 2, 8, -1).transpose(2, 3))


def _mvit() -> nn.Module:
    torch.manual_seed(0)
    blocks = [MSBlockConfig(num_heads=h, input_channels=i, output_channels=o, kernel_q=[3, 3, 3],
                            kernel_kv=[3, 3, 3], stride_q=sq, stride_kv=skv)
              for h, i, o, sq, skv in ((1, 16, 16, [1, 1, 1], [1, 4, 4]), (2, 16, 32, [1, 2, 2], [1, 2, 2]))]
    return MViT(spatial_size=(32, 32), temporal_size=4, block_setting=blocks, residual_pool=True,
                residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True, num_classes=5).eval()


def test_every_pooling_of_mvit_is_rewritten_and_nothing_else() -> None:
    model = _mvit()
    gm = torch.fx.GraphModule(model, _LeafTracer([]).trace(model))
    rewritten = pool_in_place(gm)
    assert rewritten is not None
    pools = [n for n in rewritten.graph.nodes if n.op == "call_module" and n.target.endswith(".pool")]
    # per block: the queries', keys' and values' pooling and, where the queries are strided, the
    # skip connection's max pooling
    assert len(pools) == 3 + 3 + 1
    assert all(n.args[0].target is pool_input for n in pools)
    assert not any(n.op == "call_method" and n.target == "contiguous" for n in rewritten.graph.nodes)
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), model(x))
    plain = nn.Sequential(nn.Conv3d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    plain(torch.zeros(1, 3, 4, 8, 8))
    assert pool_in_place(torch.fx.symbolic_trace(plain)) is None


def test_the_split_suffix_uses_it_and_leaves_the_model_alone() -> None:
    model = _mvit()
    forwards = {name: type(m).forward for name, m in model.named_modules()}
    x = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with frozen(model):
        runner, taps, logits = split_suffix(model, "conv_proj", x)
        assert "token poolings read in place" in runner.note
        with torch.no_grad():
            torch.testing.assert_close(runner(taps.parts), logits, rtol=1e-4, atol=1e-5)
    assert all("forward" not in vars(m) and type(m).forward is forwards[name] for name, m in model.named_modules())
