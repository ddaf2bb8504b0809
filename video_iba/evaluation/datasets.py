"""The inputs an evaluation scores: the synthetic benchmark's clips, or a folder's photos or videos.

A folder's photo is explained at the model's centre crop; a video contributes one model clip,
the centre crop of the clip in the middle of the video, and its box holds in every frame. Box
annotations are a JSON object mapping each input's file name to ``{"box": [x0, y0, x1, y1]}`` in
the source's pixels, optionally with ``"target": index``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import UserInputError
from ..io.clips import read_clip
from ..io.discovery import find_images, find_videos
from ..io.image import read_image
from ..models.preprocess import preprocess_image
from ..models.registry import model_spec
from .synthetic import TEST_SEEDS, make_clip

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One input of an evaluation: preprocessed ``x`` (1, C, [T,] H, W), target, optional ground truth
    (box(es) in input cells, frame interval)."""

    name: str
    x: torch.Tensor
    target: int | None
    boxes: np.ndarray | None = None
    interval: tuple[int, int] | None = None


def synthetic_items(n: int) -> Iterator[Item]:
    """The first ``n`` test clips of the synthetic benchmark, with their classes, tubes and intervals."""
    if not 1 <= n <= len(TEST_SEEDS):
        raise UserInputError(f"{{clips}} must be between 1 and {len(TEST_SEEDS)}, got {n}", options=["clips"])
    for seed in list(TEST_SEEDS)[:n]:
        c = make_clip(seed)
        yield Item(f"clip{seed}", torch.from_numpy(c.x)[None], c.label, c.boxes, c.interval)


def read_annotations(path: str, files: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Box annotations: a JSON object mapping each input's file name to ``{"box": [x0, y0, x1, y1]}``
    in the original image's (video's) pixels, optionally with ``"target": index``. Every name must
    be an input."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot read annotations '{path}' ({type(exc).__name__}); give a JSON object mapping "
                             f"file names to {{\"box\": [x0, y0, x1, y1]}}") from exc
    if not isinstance(data, dict):
        raise UserInputError(f"annotations '{path}' must be a JSON object mapping file names to boxes")
    names = {os.path.basename(f) for f in files}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserInputError(f"annotations for files that are not inputs: {', '.join(unknown[:3])}"
                             f"{' ...' if len(unknown) > 3 else ''}; fix the names or the folder")
    for name, entry in data.items():
        box = entry.get("box") if isinstance(entry, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise UserInputError(f"annotation of '{name}' needs \"box\": [x0, y0, x1, y1]")
        target = entry.get("target")
        if target is not None and (not isinstance(target, int) or isinstance(target, bool) or target < 0):
            raise UserInputError(f"annotation of '{name}': \"target\" must be a class index >= 0, got {target!r}")
    return data


def _box_in_crop(entry: dict[str, Any] | None, name: str, image_size: tuple[int, int],
                 crop_box: tuple[float, float, float, float], size: int) -> np.ndarray | None:
    """An annotated box (source pixels) in the model input's cells; ``None`` when the crop misses it."""
    if entry is None:
        return None
    x0, y0, x1, y1 = (float(v) for v in entry["box"])
    h, w = image_size
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise UserInputError(f"the box {entry['box']} of '{name}' lies outside its {w}x{h} pixels or is empty; "
                             f"give [x0, y0, x1, y1] with 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}")
    bx0, by0, bx1, by1 = crop_box
    sx, sy = size / (bx1 - bx0), size / (by1 - by0)
    cx0, cy0 = max(0.0, (x0 - bx0) * sx), max(0.0, (y0 - by0) * sy)
    cx1, cy1 = min(float(size), (x1 - bx0) * sx), min(float(size), (y1 - by0) * sy)
    if cx1 <= cx0 or cy1 <= cy0:
        log.warning("the box of '%s' lies outside the model's crop; no box metric for it", name)
        return None
    return np.array([cx0, cy0, cx1, cy1])


def folder_items(folder: str, model_name: str, annotations: str | None,
                 device: torch.device | str = "cpu", weights: str = "default") -> list[Item]:
    """The inputs of an image model (images) or of a video model (one centre clip per video),
    prepared for the model with ``weights`` (:func:`~video_iba.models.registry.model_spec`)."""
    spec = model_spec(model_name, weights=weights)
    files = find_videos(folder) if spec.is_video else find_images(folder)
    if not files:
        kind = "videos" if spec.is_video else "images"
        raise UserInputError(f"no {kind} in '{folder}'; {model_name} is {'a video' if spec.is_video else 'an image'} "
                             f"model, so give a folder of {kind} (or choose another model with {{model}})",
                             options=["model"])
    ann = read_annotations(annotations, files) if annotations else {}
    items = []
    for f in files:
        name = os.path.basename(f)
        entry = ann.get(name)
        target = entry.get("target") if entry else None
        if spec.is_video:
            x, geo = read_clip(f, spec, start=None)
            box = _box_in_crop(entry, name, geo.image_size, geo.box, spec.input_size)
            boxes = None if box is None else np.repeat(box[None], x.shape[2], axis=0)
        else:
            x, geo = preprocess_image(read_image(f), spec, name=f"'{f}'")
            boxes = _box_in_crop(entry, name, geo.image_size, geo.box, spec.input_size)
        x = x.to(device)
        items.append(Item(name, x, target, boxes))
    return items
