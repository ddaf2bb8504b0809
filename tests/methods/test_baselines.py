"""Baseline attribution methods (Captum wrappers): shapes, definitions on known cases, model left intact."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import video_iba
from video_iba import UserInputError
from video_iba.methods import METHODS, attribute
from video_iba.methods.baselines import ATTENTION_METHODS
from video_iba.models import PackedModel, cam_layer_of

from ..nets import Tiny3D, TinyCNN, TinyViViT
from ..nets import mixed_state, snapshot


class Linear2D(nn.Module):
    """logit_k = sum(w_k * x): every method's answer is known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(torch.randn(2, 3, 16, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,kchw->nk", x, self.w)


# (LRP and the attention methods take only the networks they have rules or attention for: tested below and in
# test_rollout.py)
@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("iba", "lrp", "readout", *ATTENTION_METHODS)])
def test_every_method_on_images_and_clips_leaves_the_model_intact(method: str) -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    mixed_state(model)
    before = snapshot(model)
    x = torch.randn(1, 3, 32, 32)
    a = attribute(method, model, x, target=1, batch=8)
    assert a.values.shape == (32, 32) and torch.isfinite(a.values).all() and a.target == 1
    assert a.unit != "bits" and a.meta["method"] == method
    after = snapshot(model)
    assert after["training"] == before["training"] and after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == 0 and all(g is None for g in after["grads"].values())  # type: ignore[union-attr]
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))  # in-place flags restored
    clip_model = Tiny3D()
    c = attribute(method, clip_model, torch.randn(1, 3, 8, 16, 16), target=0, batch=8)
    assert c.values.shape == (8, 16, 16) and torch.isfinite(c.values).all()


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("iba", "random", "lrp", "readout",
                                                                   *ATTENTION_METHODS)])
def test_every_method_explains_a_half_precision_model_as_in_float32(method: str) -> None:
    # SmoothGrad's noise is float32 and Grad-CAM's layer search ran a float32 probe: both failed on
    # a float16 network with a dtype error
    torch.manual_seed(0)
    model, x = TinyCNN().eval(), torch.randn(1, 3, 32, 32)
    ref = attribute(method, model, x, target=1, batch=8, seed=0)
    a = attribute(method, model.half(), x.half(), target=1, batch=8, seed=0)
    assert a.values.dtype == torch.float32 and torch.isfinite(a.values).all()
    assert float(torch.corrcoef(torch.stack([a.values.flatten(), ref.values.flatten()]))[0, 1]) > 0.95
    assert all(p.dtype == torch.float16 for p in model.parameters())


def test_definitions_on_a_linear_model() -> None:
    model = Linear2D()
    x = torch.randn(1, 3, 16, 16)
    w = model.w[1].detach()
    grad = attribute("gradient", model, x, target=1)
    assert torch.allclose(grad.values, w.sum(0), atol=1e-5)  # channel sum of the gradient
    sal = attribute("saliency", model, x, target=1)
    assert torch.allclose(sal.values, w.abs().sum(0), atol=1e-5)
    ig = attribute("integrated_gradients", model, x, target=1)
    assert torch.allclose(ig.values, (w * x[0]).sum(0), atol=1e-4)  # exact for a linear model
    assert float(ig.values.sum()) == pytest.approx(float(model(x)[0, 1].detach()), rel=1e-4)  # completeness
    occ = attribute("occlusion8", model, x, target=1)
    drop = (w * x[0]).unflatten(1, (2, 8)).unflatten(3, (2, 8)).sum(dim=(0, 2, 4))  # per 8x8 window
    expect = 3 * drop.repeat_interleave(8, 0).repeat_interleave(8, 1)  # every cell of a window, 3 channels
    assert torch.allclose(occ.values, expect, atol=1e-3)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    sg = attribute("smoothgrad", model, x, target=1)
    assert torch.allclose(sg.values, w.sum(0), atol=1e-4)  # the gradient does not depend on x here
    assert torch.equal(torch.get_rng_state(), state)  # its noise is seeded without touching the caller's generator
    r1, r2 = attribute("random", model, x, seed=3), attribute("random", model, x, seed=3)
    assert torch.equal(r1.values, r2.values) and not torch.equal(r1.values, attribute("random", model, x, seed=4).values)


