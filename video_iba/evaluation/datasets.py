"""The inputs an evaluation scores: the synthetic benchmark's clips, or a folder's photos or videos.

A folder's inputs are named by their paths in the folder (``cats/001.jpg``). A photo is explained
at the model's centre crop; a video contributes one model clip, the centre crop of the clip in the
middle of the video (or of the clips its annotation's ``"start"`` chooses: then, with several,
one input each, named ``video.mp4@2.13s`` by its first frame's time).

Annotations are a JSON object mapping inputs (their paths in the folder, or their file names
where no two inputs share one) to objects in the source's pixels and seconds:

* ``"box": [x0, y0, x1, y1]``: a photo's box, or a video's box in every frame of its clip;
* ``"box"`` with ``"interval": [t0, t1]``: a video's box during ``[t0, t1)`` seconds only;
* ``"tube": [[t, x0, y0, x1, y1], ...]``: a video's box at keyframe times (increasing), linearly
  interpolated between them, the object present from the first keyframe to the last;
* ``"start"``: a video's clip starts there (seconds) instead of in the middle; a list of starts
  scores a clip at each; ``"tube"`` scores the clips covering the annotated times (one centred on
  them where they fit in a clip, else consecutive clips over them, the last aligned to their end);
* ``"target"``: the class to explain (default: the model's top-1).

A clip frame counts as annotated where its source frame's time lies within half a frame of the
annotated times. Boxes give the hit ratio (the tube hit ratio on clips); times give the temporal
share where the clip holds annotated and other frames, in one run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import UserInputError, did_you_mean
from ..io.clips import PlannedClip, Timeline, decode_clip, plan_clip, timeline
from ..io.discovery import find_images, find_videos, warn_other_kind
from ..io.image import read_image
from ..io.sampling import clip_seconds
from ..models.preprocess import Geometry, preprocess_image
from ..models.registry import ModelSpec, model_spec
from .synthetic import TEST_SEEDS, make_clip

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One input of an evaluation: preprocessed ``x`` (1, C, [T,] H, W), target, optional ground truth
    (box(es) in input cells, frame interval). A folder's inputs are read when they are scored:
    their ``x`` is ``None`` and ``load`` reads it (see :meth:`loaded`), so memory holds the inputs
    being scored, not the folder."""

    name: str
    x: torch.Tensor | None
    target: int | None
    boxes: np.ndarray | None = None
    interval: tuple[int, int] | None = None
    load: Callable[[], torch.Tensor] | None = None

    def loaded(self) -> "Item":
        """This item with its input read (itself where it holds it)."""
        if self.x is not None:
            return self
        if self.load is None:
            raise ValueError(f"the item '{self.name}' has neither an input nor a way to read it")
        return dataclasses.replace(self, x=self.load(), load=None)


def synthetic_items(n: int) -> Iterator[Item]:
    """The first ``n`` test clips of the synthetic benchmark, with their classes, tubes and intervals."""
    if not 1 <= n <= len(TEST_SEEDS):
        raise UserInputError(f"{{clips}} must be between 1 and {len(TEST_SEEDS)}, got {n}", options=["clips"])
    for seed in list(TEST_SEEDS)[:n]:
        c = make_clip(seed)
        yield Item(f"clip{seed}", torch.from_numpy(c.x)[None], c.label, c.boxes, c.interval)


ANNOTATION_KEYS = ("box", "tube", "interval", "start", "target")
#: Model clips one annotated video contributes at most (``"start"`` as a list, or ``"tube"``).
MAX_CLIPS_PER_VIDEO = 64


def read_annotations(path: str, names: Sequence[str], video: bool = False) -> dict[str, dict[str, Any]]:
    """Annotations of a folder's inputs (see the module text), keyed by their ``names`` (paths in
    the folder, ``/``-separated); a key may also be an input's file name where no other input
    shares it. Every key must name an input and every entry be well formed; ``video``: the inputs
    are videos (photos take no ``tube``, ``interval`` or ``start``)."""
    try:
        with open(path, encoding="utf-8-sig") as fh:  # a byte-order mark is no part of the JSON
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot read annotations '{path}' ({type(exc).__name__}); give a JSON object mapping "
                             f"file names to {{\"box\": [x0, y0, x1, y1]}}") from exc
    if not isinstance(data, dict):
        raise UserInputError(f"annotations '{path}' must be a JSON object mapping file names to boxes")
    by_file: dict[str, list[str]] = {}
    for n in names:
        by_file.setdefault(posixpath.basename(n), []).append(n)
    out: dict[str, dict[str, Any]] = {}
    keys: dict[str, str] = {}
    unknown = []
    for key, entry in data.items():
        plain = posixpath.normpath(key) if isinstance(key, str) and key else key  # "./a.mp4" is "a.mp4"
        name = plain if plain in names else None
        if name is None and plain in by_file:
            if len(by_file[plain]) > 1:
                shared = ", ".join(by_file[plain][:3]) + (" ..." if len(by_file[plain]) > 3 else "")
                raise UserInputError(f"the annotation '{key}' fits {len(by_file[plain])} inputs ({shared}); key it by "
                                     f"the input's path in the folder")
            name = by_file[plain][0]
        if name is None:
            unknown.append(key)
            continue
        if name in out:
            raise UserInputError(f"'{name}' is annotated twice (as '{keys[name]}' and '{key}'); keep one")
        out[name], keys[name] = _checked(key, entry, video), key
    if unknown:
        raise UserInputError(f"annotations for files that are not inputs: {', '.join(unknown[:3])}"
                             f"{' ...' if len(unknown) > 3 else ''}; fix the names or the folder")
    return out


