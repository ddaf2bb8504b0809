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


def preprocess_image(rgb: np.ndarray, spec: ModelSpec, name: str = "image") -> tuple[torch.Tensor, Geometry]:
    """Turn an ``(H, W, 3)`` uint8 RGB array into the model input ``(1, 3, S, S)``.

    The shorter side is resized to ``spec.resize`` (bilinear, antialiased), the centre
    ``spec.input_size`` square is cropped, and channels are normalised with ``spec.mean/std``.

    Raises:
        UserInputError: images whose shorter side is below ``spec.min_side``.
    """
    import torchvision.transforms.v2.functional as TF

    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    if min(h, w) < spec.min_side:
        raise UserInputError(f"{name} is {w}x{h} pixels; {spec.name} needs at least {spec.min_side} pixels on the "
                             f"shorter side (it is resized to {spec.resize} and cropped to {spec.input_size}); "
                             f"use a larger image")
    t = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    if h <= w:
        nh, nw = spec.resize, int(spec.resize * w / h)
    else:
        nh, nw = int(spec.resize * h / w), spec.resize
    t = TF.resize(t, [nh, nw], antialias=True)
    s = spec.input_size
    top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
    t = t[:, top:top + s, left:left + s]
    x = t.float().div(255.0)
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    x = ((x - mean) / std)[None]
    sx, sy = nw / w, nh / h
    box = (left / sx, top / sy, (left + s) / sx, (top + s) / sy)
    return x, Geometry((h, w), box, (sx, sy))
