"""Reading still images into 8-bit RGB arrays."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import UserInputError

log = logging.getLogger(__name__)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array.

    Grayscale, palette, CMYK and 16-bit images are converted; transparent images are
    composited over white; the EXIF orientation is applied.

    Raises:
        UserInputError: missing, unreadable, truncated or non-image files.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = os.fspath(path)
    if not os.path.exists(p):
        raise UserInputError(f"input file '{p}' does not exist; check the path")
    if os.path.isdir(p):
        raise UserInputError(f"'{p}' is a folder, not an image file; give an image (JPEG, PNG, ...)")
    try:
        with Image.open(p) as im:
            im.load()
            return _to_rgb8(ImageOps.exif_transpose(im), p)
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
