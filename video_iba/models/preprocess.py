"""Preprocessing: resize the shorter side, crop, normalise; and where the crops lie.

A photo and a video frame go through the same steps. :class:`CropPlan` says how frames of a
given size become model inputs: the size they are resized to and the square crops taken from
it (the centre crop the model was evaluated with, or overlapping tiles covering the frame), each
with its box in the source's pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UserInputError
from .registry import ModelSpec

COVERAGES = ("center", "tiles")


@dataclass(frozen=True)
class Geometry:
    """How the model input maps onto the original image.

    Attributes:
        image_size: Original ``(height, width)``.
        box: Crop box in original pixel coordinates ``(x0, y0, x1, y1)`` (floats).
        scale: Resized size over original size, ``(sx, sy)``.
        times: A video clip's frames: the time (seconds) of the source frame each model frame
            shows; empty for a photo.
    """

    image_size: tuple[int, int]
    box: tuple[float, float, float, float]
    scale: tuple[float, float]
    times: tuple[float, ...] = ()


def resize_crop_normalize(
    frames: np.ndarray,
    *,
    resize: int,
    crop: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    offset: tuple[int, int] | None = None,
    source_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, Geometry]:
    """Resize the shorter side to ``resize`` (bilinear, antialiased), centre-crop ``crop`` square, normalise.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB, one or more frames of the same size.
        resize, crop: Shorter side after resizing; side of the square crop.
        mean, std: Per-channel normalisation of values in ``[0, 1]``.
        offset: ``(top, left)`` of the crop in the resized frame instead of the centre.
        source_size: ``(height, width)`` of the original frames when ``frames`` were already
            resized on decoding; the geometry is then given in the original's pixels.

    Returns:
        ``(N, 3, crop, crop)`` float tensor and the crop's :class:`Geometry` in the frames' pixels.
    """
    h, w = int(frames.shape[1]), int(frames.shape[2])
    t = torch.from_numpy(np.array(frames, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2)
    nh, nw = resized_size(h, w, resize)
    if (nh, nw) != (h, w):
        # torchvision's antialiased resize of uint8 images, the same kernel and bytes (the test
        # compares them), without importing torchvision, which costs seconds
        t = F.interpolate(t, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = offset if offset is not None else (int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0)))
    if not (0 <= top <= nh - crop and 0 <= left <= nw - crop):
        raise ValueError(f"crop offset {(top, left)} outside the {nw}x{nh} resized frame")
    t = t[:, :, top:top + crop, left:left + crop]
    m = torch.tensor(mean).view(1, 3, 1, 1)
    sd = torch.tensor(std).view(1, 3, 1, 1)
    # contiguous (N, C, H, W) whatever layout the resize returns: convolutions read a channels-last
    # photo in another order, which changes their rounding and ran ResNet-50's fit slower on a CPU
    x = ((t.float().div(255.0) - m) / sd).contiguous()
    if source_size is not None:
        h, w = source_size
    sx, sy = nw / w, nh / h
    box = (left / sx, top / sy, (left + crop) / sx, (top + crop) / sy)
    return x, Geometry((h, w), box, (sx, sy))


def resized_size(h: int, w: int, short: int) -> tuple[int, int]:
    """``(height, width)`` after resizing the shorter side of an ``h x w`` frame to ``short``."""
    return (short, int(short * w / h)) if h <= w else (int(short * h / w), short)


def check_size(name: str, height: int, width: int, spec: ModelSpec, what: str = "image") -> None:
    """Refuse an image or video whose shorter side is below ``spec.min_side`` (a quarter of the model
    input: smaller inputs would be upsampled more than 4x), naming its size and the model's.

    Raises:
        UserInputError: the input is too small for ``spec``.
    """
    if min(height, width) < spec.min_side:
        raise UserInputError(f"{name} is {width}x{height} pixels; {spec.name} needs at least {spec.min_side} pixels on "
                             f"the shorter side (it is resized to {spec.resize} and cropped to {spec.input_size}); "
                             f"use a larger {what}")


def rgb_uint8(pixels: Any, name: str = "image") -> np.ndarray:
    """Pixels as uint8 RGB values: a numpy array or tensor of uint8 (or integers 0..255) or of
    floats in ``[0, 1]``, a PIL image, or a list of frames; anything else (floats outside
    ``[0, 1]``, e.g. frames already normalised, or values the uint8 range does not hold) is
    refused rather than cast."""
    if isinstance(pixels, Image.Image):
        return np.asarray(pixels.convert("RGB"))
    if isinstance(pixels, (list, tuple)):
        if not pixels:
            raise UserInputError(f"{name} is an empty list; give its frames")
        frames = [rgb_uint8(p, name) for p in pixels]
        odd = next((i for i, f in enumerate(frames) if f.shape != frames[0].shape), None)
        if odd is not None:
            raise UserInputError(f"the frames of {name} differ in shape: frame {odd} is {frames[odd].shape}, frame 0 "
                                 f"{frames[0].shape}; give frames of one size")
        pixels = np.stack(frames)
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.detach().cpu().numpy()
    if not isinstance(pixels, np.ndarray):
        raise UserInputError(f"{name} must be RGB pixels (a numpy array, a tensor or a PIL image), not "
                             f"{type(pixels).__name__}")
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.size and np.issubdtype(pixels.dtype, np.floating):
        lo, hi = float(np.min(pixels)), float(np.max(pixels))
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo and hi <= 1.0):
            fix = ("divide them by 255, or give uint8" if math.isfinite(hi) and 0.0 <= lo and hi <= 255.0 else
                   "give RGB floats in [0, 1] or uint8 0..255 (not pixels already normalised: preprocessing "
                   "normalises them)")
            raise UserInputError(f"{name} holds floats from {lo:g} to {hi:g}, not in [0, 1]; {fix}")
        return np.round(pixels * 255.0).astype(np.uint8)
    if pixels.size and np.issubdtype(pixels.dtype, np.integer):
        lo, hi = int(np.min(pixels)), int(np.max(pixels))
        if lo < 0 or hi > 255:
            raise UserInputError(f"{name} holds integers from {lo} to {hi}; give uint8 RGB values 0..255 (16-bit "
                                 f"pixels: divide by 257)")
        return pixels.astype(np.uint8)
    if pixels.size == 0:
        raise UserInputError(f"{name} is empty, shape {tuple(pixels.shape)}")
    raise UserInputError(f"{name} has pixels of type {pixels.dtype}; give uint8 RGB values or floats in [0, 1]")


def _layout_hint(shape: tuple[int, ...], video: bool = False) -> str:
    """The fix for pixels laid out otherwise than ``(H, W, 3)`` (clips: ``(T, H, W, 3)``): the colour
    axis first, an alpha channel, one grayscale channel, one frame given as a clip."""
    if len(shape) >= 3 and shape[-3] == 3 and shape[-1] != 3:
        return "; these look channels-first: move the colour axis last (numpy: np.moveaxis(x, -3, -1))"
    if len(shape) >= 3 and shape[-1] == 4:
        return "; RGBA: drop the alpha channel (x[..., :3]), or read the file with read_image (it composites " \
               "transparency over white)"
    if video and len(shape) == 3 and shape[-1] == 3:
        return "; one frame: add a time axis (x[None]), or explain a photo with an image model"
    if len(shape) == 2 + video:
        return "; grayscale: repeat it into three channels (np.stack([x] * 3, axis=-1))"
    return ""


def check_spec(spec: Any, video: bool, function: str) -> None:
    """Refuse what is not a :class:`ModelSpec`, or the spec of the other kind of model (a video
    model's for a photo, an image model's for a clip), naming the function to use."""
    if not isinstance(spec, ModelSpec):
        example = f"get_spec({spec!r})" if isinstance(spec, str) else "get_spec(name)"
        raise UserInputError(f"{function} takes the model's spec (model.video_iba_spec, or video_iba.{example}), not "
                             f"{type(spec).__name__}")
    if spec.is_video != video:
        fix = ("read a clip with read_clip(path, spec) or preprocess_clip(frames, spec)" if spec.is_video
               else "read a photo with read_image and preprocess_image")
        raise UserInputError(f"{spec.name} is {'a video' if spec.is_video else 'an image'} model; {fix}")


def preprocess_image(rgb: Any, spec: ModelSpec, name: str = "image") -> tuple[torch.Tensor, Geometry]:
    """Turn an RGB image (``(H, W, 3)`` uint8 or floats in ``[0, 1]``, as an array or tensor, or a
    PIL image; see :func:`rgb_uint8`) into the model input ``(1, 3, S, S)``.

    The shorter side is resized to ``spec.resize`` (bilinear, antialiased), the centre
    ``spec.input_size`` square is cropped, and channels are normalised with ``spec.mean/std``.

    Raises:
        UserInputError: images whose shorter side is below ``spec.min_side``, or pixels that are
            not RGB values.
    """
    check_spec(spec, False, "preprocess_image")
    rgb = rgb_uint8(rgb, name)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise UserInputError(f"{name} must be (H, W, 3) RGB pixels, got shape {tuple(rgb.shape)}"
                             + _layout_hint(rgb.shape))
    check_size(name, int(rgb.shape[0]), int(rgb.shape[1]), spec)
    return resize_crop_normalize(rgb[None], resize=spec.resize, crop=spec.input_size, mean=spec.mean, std=spec.std)


def preprocess_clip(frames: Any, spec: ModelSpec, name: str = "clip") -> tuple[torch.Tensor, Geometry]:
    """Turn ``(T, H, W, 3)`` RGB frames (uint8 or floats in ``[0, 1]``, an array, a tensor or a list
    of frames; see :func:`rgb_uint8`) into the clip ``(1, 3, T, S, S)`` of a video model, each
    frame as :func:`preprocess_image` treats an image (``T`` is not checked against
    ``spec.frames``: sample the frames at the model's rate, see :func:`video_iba.read_clip`)."""
    check_spec(spec, True, "preprocess_clip")
    frames = rgb_uint8(frames, name)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise UserInputError(f"{name} must be (T, H, W, 3) RGB frames, got shape {tuple(frames.shape)}"
                             + _layout_hint(frames.shape, video=True))
    check_size(name, int(frames.shape[1]), int(frames.shape[2]), spec, "video")
    x, geo = resize_crop_normalize(frames, resize=spec.resize, crop=spec.input_size, mean=spec.mean, std=spec.std)
    return x.permute(1, 0, 2, 3)[None].contiguous(), geo


@dataclass(frozen=True)
class Tile:
    """One square crop of the resized frame: ``(top, left)`` there, and its box in source pixels."""

    top: int
    left: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class CropPlan:
    """How frames become model inputs: the size ``(height, width)`` they are resized to and the crops
    taken from it."""

    size: tuple[int, int]
    crop: int
    tiles: tuple[Tile, ...]


def plan_crops(height: int, width: int, spec: ModelSpec, coverage: str = "center") -> CropPlan:
    """The crops of a ``height x width`` frame for ``coverage``.

    ``center``: the shorter side is resized to the model's resize side and the centre square is
    cropped, as the model was evaluated. ``tiles``: the shorter side is resized to the crop side
    and ``ceil(long / crop)`` evenly spaced, overlapping squares cover the whole frame.
    """
    if coverage not in COVERAGES:
        raise UserInputError(f"unknown coverage '{coverage}'; give {{coverage}} one of {', '.join(COVERAGES)}",
                             options=["coverage"])
    crop = spec.input_size
    short = spec.resize if coverage == "center" else crop
    nh, nw = resized_size(height, width, short)
    if coverage == "center":
        offsets = [(int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0)))]
    else:
        long_side = max(nh, nw)
        n = max(1, math.ceil(long_side / crop - 1e-9))
        starts = ([int(round(v)) for v in np.linspace(0, long_side - crop, n)] if n > 1
                  else [int(round((long_side - crop) / 2))])
        offsets = [(0, s) if nw >= nh else (s, 0) for s in starts]
    sx, sy = nw / width, nh / height
    tiles = tuple(Tile(t, left, (left / sx, t / sy, (left + crop) / sx, (t + crop) / sy)) for t, left in offsets)
    return CropPlan((nh, nw), crop, tiles)


