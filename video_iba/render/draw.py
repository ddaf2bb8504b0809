"""One model input with its map drawn over it, for a notebook: :func:`draw`."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserInputError
from ..files import atomic_write
from ..io.video import VideoWriter
from ..models.preprocess import Geometry
from ..models.registry import ModelSpec
from ..results import Attribution, ClipAttribution
from .overlay import bits_on_image, overlay, scale_top

#: Frame rate of a drawn clip's MP4 (a model clip's frames are a few of the source's).
DRAW_FPS = 4.0
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


def normalised_to_rgb(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised model input ``(3, H, W)`` or clip ``(3, T, H, W)`` back to uint8 RGB ``(H, W, 3)``
    or ``(T, H, W, 3)``."""
    rgb = np.moveaxis(x, 0, -1) * np.asarray(std) + np.asarray(mean)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def draw(
    attr: Attribution,
    x: torch.Tensor | np.ndarray,
    spec: ModelSpec | nn.Module | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    vmax: float | None = None,
    geometry: Geometry | None = None,
    path: str | os.PathLike[str] | None = None,
    fps: float = DRAW_FPS,
) -> np.ndarray:
    """The map of ``attr`` drawn over the model input it explains, as the command line draws maps
    (inferno, 0.6 opacity; bits as they are, other units by magnitude).

    Args:
        attr: An :class:`Attribution` of one photo ``(H, W)`` or model clip ``(T, H, W)``
            (:func:`~video_iba.explain`, :func:`~video_iba.attribute`).
        x: The input it explains: the preprocessed tensor ``(1, 3, H, W)`` or ``(1, 3, T, H, W)``
            (the batch axis may be left out), or uint8 RGB frames ``(H, W, 3)`` / ``(T, H, W, 3)``.
        spec: The model (or its :class:`ModelSpec`) ``x`` was preprocessed for: its ``mean`` and
            ``std`` undo the normalisation. ``mean`` and ``std`` given here take precedence.
        vmax: Top of the colour scale (default: the map's largest value).
        geometry: The :class:`~video_iba.Geometry` that ``preprocess_image`` (or
            ``preprocess_clip``) returned with the model input: ``x`` is then the original uint8
            image ``(H0, W0, 3)`` (or frames ``(T, H0, W0, 3)``), the map is placed at the crop
            box, and what the model did not see is hatched, as in the command line's figure.
        path: Also write the drawing: a PNG (or JPEG) for a photo, an MP4 at ``fps`` for a clip
            (atomically).

    Returns:
        uint8 RGB ``(H, W, 3)``, or ``(T, H, W, 3)`` for a clip (the original's size with
        ``geometry``).
    """
    if isinstance(attr, ClipAttribution):
        raise UserInputError("a video's ClipAttribution is drawn over its source frames by explain_file (the "
                             "overlay MP4); draw takes the Attribution of one photo or model clip")
    if not isinstance(attr, Attribution):
        raise UserInputError(f"draw takes an Attribution (from explain or attribute), not {type(attr).__name__}")
    values = attr.unit.magnitude(attr.values.detach().float().cpu().numpy())
    top = _top(values, vmax)
    if geometry is not None:
        rgb = _originals(x, values.shape, geometry)
        cells = values.reshape(-1, *values.shape[-2:])
        values = np.stack([bits_on_image(v, geometry.box, geometry.image_size) for v in cells]).reshape(rgb.shape[:-1])
    else:
        rgb = _frames(x, values.shape, spec, mean, std)
    drawn = (overlay(rgb, values, top) if values.ndim == 2 else
             np.stack([overlay(f, v, top) for f, v in zip(rgb, values)]))
    if path is not None:
        _write(drawn, os.fspath(path), fps)
    return drawn


def _frames(x: Any, shape: tuple[int, ...], spec: Any, mean: Sequence[float] | None,
            std: Sequence[float] | None) -> np.ndarray:
    """``x`` as uint8 RGB frames of the map's ``shape``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise UserInputError(f"x must be the input the map explains (a tensor or an array), not {type(x).__name__}")
    if x.dtype == np.uint8:
        if x.shape != (*shape, 3):
            raise UserInputError(f"x's RGB frames are {x.shape}, the map {shape}: give the frames of the model input "
                                 f"the map explains, {(*shape, 3)}")
        return x
    given = x.shape
    if x.ndim == len(shape) + 2 and x.shape[0] == 1:
        x = x[0]
    if x.shape != (3, *shape):
        raise UserInputError(f"x has shape {given}, the map {shape}: give the preprocessed input the map explains, "
                             f"(1, 3, {', '.join(map(str, shape))}), or its uint8 RGB frames")
    if mean is None or std is None:
        norm = getattr(spec, "video_iba_spec", spec)
        if not isinstance(norm, ModelSpec):
            raise UserInputError("draw needs the normalisation x was preprocessed with: give the model or its spec, "
                                 "or mean= and std=")
        mean = norm.mean if mean is None else mean
        std = norm.std if std is None else std
    if len(mean) != 3 or len(std) != 3:
        raise UserInputError(f"mean and std hold one value per colour channel (3), got {len(mean)} and {len(std)}")
    return normalised_to_rgb(x, mean, std)


def _originals(x: Any, shape: tuple[int, ...], geometry: Any) -> np.ndarray:
    """``x`` as the original uint8 image or frames the ``geometry`` describes."""
    if not isinstance(geometry, Geometry):
        raise UserInputError(f"geometry is what preprocess_image or preprocess_clip returned with the input, not "
                             f"{type(geometry).__name__}")
    want = (*shape[:-2], *geometry.image_size, 3)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.shape != want:
        got = f"{x.shape} {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise UserInputError(f"with geometry, x is the original uint8 RGB the input was cropped from, {want}; got "
                             f"{got} (without geometry, give the model input)")
    return x


def _top(values: np.ndarray, vmax: float | None) -> float:
    if vmax is not None:
        if not (isinstance(vmax, (int, float)) and np.isfinite(vmax) and vmax > 0):
            raise UserInputError(f"vmax is the top of the colour scale, a number > 0; got {vmax!r}")
        return float(vmax)
    return scale_top(values)


def _write(drawn: np.ndarray, path: str, fps: float) -> None:
    suffix = os.path.splitext(path)[1].lower()
    if drawn.ndim == 3:
        if suffix not in PHOTO_SUFFIXES:
            raise UserInputError(f"a photo's drawing is written as {', '.join(PHOTO_SUFFIXES)}; '{path}' is not")
        from PIL import Image

        with atomic_write(path) as tmp:
            Image.fromarray(drawn).save(tmp, format="PNG" if suffix == ".png" else "JPEG")
        return
    if suffix != ".mp4":
        raise UserInputError(f"a clip's drawing is written as an .mp4; '{path}' is not")
    if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
        raise UserInputError(f"fps must be a number > 0, got {fps!r}")
    with VideoWriter(path, float(fps)) as writer:
        for frame in drawn:
            writer.write(frame)


__all__ = ["draw", "normalised_to_rgb"]