def test_occlusion_windows_do_not_overlap_and_tubes_span_frames() -> None:
    calls: list[int] = []
    model = Tiny3D()
    model.register_forward_pre_hook(lambda _m, inp: calls.append(inp[0].shape[0]))
    try:
        attribute("occlusion8", model, torch.randn(1, 3, 8, 16, 16), target=0, tube_frames=4, batch=64)
    finally:
        model._forward_pre_hooks.clear()
    # 2 x 2 windows x 2 tubes of 4 frames = 8 occlusions, plus the unoccluded input
    assert sum(calls) - 1 - 1 == 8  # minus the logits pass and Captum's reference pass


def test_guided_backprop_refuses_models_without_relu_modules() -> None:
    model = video_iba.load_model("efficientnet_lite0")
    with pytest.raises(UserInputError, match="has none .*ReLU6"):
        attribute("guided_backprop", model, torch.randn(1, 3, 224, 224), target=0)
    with pytest.raises(UserInputError, match="has none"):
        attribute("guided_gradcam", model, torch.randn(1, 3, 224, 224), target=0)


def test_gradcam_layer_and_upsampling() -> None:
    model = TinyCNN()
    x = torch.randn(1, 3, 32, 32)
    assert cam_layer_of(model, x) == "features"
    a = attribute("gradcam", model, x, target=0)
    assert a.meta["cam_layer"] == "features" and a.values.min() >= 0
    clip = attribute("gradcam", Tiny3D(), torch.randn(1, 3, 8, 16, 16), target=0)
    assert clip.meta["cam_layer"] == "block" and clip.values.shape == (8, 16, 16)
    with pytest.raises(UserInputError, match="not a feature map"):
        attribute("gradcam", model, x, target=0, cam_layer="fc")


def test_unknown_method_lists_the_choices() -> None:
    with pytest.raises(UserInputError, match="unknown method 'gradcamm' .did you mean 'gradcam'.*choose one of iba, random"):
        attribute("gradcamm", TinyCNN(), torch.randn(1, 3, 32, 32))


def test_packed_pathways_occlude_both_at_once() -> None:
    class TwoPaths(nn.Module):
        def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
            slow, fast = xs
            return torch.stack([slow.sum(dim=(1, 2, 3, 4)), fast.sum(dim=(1, 2, 3, 4))], dim=1)

    def pack(clip: torch.Tensor) -> list[torch.Tensor]:
        return [clip[:, :, ::4], clip]

    x = torch.ones(1, 3, 8, 16, 16)
    a = attribute("occlusion8", TwoPaths(), x, target=0, pack=pack, tube_frames=4)
    # the slow pathway sees frames 0 and 4: a tube of frames 0-3 removes frame 0 from it
    assert a.values.shape == (8, 16, 16) and float(a.values[0, 0, 0]) == pytest.approx(3 * 3 * 64)
    assert PackedModel(TwoPaths(), pack)(x)[0, 0] == 3 * 2 * 256


