"""Hugging Face classifiers as registry models: ``hf:ORG/NAME``, video (VideoMAE, TimeSformer,
ViViT) and image (ViT, DeiT, BEiT, DINOv2, Swin, Swin V2, ConvNeXt, ConvNeXt V2, ResNet, RegNet).

A checkpoint is read from the Hugging Face cache only (``$HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``; the layout ``models--ORG--NAME/snapshots/REV``
that ``huggingface-cli download`` writes): nothing is downloaded, so a missing checkpoint is one
clear error naming the cache and the id. The configurations of two checkpoints ship with the
package (``configs/hf``), so ``weights="random"`` builds them anywhere.

A video network is wrapped (:class:`HFVideoClassifier`) to take clips ``(N, C, T, H, W)`` and
return logits, an image network (:class:`HFImageClassifier`) to take photos ``(N, C, H, W)``;
their layers are named under ``hf.`` (``hf.videomae.encoder.layer.3``). The spec carries each
family's token layout, its clip sampling, the resize, crop and normalisation of the checkpoint's
processor configuration (``preprocessor_config.json``; without one, those of the family's
published checkpoints), and the labels of the configuration's ``id2label``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..bottleneck.attention import resampled_rows
from ..bottleneck.insertion import forward_hook
from ..config import TRANSFORMER_SETTINGS
from ..errors import UserInputError
from .layouts import TokenLayout

log = logging.getLogger(__name__)

HF_PREFIX = "hf:"
#: Checkpoints whose configuration ships with the package (random weights work offline).
SHIPPED = {
    "MCG-NJU/videomae-base-finetuned-kinetics": "MCG-NJU--videomae-base-finetuned-kinetics.json",
    "facebook/timesformer-base-finetuned-k400": "facebook--timesformer-base-finetuned-k400.json",
}


@dataclass(frozen=True)
class Family:
    """What differs between the supported architectures.

    Attributes:
        base: Attribute of the classification model holding the encoder (``videomae``).
        prefix: Class tokens before the grid tokens.
        order: Order of the grid tokens (TimeSformer: space-major).
        rate: A clip takes every ``rate``-th frame of a 30 fps video.
        side, crop, mean, std: Resize, centre crop and normalisation of the published
            checkpoints' processor configurations, for checkpoints without their own.
    """

    base: str
    prefix: int
    order: str
    rate: int
    side: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def tubelet(self, config: dict[str, Any]) -> tuple[int, int, int]:
        """Frames and pixels one grid token covers."""
        if self.base == "vivit":
            t, h, w = (int(v) for v in config["tubelet_size"])
            return t, h, w
        p = int(config["patch_size"])
        return (int(config.get("tubelet_size", 1)) if self.base == "videomae" else 1), p, p


FAMILIES = {
    "videomae": Family("videomae", 0, "t h w", 4, 224, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "timesformer": Family("timesformer", 1, "h w t", 32, 224, 224, (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
    "vivit": Family("vivit", 1, "t h w", 2, 256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


@dataclass(frozen=True)
class ImageFamily:
    """What differs between the supported image architectures.

    Attributes:
        base: Attribute of the classification model holding the backbone (``vit``).
        prefix: Class (and distillation) tokens before the grid tokens, register tokens not
            counted (the configuration's ``num_register_tokens`` follow them); ``None`` where the
            backbone's stages output feature maps ``(N, C, H, W)`` (a CNN).
        embedding: The backbone's embedding module, before any block.
        side, crop, mean, std: Resize, centre crop and normalisation of the published
            checkpoints' processor configurations, for checkpoints without their own.
        any_size: The network takes inputs of any size (a CNN; DINOv2 interpolates its position
            embeddings), so the processor's crop sets the input, not ``image_size``.
        windows: Swin's stages, each with a grid of its own, handing its size on to the next.
        pooled: The head reads the grid tokens after the last block (their mean), not only the
            class token.
    """

    base: str
    prefix: int | None
    embedding: str
    side: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    any_size: bool = False
    windows: bool = False
    pooled: bool = False


_HALF = (0.5, 0.5, 0.5)
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IMAGE_FAMILIES = {
    "vit": ImageFamily("vit", 1, "embeddings", 224, 224, _HALF, _HALF),
    "deit": ImageFamily("deit", 2, "embeddings", 256, 224, *_IMAGENET),  # the class and the distillation token
    "beit": ImageFamily("beit", 1, "embeddings", 224, 224, _HALF, _HALF),  # pooled where use_mean_pooling
    "dinov2": ImageFamily("dinov2", 1, "embeddings", 256, 224, *_IMAGENET, any_size=True, pooled=True),
    "dinov2_with_registers": ImageFamily("dinov2_with_registers", 1, "embeddings", 256, 224, *_IMAGENET,
                                         any_size=True, pooled=True),
    "swin": ImageFamily("swin", 0, "embeddings", 224, 224, *_IMAGENET, windows=True, pooled=True),
    "swinv2": ImageFamily("swinv2", 0, "embeddings", 256, 256, *_IMAGENET, windows=True, pooled=True),
    **{k: ImageFamily(k, None, "embeddings", 256, 224, *_IMAGENET, any_size=True) for k in ("convnext", "convnextv2")},
    **{k: ImageFamily(k, None, "embedder", 256, 224, *_IMAGENET, any_size=True) for k in ("resnet", "regnet")},
}

#: The families as listings write them, video then image.
FAMILY_NAMES = {"videomae": "VideoMAE", "timesformer": "TimeSformer", "vivit": "ViViT", "vit": "ViT", "deit": "DeiT",
                "beit": "BEiT", "dinov2": "DINOv2", "dinov2_with_registers": "DINOv2 with registers", "swin": "Swin",
                "swinv2": "Swin V2", "convnext": "ConvNeXt", "convnextv2": "ConvNeXt V2", "resnet": "ResNet",
                "regnet": "RegNet"}

#: Families whose attention composes into one matrix over all tokens per attention layer, so that
#: attention rollout and its gradient-weighted relevance apply: every block attends over all tokens
#: (class, register and grid tokens alike), or, TimeSformer's divided attention, over each place's
#: frames and then over each frame's places (with the class token; see
#: :meth:`HFClassifier.token_attention`). Swin's shifted windows do not.
ROLLOUT_FAMILIES = ("videomae", "vivit", "timesformer", "vit", "deit", "beit", "dinov2", "dinov2_with_registers")


@contextlib.contextmanager
def _as_it_was(net: nn.Module) -> Iterator[None]:
    """Hooks and attributes that a call adds to ``net``'s modules removed after it (transformers 5
    installs hooks that record attentions, and marks the model, on the first call that asks for them)."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
             "_forward_pre_hooks_with_kwargs")
    before = [(m, set(vars(m)), {k: set(getattr(m, k, {})) for k in kinds}) for m in net.modules()]
    try:
        yield
    finally:
        for m, names, hooks in before:
            for name in set(vars(m)) - names:
                delattr(m, name)
            for kind, ids in hooks.items():
                table = getattr(m, kind, None)
                for key in set(table or {}) - ids:
                    del table[key]


