"""torchvision's image transformers (ViT, Swin) in the registry: token layouts, the patch embedding
as the default layer, Grad-CAM's layer, and a photo explained end to end with random weights."""

from __future__ import annotations

import os

import pytest
import torch

import video_iba
from video_iba.methods.readout import new_readout
from video_iba.models import get_spec, layers
from video_iba.models.registry import model_spec

from ..helpers import run_cli
from ..nets import snapshot


def _photo() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def test_vit_and_swin_specs_give_layouts_a_default_layer_and_the_transformer_settings() -> None:
    vit, swin = get_spec("vit_b_16"), get_spec("swin_t")
    assert vit.default_layer == "conv_proj" and vit.layout("conv_proj") is None  # a conv map, no prefix
    lay = vit.layout("encoder.layers.encoder_layer_3")
    assert lay is not None and (lay.grid, lay.prefix) == ((14, 14), 1)
    assert vit.cam_layer == "encoder.layers.encoder_layer_10"  # the last whose grid tokens reach the class token
    big = get_spec("vit_h_14")
    assert big.layout("encoder.ln").grid == (37, 37) and big.cam_layer == "encoder.layers.encoder_layer_30"  # type: ignore[union-attr]
    assert swin.default_layer == "features.0" and swin.layout("features.0").channels_last  # type: ignore[union-attr]
    assert swin.layout("features.0.0") is None  # the patch convolution itself is channels first
    assert swin.layout("features.3.1.attn") is not None and swin.cam_layer == "norm"
    v2 = get_spec("swin_v2_t")  # its position-bias MLP outputs a table, not the image's cells
    assert v2.layout("features.1.0.attn.cpb_mlp.0") is None and v2.layout("features.1.0") is not None
    for spec in (vit, swin, get_spec("swin_v2_t")):
        assert spec.config() == video_iba.IBAConfig.for_transformers(), spec.name
    assert get_spec("resnet50").layouts == () and get_spec("maxvit_t").layouts == ()
    listed = {li.name: li for li in layers("vit_b_16")}
    assert listed["encoder.layers.encoder_layer_0"].describe_tokens() == "grid 14x14 + 1 prefix"
    listed = {li.name: li for li in layers("vit_h_14")}  # random weights built for its 518-pixel input
    assert listed["conv_proj"].shape == (1, 1280, 37, 37) and listed["encoder.ln"].grid == (37, 37)
    listed = {li.name: li for li in layers("swin_t")}
    assert listed["features.0"].grid == (56, 56) and listed["features.0.0"].layout is None


def test_a_vit_explains_a_photo_at_a_block_with_its_class_token_restricted() -> None:
    model = video_iba.load_model("vit_b_16", weights="random")
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    before = snapshot(model)
    a = video_iba.explain(model, _photo(), layer="encoder.layers.encoder_layer_1", steps=1, samples=2, seed=0)
    assert a.bits.shape == (224, 224) and a.total_bits > 0 and a.meta["prefix_cached"] is True
    assert tuple(a.capacity.shape) == (768, 14, 14) and a.meta["prefix_bits"] > 0  # type: ignore[union-attr]
    assert (a.meta["beta"], a.meta["alpha_init"]) == (1.0, 0.0)
    assert tuple(a.capacity.shape) == (768, 14, 14)  # type: ignore[union-attr]  # a photo's grid: a 2-D map
    photos = [torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(i)) for i in (1, 2)]
    readout = new_readout(model, photos[0][:1], lambda: photos, layers=["conv_proj"])  # heads read a token grid
    assert readout.spec.readouts == ["conv_proj", "encoder.layers.encoder_layer_10"]
    r = video_iba.explain_readout(model, readout, _photo())
    assert r.values.shape == (224, 224) and r.total_bits > 0
    cam = video_iba.attribute("gradcam", model, _photo())
    assert cam.meta["cam_layer"] == "encoder.layers.encoder_layer_10" and cam.values.shape == (224, 224)
    assert float(cam.values.max()) > 0
    one_frame = video_iba.attribute("gradcam", model, _photo(), tokens=video_iba.TokenLayout(grid=(1, 14, 14), prefix=1))
    torch.testing.assert_close(one_frame.values, cam.values)  # a grid given as one frame: the same 2-D map
    after = snapshot(model)
    assert after["hooks"] == 0 and after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]


