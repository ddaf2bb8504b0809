"""Fused attention in the suffix of torchvision's MViT and Swin3D: the rewritten suffix gives the
model's logits and the same gradients with respect to the bottleneck, in every variant the
rewrite handles (relative positions between grids of different sizes, residual pooling with and
without the class token, no relative positions; shifted windows with padding, windows clipped to
a small input), and an explanation with it equals one through the whole network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.video.mvit import MSBlockConfig, MViT
from torchvision.models.video.swin_transformer import SwinTransformer3d

import video_iba
from video_iba.bottleneck.attention import fuse_attention, shift_mask
from video_iba.bottleneck.insertion import frozen
from video_iba.models import TokenLayout

from ..nets import snapshot, split_suffix, suffix_against_whole


def _mvit(rel_pos: bool, with_cls: bool) -> nn.Module:
    torch.manual_seed(0)
    blocks = [MSBlockConfig(num_heads=h, input_channels=i, output_channels=o, kernel_q=[3, 3, 3],
                            kernel_kv=[3, 3, 3], stride_q=sq, stride_kv=skv)
              for h, i, o, sq, skv in ((1, 16, 16, [1, 1, 1], [1, 4, 4]), (2, 16, 32, [1, 2, 2], [1, 2, 2]),
                                       (2, 32, 32, [1, 1, 1], [2, 1, 1]))]
    model = MViT(spatial_size=(64, 64), temporal_size=8, block_setting=blocks, residual_pool=True,
                 residual_with_cls_embed=with_cls, rel_pos_embed=rel_pos, proj_after_attn=True, num_classes=5)
    with torch.no_grad():  # random relative-position tables (they start at zero), visible in the logits
        for name, p in model.named_parameters():
            if "rel_pos" in name:
                p.normal_(0, 0.5)
    return model.eval()


def _swin() -> nn.Module:
    torch.manual_seed(0)
    return SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                             window_size=[2, 4, 4], num_classes=5).eval()


CASES = {
    # MViT: the first block's queries on a 4x16x16 grid, keys pooled to 4x4x4; then grids of
    # different sizes in each direction (relative positions resampled)
    "mvit_relpos": (lambda: _mvit(True, False), (1, 3, 8, 64, 64), "conv_proj", None),
    "mvit_relpos_cls": (lambda: _mvit(True, True), (1, 3, 8, 64, 64), "blocks.0",
                        TokenLayout(grid_index=1, prefix=1)),
    "mvit_plain": (lambda: _mvit(False, False), (1, 3, 8, 64, 64), "conv_proj", None),
    # Swin3D: 3x10x10 patches, windows 2x4x4 padded to 4x12x12 and shifted; then 3x5x5 after merging
    "swin": (_swin, (1, 3, 6, 40, 40), "patch_embed", TokenLayout(channels_last=True)),
    # windows clipped to a small input (no shift along time)
    "swin_small": (_swin, (1, 3, 2, 32, 32), "features.0", TokenLayout(channels_last=True)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_fused_suffix_gives_the_models_logits_and_gradients(case: str) -> None:
    make, shape, layer, layout = CASES[case]
    model = make()
    before = snapshot(model)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    run = suffix_against_whole(model, layer, x, layout)
    assert "attention fused" in run["note"]
    assert ("token poolings read in place" in run["note"]) == case.startswith("mvit")  # MViT's only (token_pool)
    fused, ref, g_fused, g_ref = run["out"], run["ref"], run["grads"], run["grads_ref"]
    assert torch.allclose(fused, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    assert float((ref[0] - ref[1]).abs().max()) > 1e-3 * float(ref.abs().max())  # they depend on the input
    for a, b in zip(g_fused, g_ref):
        err = float((a - b).abs().max() / b.abs().max())
        assert err < 1e-4, err
    after = snapshot(model)
    assert after["hooks"] == 0 and after["requires_grad"] == before["requires_grad"]
    assert after["training"] == before["training"]


def test_only_torchvision_attention_is_rewritten() -> None:
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 4, 8, 8))
    assert fuse_attention(torch.fx.symbolic_trace(model)) is None


def test_shift_mask_separates_the_regions_a_cyclic_shift_brings_together() -> None:
    mask = shift_mask((4, 4, 4), (2, 2, 2), (1, 1, 0), torch.device("cpu"))
    assert mask.shape == (8, 8, 8)
    assert (mask[0] == 0).all()  # the first window is not wrapped
    last = mask[-1]  # wrapped along t and h: 4 regions of 2 tokens (the w pairs)
    assert int((last == 0).sum()) == 4 * 2 * 2 and set(last.unique().tolist()) == {-100.0, 0.0}


def test_an_explanation_with_fused_attention_equals_one_through_the_whole_network() -> None:
    model = _mvit(True, False)
    x = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(2))
    fused = video_iba.explain(model, x, 1, layer="conv_proj", steps=3, samples=3, seed=0)
    whole = video_iba.explain(model, x, 1, layer="conv_proj", steps=3, samples=3, seed=0, split="hook")
    assert "attention fused" in fused.meta["prefix_note"] and not whole.meta["prefix_cached"]
    a, b = fused.bits.numpy().ravel(), whole.bits.numpy().ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.9999 and abs(a.sum() - b.sum()) < 1e-3 * b.sum()


@pytest.mark.parametrize("case, attention_type", [("swin", torch.float32), ("mvit_relpos", torch.bfloat16)])
def test_under_bf16_autocast_swin_window_attention_computes_in_fp32(case: str, attention_type: torch.dtype,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU, bf16 SDPA took 1.5-1.7x fp32's time on Swin3D's windows: there the attention runs
    in fp32 and hands bf16 on; MViT's stays in bf16. The logits stay those of the model under
    autocast."""
    make, shape, layer, layout = CASES[case]
    model = make()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    seen: list[torch.dtype] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        seen.append(q.dtype)
        return real(q, *args, **kwargs)  # type: ignore[arg-type]

    with frozen(model):
        runner, taps, logits = split_suffix(model, layer, x, layout)
        assert "attention fused" in runner.note
        with torch.no_grad():
            monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = runner(taps.parts)
                ref = model(x)
    assert seen and set(seen) == {attention_type}
    assert out.dtype == ref.dtype and float((out.float() - logits).abs().max()) < 0.05 * float(logits.abs().max())
    assert float((out.float() - ref.float()).abs().max()) < 0.05 * float(logits.abs().max())