def _mean_of_heads(_m: nn.Module, _args: Any, out: Any) -> Any:
    """A forward hook on an attention module returning ``(output, probabilities (N, heads, L, L), ...)``
    (the attention classes of every family and transformers version): the probabilities averaged
    over heads in their place. The blocks use only the output; the averages are what the model
    returns as its attentions."""
    if isinstance(out, tuple) and len(out) > 1 and isinstance(out[1], torch.Tensor) and out[1].dim() == 4 \
            and out[1].shape[1] > 1:
        return (out[0], out[1].mean(dim=1, keepdim=True), *out[2:])
    return None


def reads_grid_mean(base: str, use_mean_pooling: bool) -> bool:
    """Whether the head of a ``base`` network reads the grid tokens' mean after the last block: the
    families that pool (:attr:`ImageFamily.pooled`), and BEiT and VideoMAE where their
    configuration's ``use_mean_pooling`` (default: yes) says so."""
    fam = IMAGE_FAMILIES.get(base)
    return (fam is not None and fam.pooled) or (base in ("beit", "videomae") and use_mean_pooling)


def check_full_attention(base: str, name: str | None = None, method: str = "attention rollout") -> None:
    """Refuse a family of ``base`` outside :data:`ROLLOUT_FAMILIES` (``name``: the network's, ``method``:
    the method's, for the message)."""
    if base not in ROLLOUT_FAMILIES:
        how = "attend within shifted windows" if base.startswith("swin") else "have no attention"
        raise UserInputError(f"{method} needs blocks whose attention composes over all tokens, and "
                             f"{name or 'this model'}'s {FAMILY_NAMES.get(base, base)} blocks {how}; choose "
                             f"another method")


#: Families whose block list moved from ``encoder.layer`` to the backbone's ``layers`` in
#: transformers 5, with the encoder class that held it before.
_MOVED_BLOCKS = {"vivit": "VivitEncoder", "vit": "ViTEncoder", "deit": "DeiTEncoder", "beit": "BeitEncoder"}
_OTHER_BLOCKS = {**{k: "encoder.layers" for k in ("swin", "swinv2")},
                 **{k: "encoder.stages" for k in ("convnext", "convnextv2", "resnet", "regnet")}}


def blocks_path(base: str) -> str:
    """Where the block list (a CNN's stages) sits in the ``base`` backbone, for the transformers
    installed (version 5 moved ViT's, DeiT's, BEiT's and ViViT's out of their encoder class)."""
    if base in _OTHER_BLOCKS:
        return _OTHER_BLOCKS[base]
    if base not in _MOVED_BLOCKS:
        return "encoder.layer"
    try:
        module = importlib.import_module(f"transformers.models.{base}.modeling_{base}")
    except ImportError:
        return "layers"
    return "encoder.layer" if hasattr(module, _MOVED_BLOCKS[base]) else "layers"


def is_hf(name: str) -> bool:
    return name.startswith(HF_PREFIX)