def test_a_model_whose_logits_are_all_equal_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    model = video_iba.load_model("vit_b_16", weights="random")  # zero head: every logit is 0
    with pytest.raises(video_iba.UserInputError, match="does not depend on this layer.*zero-initialised head"):
        video_iba.attribute("gradcam", model, _photo())
    with caplog.at_level("WARNING"):
        video_iba.explain(model, _photo(), steps=1, samples=2)
    assert any("all 1000 classes the same logit" in r.getMessage() for r in caplog.records)


def test_equal_probabilities_are_listed_in_index_order_as_the_top1_target(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    # before: a photo's top-5 came from an unstable sort, "predicted: mountain tent" above "explained: tench"
    code, stdout, err = run_cli(["explain", os.path.join(photo_dir, "coffee.jpg"), "--model", "vit_b_16", "--weights",
                                 "random", "--method", "saliency", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    meta = video_iba.load(tmp_path / "o" / "coffee.npz").meta
    assert meta["target"] == 0 and [name for name, _ in meta["top5"]] == ["tench", "goldfish", "great white shark",
                                                                          "tiger shark", "hammerhead"]
    assert "predicted: tench (0.1%), goldfish (0.1%)" in stdout


def test_a_swin_explains_a_photo_at_its_channels_last_patch_embedding(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    photo = os.path.join(photo_dir, "coffee.jpg")
    code, stdout, err = run_cli(["explain", photo, "--model", "swin_t", "--weights", "random", "--steps", "1",
                                 "--samples", "2", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    a = video_iba.Attribution.load(tmp_path / "o" / "coffee.npz")
    assert a.meta["layer"] == "features.0" and a.bits.shape == (224, 224) and a.total_bits > 0
    assert tuple(a.capacity.shape) == (96, 56, 56)  # type: ignore[union-attr]
    assert (a.meta["beta"], a.meta["alpha_init"]) == (1.0, 0.0)
    code, _, err = run_cli(["explain", photo, "--model", "swin_t", "--weights", "random", "--method", "gradcam",
                            "--out", str(tmp_path / "g")], capsys)
    assert code == 0, err
    cam = video_iba.Attribution.load(tmp_path / "g" / "coffee.npz")
    assert cam.meta["cam_layer"] == "norm" and float(cam.values.max()) > 0
    assert sorted(os.listdir(tmp_path / "g")) == ["coffee.npz", "coffee.png"]


def test_named_weights_bring_their_own_preprocessing(photo_dir, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torchvision

    swag = model_spec("vit_b_16", weights="IMAGENET1K_SWAG_E2E_V1")
    assert (swag.input_size, swag.resize, swag.layout("encoder.ln").grid) == (384, 384, (24, 24))  # type: ignore[union-attr]
    v2 = model_spec("resnet50", weights="IMAGENET1K_V2")
    assert (v2.input_size, v2.resize, v2.default_layer) == (224, 232, "layer2")
    assert model_spec("resnet50", weights="random").resize == 256 == model_spec("resnet50", weights="x.pt").resize

    build = torchvision.models.get_model

    def offline(name, weights=None, **kwargs):  # type: ignore[no-untyped-def]  # no download here: random weights
        size = {"image_size": weights.meta["min_size"][0]} if weights is not None else {}
        return build(name, weights=None, **{**kwargs, **size})

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    photo = os.path.join(photo_dir, "coffee.jpg")
    code, _, err = run_cli(["explain", photo, "--model", "vit_b_16", "--weights", "IMAGENET1K_SWAG_E2E_V1", "--steps",
                            "1", "--samples", "2", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    a = video_iba.Attribution.load(tmp_path / "o" / "coffee.npz")
    assert a.meta["input_shape"] == [1, 3, 384, 384] and tuple(a.capacity.shape) == (768, 24, 24)  # type: ignore[union-attr]
    assert a.bits.shape == (384, 384) and a.meta["weights"] == "IMAGENET1K_SWAG_E2E_V1"
