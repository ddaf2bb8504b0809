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


def test_transformers_default_to_their_own_settings_and_every_setting_can_be_changed() -> None:
    from video_iba.workflows.session import Settings

    ours = video_iba.IBAConfig(beta=1.0, alpha_init=0.0)
    assert video_iba.IBAConfig.for_transformers() == ours
    for name in (*TRANSFORMERS, "hf:MCG-NJU/videomae-base-finetuned-kinetics", "hf:facebook/timesformer-base-finetuned-k400"):
        assert get_spec(name).config() == ours, name
    for name in ("resnet50", "r3d_18", "slowfast_r50", "x3d_xs"):
        assert get_spec(name).config() == video_iba.IBAConfig(), name  # CNNs: the paper's
    mvit = get_spec("mvit_v2_s")
    assert Settings().config_for(mvit) == ours
    assert Settings(changes={"steps": 30, "beta": 10}).config_for(mvit) == ours.replace(steps=30, beta=10.0)
    assert Settings(config=video_iba.IBAConfig()).config_for(mvit) == video_iba.IBAConfig()  # explicit: exactly that
    assert Settings(changes={"steps": 3}).config_for(get_spec("resnet50")) == video_iba.IBAConfig(steps=3)
    with pytest.raises(video_iba.UserInputError, match="unknown setting 'betta'"):
        Settings(changes={"betta": 3}).config_for(mvit)


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
    assert (a.meta["beta"], a.meta["alpha_init"]) == (1.0, 0.0)  # the transformers' defaults, recorded
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


def test_the_models_file_names_a_known_preset_or_valid_settings() -> None:
    from video_iba.models.registry import load_video_specs

    entry = ("m:\n  family: torchvision\n  frames: 4\n  rate: 1\n  side: 64\n  crop: 56\n  mean: [0, 0, 0]\n"
             "  std: [1, 1, 1]\n  layers: [a]\n  labels: kinetics400\n  iba: {}\n")
    assert load_video_specs(entry.format("transformer"))["m"].config() == video_iba.IBAConfig.for_transformers()
    assert load_video_specs(entry.format("{steps: 30}"))["m"].config() == video_iba.IBAConfig(steps=30)
    with pytest.raises(ValueError, match="unknown iba preset 'transformers'"):
        load_video_specs(entry.format("transformers"))
    with pytest.raises(video_iba.UserInputError, match="unknown setting 'step'"):
        load_video_specs(entry.format("{step: 30}"))