def hf_cache() -> str:
    """The Hugging Face hub cache folder, as the hub library finds it."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def local_checkpoint(name: str) -> str | None:
    """The folder of ``hf:PATH`` where ``PATH`` is a folder written by ``save_pretrained`` (it holds
    ``config.json``), else ``None``."""
    path = name[len(HF_PREFIX):]
    return path if path and os.path.isfile(os.path.join(path, "config.json")) else None


def model_id(name: str) -> str:
    """``ORG/NAME`` of ``hf:ORG/NAME`` (or the folder of ``hf:PATH``), checked."""
    mid = name[len(HF_PREFIX):]
    if local_checkpoint(name) is not None:
        return mid
    if mid.count("/") != 1 or not all(mid.split("/")):
        raise UserInputError(f"'{name}' is not a Hugging Face model id or checkpoint folder; write hf:ORG/NAME, e.g. "
                             f"hf:MCG-NJU/videomae-base-finetuned-kinetics, or hf:PATH of a folder written by "
                             f"save_pretrained (with its config.json)")
    return mid


def _snapshot(mid: str) -> str | None:
    """The cached snapshot folder of ``mid`` (the revision ``refs/main`` names, else the only one)."""
    root = os.path.join(hf_cache(), "models--" + mid.replace("/", "--"))
    try:
        with open(os.path.join(root, "refs", "main"), encoding="utf-8") as fh:
            rev = fh.read().strip()
    except OSError:
        revs = sorted(os.listdir(os.path.join(root, "snapshots"))) if os.path.isdir(os.path.join(root, "snapshots")) \
            else []
        rev = revs[0] if len(revs) == 1 else ""
    path = os.path.join(root, "snapshots", rev)
    return path if rev and os.path.isfile(os.path.join(path, "config.json")) else None


def _missing(mid: str, what: str) -> UserInputError:
    return UserInputError(f"no Hugging Face {what} for {mid} in the cache ({hf_cache()}) and the hub is not "
                          f"contacted; run `huggingface-cli download {mid}` where the hub is reachable and copy the "
                          f"cache here (or set HF_HUB_CACHE), or give {{weights}} a checkpoint folder"
                          + (" or 'random'" if mid in SHIPPED else ""), options=["weights"])


def checkpoint_folder(name: str, weights: str) -> str | None:
    """The ``save_pretrained`` folder whose configuration ``hf:NAME`` is built with for ``weights``:
    ``weights`` when it is such a folder, else the folder of ``hf:PATH``, else ``None`` (the cache)."""
    if os.path.isfile(os.path.join(weights, "config.json")):
        return weights
    if os.path.isdir(weights):
        raise UserInputError(f"'{weights}' holds no config.json; give {{weights}} a folder written by save_pretrained",
                             options=["weights"])
    return local_checkpoint(name)


def hf_config(mid: str, folder: str | None = None) -> tuple[dict[str, Any], str]:
    """The configuration of ``mid`` as a dict, and where it came from (a checkpoint ``folder``, the
    cache, else the package)."""
    config, source, _ = _configs(mid, folder)
    return config, source


def _configs(mid: str, folder: str | None) -> tuple[dict[str, Any], str, Preprocessing | None]:
    """:func:`hf_config`, and the preprocessing the checkpoint's processor configuration names
    (``None`` where it has none, or the configuration shipped with the package is used)."""
    if folder is not None:
        try:
            with open(os.path.join(folder, "config.json"), encoding="utf-8") as fh:
                config = json.load(fh)
        except (OSError, ValueError) as exc:
            raise UserInputError(f"cannot read the configuration '{os.path.join(folder, 'config.json')}' ({exc}); "
                                 f"give a folder written by save_pretrained") from exc
        return config, f"checkpoint folder {folder}", processor_preprocessing(folder)
    snap = _snapshot(mid)
    if snap is not None:
        with open(os.path.join(snap, "config.json"), encoding="utf-8") as fh:
            return json.load(fh), f"Hugging Face cache, {mid}", processor_preprocessing(snap)
    if mid in SHIPPED:
        text = resources.files("video_iba").joinpath("configs", "hf", SHIPPED[mid]).read_text(encoding="utf-8")
        return json.loads(text), f"Hugging Face hub {mid} (configuration shipped; weights from the cache)", None
    raise _missing(mid, "configuration")


@dataclass(frozen=True)
class Preprocessing:
    """Resize, crop and normalisation of frames in ``[0, 1]``, as a processor configuration gives
    them: the shorter side ``side`` is resized to, the ``crop`` taken from it, and ``mean``/``std``
    with the processor's own rescaling folded in."""

    side: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


#: Processor configurations ``save_pretrained`` writes, image processors' first.
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json")


def processor_preprocessing(folder: str) -> Preprocessing | None:
    """The preprocessing named by the processor configuration in a checkpoint ``folder``, or
    ``None`` where it holds none.

    The processor maps a pixel ``p`` (0..255) to ``(p * rescale_factor - offset - mean) / std``
    (``offset``: 1 where ViViT's processors centre on zero, as they do unless told not to, else 0;
    no rescaling without ``do_rescale``, no normalisation without ``do_normalize``); for frames in
    ``[0, 1]`` that is a normalisation by ``(offset + mean) / a`` and ``std / a`` with
    ``a = 255 * rescale_factor``. A ``size`` of ``height`` and ``width`` (frames resized to a fixed
    shape) is taken as its shorter side. A processor that does not resize (``do_resize: false``,
    frames taken at the size they come in) is followed but for that, with a warning: every frame is
    resized to its ``size``, so that videos of any size fit the model.
    """
    for name in PROCESSOR_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            break
    else:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = json.load(fh)
        return _preprocessing(cfg, f"the processor configuration '{path}'")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserInputError(f"cannot read the processor configuration '{path}' ({_reason(exc)}); give a checkpoint "
                             f"whose {name} save_pretrained wrote, or remove the file to use the family's "
                             f"preprocessing") from exc


