"""Registry, weights loading (checkpoint files, the hub cache, offline errors) and preprocessing."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

import video_iba
from video_iba import ModelSpec, UserInputError
from video_iba.models import get_spec, layers, list_models, preprocess_image


def test_paper_defaults_and_generic_torchvision_layers() -> None:
    assert get_spec("resnet50").default_layer == "layer2"
    assert get_spec("resnet50").default_weights == "IMAGENET1K_V1"
    assert get_spec("vgg16").default_layer == "features.17"
    assert get_spec("vgg16_bn").default_layer == "features.24"  # conv4_1 after the batch norms
    assert get_spec("efficientnet_lite0").default_layer == "_blocks.4"
    assert get_spec("densenet121").default_layer == "features.denseblock2"
    inception = get_spec("inception_v3")
    assert (inception.input_size, inception.resize) == (299, 342)
    names = list_models()
    assert names[:3] == ["resnet50", "vgg16", "efficientnet_lite0"] and "mobilenet_v3_small" in names


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UserInputError, match="did you mean 'resnet50'"):
        get_spec("resnet_50")


def test_a_model_without_a_feature_map_near_stride_8_asks_for_a_layer() -> None:
    from video_iba.models.layers import LayerInfo, auto_layer

    table = [LayerInfo("embed", "Conv2d", (1, 64, 14, 14), 0), LayerInfo("blocks.0", "Block", (1, 197, 64), 1)]
    with pytest.raises(UserInputError, match="m has no convolutional feature map near stride 8.*name a layer with"):
        auto_layer(table, 224, "m")
    assert auto_layer(table, 112, "m") == "embed"


def test_the_listing_cache_holds_only_layers_the_registry_does_not_give(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json

    from video_iba.models import registry

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(registry, "list_models", lambda: ["vit_b_16", "densenet121", "mobilenet_v3_small"])
    import torchvision

    path = str(tmp_path / "video-iba" / f"default-layers-{video_iba.__version__}-tv{torchvision.__version__}.json")
    os.makedirs(os.path.dirname(path))
    with open(path, "w", encoding="utf-8") as fh:  # written before the registry gave ViTs a default layer
        json.dump({"vit_b_16": "(none: pass --layer)", "densenet121": "features.from_the_cache"}, fh)
    rows = {spec.name: layer for spec, layer in registry.describe_models()}
    assert rows["vit_b_16"] == "conv_proj" and rows["densenet121"] == "features.from_the_cache"
    assert rows["mobilenet_v3_small"] == get_spec("mobilenet_v3_small").default_layer  # found, then cached
    with open(path, encoding="utf-8") as fh:
        assert json.load(fh)["mobilenet_v3_small"] == rows["mobilenet_v3_small"]


def test_layer_listing_needs_no_weights() -> None:
    table = {li.name: li.shape for li in layers("resnet50")}
    assert table["layer2"] == (1, 512, 28, 28) and table["fc"] == (1, 1000)


def test_offline_error_names_the_cache_file_and_the_fix() -> None:
    with pytest.raises(UserInputError) as err:
        video_iba.load_model("mobilenet_v3_small")
    msg = str(err.value)
    expected = os.path.join(torch.hub.get_dir(), "checkpoints", "mobilenet_v3_small-047dcff4.pth")
    assert expected in msg and "give weights= a file path or 'random'" in msg and "https://download.pytorch.org" in msg
    assert "give --weights a file path" in err.value.worded(lambda o: f"--{o}")  # the command line's spelling


def test_weights_from_the_hub_cache() -> None:
    torch.manual_seed(1)
    ref = video_iba.load_model("mobilenet_v3_small", weights="random")
    ckpt = os.path.join(torch.hub.get_dir(), "checkpoints", "mobilenet_v3_small-047dcff4.pth")
    os.makedirs(os.path.dirname(ckpt), exist_ok=True)
    torch.save(ref.state_dict(), ckpt)
    loaded = video_iba.load_model("mobilenet_v3_small")
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert not loaded.training and loaded.video_iba_spec.name == "mobilenet_v3_small"


def test_weights_are_downloaded_into_the_hub_cache(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    # torch.hub's download, as it runs online: the file appears in the cache and is loaded; the
    # line it announces the download with goes to stderr (stdout was silenced with None, which
    # made torch.hub's own sys.stdout.write fail, so no download ever succeeded)
    torch.manual_seed(3)
    ref = video_iba.load_model("mobilenet_v3_small", weights="random")
    fetched: list[str] = []

    def download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        fetched.append(url)
        torch.save(ref.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    loaded = video_iba.load_model("mobilenet_v3_small")
    assert fetched == ["https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth"]
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in ref.state_dict().items())
    out, err = capsys.readouterr()
    assert out == "" and "Downloading" in err
    assert os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", "mobilenet_v3_small-047dcff4.pth"))


def test_weights_from_a_checkpoint_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(2)
    ref = video_iba.load_model("mobilenet_v3_small", weights="random")
    path = tmp_path / "ckpt.pth"
    torch.save({"model_state": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 3}, path)
    loaded = video_iba.load_model("mobilenet_v3_small", weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), ref(x))
    # a Lightning module's checkpoint (the network as its 'model'), a compiled module's: the shared name goes
    for prefix in ("model.", "_orig_mod.", "net.model."):
        torch.save({"state_dict": {prefix + k: v for k, v in ref.state_dict().items()}, "epoch": 1}, path)
        with torch.no_grad():
            assert torch.equal(video_iba.load_model("mobilenet_v3_small", weights=str(path))(x), ref(x)), prefix
    torch.save({"model." + k: v for k, v in list(ref.state_dict().items())[:-1]} | {"head.bias": torch.zeros(1)}, path)
    with pytest.raises(UserInputError, match="do not fit mobilenet_v3_small"):  # no shared name: as it stands
        video_iba.load_model("mobilenet_v3_small", weights=str(path))


def test_bad_checkpoints_are_refused_clearly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match="does not exist"):
        video_iba.load_model("mobilenet_v3_small", weights=str(tmp_path / "nope.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save(video_iba.load_model("squeezenet1_1", weights="random").state_dict(), wrong)
    with pytest.raises(UserInputError, match="do not fit mobilenet_v3_small"):
        video_iba.load_model("mobilenet_v3_small", weights=str(wrong))
    pickled = tmp_path / "pickled.pth"
    torch.save({"obj": object()}, pickled)
    with pytest.raises(UserInputError, match="not a readable weights file"):
        video_iba.load_model("mobilenet_v3_small", weights=str(pickled))
    with pytest.raises(UserInputError, match="unknown weights 'IMAGENET1K_V9'.*IMAGENET1K_V1"):
        video_iba.load_model("mobilenet_v3_small", weights="IMAGENET1K_V9")


def test_offline_efficientnet_lite0_is_a_real_imagenet_model() -> None:
    from skimage import data

    model = video_iba.load_model("efficientnet_lite0")
    labels = video_iba.models.imagenet_labels()
    x, _ = preprocess_image(np.asarray(data.coffee()), model.video_iba_spec)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert labels[int(probs.argmax())] == "espresso" and probs.max() > 0.5


def test_preprocessing_geometry_maps_the_crop_back() -> None:
    spec = get_spec("resnet50")
    rgb = np.zeros((300, 600, 3), dtype=np.uint8)
    rgb[:, 300:] = 255  # right half white
    x, geo = preprocess_image(rgb, spec)
    assert x.shape == (1, 3, 224, 224)
    assert geo.image_size == (300, 600)
    x0, y0, x1, y1 = geo.box
    # shorter side 300 -> 256 (scale 0.853), crop 224 centred: 262.5 px of the original
    assert y0 == pytest.approx(18.75, abs=0.2) and y1 == pytest.approx(281.25, abs=0.2)
    assert (x0 + x1) / 2 == pytest.approx(300, abs=1) and x1 - x0 == pytest.approx(262.5, abs=0.5)
    # left half of the crop is black, right half white (after normalisation)
    assert x[0, 0, :, :100].mean() < 0 < x[0, 0, :, 124:].mean()


def test_the_resize_is_torchvisions_byte_for_byte_and_the_class_names_are_its_own() -> None:
    import torchvision.models as tvm
    import torchvision.models.video as tvv
    import torchvision.transforms.v2.functional as TF
    from skimage import data

    from video_iba.models import imagenet_labels, kinetics400_labels
    from video_iba.models.preprocess import resize_crop_normalize, resized_size

    # the resize is torchvision's antialiased uint8 kernel, shrinking and enlarging, for a photo and noise
    rng = np.random.default_rng(0)
    for frames in (np.asarray(data.chelsea())[None], rng.integers(0, 256, size=(2, 37, 61, 3), dtype=np.uint8)):
        h, w = frames.shape[1:3]
        for resize in (min(h, w) // 3, 256, 2 * min(h, w) + 1):
            crop = min(resize, 56)
            x, _ = resize_crop_normalize(frames, resize=resize, crop=crop, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
            t = TF.resize(torch.from_numpy(frames).permute(0, 3, 1, 2), list(resized_size(h, w, resize)), antialias=True)
            nh, nw = t.shape[-2:]
            top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
            assert torch.equal(x, t[:, :, top:top + crop, left:left + crop].float().div(255.0)), (frames.shape, resize)
            assert x.is_contiguous()  # (N, C, H, W): the layout the convolutions round in as before
    # the shipped class names are torchvision's metadata of every weights file of the two sets
    assert imagenet_labels() == tuple(tvm.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]) \
        == tuple(tvm.ViT_B_16_Weights.IMAGENET1K_V1.meta["categories"])
    assert kinetics400_labels() == tuple(tvv.R3D_18_Weights.KINETICS400_V1.meta["categories"]) \
        == tuple(tvv.MViT_V2_S_Weights.KINETICS400_V1.meta["categories"])
    assert len(set(imagenet_labels())) == 1000 and len(set(kinetics400_labels())) == 400


def test_too_small_images_are_refused() -> None:
    with pytest.raises(UserInputError, match="at least 56 pixels"):
        preprocess_image(np.zeros((40, 300, 3), dtype=np.uint8), get_spec("resnet50"), name="tiny.png")


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "mobilenet_v3_small", "googlenet", "densenet121",
                                  "shufflenet_v2_x0_5", "squeezenet1_1", "efficientnet_lite0"])
def test_torchvision_cnns_split_at_their_default_layer(name: str) -> None:
    torch.manual_seed(0)
    model = video_iba.load_model(name, weights="random")
    side = model.video_iba_spec.input_size
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    fast = video_iba.explain(model, x, seed=0, steps=3, samples=2)
    full = video_iba.explain(model, x, seed=0, steps=3, samples=2, split="hook")
    assert fast.meta["prefix_cached"] is True and fast.meta["layer"] == model.video_iba_spec.default_layer
    r = np.corrcoef(fast.bits.numpy().ravel(), full.bits.numpy().ravel())[0, 1]
    assert r > 0.999 and fast.total_bits == pytest.approx(full.total_bits, rel=1e-3)


def test_clip_preprocessing_matches_the_image_path_frame_by_frame() -> None:
    from video_iba.models import preprocess_clip

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, 120, 160, 3), dtype=np.uint8)
    spec = get_spec("efficientnet_lite0_i3d")
    clip, geo = preprocess_clip(frames, spec)
    assert clip.shape == (1, 3, 5, 224, 224)
    for t in (0, 4):  # each frame as the image model of the same preprocessing treats a photo
        x, g = preprocess_image(frames[t], dataclasses.replace(spec, modality="image"))
        torch.testing.assert_close(clip[0, :, t], x[0])
        assert g == geo


def test_pixels_of_every_common_kind_are_read_as_rgb_and_others_refused() -> None:
    from PIL import Image

    from video_iba.models import preprocess_clip

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(4, 120, 160, 3), dtype=np.uint8)
    spec = get_spec("r3d_18")
    ref, _ = preprocess_clip(frames, spec)
    # floats in [0, 1] (they were cast to uint8: a black clip), a tensor, a list of frames, wider integers
    for same in (frames / 255.0, torch.from_numpy(frames), list(frames), frames.astype(np.int64)):
        assert torch.equal(preprocess_clip(same, spec)[0], ref)
    image = get_spec("resnet50")
    assert torch.equal(preprocess_image(Image.fromarray(frames[0]).convert("RGBA"), image)[0],
                       preprocess_image(frames[0], image)[0])  # a PIL image, in any mode
    for bad, match in ((frames.astype(np.float32), "floats from 0 to 255, not in .0, 1.; divide them by 255"),
                       ((frames / 255.0 - 0.45) / 0.225, "not pixels already normalised"),
                       (frames.astype(np.int32) * 256, "integers from 0 to 65280; give uint8"),
                       (frames.transpose(0, 3, 1, 2), "look channels-first: move the colour axis last"),
                       ([], "empty list"), ("clip.mp4", "must be RGB pixels"),
                       ([frames[0], frames[1, :100]], r"frame 1 is \(100, 160, 3\), frame 0 \(120, 160, 3\); give "
                                                     r"frames of one size"),  # was numpy's stack ValueError
                       (frames[0], r"one frame: add a time axis \(x\[None\]\)")):
        with pytest.raises(UserInputError, match=match):
            preprocess_clip(bad, spec)
    for bad, match in ((frames[0, :, :, 0], r"grayscale: repeat it into three channels"),
                       (np.concatenate([frames[0], frames[0, :, :, :1]], axis=-1), r"RGBA: drop the alpha channel")):
        with pytest.raises(UserInputError, match=match):
            preprocess_image(bad, image)


def test_a_checkpoint_fine_tuned_to_other_classes_resizes_the_output_layer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torchvision

    torch.manual_seed(3)
    for name, classes in (("mobilenet_v3_small", 7), ("squeezenet1_1", 4)):  # a linear head, a 1x1 convolution head
        ref = torchvision.models.get_model(name, weights=None, num_classes=classes).eval()
        path = tmp_path / f"{name}.pt"
        torch.save(ref.state_dict(), path)
        loaded = video_iba.load_model(name, weights=str(path))
        spec = loaded.video_iba_spec
        assert spec.labels == "own" and spec.label_names == tuple(f"class {i}" for i in range(classes))
        assert video_iba.models.labels_for(spec)[-1] == f"class {classes - 1}"
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            out = loaded(x)
            assert out.shape == (2, classes) and torch.equal(out, ref(x))
    assert get_spec("mobilenet_v3_small").labels == "imagenet"  # the registry's spec is not changed
    # other layers differing too: another architecture, refused as before (one sentence, no '.;')
    sd = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=7).state_dict()
    sd["features.0.0.weight"] = sd["features.0.0.weight"][:8]
    torch.save(sd, tmp_path / "other.pt")
    with pytest.raises(UserInputError, match=r"do not fit mobilenet_v3_small: size mismatch for features\.0\.0\.weight") \
            as info:
        video_iba.load_model("mobilenet_v3_small", weights=str(tmp_path / "other.pt"))
    assert ".;" not in str(info.value)


def test_an_unavailable_or_unknown_device_is_refused_before_building() -> None:
    # a CUDA device on a machine without one was torch's "Found no NVIDIA driver" RuntimeError
    with pytest.raises(video_iba.UserInputError, match="unknown device 'tpu'; give device= cpu, cuda or cuda:N"):
        video_iba.load_model("resnet18", weights="random", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(video_iba.UserInputError, match="CUDA is not available here; give device= cpu"):
            video_iba.load_model("resnet18", weights="random", device="cuda:0")


def test_preprocessing_refuses_the_other_kind_of_model_and_a_name() -> None:
    # a photo preprocessed for r3d_18 gave an image input a video model cannot take, and a spec
    # given by name ended in an AttributeError
    photo, frames = np.zeros((64, 64, 3), np.uint8), np.zeros((4, 64, 64, 3), np.uint8)
    video, image = get_spec("r3d_18"), get_spec("efficientnet_lite0")
    with pytest.raises(UserInputError, match="r3d_18 is a video model; read a clip with read_clip"):
        preprocess_image(photo, video)
    with pytest.raises(UserInputError, match="efficientnet_lite0 is an image model; read a photo with read_image"):
        video_iba.preprocess_clip(frames, image)
    with pytest.raises(UserInputError, match=r"read_clip takes the model's spec .*get_spec\('r3d_18'\)\), not str"):
        video_iba.read_clip("clip.mp4", "r3d_18")  # type: ignore[arg-type]
    assert tuple(video_iba.preprocess_clip(frames, video)[0].shape) == (1, 3, 4, 112, 112)


_SPEC = dict(name="mynet", family="own", modality="video", frames=8, sampling_rate=4, input_size=112, resize=128,
             default_layer="layer2")


@pytest.mark.parametrize("change, message", [
    ({"frames": 0}, "frames must be a whole number >= 1, got 0"),  # was a ZeroDivisionError in read_clip
    ({"sampling_rate": 2.5}, "sampling_rate must be a whole number >= 1, got 2.5"),
    ({"input_size": "112"}, "input_size must be a whole number >= 1, got '112'"),
    ({"resize": 100}, r"resize \(100\) must be at least input_size \(112\)"),  # was a crop offset ValueError
    ({"modality": "audio"}, "modality must be 'image' or 'video', got 'audio'"),
    ({"mean": (0.5,)}, "mean must be 3 numbers, one per RGB channel"),  # was a reshape RuntimeError
    ({"std": (0.2, 0, 0.2)}, "std must be 3 numbers, one per RGB channel, each > 0"),  # was taken: inputs of inf
    ({"default_layer": ""}, "default_layer must be a layer's dotted name"),
    ({"label_names": ("a", "b")}, "label_names are used with labels='own' .* give labels='own'"),  # were ignored
    ({"name": ""}, "ModelSpec name must be a non-empty string"),
])
def test_a_spec_no_model_can_use_is_refused_when_made(change, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match=message):
        ModelSpec(**{**_SPEC, **change})


def test_a_spec_takes_numpy_numbers_and_lists() -> None:
    spec = ModelSpec(**{**_SPEC, "frames": np.int64(8), "mean": [0.5, 0.5, 0.5], "std": np.array([0.2, 0.2, 0.2])})
    assert spec.frames == 8 and type(spec.frames) is int and spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.2,) * 3
    assert dataclasses.replace(spec, labels="own", label_names=("a",)).label_names == ("a",)