def _numbers(value: Any, n: int) -> bool:
    return isinstance(value, list) and len(value) == n and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)


def _checked(name: str, entry: Any, video: bool) -> dict[str, Any]:
    """One annotation entry, checked: keys, a box or a tube, an interval, a clip start, a target."""
    if not isinstance(entry, dict):
        raise UserInputError(f"annotation of '{name}' must be an object such as {{\"box\": [x0, y0, x1, y1]}}")
    for key in entry:
        if key not in ANNOTATION_KEYS:
            raise UserInputError(f"annotation of '{name}' has the unknown key '{key}'"
                                 f"{did_you_mean(key, ANNOTATION_KEYS)}; known: {', '.join(ANNOTATION_KEYS)}")
    timed = [k for k in ("tube", "interval", "start") if k in entry]
    if timed and not video:
        raise UserInputError(f"annotation of '{name}': {', '.join(repr(k) for k in timed)} appl"
                             f"{'ies' if len(timed) == 1 else 'y'} to videos and the inputs are photos; give \"box\"")
    if ("box" in entry) == ("tube" in entry):
        raise UserInputError(f"annotation of '{name}' needs \"box\": [x0, y0, x1, y1]"
                             + (" or \"tube\": [[t, x0, y0, x1, y1], ...]; not both" if video else ""))
    if "box" in entry and not _numbers(entry["box"], 4):
        raise UserInputError(f"annotation of '{name}' needs \"box\": [x0, y0, x1, y1]")
    if "tube" in entry:
        _check_tube(name, entry)
    if "interval" in entry:
        iv = entry["interval"]
        if not (_numbers(iv, 2) and 0 <= iv[0] < iv[1]):
            raise UserInputError(f"annotation of '{name}': \"interval\" must be [t0, t1] in seconds with "
                                 f"0 <= t0 < t1, got {iv!r}")
    if "start" in entry:
        _check_start(name, entry)
    target = entry.get("target")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool) or target < 0):
        raise UserInputError(f"annotation of '{name}': \"target\" must be a class index >= 0, got {target!r}")
    return entry


def _check_tube(name: str, entry: dict[str, Any]) -> None:
    """A tube's keyframes ``[t, x0, y0, x1, y1]``, their times increasing, and no interval besides."""
    tube = entry["tube"]
    if not (isinstance(tube, list) and tube and all(_numbers(k, 5) for k in tube)):
        raise UserInputError(f"annotation of '{name}': \"tube\" must be a list of keyframes [t, x0, y0, x1, y1] "
                             f"(t in seconds)")
    times = [k[0] for k in tube]
    if times[0] < 0 or any(b <= a for a, b in zip(times, times[1:])):
        raise UserInputError(f"annotation of '{name}': the tube's keyframe times must be >= 0 and increasing, got "
                             f"{times[:6]}{' ...' if len(times) > 6 else ''}")
    if "interval" in entry:
        raise UserInputError(f"annotation of '{name}': a tube's keyframes give its times; drop \"interval\"")


def _check_start(name: str, entry: dict[str, Any]) -> None:
    """A clip's start: seconds, a list of distinct starts, or ``"tube"`` with annotated times."""
    start = entry["start"]
    several = start if isinstance(start, list) else [start]
    if start == "tube":
        if "tube" not in entry and "interval" not in entry:
            raise UserInputError(f"annotation of '{name}': \"start\": \"tube\" scores the clips covering the "
                                 f"annotated times; give \"tube\" keyframes or an \"interval\"")
    elif not (several and len(several) <= MAX_CLIPS_PER_VIDEO and _numbers(several, len(several))
              and min(several) >= 0 and len(set(several)) == len(several)):
        raise UserInputError(f"annotation of '{name}': \"start\" must be a clip's start in seconds >= 0, a list "
                             f"of up to {MAX_CLIPS_PER_VIDEO} distinct starts, or \"tube\" (the clips covering "
                             f"the annotated times), got {start!r}")


