"""Text drawn into frames and panels (PIL, DejaVu Sans from matplotlib's fonts)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

BACKGROUND = (18, 18, 22)
TEXT = (235, 235, 235)
DIM = (160, 160, 170)


@lru_cache(maxsize=32)
def font(size: int) -> Any:
    """The package's font at ``size`` pixels."""
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def fitted(text: str, width: float, size: int, smallest: int = 8) -> tuple[str, Any]:
    """``(text, font)`` that fit in ``width`` pixels: the font shrunk from ``size`` down to
    ``smallest``, then, if still too wide, the text cut short with an ellipsis."""
    f = font(size)
    while f.getlength(text) > width and size > smallest:
        size -= 1
        f = font(size)
    if f.getlength(text) > width:
        while text and f.getlength(text + "…") > width:
            text = text[:-1]
        text += "…"
    return text, f


def wrapped(text: str, width: float, size: int, sep: str = " · ") -> list[str]:
    """``text`` as lines that fit ``width`` pixels at ``size``, broken at ``sep`` (which then starts
    no line) and, inside a part too wide alone (a model such as ``hf:ORG/NAME``), after each
    ``/``; a piece still too wide keeps a line of its own (drawn smaller or cut by :func:`fitted`)."""
    f = font(size)
    pieces: list[tuple[str, str]] = []  # (text, what joins it to the piece before on one line)
    for i, part in enumerate(text.split(sep)):
        cuts = [part] if f.getlength(part) <= width else re.split(r"(?<=/)", part)
        pieces += [(c, (sep if i else "") if k == 0 else "") for k, c in enumerate(cuts) if c]
    lines: list[str] = []
    for piece, joint in pieces:
        if lines and f.getlength(lines[-1] + joint + piece) <= width:
            lines[-1] += joint + piece
        else:
            lines.append(piece)
    return lines or [""]


def text_image(lines: Sequence[tuple[str, tuple[int, int, int]]], width: int, height: int, size: int) -> np.ndarray:
    """``(height, width, 3)`` uint8: coloured lines of text on the background, centred vertically; a
    line too long for ``width`` is drawn smaller, or cut short (:func:`fitted`)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    y = max(2, (height - len(lines) * int(size * 1.35)) // 2)
    for text, colour in lines:
        shown, f = fitted(text, width - 16, size)
        draw.text((8, y), shown, fill=colour, font=f)
        y += int(size * 1.35)
    return np.asarray(img)


def labelled(img: np.ndarray, lines: Sequence[str], size: int = 13) -> np.ndarray:
    """``img`` with a bar of text lines below it (each fitted to the width, :func:`fitted`)."""
    from PIL import Image, ImageDraw

    bar = Image.new("RGB", (img.shape[1], int(size * 1.4) * len(lines) + 6), BACKGROUND)
    d = ImageDraw.Draw(bar)
    for i, text in enumerate(lines):
        shown, f = fitted(text, img.shape[1] - 8, size)
        d.text((4, 3 + i * int(size * 1.4)), shown, fill=TEXT, font=f)
    return np.concatenate([img, np.asarray(bar)], axis=0)


def padded(img: np.ndarray, width: int) -> np.ndarray:
    """``img`` centred on the background colour in a band at least ``width`` wide."""
    if img.shape[1] >= width:
        return img
    out = np.empty((img.shape[0], width, 3), dtype=np.uint8)
    out[:] = BACKGROUND
    x0 = (width - img.shape[1]) // 2
    out[:, x0:x0 + img.shape[1]] = img
    return out


def prob(p: float) -> str:
    """A probability for display: two decimals, or two significant digits below 0.01 (a random
    network's 0.0025 is not 0.00)."""
    return f"{p:.2f}" if p >= 0.01 or p <= 0 else f"{p:.2g}"


def fmt(v: float) -> str:
    """A total for display: whole numbers from 100 up, three significant digits below."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
