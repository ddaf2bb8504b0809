"""The video models of the registry: specs, weights, the inflated ImageNet network, short maps."""

from __future__ import annotations

import math
import os

import pytest
import torch

import video_iba
from video_iba import UserInputError
from video_iba.models import get_spec, kinetics400_labels, layers, pathways
from video_iba.models.registry import _VIDEO

from ..nets import Tiny3D
from ..nets import snapshot


def test_every_video_model_has_a_full_spec_and_its_layers_exist() -> None:
    for name in _VIDEO:
        spec = get_spec(name)
        assert spec.is_video and spec.frames > 0 and spec.sampling_rate > 0 and spec.input_size <= spec.resize
        assert len(spec.mean) == len(spec.std) == 3 and spec.weights_source
        table = {li.name: li.shape for li in layers(name)}
        for layer in spec.layers:
            assert layer in table and table[layer] is not None and len(table[layer]) == 5, (name, layer)
    sf = get_spec("slowfast_r50")
    assert sf.slowfast_alpha == 4 and len(sf.layers) == 2 and (sf.frames, sf.sampling_rate, sf.input_size) == (32, 2, 256)
    assert get_spec("r3d_18").mean == pytest.approx((0.43216, 0.394666, 0.37645))
    labels = kinetics400_labels()
    assert len(labels) == 400 and labels[0] == "abseiling" and labels[290] == "sharpening knives"


def test_slowfast_pathways_take_every_alpha_th_frame() -> None:
    clip = torch.arange(32.0).view(1, 1, 32, 1, 1).expand(1, 3, 32, 2, 2)
    slow, fast = pathways(get_spec("slowfast_r50"), clip)  # type: ignore[misc]
    assert fast is clip and slow.shape == (1, 3, 8, 2, 2)
    assert slow[0, 0, :, 0, 0].tolist() == [0, 4, 8, 13, 17, 22, 26, 31]  # evenly spaced over the clip
    assert pathways(get_spec("x3d_s"), clip) is clip


def test_pytorchvideo_weights_offline_error_and_hub_cache() -> None:
    with pytest.raises(UserInputError) as err:
        video_iba.load_model("x3d_xs")
    expected = os.path.join(torch.hub.get_dir(), "checkpoints", "X3D_XS.pyth")
    msg = str(err.value)
    assert expected in msg and "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/X3D_XS.pyth" in msg
    assert "give weights= a file path or 'random'" in msg and not os.path.exists(expected)  # no partial download left
    torch.manual_seed(3)
    ref = video_iba.load_model("x3d_xs", weights="random")
    os.makedirs(os.path.dirname(expected), exist_ok=True)
    torch.save({"model_state": ref.state_dict(), "epoch": 300}, expected)  # pytorchvideo's checkpoint layout
    loaded = video_iba.load_model("x3d_xs")
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_inflated_efficientnet_equals_the_2d_network_on_a_still_clip() -> None:
    net2d = video_iba.load_model("efficientnet_lite0")
    net3d = video_iba.load_model("efficientnet_lite0_i3d")
    torch.manual_seed(0)
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        still = net3d(img[:, :, None].expand(1, 3, 8, 224, 224).contiguous())
        ref = net2d(img)
        moving = net3d(torch.stack([torch.roll(img, 12 * k, dims=3) for k in range(8)], dim=2))
    assert torch.allclose(still, ref, atol=1e-4)
    # on a moving clip, every block mixes neighbouring frames: not the mean of per-frame logits
    with torch.no_grad():
        per_frame = torch.stack([net2d(torch.roll(img, 12 * k, dims=3)) for k in range(8)]).mean(0)
    assert not torch.allclose(moving, per_frame, atol=1e-2)


def test_feature_maps_of_two_frames() -> None:
    model = video_iba.load_model("r3d_18", weights="random")
    torch.manual_seed(0)
    clip = torch.randn(1, 3, 16, 112, 112)
    attr = video_iba.explain(model, clip, layer="layer4", seed=0, steps=2, samples=2)
    assert attr.capacity is not None and attr.capacity.shape == (512, 2, 7, 7)  # type: ignore[union-attr]
    assert attr.bits.shape == (16, 112, 112) and torch.isfinite(attr.bits).all()
    assert math.isclose(attr.total_bits, float(attr.capacity.double().sum()) / math.log(2), rel_tol=1e-5)  # type: ignore[union-attr]
    per_frame = video_iba.bottleneck.bits_per_frame(attr.bits)
    assert per_frame.shape == (16,) and math.isclose(float(per_frame.double().sum()), attr.total_bits, rel_tol=1e-5)
    assert torch.allclose(attr.bits_per_frame, per_frame.double())