def processor_of(processor: Any) -> Preprocessing:
    """The preprocessing of a Hugging Face image or video processor object (its ``to_dict()``)."""
    if not callable(getattr(processor, "to_dict", None)):
        raise UserInputError(f"processor= takes a Hugging Face image or video processor (with .to_dict()), got "
                             f"{type(processor).__name__}; give the processor the network was trained with")
    try:
        return _preprocessing(processor.to_dict(), type(processor).__name__)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserInputError(f"cannot read the preprocessing of {type(processor).__name__} ({_reason(exc)}); give the "
                             f"processor the network was trained with") from exc


def _reason(exc: Exception) -> str:
    return f"it has no {exc}" if isinstance(exc, KeyError) else str(exc)


def _side(size: Any) -> int:
    if isinstance(size, (int, float)):
        return int(size)
    if "shortest_edge" in size:
        return int(size["shortest_edge"])
    if "height" not in size or "width" not in size:
        raise ValueError(f"a size {dict(size)} names neither the shorter side nor the height and width")
    return min(int(size["height"]), int(size["width"]))


def _three(value: Any, what: str) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"{what} has {len(values)} values, not one per colour channel")
    return values[0], values[1], values[2]


def _preprocessing(cfg: Any, what: str) -> Preprocessing:
    if not isinstance(cfg, dict):
        raise ValueError(f"a JSON {type(cfg).__name__}, not an object")
    side = _side(cfg["size"]) if "size" in cfg else 224
    crop = _side(cfg["crop_size"]) if cfg.get("do_center_crop", True) and "crop_size" in cfg else side
    kind = str(cfg.get("image_processor_type") or cfg.get("video_processor_type") or cfg.get("feature_extractor_type")
               or "")  # older checkpoints name a feature extractor
    if kind.startswith("ConvNext") and side < 384:  # ConvNeXt's and ResNet's: resized to side / crop_pct, cropped
        side, crop = int(side / float(cfg.get("crop_pct", 224 / 256))), side
    if side <= 0 or crop <= 0 or crop > side:
        raise ValueError(f"a crop of {crop} from a shorter side of {side} pixels")
    if cfg.get("do_resize", True) is False:
        log.warning("%s does not resize frames (do_resize: false); video-iba resizes each to a shorter side of %d "
                    "pixels before the %d-pixel crop, so that videos of any size fit the model", what, side, crop)
    scale = 255 * float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 255.0
    offset = 1.0 if cfg.get("do_rescale", True) and cfg.get("offset", kind.startswith("Vivit")) else 0.0
    if cfg.get("do_normalize", True):
        mean, std = _three(cfg["image_mean"], "image_mean"), _three(cfg["image_std"], "image_std")
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if not scale > 0 or not all(v > 0 for v in std):
        raise ValueError(f"a scale of {scale / 255} and a standard deviation of {std}")
    return Preprocessing(side, crop, _three([(offset + m) / scale for m in mean], "image_mean"),
                         _three([v / scale for v in std], "image_std"))


def family_of(config: dict[str, Any], mid: str) -> Family | ImageFamily:
    """The family of the network ``config`` describes (video or image), checked."""
    kind = str(config.get("model_type", ""))
    if kind in IMAGE_FAMILIES:
        return IMAGE_FAMILIES[kind]
    if kind not in FAMILIES:
        raise UserInputError(f"{mid} is a '{kind}' model; video-iba explains Hugging Face {', '.join(FAMILIES)} "
                             f"video classifiers and {', '.join(IMAGE_FAMILIES)} image classifiers")
    if kind == "timesformer" and config.get("attention_type", "divided_space_time") != "divided_space_time":
        raise UserInputError(f"{mid} uses TimeSformer attention '{config['attention_type']}'; only divided "
                             f"space-time attention lays its tokens out on one (t, h, w) grid")
    return FAMILIES[kind]


def spec_fields(name: str, weights: str = "default") -> dict[str, Any]:
    """The registry spec of ``hf:ORG/NAME`` (or ``hf:PATH``) as keyword arguments of ``ModelSpec``,
    from the configuration of the checkpoint folder ``weights`` where it is one."""
    mid = model_id(name)
    config, source, pre = _configs(mid, checkpoint_folder(name, weights))
    return config_spec_fields(config, name, source, pre)