def _check_box(box: Any, name: str, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box in source pixels, clipped to the frame where it reaches past an edge (with a warning:
    annotators' boxes often do by a pixel, a box given as [x, y, width, height] by much); an empty
    box, or one wholly outside the frame, is refused."""
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = image_size
    if not (x0 < x1 and y0 < y1):
        raise UserInputError(f"the box {list(box)} of '{name}' is empty; give its corners [x0, y0, x1, y1] with "
                             f"x0 < x1 and y0 < y1 (in source pixels)")
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise UserInputError(f"the box {list(box)} of '{name}' lies outside its {w}x{h} pixels; give [x0, y0, x1, "
                             f"y1] in source pixels, with 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}")
    clipped = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
    if clipped != (x0, y0, x1, y1):
        log.warning("the box %s of '%s' reaches past its %dx%d pixels; clipped to [%s] (a box is [x0, y0, x1, y1], "
                    "its corners)", list(box), name, w, h, ", ".join(f"{v:g}" for v in clipped))
    return clipped


def _in_crop(box: Sequence[float], crop_box: tuple[float, float, float, float], size: int) -> np.ndarray | None:
    """A box in source pixels in the model input's cells; ``None`` when the crop misses it."""
    x0, y0, x1, y1 = box
    bx0, by0, bx1, by1 = crop_box
    sx, sy = size / (bx1 - bx0), size / (by1 - by0)
    cx0, cy0 = max(0.0, (x0 - bx0) * sx), max(0.0, (y0 - by0) * sy)
    cx1, cy1 = min(float(size), (x1 - bx0) * sx), min(float(size), (y1 - by0) * sy)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    return np.array([cx0, cy0, cx1, cy1])


def _photo_box(entry: dict[str, Any] | None, name: str, geo: Geometry, size: int) -> np.ndarray | None:
    """An annotated photo's box in the model input's cells; ``None`` when the crop misses it."""
    if entry is None:
        return None
    box = _in_crop(_check_box(entry["box"], name, geo.image_size), geo.box, size)
    if box is None:
        log.warning("the box of '%s' lies outside the model's crop; no box metric for it", name)
    return box


def _clip_truth(entry: dict[str, Any], name: str, geo: Geometry, size: int, fps: float,
                covering: bool = False) -> tuple[np.ndarray | None, tuple[int, int] | None]:
    """An annotated video's ground truth on its model clip: per-frame boxes in input cells (NaN rows
    where the object is absent or outside the crop; ``None`` when it is in no frame) and, where the
    annotation has times, the clip frames ``[t0, t1)`` they cover (``None``: no times, all frames,
    or not one run of frames). ``covering``: the clip is one of those covering the annotated times,
    whose inner clips hold only annotated frames (not worth a warning each)."""
    times = np.asarray(geo.times, dtype=np.float64)
    half = 0.5 / fps  # a frame counts where its time is within half a frame of the annotated times
    if "tube" in entry:
        keys = np.asarray(entry["tube"], dtype=np.float64)
        for k in keys:
            _check_box(k[1:], name, geo.image_size)
        present = (times >= keys[0, 0] - half) & (times <= keys[-1, 0] + half)
        source = np.stack([np.interp(times, keys[:, 0], keys[:, 1 + j]) for j in range(4)], axis=1)
    else:
        box = np.asarray(_check_box(entry["box"], name, geo.image_size))
        source = np.repeat(box[None], len(times), axis=0)
        if "interval" in entry:
            t0, t1 = (float(v) for v in entry["interval"])
            present = (times >= t0 - half) & (times < t1 - half)
        else:
            present = np.ones(len(times), dtype=bool)
    boxes = np.full((len(times), 4), np.nan)
    for t in np.flatnonzero(present):
        cell = _in_crop(source[t], geo.box, size)
        if cell is not None:
            boxes[t] = cell
    span = f"{times.min():.2f}-{times.max():.2f} s" if len(times) else "no frames"
    if np.isnan(boxes).all():
        log.warning("the model clip of '%s' (%s) shows the annotated object in no frame of its crop; no box metric "
                    "for it", name, span)
    frames = np.flatnonzero(present)
    interval: tuple[int, int] | None = None
    if "tube" in entry or "interval" in entry:
        if 0 < len(frames) < len(times) and np.all(np.diff(frames) == 1):
            interval = (int(frames[0]), int(frames[-1]) + 1)
        elif not (covering and len(frames) == len(times)):
            log.warning("the model clip of '%s' (%s) has %s; no temporal share for it (choose the clip with "
                        "\"start\")", name, span, "no annotated frame" if not len(frames) else
                        "only annotated frames" if len(frames) == len(times) else "annotated frames apart (looped)")
    return (None if np.isnan(boxes).all() else boxes), interval


def folder_items(folder: str, model: str | ModelSpec, annotations: str | None,
                 device: torch.device | str = "cpu", weights: str = "default",
                 dtype: torch.dtype = torch.float32) -> list[Item]:
    """The inputs of an image model (images) or of a video model (one clip per video: the middle one,
    or the one an annotation's ``start`` gives), named by their paths in the folder, prepared for
    the registry model ``model`` with ``weights`` (:func:`~video_iba.models.registry.model_spec`),
    or for the model a :class:`ModelSpec` describes; loaded onto ``device`` in ``dtype`` (the
    model's floating-point type)."""
    spec = model if isinstance(model, ModelSpec) else model_spec(model, weights=weights)
    model_name = spec.name
    files = find_videos(folder) if spec.is_video else find_images(folder)
    if not files:
        kind = "videos" if spec.is_video else "images"
        raise UserInputError(f"no {kind} in '{folder}'; {model_name} is {'a video' if spec.is_video else 'an image'} "
                             f"model, so give a folder of {kind} (or choose another model with {{model}})",
                             options=["model"])
    warn_other_kind(folder, spec.is_video, model_name)
    names = [Path(os.path.relpath(f, folder)).as_posix() for f in files]
    ann = read_annotations(annotations, names, spec.is_video) if annotations else {}
    items = []
    for f, name in zip(files, names):
        entry = ann.get(name)
        target = entry.get("target") if entry else None
        if not spec.is_video:
            # read now, so that unreadable photos are refused before any work, and again when scored
            load = _photo_loader(f, spec, device, dtype)
            geo = preprocess_image(read_image(f), spec, name=f"'{f}'")[1]
            items.append(Item(name, None, target, _photo_box(entry, name, geo, spec.input_size), None, load))
            continue
        if entry is None:  # its container read now (refused if unreadable), its frames when scored
            items.append(Item(name, None, target, load=_clip_loader(plan_clip(f, spec, start=None), device, dtype)))
            continue
        line = timeline(f)
        starts = _clip_starts(entry, name, line, spec)
        for start in starts:
            clip = plan_clip(f, spec, start=start, line=line)  # the timeline read once for all its clips
            geo = clip.geometry
            boxes, interval = _clip_truth(entry, name, geo, spec.input_size, line.info.fps, entry.get("start") == "tube")
            items.append(Item(name if len(starts) == 1 else f"{name}@{geo.times[0]:.2f}s", None, target, boxes,
                              interval, _clip_loader(clip, device, dtype)))
    return items


def _photo_loader(path: str, spec: ModelSpec, device: torch.device | str,
                  dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    return lambda: preprocess_image(read_image(path), spec, name=f"'{path}'")[0].to(device, dtype)


def _clip_loader(clip: PlannedClip, device: torch.device | str, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    return lambda: decode_clip(clip).to(device, dtype)


def _clip_starts(entry: dict[str, Any], name: str, line: Timeline, spec: ModelSpec) -> list[float | None]:
    """The starts of an annotated video's model clips: the middle clip (``None``), the ``"start"``
    given, or with ``"start": "tube"`` the clips covering the annotated times (one centred on
    them where they are shorter than a clip; else consecutive clips from their start, the last
    aligned to their end, as ``explain`` covers a range)."""
    last = line.time_of(line.frames - 1)
    start = entry.get("start")
    if start is None:
        return [None]
    if start != "tube":
        starts = [float(v) for v in (start if isinstance(start, list) else [start])]
        for v in starts:
            if v > last:
                raise UserInputError(f"annotation of '{name}': \"start\" {v:g} s is after the video's last frame "
                                     f"({last:.2f} s); give a start within the video")
        return starts
    if "tube" in entry:
        a, b = float(entry["tube"][0][0]), float(entry["tube"][-1][0]) + 1.0 / line.info.fps
    else:
        a, b = (float(v) for v in entry["interval"])
    end = last + 1.0 / line.info.fps
    if a >= end:
        raise UserInputError(f"annotation of '{name}': its times start at {a:g} s, after the video's last frame "
                             f"({last:.2f} s); fix the annotation")
    b, span = min(b, end), clip_seconds(spec.frames, spec.sampling_rate)
    if b - a <= span:
        return [max(0.0, min((a + b - span) / 2, end - span))]
    windows = line.windows(spec, start=a, end=b)
    if len(windows) > MAX_CLIPS_PER_VIDEO:
        raise UserInputError(f"annotation of '{name}': the annotated {b - a:.1f} s take {len(windows)} clips, more "
                             f"than {MAX_CLIPS_PER_VIDEO}; give the clips' starts as a list")
    return [w.start for w in windows]
