"""SlowFast-style networks built from pytorchvideo's own blocks: one bottleneck per pathway,
before the lateral fusion, with only the blocks after it run at each step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import video_iba
from video_iba.models import slow_and_fast

pytest.importorskip("pytorchvideo")


def _pack(clip: torch.Tensor) -> list[torch.Tensor]:
    """The tiny network's pathways: every 4th frame (slow), all frames (fast)."""
    return [clip[:, :, ::4], clip]


def _tiny_slowfast() -> nn.Module:
    from pytorchvideo.models.net import MultiPathWayWithFuse, Net
    from pytorchvideo.models.slowfast import FuseFastToSlow, PoolConcatPathway

    def fuse(fast_ch: int, slow_ch: int) -> nn.Module:
        return FuseFastToSlow(conv_fast_to_slow=nn.Conv3d(fast_ch, slow_ch, (5, 1, 1), stride=(4, 1, 1), padding=(2, 0, 0)),
                              norm=nn.BatchNorm3d(slow_ch), activation=nn.ReLU())

    stem = MultiPathWayWithFuse(
        multipathway_blocks=nn.ModuleList([nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU()),
                                           nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU())]),
        multipathway_fusion=fuse(4, 8))
    stage = MultiPathWayWithFuse(
        multipathway_blocks=nn.ModuleList([nn.Sequential(nn.Conv3d(16, 8, 3, padding=1, stride=(1, 2, 2)), nn.ReLU()),
                                           nn.Sequential(nn.Conv3d(4, 4, 3, padding=1, stride=(1, 2, 2)), nn.ReLU())]),
        multipathway_fusion=fuse(4, 8))
    pool = PoolConcatPathway(retain_list=False, pool=nn.ModuleList([nn.AdaptiveAvgPool3d(1), nn.AdaptiveAvgPool3d(1)]))
    head = nn.Sequential(nn.Flatten(), nn.Linear(20, 6))
    return Net(blocks=nn.ModuleList([stem, stage, pool, head])).eval()


def test_pathway_bottlenecks_before_the_fusion_run_only_the_later_blocks() -> None:
    torch.manual_seed(0)
    model = _tiny_slowfast()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 8, 16, 16, generator=g)
    before = x.clone()
    layers = ["blocks.1.multipathway_blocks.0", "blocks.1.multipathway_blocks.1"]
    fast = video_iba.explain(model, x, layer=layers, seed=0, steps=4, samples=3, pack=_pack)
    assert fast.meta["prefix_cached"] is True and "sequential blocks" in fast.meta["prefix_note"]
    assert torch.equal(x, before)  # the network overwrites the pathway lists it gets, never the clip
    assert fast.bits.shape == (8, 16, 16) and len(fast.meta["bits_per_layer"]) == 2
    full = video_iba.explain(model, x, layer=layers, seed=0, steps=4, samples=3, split="hook", pack=_pack)
    torch.testing.assert_close(fast.bits, full.bits, rtol=1e-4, atol=1e-8)
    # the pathways may be named in any order
    swapped = video_iba.explain(model, x, layer=layers[::-1], seed=0, steps=2, samples=2, pack=_pack)
    assert swapped.meta["prefix_cached"] is True
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_a_single_pathway_bottleneck_cannot_be_split_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    model = _tiny_slowfast()
    x = torch.randn(1, 3, 8, 16, 16)
    with caplog.at_level("WARNING"):
        attr = video_iba.explain(model, x, layer="blocks.1.multipathway_blocks.0", seed=0, steps=2, samples=2,
                                 pack=_pack)
    assert attr.meta["prefix_cached"] is False and "every pathway" in attr.meta["prefix_note"]


@pytest.mark.slow
def test_slowfast_r50_at_full_size_with_random_weights() -> None:
    from pytorchvideo.models import hub

    torch.manual_seed(0)
    model = hub.slowfast_r50(pretrained=False).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 32, 224, 224, generator=g)
    layers = ["blocks.2.multipathway_blocks.0", "blocks.2.multipathway_blocks.1"]
    attr = video_iba.explain(model, x, layer=layers, seed=0, steps=2, samples=2, pack=lambda c: slow_and_fast(c, 4))
    assert attr.meta["prefix_cached"] is True
    assert attr.bits.shape == (32, 224, 224)
    assert [tuple(c.shape) for c in attr.capacity] == [(512, 8, 28, 28), (64, 32, 28, 28)]  # type: ignore[union-attr]
    assert np.isfinite(attr.total_bits) and attr.total_bits > 0