def test_cli_method_for_photos_and_clips(photo_dir: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json
    import os

    import numpy as np

    from video_iba.cli import main

    from ..videos import encode

    photo = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])
    out = tmp_path / "o"
    assert main(["explain", photo, "--method", "gradcam", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "gradcam (grad-cam)" in stdout
    stem = os.path.splitext(os.path.basename(photo))[0]
    with Image.open(out / f"{stem}.png") as fig:  # photo | overlay with its colorbar
        assert fig.size[0] > 2 * fig.size[1] * 0.8
    a = video_iba.Attribution.load(str(out / f"{stem}.npz"))
    assert a.unit == "grad-cam" and a.values.shape == (224, 224) and a.meta["cam_layer"]
    clip = encode(str(tmp_path / "c.mp4"), frames=30, size=(128, 96))
    assert main(["explain", clip, "--model", "r3d_18", "--weights", "random", "--method", "saliency",
                 "--out", str(out)]) == 0
    with np.load(out / "c.npz") as d:
        assert d["window_values"].shape == (1, 1, 16, 112, 112) and "window_bits" not in d.files
        assert json.loads(str(d["meta"]))["unit"] == "|gradient|"
    capsys.readouterr()
    assert main(["explain", photo, "--method", "lrp", "--out", str(out)]) == 2  # EfficientNet: no LRP rules
    assert "LRP is available for torchvision VGG and ResNet" in capsys.readouterr().err
    assert main(["explain", photo, "--method", "lime", "--out", str(out)]) == 2
    assert "unknown method 'lime'" in capsys.readouterr().err
    assert main(["explain", photo, "--method", "gradient", "--stats", "x.pt", "--out", str(out)]) == 2
    assert "--stats applies to the method iba only" in capsys.readouterr().err


def test_gradcams_layer_is_chosen_with_cam_layer_and_refused_elsewhere(photo_dir: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json
    import os

    import numpy as np

    from video_iba.cli import main

    from ..videos import encode

    photo = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])
    stem = os.path.splitext(os.path.basename(photo))[0]
    base = ["explain", photo, "--model", "resnet18", "--weights", "random", "--method", "gradcam"]
    maps = {}
    for name, extra in (("default", []), ("layer3", ["--cam-layer", "layer3"])):
        assert main([*base, *extra, "--out", str(tmp_path / name)]) == 0
        a = video_iba.Attribution.load(str(tmp_path / name / f"{stem}.npz"))
        maps[name] = a.values
        assert a.meta["cam_layer"] == ("layer4" if name == "default" else "layer3")
        assert f"· layer {a.meta['cam_layer']}" in capsys.readouterr().out
    assert not torch.equal(maps["default"], maps["layer3"])  # the layer given is the one read
    clip = encode(str(tmp_path / "c.mp4"), frames=20, size=(128, 96))
    assert main(["explain", clip, "--model", "r3d_18", "--weights", "random", "--method", "gradcam", "--cam-layer",
                 "layer3", "--out", str(tmp_path / "v")]) == 0
    with np.load(tmp_path / "v" / "c.npz") as d:
        meta = json.loads(str(d["meta"]))
    assert meta["cam_layer"] == "layer3" and "layers" not in meta and "config" not in meta  # no bottleneck was fitted
    capsys.readouterr()
    for extra, message in (
            (["--layer", "layer3"], "--layer is the bottleneck's layer (method iba), which gradcam does not use; "
                                    "Grad-CAM's layer is --cam-layer"),
            (["--method", "saliency", "--cam-layer", "layer3"], "--cam-layer applies to gradcam and guided_gradcam only"),
            (["--method", "iba", "--cam-layer", "layer3"], "the bottleneck's layer is --layer"),
            (["--steps", "3", "--beta", "1"], "--beta, --steps are settings of the per-sample bottleneck"),
            (["--batch-size", "4"], "--batch-size counts the inputs the per-sample bottleneck (method iba) fits"),
            # a registry model lays out its token layers itself: no layout to give on the command line
            (["--cam-layer", "fc"], "Grad-CAM's layer 'fc' outputs shape (1, 1000), not a feature map (N, C, H, W) "
                                    "as the input; choose a convolutional layer (`video-iba layers` lists the layers' "
                                    "outputs)\n"),
            (["--method", "readout", "--readout", "r.pt", "--layer", "layer3"], "reads the layers it was trained at")):
        assert main([*base, *extra, "--out", str(tmp_path / "x")]) == 2, extra
        assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x") or not os.listdir(tmp_path / "x")  # nothing written
    model, x = TinyCNN(), torch.randn(1, 3, 32, 32)
    with pytest.raises(UserInputError, match="cam_layer= applies to gradcam and guided_gradcam only, not to saliency"):
        attribute("saliency", model, x, cam_layer="features")
    with pytest.raises(UserInputError, match="tokens= applies to gradcam"):
        attribute("occlusion8", model, x, tokens=video_iba.TokenLayout(grid=(1, 4, 4)))
    with pytest.raises(UserInputError, match="layer= is the bottleneck's layer.*Grad-CAM's layer is cam_layer="):
        attribute("gradcam", model, x, layer="features")
    vivit, clip = TinyViViT(), torch.randn(1, 3, 8, 32, 32)  # a token layer of one's own, without its layout
    with pytest.raises(UserInputError, match=r"layer 'blocks.0' outputs shape \(1, 65, 16\), not a feature map "
                                             r"\(N, C, T, H, W\) as the input; .*give a token layer its layout with "
                                             r"tokens="):
        attribute("gradcam", vivit, clip, 0, cam_layer="blocks.0")
    vit = video_iba.load_model("vit_b_16", weights="random")  # a registry transformer: its layers shown with grids
    with pytest.raises(UserInputError, match=r"'heads' outputs shape \(1, 1000\), not a feature map .*or a layer it "
                                             r"shows with a token grid$"):
        attribute("gradcam", vit, torch.randn(1, 3, 224, 224), 0, cam_layer="heads")


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn"])
def test_lrp_on_torchvision_resnets_and_vggs_leaves_the_model_intact(arch: str) -> None:
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=7)
    for m in model.modules():  # batch-norm statistics that differ from the identity, so merging them matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    before = snapshot(model)
    size = 64 if arch == "resnet18" else 32
    x = torch.randn(1, 3, size, size)
    a = attribute("lrp", model, x, target=3)
    assert a.values.shape == (size, size) and torch.isfinite(a.values).all() and a.unit == "relevance"
    assert float(a.values.abs().sum()) > 0
    after = snapshot(model)
    assert after["hooks"] == 0 and after["requires_grad"] == before["requires_grad"]
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())  # batch norm unmerged
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert torch.allclose(model(x), torch.from_numpy(a.logits.numpy())[None], atol=1e-5)


