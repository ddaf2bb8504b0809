"""Choosing which source frames feed a video model: sampling by time, and sliding windows.

Video models are trained on clips of ``T`` frames taken every ``rate`` frames of a 30 fps video,
so one clip spans ``T * rate / 30`` seconds whatever the source frame rate. Frames are chosen by
time: the model frame at time ``t`` is the source frame nearest to ``t``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..errors import UserInputError
from ..models.preprocess import CropPlan, tile_weights

log = logging.getLogger(__name__)

#: The frame rate at which model sampling rates are expressed (Kinetics clips).
REFERENCE_FPS = 30.0
#: Windows a range may be cut into at most (each keeps its map until the video is rendered).
MAX_WINDOWS = 100_000

_quiet = [0]  # nesting depth of short_ranges_noted()


@contextlib.contextmanager
def short_ranges_noted() -> Iterator[None]:
    """Within it, a range shorter than one clip is looped without a warning each time: for a caller
    that reads the clips of many videos many times and has said once which are short."""
    _quiet[0] += 1
    try:
        yield
    finally:
        _quiet[0] -= 1


@dataclass(frozen=True)
class Window:
    """One model clip.

    Attributes:
        start: Time of its first frame in seconds.
        times: Time of each of its ``T`` frames in seconds (before looping).
        indices: Source frame index of each model frame ``(T,)``.
        looped: Whether the video was too short and frames repeat from its start.
    """

    start: float
    times: np.ndarray
    indices: np.ndarray
    looped: bool


def clip_seconds(frames: int, rate: int) -> float:
    """Duration one model clip spans: ``frames`` frames every ``rate`` frames at 30 fps."""
    return frames * rate / REFERENCE_FPS


def nearest_frames(times: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the frame (sorted presentation ``times``) nearest to each time in ``t``."""
    i = np.clip(np.searchsorted(times, t), 1, max(1, len(times) - 1))
    if len(times) == 1:
        return np.zeros(len(t), dtype=np.int64)
    left, right = times[i - 1], times[i]
    return np.where(t - left <= right - t, i - 1, i).astype(np.int64)


def window_at(start: float, frames: int, rate: int, source_fps: float, source_frames: int,
              times: np.ndarray | None = None) -> Window:
    """The model clip starting at ``start`` seconds of a video of ``source_frames`` frames at ``source_fps``.

    With ``times`` (each frame's presentation time, e.g. of a variable frame rate video) the
    nearest frame in time is taken; otherwise a constant ``source_fps`` is assumed. A clip
    running past the end of the video continues from its start (looped), so short videos still
    fill the model's input.
    """
    if frames <= 0 or rate <= 0:
        raise ValueError("frames and rate must be > 0")
    if source_fps <= 0 or source_frames <= 0:
        raise UserInputError("the video has no frames or no frame rate; give a video with content")
    step = rate / REFERENCE_FPS
    model_times = start + step * np.arange(frames)
    if times is None:
        idx = np.rint(model_times * source_fps).astype(np.int64)
        looped = bool(idx.max() >= source_frames)
        return Window(float(start), model_times, idx % source_frames, looped)
    end = float(times[-1]) + 1.0 / source_fps
    looped = bool(model_times.max() >= end - 0.5 / source_fps)
    return Window(float(start), model_times, nearest_frames(times, np.mod(model_times, end)), looped)


