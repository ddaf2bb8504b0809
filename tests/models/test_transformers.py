"""The registry's video transformers (MViT, Swin3D): layouts in their specs, token layers listed with
their grids, and a clip explained end to end at a token layer with random weights."""

from __future__ import annotations

import pytest
import torch

import video_iba
from video_iba.models import get_spec, layers

from ..nets import snapshot

TRANSFORMERS = ("mvit_v1_b", "mvit_v2_s", "swin3d_t", "swin3d_s", "swin3d_b")


def test_token_layers_are_listed_with_their_grid() -> None:
    mvit = {li.name: li for li in layers("mvit_v2_s")}
    assert mvit["conv_proj"].layout is None and mvit["conv_proj"].shape == (1, 96, 8, 56, 56)
    assert (mvit["blocks.0"].grid, mvit["blocks.0"].prefix) == ((8, 56, 56), 1)
    assert (mvit["blocks.1"].grid, mvit["blocks.3"].grid, mvit["blocks.15"].grid) == ((8, 28, 28), (8, 14, 14), (8, 7, 7))
    assert mvit["blocks.15"].describe_tokens() == "grid 8x7x7 (t h w) + 1 prefix"
    assert mvit["pos_encoding"].grid == (8, 56, 56) and mvit["norm"].grid == (8, 7, 7)
    swin = {li.name: li for li in layers("swin3d_t")}
    assert swin["patch_embed"].grid == (16, 56, 56) and swin["patch_embed"].prefix == 0
    assert swin["features.5"].grid == (16, 7, 7) and swin["features.5"].describe_tokens() == "grid 16x7x7 (channels last)"


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_a_registry_transformer_explains_a_clip_at_a_token_block(name: str) -> None:
    spec = get_spec(name)
    assert spec.layout(spec.layers[0]) is None or spec.layout(spec.layers[0]).prefix == 0  # type: ignore[union-attr]
    model = video_iba.load_model(name, weights="random")
    before = snapshot(model)
    frames = spec.frames if name.startswith("mvit") else 4  # MViT's positions fix 16 frames; Swin3D takes any
    clip = torch.randn(1, 3, frames, 224, 224, generator=torch.Generator().manual_seed(0))
    layer = "blocks.3" if name.startswith("mvit") else "features.2"
    a = video_iba.explain(model, clip, layer=layer, steps=1, samples=2, seed=0)
    assert a.bits.shape == (frames, 224, 224) and a.total_bits > 0 and a.meta["prefix_cached"] is True
    if name.startswith("mvit"):  # the class token is restricted too, and reported on its own
        assert a.arrays["prefix_bits"].shape == (1,) and a.meta["prefix_bits"] > 0
        assert tuple(a.capacity.shape) == (384, 8, 14, 14)  # type: ignore[union-attr]
    else:
        assert "prefix_bits" not in a.meta and tuple(a.capacity.shape[1:]) == (2, 28, 28)  # type: ignore[union-attr]
    after = snapshot(model)
    assert after["hooks"] == 0 and after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]


@pytest.mark.parametrize("name", ["mvit_v2_s", "swin3d_t"])
def test_gradcam_on_a_registry_transformer_uses_its_last_reachable_token_grid(name: str) -> None:
    model = video_iba.load_model(name, weights="random")
    frames = 16 if name.startswith("mvit") else 4
    clip = torch.randn(1, 3, frames, 224, 224, generator=torch.Generator().manual_seed(0))
    a = video_iba.attribute("gradcam", model, clip)
    assert a.meta["cam_layer"] == get_spec(name).cam_layer and a.values.shape == (frames, 224, 224)
    assert float(a.values.max()) > 0 and snapshot(model)["hooks"] == 0