def test_lrp_refuses_other_networks_and_clips() -> None:
    with pytest.raises(UserInputError, match="torchvision VGG and ResNet"):
        attribute("lrp", TinyCNN().eval(), torch.randn(1, 3, 32, 32))
    with pytest.raises(UserInputError, match="images only"):
        attribute("lrp", Tiny3D().eval(), torch.randn(1, 3, 4, 16, 16))


@pytest.mark.parametrize("method, shape", [
    ("occlusion8", (1, 3, 32, 32)), ("occlusion14", (1, 3, 32, 32)), ("occlusion8", (1, 3, 8, 16, 16)),
    ("smoothgrad", (1, 3, 32, 32)), ("integrated_gradients", (1, 3, 8, 16, 16)), ("saliency", (1, 3, 32, 32)),
])
def test_long_baselines_report_every_network_input(method: str, shape: tuple[int, ...]) -> None:
    from video_iba.methods.baselines import baseline, network_inputs

    from ..nets import Tiny3D, TinyCNN

    torch.manual_seed(0)
    model = (TinyCNN() if len(shape) == 4 else Tiny3D()).eval()
    x = torch.randn(shape)
    seen: list[int] = []
    plain = baseline(method, model, x, 1, seed=0)
    counted = baseline(method, model, x, 1, seed=0, on_progress=seen.append, batch=5)
    torch.testing.assert_close(counted.values, plain.values, rtol=1e-4, atol=1e-6)  # batching changes nothing
    if network_inputs(method, shape) == 1:
        assert seen == []  # one pass: nothing to count
    else:
        assert sum(seen) == network_inputs(method, shape) and max(seen) <= 5
    assert plain.meta["batch"] == 16 and counted.meta["batch"] == 5  # on a CPU: 16 unless given


class _SharedConv(nn.Module):
    """One convolution run on the input and on its mirror image (shared weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()  # for Guided Grad-CAM
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(torch.cat([self.conv(x).mean((2, 3)), self.conv(x.flip(3)).mean((2, 3))], 1)))


def test_gradcam_refuses_a_layer_run_twice_as_iba_does() -> None:
    # captum kept one of the two outputs, silently
    torch.manual_seed(0)
    model, x = _SharedConv().eval(), torch.randn(1, 3, 16, 16)
    for method in ("gradcam", "guided_gradcam"):
        with pytest.raises(UserInputError, match="Grad-CAM's layer 'conv' runs 2 times in one forward pass"):
            attribute(method, model, x, cam_layer="conv")
    with pytest.raises(UserInputError, match="layer 'conv' runs 2 times in one forward pass"):
        video_iba.explain(model, x, layer="conv", steps=2)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
