"""Image preprocessing: resize the shorter side, centre-crop, normalise; and where the crop lies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserInputError
from .registry import ModelSpec


@dataclass(frozen=True)
class Geometry:
    """How the model input maps onto the original image.

    Attributes:
        image_size: Original ``(height, width)``.
        box: Crop box in original pixel coordinates ``(x0, y0, x1, y1)`` (floats).
        scale: Resized size over original size, ``(sx, sy)``.
    """

    image_size: tuple[int, int]
    box: tuple[float, float, float, float]
    scale: tuple[float, float]


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
    import torchvision.transforms.v2.functional as TF

    h, w = int(frames.shape[1]), int(frames.shape[2])
    t = torch.from_numpy(np.array(frames, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2)
    nh, nw = resized_size(h, w, resize)
    if (nh, nw) != (h, w):
        t = TF.resize(t, [nh, nw], antialias=True)
    top, left = offset if offset is not None else (int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0)))
    if not (0 <= top <= nh - crop and 0 <= left <= nw - crop):
        raise ValueError(f"crop offset {(top, left)} outside the {nw}x{nh} resized frame")
    t = t[:, :, top:top + crop, left:left + crop]
    m = torch.tensor(mean).view(1, 3, 1, 1)
    sd = torch.tensor(std).view(1, 3, 1, 1)
    x = (t.float().div(255.0) - m) / sd
    if source_size is not None:
        h, w = source_size
    sx, sy = nw / w, nh / h
    box = (left / sx, top / sy, (left + crop) / sx, (top + crop) / sy)
    return x, Geometry((h, w), box, (sx, sy))


def resized_size(h: int, w: int, short: int) -> tuple[int, int]:
    """``(height, width)`` after resizing the shorter side of an ``h x w`` frame to ``short``."""
    return (short, int(short * w / h)) if h <= w else (int(short * h / w), short)


def preprocess_image(rgb: np.ndarray, spec: ModelSpec, name: str = "image") -> tuple[torch.Tensor, Geometry]:
    """Turn an ``(H, W, 3)`` uint8 RGB array into the model input ``(1, 3, S, S)``.

    The shorter side is resized to ``spec.resize`` (bilinear, antialiased), the centre
    ``spec.input_size`` square is cropped, and channels are normalised with ``spec.mean/std``.

    Raises:
        UserInputError: images whose shorter side is below ``spec.min_side``.
    """
    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    if min(h, w) < spec.min_side:
        raise UserInputError(f"{name} is {w}x{h} pixels; {spec.name} needs at least {spec.min_side} pixels on the "
                             f"shorter side (it is resized to {spec.resize} and cropped to {spec.input_size}); "
                             f"use a larger image")
    return resize_crop_normalize(rgb[None], resize=spec.resize, crop=spec.input_size, mean=spec.mean, std=spec.std)


def preprocess_clip(
    frames: np.ndarray,
    *,
    resize: int,
    crop: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> tuple[torch.Tensor, Geometry]:
    """Turn ``(T, H, W, 3)`` uint8 RGB frames into a clip ``(1, 3, T, crop, crop)``, as for images frame by frame."""
    x, geo = resize_crop_normalize(frames, resize=resize, crop=crop, mean=mean, std=std)
    return x.permute(1, 0, 2, 3)[None].contiguous(), geo