def crop_input(frames: np.ndarray, spec: ModelSpec, plan: CropPlan, tile: Tile,
               source: tuple[int, int]) -> torch.Tensor:
    """The model input of one crop: ``(1, 3, S, S)`` for an image model, the clip ``(1, 3, T, S, S)``
    for a video model.

    Args:
        frames: ``(T, h, w, 3)`` uint8 RGB, at the source size or already at ``plan.size``
            (videos are resized on decoding).
        spec, plan, tile: The model, the crop plan and the crop to take.
        source: The source's ``(height, width)``.
    """
    x, _ = resize_crop_normalize(frames, resize=min(plan.size), crop=plan.crop, mean=spec.mean, std=spec.std,
                                 offset=(tile.top, tile.left), source_size=source)
    return x.permute(1, 0, 2, 3)[None].contiguous() if spec.is_video else x


def _feather(plan: CropPlan) -> list[np.ndarray]:
    """Per tile, ``(S, S)`` blending weights in the resized frame, before normalisation: 1 inside,
    falling linearly towards each tile edge that lies inside the frame (an edge on the frame's
    border keeps weight 1), so overlapping crops fade into each other without a seam."""
    nh, nw = plan.size
    c = plan.crop
    out = []
    ramp = np.minimum(np.arange(c) + 0.5, c - np.arange(c) - 0.5) / (c / 4.0)
    for t in plan.tiles:
        wy = np.ones(c)
        wx = np.ones(c)
        if len(plan.tiles) > 1:
            y_in = np.clip(ramp, 0.02, 1.0)
            wy = np.where(np.arange(c) < c / 2, 1.0 if t.top == 0 else y_in, 1.0 if t.top + c >= nh else y_in)
            wx = np.where(np.arange(c) < c / 2, 1.0 if t.left == 0 else y_in, 1.0 if t.left + c >= nw else y_in)
        out.append(np.outer(wy, wx))
    return out


def tile_weights(plan: CropPlan) -> list[np.ndarray]:
    """Per tile, ``(S, S)`` weights of its cells in the merged map; at every cell of the resized
    frame they sum to 1 over the tiles covering it (feathered where tiles overlap)."""
    nh, nw = plan.size
    total = np.zeros((nh, nw), dtype=np.float64)
    feathers = _feather(plan)
    for t, f in zip(plan.tiles, feathers):
        total[t.top:t.top + plan.crop, t.left:t.left + plan.crop] += f
    return [f / total[t.top:t.top + plan.crop, t.left:t.left + plan.crop] for t, f in zip(plan.tiles, feathers)]