def config_spec_fields(config: dict[str, Any], name: str, source: str,
                       preprocessing: Preprocessing | None = None) -> dict[str, Any]:
    """The spec of the Hugging Face model of ``config`` (a ``config.json`` as a dict) named
    ``name``, as keyword arguments of ``ModelSpec``; ``source``: where its weights come from;
    ``preprocessing``: the checkpoint processor's (default: the family's)."""
    fam = family_of(config, name)
    pre = preprocessing or Preprocessing(fam.side, fam.crop, fam.mean, fam.std)
    if isinstance(fam, ImageFamily):
        return _image_spec_fields(config, fam, name, source, pre)
    frames, size = int(config["num_frames"]), int(config["image_size"])
    tt, th, tw = fam.tubelet(config)
    grid = (frames // tt, size // th, size // tw)
    layout = TokenLayout(grid=grid, prefix=fam.prefix, order=fam.order)
    blocks = f"hf.{fam.base}.{blocks_path(fam.base)}."
    depth = int(config["num_hidden_layers"])
    return dict(
        **_shared_fields(config, name, source, pre, size),
        default_layer=f"hf.{fam.base}.embeddings", modality="video", frames=frames, sampling_rate=fam.rate,
        note=f"the {tt}x{th}x{tw} tubelet embedding ({'x'.join(map(str, grid))} tokens"
             + (", with the class token" if fam.prefix else "") + "), before any attention",
        layouts=((f"hf.{fam.base}.embeddings", layout), (blocks + "[0-9]", layout), (blocks + "[0-9][0-9]", layout)),
        cam_layer=blocks + str(depth - 1 - (1 if fam.prefix else 0)),  # class-token heads: the last block's input
        iba=tuple(TRANSFORMER_SETTINGS.items()),
        micro_batch=2,  # base models at 10 replicas per pass: 9.4 GB (VideoMAE) and 14.7 GB (TimeSformer) peak RSS
    )


def _image_spec_fields(config: dict[str, Any], fam: ImageFamily, name: str, source: str,
                       pre: Preprocessing) -> dict[str, Any]:
    """:func:`config_spec_fields` of an image classifier: the embedding as the default layer of a
    transformer (each patch restricted before attention mixes them, as for torchvision's ViTs),
    the stride-8 stage of a CNN (the paper's ResNet-50 choice)."""
    # a ViT's input size is fixed by its position embeddings; a CNN (and DINOv2) takes the processor's crop
    size = pre.crop if fam.any_size else _square(config.get("image_size", pre.crop), name)
    root, blocks = f"hf.{fam.base}.", f"hf.{fam.base}.{blocks_path(fam.base)}."
    embedding = root + fam.embedding
    if fam.prefix is None:
        stages = len(config["depths"])
        default, cam, layouts = blocks + "1", blocks + str(stages - 1), ()
        note, iba = "the second stage's output (stride 8), the analogue of ResNet-50's conv3_x in the paper", ()
    else:
        side = size // int(config["patch_size"])
        iba = tuple(TRANSFORMER_SETTINGS.items())
        default = embedding
        if fam.windows:  # each stage but the last halves the grid at its end
            stages = len(config["depths"])
            grids = [side >> min(k + 1, stages - 1) for k in range(stages)]
            layouts = ((embedding, TokenLayout(grid=(side, side))),
                       *((blocks + str(k), TokenLayout(grid=(g, g))) for k, g in enumerate(grids)))
            cam = blocks + str(stages - 1)
            note = f"the patch embedding ({side}x{side} tokens), before any attention"
        else:
            registers = int(config.get("num_register_tokens", 0))
            layout = TokenLayout(grid=(side, side), prefix=fam.prefix + registers)
            layouts = ((embedding, layout), (blocks + "[0-9]", layout), (blocks + "[0-9][0-9]", layout))
            pooled = reads_grid_mean(fam.base, bool(config.get("use_mean_pooling", True)))
            cam = blocks + str(int(config["num_hidden_layers"]) - (1 if pooled else 2))
            tokens = "the class token" if fam.prefix == 1 else "the class and distillation tokens"
            tokens += f" and {registers} register tokens" if registers else ""
            note = f"the patch embedding ({side}x{side} tokens, with {tokens}), before any attention"
    return dict(**_shared_fields(config, name, source, pre, size), default_layer=default, modality="image", note=note,
                layouts=layouts, cam_layer=cam, iba=iba)


def _shared_fields(config: dict[str, Any], name: str, source: str, pre: Preprocessing, size: int) -> dict[str, Any]:
    """The spec fields every Hugging Face model's spec sets alike: its name, input of ``size``
    pixels resized and normalised by ``pre``, the labels of its configuration's ``id2label``."""
    id2label = {str(k): v for k, v in (config.get("id2label") or {}).items()}  # int keys in memory, str in JSON
    labels = tuple(str(id2label.get(str(i), f"class {i}")) for i in range(len(id2label)))
    return dict(name=name, family="hf", input_size=size, resize=int(round(size * pre.side / pre.crop)), mean=pre.mean,
                std=pre.std, labels="hf", label_names=labels, default_weights="default", weights_source=source)


def _square(size: Any, name: str) -> int:
    """The side of a configuration's square ``image_size``; a non-square one is refused."""
    sides = [int(size)] if isinstance(size, (int, float)) else [int(v) for v in size]
    if len(set(sides)) != 1:
        raise UserInputError(f"{name} takes images of {' x '.join(map(str, sides))} pixels; video-iba explains "
                             f"networks with a square input only")
    return sides[0]


class HFClassifier(nn.Module):
    """A Hugging Face classifier (``self.hf``) that returns logits; :meth:`video_iba_suffix` runs it
    from its embedding or a block on, so the bottleneck's steps skip the layers before it."""

    #: The backbone's embedding module.
    embedding = "embeddings"
    #: Its blocks hand more than their output on to the next (Swin's the grid's size): no run
    #: from a block on.
    chained = False

    def __init__(self, hf: nn.Module, base: str) -> None:
        super().__init__()
        self.hf = hf
        self.base = base
        self.blocks = blocks_path(base)
        if not isinstance(getattr(hf, base, None), nn.Module):  # a backbone (VideoMAEModel), not a classifier
            raise UserInputError(f"{type(hf).__name__} is a {base} backbone without a classification head; give the "
                                 f"classifier built on it (AutoModelForImageClassification or "
                                 f"AutoModelForVideoClassification)")
        found = getattr(hf, base).get_submodule(self.blocks)
        if not isinstance(found, nn.ModuleList):
            raise RuntimeError(f"{type(hf).__name__} has no block list at {base}.{self.blocks}")

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Accepts the wrapped network's own state dict (keys without ``hf.``) too."""
        if state_dict and not any(str(k).startswith("hf.") for k in state_dict):
            state_dict = {f"hf.{k}": v for k, v in state_dict.items()}
        return super().load_state_dict(self._fitted_state(state_dict), strict=strict, assign=assign)

    def _fitted_state(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """``state_dict`` made to fit this network where a family knows how (nothing by default)."""
        return state_dict

    def pixel_values(self, x: torch.Tensor) -> torch.Tensor:
        """The network's ``pixel_values`` for the input ``x`` this wrapper takes."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=self.pixel_values(x), return_dict=True).logits

    def attentions(self, x: torch.Tensor, mean_heads: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The logits for ``x`` and every block's attention probabilities ``(N, heads, L, L)``, in
        order, from one forward pass with the network's eager attention (which returns them as its
        blocks use them, so gradients reach them; its own attention implementation is restored
        after). With ``mean_heads`` each block's are averaged over heads as the block returns them,
        ``(N, 1, L, L)``, so that only the averages are held. Families whose attention is not one
        over all tokens (:data:`ROLLOUT_FAMILIES`) are refused."""
        check_full_attention(self.base)
        if self.base == "timesformer":
            return self._divided_attentions(x, mean_heads)
        switch = getattr(self.hf, "set_attn_implementation", None)
        before = getattr(self.hf.config, "_attn_implementation", None)
        if callable(switch) and before != "eager":
            switch("eager")
        # transformers < 4.48 builds SDPA attention classes that VideoMAE's does not turn eager when
        # attentions are asked for: each such module is its eager parent class for the call
        lent = [(m, type(m)) for m in self.hf.modules() if not callable(switch) and "Sdpa" in type(m).__name__
                and type(m).__bases__[0].__name__ == type(m).__name__.replace("Sdpa", "")]
        handles = [m.register_forward_hook(_mean_of_heads) for m in self.hf.modules()
                   if mean_heads and type(m).__name__.endswith("Attention")]
        try:
            for m, cls in lent:
                m.__class__ = cls.__bases__[0]
            with _as_it_was(self.hf):
                out = self.hf(pixel_values=self.pixel_values(x), output_attentions=True, return_dict=True)
        finally:
            for m, cls in lent:
                m.__class__ = cls
            for h in handles:
                h.remove()
            if callable(switch) and before not in (None, "eager"):
                switch(before)
        found = list(getattr(out, "attentions", None) or ())
        if not found or any(a is None for a in found):
            raise RuntimeError(f"the {self.base} network returned no attention probabilities")
        return out.logits, found

    def _divided_attentions(self, x: torch.Tensor, mean_heads: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """TimeSformer's attention probabilities, each block's temporal attention ``(N x places, heads,
        T, T)`` then its spatial attention ``(N x T, heads, 1 + places, 1 + places)``: its blocks ask
        only the spatial one for them, so every self-attention module is asked for the call (and
        answers its caller as before)."""
        found: list[torch.Tensor] = []
        order: list[bool] = []  # whether each was a temporal attention

        def ask(_m: nn.Module, args: tuple[Any, ...], _kw: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (args[0],), {"output_attentions": True}

        def record(m: nn.Module, _args: Any, _kwargs: Any, out: Any) -> Any:
            found.append(out[1].mean(dim=1, keepdim=True) if mean_heads else out[1])
            order.append(temporal[m])
            return (out[0],)

        temporal = {m: ".temporal_attention." in f".{name}." for name, m in self.hf.named_modules()
                    if type(m).__name__ == "TimesformerSelfAttention"}
        handles = []
        try:
            for m in temporal:
                handles.append(m.register_forward_pre_hook(ask, with_kwargs=True))
                handles.append(m.register_forward_hook(record, with_kwargs=True))
            logits = self(x)
        finally:
            for h in handles:
                h.remove()
        if not found or order != [True, False] * (len(found) // 2):
            raise RuntimeError(f"the timesformer network's attention ran in the order {order} (temporal: True), not "
                               f"temporal then spatial in every block")
        return logits, found

    def token_attention(self, i: int, a: torch.Tensor, n: int) -> torch.Tensor:
        """The ``i``-th attention of :meth:`attentions` for ``n`` inputs, averaged over heads (``a``: its
        shape without the heads, or anything of that shape), as one ``(n, L, L)`` matrix over the
        network's tokens. For TimeSformer (the class token, then places x frames, each place's
        frames together) a temporal attention mixes each place's frames and leaves the class token's
        row empty; a spatial attention mixes each frame's places with the class token, whose own row
        is the mean of its rows in the frames (the block averages the class token's outputs over
        frames). Other families' attention is one such matrix already."""
        if self.base != "timesformer":
            return a
        if i % 2 == 0:  # temporal: (n x places, T, T)
            frames = a.shape[-1]
            places = a.shape[0] // n
            inner = torch.einsum("bpij,pq->bpiqj", a.reshape(n, places, frames, frames),
                                 torch.eye(places, dtype=a.dtype, device=a.device))
            out = a.new_zeros(n, 1 + places * frames, 1 + places * frames)
            out[:, 1:, 1:] = inner.reshape(n, places * frames, places * frames)
            return out
        # spatial: (n x T, 1 + places, 1 + places), the class token first
        frames = a.shape[0] // n
        places = a.shape[-1] - 1
        a = a.reshape(n, frames, 1 + places, 1 + places)
        out = a.new_zeros(n, 1 + places * frames, 1 + places * frames)
        out[:, 1:, 1:] = torch.einsum("btpq,ts->bptqs", a[:, :, 1:, 1:],
                                      torch.eye(frames, dtype=a.dtype, device=a.device)).reshape(
            n, places * frames, places * frames)
        out[:, 1:, 0] = a[:, :, 1:, 0].transpose(1, 2).reshape(n, places * frames)
        out[:, 0, 1:] = a[:, :, 0, 1:].transpose(1, 2).reshape(n, places * frames) / frames
        out[:, 0, 0] = a[:, :, 0, 0].mean(dim=1)
        return out

    def head_reads(self) -> tuple[tuple[int, ...], bool]:
        """The tokens the classification head reads after the last block: the indices of single
        tokens (the class token; DeiT's with its teacher: the distillation token too) and whether
        it reads the grid tokens' mean (VideoMAE, BEiT with mean pooling; DINOv2 both)."""
        mean = reads_grid_mean(self.base, bool(getattr(self.hf.config, "use_mean_pooling", True)))
        if mean and self.base not in ("dinov2", "dinov2_with_registers"):  # DINOv2's head reads its class token too
            return (), True
        if self.base == "deit" and "WithTeacher" in type(self.hf).__name__:
            return (0, 1), False
        return (0,), mean

    def video_iba_suffix(self, layer: str) -> Callable[[torch.Tensor, Any], torch.Tensor] | None:
        """The network after ``layer`` (the embedding or a block) as ``f(input, layer output) -> logits``.

        The embedding's output is replaced by the given one (its first entry, where it is a tuple)
        and the encoder runs only the later blocks (its block list is swapped for the call and
        restored, also on errors), so the model's own pooling and head apply unchanged. Swin's
        stages pass their grid's size on to the next, so a Swin runs only from its embedding.
        """
        owner = getattr(self.hf, self.base)
        blocks = f"hf.{self.base}.{self.blocks}."
        if layer == f"hf.{self.base}.{self.embedding}":
            start = 0
        elif layer.startswith(blocks) and layer[len(blocks):].isdigit() and not self.chained:
            start = int(layer[len(blocks):]) + 1
        else:
            return None

        def replaced(_m: nn.Module, _i: Any, out: Any, given: Any) -> Any:
            tokens = given[0] if isinstance(given, (tuple, list)) else given
            return (tokens, *out[1:]) if isinstance(out, tuple) else tokens

        def rest(x: torch.Tensor, out: Any) -> torch.Tensor:
            parent_path, _, attr = self.blocks.rpartition(".")
            parent = owner.get_submodule(parent_path) if parent_path else owner
            kept = getattr(parent, attr)
            with forward_hook(owner.get_submodule(self.embedding), lambda m, i, o: replaced(m, i, o, out)):
                setattr(parent, attr, nn.ModuleList(list(kept)[start:]))
                try:
                    return self(x)
                finally:
                    setattr(parent, attr, kept)
        return rest


class HFImageClassifier(HFClassifier):
    """A Hugging Face image classifier that takes photos ``(N, C, H, W)`` and returns logits (the
    network's own output object reduced to its logits; a DeiT with its distillation head: the mean
    of both heads, as its own output gives them)."""

    def __init__(self, hf: nn.Module, base: str) -> None:
        super().__init__(hf, base)
        self.embedding, self.chained = IMAGE_FAMILIES[base].embedding, IMAGE_FAMILIES[base].windows

    def pixel_values(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise UserInputError(f"a Hugging Face image model takes photos (N, C, H, W), got {tuple(x.shape)}")
        return x


class HFVideoClassifier(HFClassifier):
    """A Hugging Face video classifier that takes clips ``(N, C, T, H, W)`` and returns logits."""

    def pixel_values(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise UserInputError(f"a Hugging Face video model takes clips (N, C, T, H, W), got {tuple(x.shape)}")
        frames = getattr(self.hf.config, "num_frames", None)
        if frames is not None and x.shape[2] != frames:  # TimeSformer's blocks would split its tokens wrongly
            raise UserInputError(f"this {self.base} network takes clips of {frames} frames (its config.num_frames), "
                                 f"got {x.shape[2]}; give it clips of {frames} frames, or build it for {x.shape[2]} "
                                 f"(load_model(..., frames={x.shape[2]}))")
        return x.permute(0, 2, 1, 3, 4)

    def _fitted_state(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """ViViT position embeddings made for clips of another length resampled to this network's
        (with a warning naming that length)."""
        key = f"hf.{self.base}.embeddings.position_embeddings"
        table = state_dict.get(key) if self.base == "vivit" else None
        if isinstance(table, torch.Tensor):
            own = self.hf.get_parameter(key[len("hf."):])
            if table.shape != own.shape and table.shape[::2] == own.shape[::2]:
                span, hw = self._tubelet_span_and_cells()
                trained, steps = (table.shape[1] - 1) // hw, (own.shape[1] - 1) // hw  # time steps
                log.warning("%s: the weights' position embeddings are made for clips of %d frames and these clips "
                            "hold %d: resampled to them; give --frames %d to run the weights on the clips they were "
                            "trained on", self.base, trained * span, steps * span, trained * span)
                state_dict = {**state_dict, key: self._positions_in_time(table, steps, hw)}
        return state_dict

    def fit_positions(self) -> None:
        """Resample ViViT's learned position embeddings in time to the clips of its configuration's
        ``num_frames`` (each grid cell's rows linearly, as MViT resamples its tables; the class
        token's as it is); nothing for the other families or where they fit."""
        if self.base != "vivit":
            return
        span, hw = self._tubelet_span_and_cells()
        embeddings = getattr(self.hf, self.base).embeddings
        old = embeddings.position_embeddings
        steps = int(self.hf.config.num_frames) // span
        if old.shape[1] != 1 + steps * hw:
            embeddings.position_embeddings = nn.Parameter(self._positions_in_time(old.detach(), steps, hw),
                                                          requires_grad=old.requires_grad)
            embeddings.patch_embeddings.num_patches = steps * hw

    def _tubelet_span_and_cells(self) -> tuple[int, int]:
        """Frames one token spans, and grid cells per time step (ViViT)."""
        config = self.hf.config
        t, h, w = (int(v) for v in config.tubelet_size)
        size = config.image_size
        height, width = (size, size) if isinstance(size, int) else size
        return t, (int(height) // h) * (int(width) // w)

    @staticmethod
    def _positions_in_time(table: torch.Tensor, steps: int, hw: int) -> torch.Tensor:
        """``(1, 1 + T * hw, C)`` position embeddings (class token first, then the grid of ``hw``
        cells per time step, time major) with the grid's time resampled to ``steps``."""
        channels = table.shape[2]
        grid = table[0, 1:].reshape(-1, hw * channels)
        return torch.cat([table[:, :1], resampled_rows(grid, steps).reshape(1, steps * hw, channels)], dim=1)


def build_hf(name: str, weights: str, frames: int | None = None) -> nn.Module:
    """The wrapped network of ``hf:ORG/NAME``: cached weights (``default``), ``random`` (initialised
    from the configuration), or a checkpoint folder written by ``save_pretrained``; a video network
    for clips of ``frames`` frames (default: the configuration's ``num_frames``). Every video family
    takes clips of another length: VideoMAE computes its position codes (sinusoids, no weights)
    from the length it is built for; TimeSformer resamples its learned time embeddings to the clip
    it is given (nearest) and reads the length from its configuration; ViViT's learned position
    embeddings, one per token, are resampled in time (:meth:`HFVideoClassifier.fit_positions`)."""
    try:
        import transformers
    except ImportError as exc:
        raise UserInputError("Hugging Face models need the optional package transformers; "
                             "pip install 'video-iba[hf]'") from exc
    mid = model_id(name)
    folder = checkpoint_folder(name, weights)
    config, _ = hf_config(mid, folder)
    fam = family_of(config, mid)
    if isinstance(fam, ImageFamily):
        auto, built_for = transformers.AutoModelForImageClassification, {}
        wrap: Callable[[nn.Module], nn.Module] = lambda net: HFImageClassifier(net, fam.base)
    else:
        auto = transformers.AutoModelForVideoClassification
        own = int(config["num_frames"])
        frames = own if frames is None else frames
        # VideoMAE is built for the clip length (its position codes follow from it); TimeSformer and
        # ViViT load the embeddings of their own length and are told the clip's (_for_clips)
        built_for = {"num_frames": frames} if fam.base == "videomae" and frames != own else {}
        wrap = lambda net: _for_clips(HFVideoClassifier(net, fam.base), frames)
    if weights == "random":
        kind = config["model_type"]
        cfg = transformers.AutoConfig.for_model(kind, **{**{k: v for k, v in config.items() if k != "model_type"},
                                                         **built_for})
        if cfg.architectures is None:  # a family with two heads (DeiT) is looked up in it: then the first
            cfg.architectures = []
        return wrap(auto.from_config(cfg))
    if folder is not None and weights in ("default", "kinetics400", folder):
        source = folder
    elif weights in ("default", "kinetics400"):
        snap = _snapshot(mid)
        if snap is None:
            raise _missing(mid, "checkpoint")
        source = snap
    else:
        raise UserInputError(f"unknown weights '{weights}' for {name}; give default (the Hugging Face cache), random, "
                             f"a checkpoint folder or a state dict file")
    bars = transformers.utils.logging
    shown = bars.is_progress_bar_enabled()
    bars.disable_progress_bar()  # its "Loading weights" bar, amid the command line's own lines
    try:
        net = auto.from_pretrained(source, local_files_only=True, **built_for)
    except OSError as exc:
        raise _missing(mid, "checkpoint") if folder is None else UserInputError(
            f"cannot load a Hugging Face checkpoint from '{folder}' ({exc}); give a folder written by "
            f"save_pretrained") from exc
    finally:
        if shown:
            bars.enable_progress_bar()
    return wrap(net)


def _for_clips(model: HFVideoClassifier, frames: int) -> HFVideoClassifier:
    """``model`` told that its clips hold ``frames`` frames (TimeSformer's blocks read it from the
    configuration they share with the network; ViViT's position embeddings are resampled to it)."""
    model.hf.config.num_frames = frames
    model.fit_positions()
    return model
