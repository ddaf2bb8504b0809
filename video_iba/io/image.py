"""Reading still images into 8-bit RGB arrays."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import numpy as np

from ..errors import UserInputError
from ..files import regular_file

log = logging.getLogger(__name__)


#: EXIF orientations that swap width and height.
_TRANSPOSED = (5, 6, 7, 8)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array.

    Grayscale, palette, CMYK and 16-bit images are converted; transparent images are
    composited over white; the EXIF orientation is applied.

    Raises:
        UserInputError: missing, unreadable, truncated or non-image files, and images larger than
            PIL's guard against decompression bombs.
    """
    return load_image(path)[0]


def load_image(path: str | os.PathLike[str], reduce_to: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`read_image`, and the image's full ``(height, width)`` (after the EXIF orientation).

    With ``reduce_to``, an image whose shorter side exceeds ``4 * reduce_to`` pixels is decoded at a
    reduced size whose shorter side is still at least ``2 * reduce_to``: a JPEG by scaling while
    decoding (PIL's ``draft``), other formats by a box-filter reduction right after. A model input
    resized to ``reduce_to`` loses nothing, and an 8000-pixel photo no longer costs gigabytes.
    """
    from PIL import Image, ImageOps

    p = _image_file(path)
    with _pil_errors(p), Image.open(p) as im:
        w, h = im.size
        big = reduce_to is not None and min(w, h) > 4 * reduce_to
        if big:
            assert reduce_to is not None
            keep = 2 * reduce_to / min(w, h)
            im.draft("RGB", (max(1, int(w * keep)), max(1, int(h * keep))))
        im.load()
        if big:
            assert reduce_to is not None
            factor = min(im.size) // (2 * reduce_to)
            if factor >= 2:
                im = im.reduce(factor)
            log.info("%s: %dx%d pixels, decoded at %dx%d", p, w, h, *im.size)
        transposed = im.getexif().get(0x0112) in _TRANSPOSED
        return _to_rgb8(ImageOps.exif_transpose(im), p), ((w, h) if transposed else (h, w))


def probe_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """An image file's ``(height, width)`` (after the EXIF orientation) from its header, without
    decoding the pixels; the same errors as :func:`read_image` for files that are not images."""
    from PIL import Image

    p = _image_file(path)
    with _pil_errors(p), Image.open(p) as im:
        w, h = im.size
        return (w, h) if im.getexif().get(0x0112) in _TRANSPOSED else (h, w)


def _image_file(path: str | os.PathLike[str]) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise UserInputError(f"read_image takes a file's path, not {type(path).__name__}; pixels already in memory "
                             f"go to preprocess_image")
    p = os.fspath(path)
    if os.path.isdir(p):
        raise UserInputError(f"'{p}' is a folder, not an image file; give an image (JPEG, PNG, ...)")
    regular_file(p, "input file", "check the path", empty="give an image file")
    return p


@contextlib.contextmanager
def _pil_errors(p: str) -> Iterator[None]:
    """PIL's errors on reading ``p`` raised as one-line user errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except UserInputError:  # ours, already one line (it is a ValueError too)
        raise
    except Image.DecompressionBombError as exc:
        raise UserInputError(f"'{p}' is larger than PIL decodes safely ({exc}); downscale it first") from exc
    except UnidentifiedImageError as exc:
        raise UserInputError(f"'{p}' is not an image file PIL can read; give a JPEG, PNG, BMP, TIFF or WebP image") from exc
    except PermissionError as exc:
        raise UserInputError(f"cannot read '{p}': permission denied; check the file's permissions") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserInputError(f"cannot decode '{p}' ({exc}); the file may be truncated or corrupt") from exc


def _to_rgb8(im, path: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode == "F":
            scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        else:
            sixteen_bit = mode.startswith("I;16") or (a.size > 0 and a.max() > 255)
            scale = 255.0 / 65535.0 if sixteen_bit else 1.0
        log.info("%s: converted %s image to 8-bit RGB", path, mode)
        g = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        log.info("%s: composited transparent image over white", path)
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode != "RGB":
        log.info("%s: converted %s image to RGB", path, mode)
        im = im.convert("RGB")
    return np.asarray(im)