def test_5d_model_left_as_it_was_and_per_frame_statistics() -> None:
    torch.manual_seed(0)
    model = Tiny3D()
    model.train()
    model.stem[0].training = False
    model.head.weight.requires_grad_(False)
    before = snapshot(model)
    clip = torch.randn(1, 3, 8, 16, 16)
    video_iba.explain(model, clip, layer="block", seed=0, steps=2)
    after = snapshot(model)
    assert after["training"] == before["training"] and after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == 0 and all(g is None for g in after["grads"].values())  # type: ignore[union-attr]
    per_frame = video_iba.estimate(model, [torch.randn(2, 3, 8, 16, 16) for _ in range(2)], layer="block", pool=())
    assert per_frame.mean.shape == (8, 4, 8, 8)
    attr = video_iba.explain(model, clip, layer="block", stats=per_frame, seed=0, steps=2)
    assert attr.meta["stats_source"] == "dataset"
    with pytest.raises(UserInputError, match="does not fit"):
        video_iba.explain(model, torch.randn(1, 3, 16, 16, 16), layer="block", stats=per_frame, steps=1)


def test_torchvision_video_entries_match_their_weights_transforms() -> None:
    import torchvision.models as tvm

    for name in ("r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v1_b", "mvit_v2_s", "swin3d_t", "swin3d_s", "swin3d_b"):
        spec = get_spec(name)
        t = tvm.get_model_weights(name).KINETICS400_V1.transforms()
        assert spec.input_size == t.crop_size[0] and spec.resize == t.resize_size[0], name
        assert spec.mean == pytest.approx(tuple(t.mean)) and spec.std == pytest.approx(tuple(t.std)), name


def test_video_spec_file_rejects_unknown_keys() -> None:
    from video_iba.models.registry import load_video_specs

    good = "m:\n  family: pytorchvideo\n  frames: 8\n  rate: 8\n  side: 256\n  crop: 256\n  mean: [0.4, 0.4, 0.4]\n" \
           "  std: [0.2, 0.2, 0.2]\n  layers: [blocks.2]\n  labels: kinetics400\n"
    spec = load_video_specs(good)["m"]
    assert (spec.frames, spec.sampling_rate, spec.default_layer, spec.slowfast_alpha) == (8, 8, "blocks.2", 0)
    with pytest.raises(ValueError, match="unknown keys"):
        load_video_specs(good + "  framez: 3\n")


def test_estimate_with_a_pool_per_layer_is_one_pass(caplog) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = Tiny3D().eval()
    data = [torch.randn(2, 3, 8, 16, 16) for _ in range(3)]
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        both = video_iba.estimate(model, iter(data), layer=["block", "block", "stem"],
                                  pools=[None, (1, 2, 3), (1, 2, 3)])
    finally:
        handle.remove()
    assert len(calls) == 3  # one forward pass per batch for all three estimates
    alone = [video_iba.estimate(model, data, layer="block"),
             video_iba.estimate(model, data, layer="block", pool=(1, 2, 3)),
             video_iba.estimate(model, data, layer="stem", pool=(1, 2, 3))]
    for a, b in zip(both, alone):
        assert a.mean.shape == b.mean.shape and torch.allclose(a.mean, b.mean) and torch.allclose(a.std, b.std)
    assert both[1].mean.shape == (8, 1, 1, 1)
    # the few-samples warning: once per call, and not for statistics per channel
    caplog.clear()
    with caplog.at_level("WARNING"):
        video_iba.estimate(model, data, layer=["block", "stem"])
        video_iba.estimate(model, data, layer=["block", "stem"], pool=(1, 2, 3))
    assert [r.getMessage() for r in caplog.records] == ["statistics estimated from only 6 samples (10000 recommended)"]
    with pytest.raises(UserInputError, match="distinct"):
        video_iba.estimate(model, data, layer=["block", "block"], pools=[None, None])
    with pytest.raises(UserInputError, match="one pool per layer"):
        video_iba.estimate(model, data, layer=["block"], pools=[None, None])
    with pytest.raises(UserInputError, match="distinct"):
        video_iba.estimate(model, data, layer=["block", "block"])


def test_x3d_fits_several_clips_one_clip_per_pass_on_a_cpu() -> None:
    model = video_iba.load_model("x3d_s", weights="random")
    spec = get_spec("x3d_s")
    assert spec.cpu_inputs_per_pass == 1
    clips = torch.randn(2, 3, spec.frames, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0))
    apart = video_iba.explain(model, clips, [0, 1], seed=[3, 4], steps=2, samples=2)
    together = video_iba.explain(model, clips, [0, 1], seed=[3, 4], config=spec.config().replace(inputs_per_pass=2),
                                 steps=2, samples=2)
    for a, b in zip(apart, together):
        assert a.meta["inputs_per_pass"] == 1 and b.meta["inputs_per_pass"] == 2
        assert a.meta["prefix_note"] == b.meta["prefix_note"] and "depthwise" in a.meta["prefix_note"]
        assert float(torch.corrcoef(torch.stack([a.bits.flatten(), b.bits.flatten()]))[0, 1]) >= 0.999
        assert math.isclose(a.total_bits, b.total_bits, rel_tol=1e-3)
