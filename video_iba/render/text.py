"""Text drawn into frames and panels (PIL, DejaVu Sans from matplotlib's fonts)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import numpy as np

BACKGROUND = (18, 18, 22)
TEXT = (235, 235, 235)
DIM = (160, 160, 170)


@lru_cache(maxsize=8)
def font(size: int) -> Any:
    """The package's font at ``size`` pixels."""
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def text_image(lines: Sequence[tuple[str, tuple[int, int, int]]], width: int, height: int, size: int) -> np.ndarray:
    """``(height, width, 3)`` uint8: coloured lines of text on the background, centred vertically."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    y = max(2, (height - len(lines) * int(size * 1.35)) // 2)
    for text, colour in lines:
        draw.text((8, y), text, fill=colour, font=font(size))
        y += int(size * 1.35)
    return np.asarray(img)


def labelled(img: np.ndarray, lines: Sequence[str], size: int = 13) -> np.ndarray:
    """``img`` with a bar of text lines below it."""
    from PIL import Image, ImageDraw

    bar = Image.new("RGB", (img.shape[1], int(size * 1.4) * len(lines) + 6), BACKGROUND)
    d = ImageDraw.Draw(bar)
    for i, text in enumerate(lines):
        d.text((4, 3 + i * int(size * 1.4)), text, fill=TEXT, font=font(size))
    return np.concatenate([img, np.asarray(bar)], axis=0)


def fmt(v: float) -> str:
    """A total for display: whole numbers from 100 up, three significant digits below."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
