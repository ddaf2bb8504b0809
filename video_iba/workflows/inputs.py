"""Planning an input file: what the model sees of a photo or a video.

A photo is the one-frame, one-window case of a video: both become an :class:`InputPlan` with a
crop plan (the centre crop, or tiles covering a video frame) and, for a video, the windows (model
clips) covering the range to explain. :meth:`InputPlan.units` yields the model inputs of every
window and crop in order, reading a video as a stream.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from ..errors import UserInputError
from ..io.clips import Timeline, clip_decoder, iter_window_frames, timeline
from ..io.discovery import is_animated_gif, is_video_file
from ..io.image import load_image
from ..io.sampling import Window
from ..models.preprocess import COVERAGES, CropPlan, Geometry, check_size, crop_input, plan_crops
from ..models.registry import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Range:
    """The part of a video to explain and how windows step through it.

    Attributes:
        start, end: Seconds (``end=None``: to the end of the video).
        stride: Seconds between window starts (``None``: one clip length, no overlap).
        coverage: ``"center"`` crop or overlapping ``"tiles"`` covering the whole frame.
    """

    start: float = 0.0
    end: float | None = None
    stride: float | None = None
    coverage: str = "center"

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                      or not math.isfinite(value)):
                raise UserInputError(f"{{{name}}} must be a finite number of seconds, got {value!r}", options=[name])
        if not self.start >= 0:
            raise UserInputError(f"{{start}} must be >= 0 seconds, got {self.start}", options=["start"])
        if self.end is not None and not self.end > self.start:
            raise UserInputError(f"{{end}} ({self.end} s) must be after {{start}} ({self.start} s)",
                                 options=["end", "start"])
        if self.stride is not None and not (isinstance(self.stride, numbers.Real) and math.isfinite(self.stride)
                                            and self.stride > 0):
            raise UserInputError(f"{{stride}} must be a finite number of seconds > 0, or None for windows one clip "
                                 f"apart; got {self.stride!r}", options=["stride"])
        if self.coverage not in COVERAGES:
            raise UserInputError(f"unknown coverage '{self.coverage}'; give {{coverage}} one of {', '.join(COVERAGES)}",
                                 options=["coverage"])


def refuse_video_options(path: str, span: Range, *others: str) -> None:
    """Refuse a video's range, stride and coverage (and the options named in ``others``, set by
    the caller) for the photo ``path``: they would be dropped."""
    given = [name for name, on in (("start", span.start != 0), ("end", span.end is not None),
                                   ("stride", span.stride is not None), ("coverage", span.coverage != "center"))
             if on] + list(others)
    if given:
        named = ", ".join("{" + g + "}" for g in given)
        raise UserInputError(f"{named} appl{'ies' if len(given) == 1 else 'y'} to videos and '{path}' is a photo; "
                             f"drop {'it' if len(given) == 1 else 'them'}", options=given)


@dataclass
class InputPlan:
    """One input file planned for one model.

    Attributes:
        path: The file.
        spec: The model.
        crops: How frames become model inputs.
        source: The source's ``(height, width)``.
        image: A photo's RGB pixels ``(H, W, 3)``, possibly decoded at a reduced size; ``None`` for
            a video.
        full: A photo's ``(height, width)`` in the file where it was decoded at a reduced size.
        line: A video's timeline; ``None`` for a photo.
        windows: A video's model clips, in time order; empty for a photo.
        span: A video's explained range ``[start, end)``.
        decoder: The video decoder of model clips.
    """

    path: str
    spec: ModelSpec
    crops: CropPlan
    source: tuple[int, int]
    image: np.ndarray | None = None
    full: tuple[int, int] | None = None
    line: Timeline | None = None
    windows: list[Window] = field(default_factory=list)
    span: Range = field(default_factory=Range)
    decoder: str = "pyav"

    @property
    def is_video(self) -> bool:
        return self.line is not None

    @property
    def count(self) -> int:
        """Model inputs to explain: windows x crops (a photo: 1)."""
        return max(1, len(self.windows)) * len(self.crops.tiles)

    def geometry(self, decoded: bool = False) -> Geometry:
        """Where the first crop lies in the source file's pixels (``decoded``: in the decoded pixels)."""
        h, w = self.source if decoded or self.full is None else self.full
        fy, fx = h / self.source[0], w / self.source[1]
        x0, y0, x1, y1 = self.crops.tiles[0].box
        nh, nw = self.crops.size
        return Geometry((h, w), (x0 * fx, y0 * fy, x1 * fx, y1 * fy), (nw / w, nh / h))

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(window index, (T, h, w, 3) frames)``: a photo's one frame at its own size, a video's
        windows resized on decoding to the crop plan's size."""
        if self.image is not None:
            yield 0, self.image[None]
            return
        yield from iter_window_frames(self.path, self.windows, self.crops.size, self.decoder)

    def units(self) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """``(window index, one model input per crop)`` for every window, in order."""
        for wi, frames in self.frames():
            yield wi, [crop_input(frames, self.spec, self.crops, tile, self.source) for tile in self.crops.tiles]

    def frame_range(self) -> tuple[int, int]:
        """A video's first and last source frame in the explained range."""
        assert self.line is not None
        return self.line.frame_range(self.span.start, self.span.end)


def plan_input(path: str, spec: ModelSpec, span: Range = Range()) -> InputPlan:
    """Read (a photo) or probe (a video) ``path`` and plan its model inputs for ``spec``.

    Raises:
        UserInputError: a photo for a video model or a video for an image model, unreadable
            files, inputs too small for the model, or an empty range.
    """
    if is_video_file(path):
        return _plan_video(path, spec, span)
    if spec.is_video:
        raise UserInputError(f"{spec.name} is a video model and '{path}' is read as an image; give a video file "
                             f"(.mp4, .mkv, .avi, ...) or an image model with {{model}}, such as efficientnet_lite0",
                             options=["model"])
    rgb, (full_h, full_w) = load_image(path, reduce_to=spec.resize)
    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    check_size(f"'{path}'", full_h, full_w, spec)
    return InputPlan(os.fspath(path), spec, plan_crops(h, w, spec, "center"), (h, w), image=rgb,
                     full=(full_h, full_w) if (full_h, full_w) != (h, w) else None)


def _plan_video(path: str, spec: ModelSpec, span: Range) -> InputPlan:
    if not spec.is_video:
        what = "an animated GIF, read as a video" if is_animated_gif(path) else "a video"
        raise UserInputError(f"{spec.name} is an image model and '{path}' is {what}; explain it with a video model "
                             f"given to {{model}} (e.g. efficientnet_lite0_i3d or slowfast_r50; `video-iba models` "
                             f"lists them)", options=["model"])
    line = timeline(path)
    info = line.info
    check_size(f"'{path}'", info.height, info.width, spec, "video")
    if line.variable_rate:
        log.info("%s has a variable frame rate; frames are sampled by their timestamps", path)
    windows = line.windows(spec, start=span.start, end=span.end, stride=span.stride)  # refuses an empty range
    if span.end is not None and span.end > line.duration + 1e-6:
        log.warning("the range ends at %g s but '%s' lasts %.2f s; explaining up to its end", span.end, path,
                    line.duration)
    crops = plan_crops(info.height, info.width, spec, span.coverage)
    return InputPlan(os.fspath(path), spec, crops, (info.height, info.width), line=line, windows=windows, span=span,
                     decoder=clip_decoder(info))
