"""Colour mapping and overlays of bits maps on images (NumPy, vectorised)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Colormap for bits (sequential, perceptually uniform, readable on projectors).
CMAP = "inferno"
#: Opacity of the heatmap over the photo inside the covered region.
ALPHA = 0.6


def colormap(values: np.ndarray, vmax: float, cmap: str = CMAP) -> np.ndarray:
    """Map ``values`` in ``[0, vmax]`` (clipped) to RGB floats in ``[0, 1]``, shape ``values.shape + (3,)``
    (float32; the colormap's own table, looked up as matplotlib looks it up)."""
    table = _table(cmap)
    scale = float(vmax) if vmax > 0 else 1.0
    with np.errstate(over="ignore"):  # a value beyond the float range is the top of the scale
        v = np.asarray(np.divide(values, scale))
    v[np.isnan(v)] = 0.0
    np.clip(v, 0.0, 1.0, out=v)
    v *= len(table)
    index = v.astype(np.intp)
    np.minimum(index, len(table) - 1, out=index)
    return table.take(index, axis=0)


def scale_top(values: np.ndarray) -> float:
    """The top of the colour scale a map is drawn with by default: its largest value, or 1 where it
    has none above 0."""
    top = float(np.nanmax(values)) if values.size else 0.0
    return top if top > 0 else 1.0


@lru_cache(maxsize=8)
def _table(cmap: str) -> np.ndarray:
    from matplotlib import colormaps

    cm = colormaps[cmap]
    return cm(np.arange(cm.N))[:, :3].astype(np.float32)


@lru_cache(maxsize=8)
def _hatch(shape: tuple[int, ...]) -> np.ndarray:
    """Diagonal hatching of the cells no model input covers."""
    yy, xx = np.indices(shape)
    return ((xx + yy) // 2) % 6 == 0


def bits_on_image(bits: np.ndarray, box: tuple[float, float, float, float], image_size: tuple[int, int]) -> np.ndarray:
    """Place a bits map ``(h, w)`` at the crop ``box`` of an image of ``image_size`` ``(H, W)``.

    The map keeps its unit (bits per model-input pixel); it is only resized (bilinear). Pixels
    outside the box are NaN: not covered by the model input, which is different from zero bits.
    """
    import cv2

    hh, ww = image_size
    rx0, ry0, rx1, ry1 = (int(round(v)) for v in box)
    out = np.full((hh, ww), np.nan, dtype=np.float32)
    ix0, iy0, ix1, iy1 = max(0, rx0), max(0, ry0), min(ww, rx1), min(hh, ry1)
    if ix1 <= ix0 or iy1 <= iy0:
        return out
    resized = cv2.resize(bits.astype(np.float32), (rx1 - rx0, ry1 - ry0), interpolation=cv2.INTER_LINEAR)
    out[iy0:iy1, ix0:ix1] = resized[iy0 - ry0:iy1 - ry0, ix0 - rx0:ix1 - rx0]
    return out


def overlay(rgb: np.ndarray, values: np.ndarray, vmax: float, alpha: float = ALPHA, cmap: str = CMAP) -> np.ndarray:
    """Blend a heatmap over an ``(H, W, 3)`` uint8 image; NaN cells are drawn as not covered.

    Not covered: the photo in grey, darkened, with diagonal hatching, so it cannot be read as
    "zero bits".

    Returns:
        ``(H, W, 3)`` uint8.
    """
    # every frame of an overlay MP4 passes here: in place, whole-image operations only (no boolean
    # indexing), each element computed as the plain formula computes it, so the same bytes
    img = rgb.astype(np.float32)
    img *= np.float32(1 / 255)
    out = colormap(values, vmax, cmap)
    out *= alpha
    out += (1.0 - alpha) * img
    uncovered = np.isnan(values)
    if uncovered.any():
        grey = img[..., 0] + img[..., 1]  # the channels' mean, summed in the order a mean sums them
        grey += img[..., 2]
        grey /= 3
        grey *= 0.45
        grey += 0.25
        grey[_hatch(values.shape)] = 0.7
        np.copyto(out, grey[..., None], where=uncovered[..., None])
    out *= 255.0
    out += 0.5
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)