def plan_windows(
    source_frames: int,
    source_fps: float,
    frames: int,
    rate: int,
    *,
    start: float = 0.0,
    end: float | None = None,
    stride: float | None = None,
    times: np.ndarray | None = None,
) -> list[Window]:
    """Sliding windows covering ``[start, end)`` seconds of a video.

    Args:
        source_frames, source_fps: The video's frame count and frame rate.
        frames, rate: The model's clip length ``T`` and sampling rate (frames at 30 fps).
        start, end: The time range to explain (``end=None``: the whole video).
        stride: Seconds between window starts; ``None``: one clip length (no overlap). The last
            window is aligned to the end of the range so the tail is covered too.
        times: Each frame's presentation time in seconds (variable frame rate videos); ``None``
            assumes a constant ``source_fps``.

    Returns:
        Windows in time order; a range shorter than one clip gives one looped window (and a
        warning).
    """
    duration = source_frames / source_fps if source_fps > 0 else 0.0
    if times is not None and len(times):
        duration = float(times[-1]) + 1.0 / source_fps
    stop = duration if end is None else min(end, duration)
    if start < 0 or stop <= start:
        raise UserInputError(f"the time range {start:g}..{stop:g} s is empty; the video lasts {duration:.2f} s")
    span = clip_seconds(frames, rate)
    if stride is not None and not stride > 0:
        raise UserInputError(f"{{stride}} must be > 0 seconds, got {stride}", options=["stride"])
    frame = 1.0 / source_fps if source_fps > 0 else 0.0
    if stride is not None and stride < frame * (1 - 1e-6) and stop - start > span:
        raise UserInputError(f"{{stride}} {stride:g} s is shorter than one frame of the video ({frame:.4g} s at "
                             f"{source_fps:g} fps): windows would repeat the same frames; give at least "
                             f"{math.ceil(frame * 1000 - 1e-6) / 1000:.3f}",
                             options=["stride"])
    step = span if stride is None else stride
    count = int((stop - start - span) // step) + 2 if stop - start > span else 1
    if count > MAX_WINDOWS:
        raise UserInputError(f"{{stride}} {step:g} s gives {count} windows over {stop - start:.1f} s, more than "
                             f"{MAX_WINDOWS}; give a larger stride or a shorter range", options=["stride"])
    if stop - start <= span:
        w = window_at(start, frames, rate, source_fps, source_frames, times)
        if w.looped or stop - start < span:
            if not _quiet[0]:
                log.warning("the range %.2f..%.2f s is shorter than one clip (%.2f s): frames repeat from the start",
                            start, stop, span)
            last = int(math.floor(stop * source_fps - 1e-9))
            first = int(math.ceil(start * source_fps - 1e-9))
            n = max(1, last - first + 1)
            if times is None:
                idx = first + (np.rint((w.times - start) * source_fps).astype(np.int64) % n)
            else:
                first, last = nearest_frames(times, np.array([start, stop - 1e-9]))
                n = max(1, int(last - first + 1))
                length = float(times[last] - times[first]) + 1.0 / source_fps
                idx = nearest_frames(times, times[first] + np.mod(w.times - start, length))
            w = Window(w.start, w.times, idx, True)
        return [w]
    starts = list(np.arange(start, stop - span + 1e-9, step))
    if starts[-1] + span < stop - 1e-9:
        starts.append(stop - span)
    return [window_at(float(s), frames, rate, source_fps, source_frames, times) for s in starts]


@dataclass(frozen=True)
class FrameSource:
    """The windows contributing to one source frame: ``(window, k0, k1, weight of k1)``, the frame's
    time falling between model frames ``k0`` and ``k1`` of the window."""

    parts: tuple[tuple[int, int, int, float], ...]


def frame_sources(t: float, windows: Sequence[Window]) -> FrameSource:
    """Which windows cover time ``t`` (seconds) and where it falls between their model frames."""
    parts = []
    best, best_d = 0, math.inf
    for wi, w in enumerate(windows):
        step = float(w.times[1] - w.times[0]) if len(w.times) > 1 else 1.0 / REFERENCE_FPS
        n = len(w.times)
        u = (t - w.start) / step
        centre = (n - 1) / 2.0
        if abs(u - centre) < best_d:
            best, best_d = wi, abs(u - centre)
        if -0.5 <= u <= n - 0.5:
            uc = min(max(u, 0.0), n - 1.0)
            k0 = int(math.floor(uc))
            k1 = min(k0 + 1, n - 1)
            parts.append((wi, k0, k1, uc - k0))
    if not parts:  # outside every window (rounding at the range's ends): the nearest window's nearest frame
        w = windows[best]
        n = len(w.times)
        step = float(w.times[1] - w.times[0]) if n > 1 else 1.0 / REFERENCE_FPS
        k = int(min(max(round((t - w.start) / step), 0), n - 1))
        parts.append((best, k, k, 0.0))
    return FrameSource(tuple(parts))


def source_frame_totals(sources: Sequence[FrameSource], window_values: np.ndarray, plan: CropPlan,
                        magnitude: bool = False) -> np.ndarray:
    """A map's total in each source frame, in the map's units: the crops' maps merged (each cell of
    the frame once, overlapping crops blended by :func:`~video_iba.models.preprocess.tile_weights`)
    and summed over the frame, averaged over the windows covering it.

    Args:
        sources: One :class:`FrameSource` per source frame.
        window_values: ``(windows, crops, T, S, S)`` (read one window at a time; it may be on disk).
        plan: The crops.
        magnitude: Sum the values' magnitude (maps in units other than bits).
    """
    weights = np.stack(tile_weights(plan))
    sums = np.stack([np.einsum("nthk,nhk->nt", (np.abs(w) if magnitude else w).astype(np.float64), weights)
                     for w in window_values])  # (win, tile, T)
    out = np.empty(len(sources))
    for i, src in enumerate(sources):
        vals = [((1 - a) * sums[wi, :, k0] + a * sums[wi, :, k1]).sum() for wi, k0, k1, a in src.parts]
        out[i] = float(np.mean(vals))
    return out
