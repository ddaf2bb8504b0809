"""From a video file to model clips: its timeline, windows of frames, and one clip as a tensor.

PyAV decodes a video once as a stream and keeps only the frames the remaining windows need, so
memory is bounded by the frames one window spans; the optional decord reads each window's frames
by index instead, which skips decoding unused frames' pixels (``VIDEO_IBA_DECODER``).
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import UserInputError
from ..files import regular_file
from ..models.preprocess import CropPlan, Geometry, check_size, check_spec, crop_input, plan_crops
from ..models.registry import ModelSpec
from .sampling import Window, clip_seconds, plan_windows
from .video import VideoInfo, frame_times, iter_frames, probe_video, resize_frame

#: At most this many bytes of source frames are decoded by decord at once (before resizing).
DECORD_CHUNK_BYTES = 64 * 2**20
#: decord reads the frames of consecutive windows in one pass while they take at most this much
#: resized.
DECORD_GROUP_BYTES = 128 * 2**20

#: Environment variable choosing the decoder of model clips: ``auto`` (decord when installed,
#: else PyAV), ``pyav`` or ``decord``.
DECODER_ENV = "VIDEO_IBA_DECODER"


@dataclass(frozen=True)
class Timeline:
    """When a video's frames are shown.

    Attributes:
        info: The container's metadata.
        times: Presentation time of every frame in seconds from the first (``None`` where the
            packets carry no timestamps: a constant ``info.fps`` is assumed).
        frames: Number of source frames.
    """

    info: VideoInfo
    times: np.ndarray | None
    frames: int

    @property
    def variable_rate(self) -> bool:
        """Whether frame intervals differ (more than 1.5 times the median somewhere)."""
        if self.times is None or len(self.times) <= 2:
            return False
        gaps = np.diff(self.times)
        return bool(gaps.max() > 1.5 * np.median(gaps))

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last one."""
        return self.time_of(self.frames - 1) + 1.0 / self.info.fps

    def time_of(self, index: int) -> float:
        """Presentation time of source frame ``index`` in seconds."""
        return float(self.times[index]) if self.times is not None else index / self.info.fps

    def windows(self, spec: ModelSpec, *, start: float = 0.0, end: float | None = None,
                stride: float | None = None) -> list[Window]:
        """The model clips covering ``[start, end)`` (see :func:`~video_iba.io.sampling.plan_windows`)."""
        return plan_windows(self.frames, self.info.fps, spec.frames, spec.sampling_rate, start=start, end=end,
                            stride=stride, times=self.times)

    def frame_range(self, start: float, end: float | None) -> tuple[int, int]:
        """First and last source frame whose presentation time lies in ``[start, end)``."""
        n, fps = self.frames, self.info.fps
        if self.times is not None:
            stop = float(self.times[-1]) + 1.0 / fps if end is None else end
            first = int(np.searchsorted(self.times, start - 1e-6))
            last = int(np.searchsorted(self.times, stop - 1e-6)) - 1
        else:
            stop = n / fps if end is None else min(end, n / fps)
            first = int(math.ceil(start * fps - 1e-6))
            last = min(n, int(math.ceil(stop * fps - 1e-6))) - 1
        first = min(max(first, 0), n - 1)
        return first, min(max(last, first), n - 1)


def timeline(path: str) -> Timeline:
    """Probe ``path`` and read its frames' presentation times (no decoding)."""
    info = probe_video(path)
    times = frame_times(path)
    n = len(times) if times is not None else int(info.frames or round((info.duration or 0) * info.fps))
    return Timeline(info, times, n)


def decord_reads(info: VideoInfo) -> bool:
    """Whether decord decodes this video as it is shown: not a rotated video (decord does not turn
    its frames), not a GIF (decord cannot read GIFs), and one whose frames decord can copy out at
    their size (it cannot for some widths, e.g. 16, 24, 48 and 72 pixels: "The size must exactly
    match"); PyAV reads the others, to the same pixels."""
    if info.rotation or info.codec == "gif":
        return False
    try:
        st = os.stat(info.path)
    except OSError:
        return False
    return _decord_copies_frames(info.path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=256)
def _decord_copies_frames(path: str, mtime_ns: int, size: int) -> bool:
    import decord

    try:
        decord.VideoReader(path, num_threads=1).get_batch([0]).asnumpy()
    except Exception:  # decord's own error types; PyAV then decodes (and diagnoses a broken file)
        return False
    return True


def clip_decoder(info: VideoInfo | None = None) -> str:
    """The decoder of model clips: ``"decord"`` (optional, random access) or ``"pyav"``, and PyAV
    for a video ``info`` that decord cannot read as shown (:func:`decord_reads`)."""
    choice = os.environ.get(DECODER_ENV, "auto").strip().lower()
    if choice not in ("auto", "pyav", "decord"):
        raise UserInputError(f"{DECODER_ENV}={choice!r} is not a decoder; use auto, pyav or decord")
    if choice == "pyav":
        return "pyav"
    try:
        import decord  # noqa: F401
    except ImportError:
        if choice == "decord":
            raise UserInputError(f"{DECODER_ENV}=decord but decord is not installed; pip install decord, "
                                 f"or unset {DECODER_ENV}") from None
        return "pyav"
    return "decord" if info is None or decord_reads(info) else "pyav"


def iter_window_frames(path: str, windows: Sequence[Window], size: tuple[int, int],
                       decoder: str = "pyav") -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(window index, (T, h, w, 3) frames)`` in window order, frames resized to ``size``
    ``(height, width)``."""
    if not windows:
        return
    if decoder == "decord" and decord_reads(probe_video(path)):
        yield from _decord_windows(path, windows, size)
        return
    needed = np.unique(np.concatenate([w.indices for w in windows]))
    lo, hi = int(needed.min()), int(needed.max())
    wanted = set(needed.tolist())
    buffer: dict[int, np.ndarray] = {}
    nxt = 0
    h, w = size
    for frame in iter_frames(path, size=(w, h), first=lo):  # from the keyframe before the first frame needed
        if frame.index in wanted:
            buffer[frame.index] = frame.rgb
        while nxt < len(windows) and int(windows[nxt].indices.max()) <= frame.index:
            yield nxt, np.stack([buffer[int(i)] for i in windows[nxt].indices])
            nxt += 1
            keep_from = int(min(wi.indices.min() for wi in windows[nxt:])) if nxt < len(windows) else hi + 1
            for k in [k for k in buffer if k < keep_from]:
                del buffer[k]
        if nxt == len(windows) or frame.index >= hi:
            break
    if nxt < len(windows):
        raise UserInputError(f"'{path}' ended before frame {int(windows[nxt].indices.max())}; the file may be truncated; "
                             f"re-encode it")


def _decord_windows(path: str, windows: Sequence[Window], size: tuple[int, int]) -> Iterator[tuple[int, np.ndarray]]:
    import decord

    info = probe_video(path)
    h, w = size
    # frames are decoded at the source size and resized as PyAV's are (decord's own scaler gives
    # other pixels), a bounded number of source frames at a time
    chunk = max(1, DECORD_CHUNK_BYTES // max(1, 3 * info.height * info.width))
    try:
        vr = decord.VideoReader(path, num_threads=1)
    except Exception as exc:  # decord raises its own error types
        raise UserInputError(f"decord cannot open '{path}' ({type(exc).__name__}): the file may be truncated or corrupt; "
                             f"re-encode it (or set {DECODER_ENV}=pyav for PyAV's diagnosis)") from exc
    if info.frames and len(vr) < info.frames * 0.98:
        raise UserInputError(f"'{path}' is truncated: the container announces {info.frames} frames but only "
                             f"{len(vr)} can be read; re-download or re-encode the file")
    for win in windows:
        if int(win.indices.max()) >= len(vr):
            raise UserInputError(f"'{path}' has {len(vr)} frames, fewer than frame {int(win.indices.max())}; the file may "
                                 f"be truncated; re-encode it")
    first = 0
    for group, wanted in _window_groups(windows, DECORD_GROUP_BYTES // max(1, 3 * h * w)):
        frames: dict[int, np.ndarray] = {}
        for lo in range(0, len(wanted), chunk):
            try:
                batch = vr.get_batch(wanted[lo:lo + chunk]).asnumpy()
            except Exception as exc:
                raise UserInputError(f"decord cannot decode '{path}' ({type(exc).__name__}); the file may be truncated "
                                     f"or corrupt; set {DECODER_ENV}=pyav or re-encode it") from exc
            frames.update(zip(wanted[lo:lo + chunk], (resize_frame(f, size=(w, h)) for f in batch)))
        # after get_batch, decord goes on decoding the following frames in the background while the
        # caller works, holding them at the source size (a 10 s 720p video explained with r3d_18:
        # 5.7 GB, against 1.3 GB with PyAV); a seek to the start stops it. The frames of a group of
        # windows are read in one pass, resized, so that the seek does not slow reading down
        vr.seek(0)
        for k, win in enumerate(group):
            yield first + k, np.stack([frames[int(i)] for i in win.indices])
        first += len(group)


def _window_groups(windows: Sequence[Window], most: int) -> Iterator[tuple[list[Window], list[int]]]:
    """Consecutive windows, as many at a time as need at most ``most`` distinct frames (one window
    at least), each group with the sorted indices of its frames."""
    group: list[Window] = []
    frames: set[int] = set()
    for win in windows:
        mine = {int(i) for i in win.indices}
        if group and len(frames | mine) > most:
            yield group, sorted(frames)
            group, frames = [], set()
        group.append(win)
        frames |= mine
    if group:
        yield group, sorted(frames)


def random_start(line: Timeline, spec: ModelSpec, rng: np.random.Generator) -> float:
    """A model clip's start drawn uniformly among the video's frames from which a whole clip fits
    (as video networks are trained: a random clip of each video per epoch); 0 for a video shorter
    than one clip (its clip is looped)."""
    span = clip_seconds(spec.frames, spec.sampling_rate)
    starts = line.times if line.times is not None else np.arange(line.frames) / line.info.fps
    # starts from which a whole clip fits, with a margin so that rounding never leaves one short
    fits = int(np.searchsorted(starts, line.duration - span - 1e-6, side="right"))
    return line.time_of(int(rng.integers(max(1, fits))))


def read_clip(path: str | os.PathLike[str], spec: ModelSpec, start: float | None = 0.0) -> tuple[torch.Tensor, Geometry]:
    """The centre-crop model clip of a video model starting at ``start`` seconds of a video.

    Frames are taken at the model's sampling rate by time (a clip spans ``T * rate / 30``
    seconds whatever the source's frame rate); a video shorter than one clip is looped.

    Args:
        path: The video file.
        spec: The video model's spec (``model.video_iba_spec`` of :func:`video_iba.load_model`).
        start: Seconds; ``None`` takes the clip in the middle of the video.

    Returns:
        The clip ``(1, 3, T, S, S)`` (for SlowFast: the fast pathway's frames; every method builds
        the pathways from it) and where its crop lies in the source frames, with the time of the
        source frame each clip frame shows (``times``).
    """
    clip = plan_clip(path, spec, start)
    return decode_clip(clip), clip.geometry


@dataclass(frozen=True)
class PlannedClip:
    """A model clip of a video, planned without decoding: the video's properties, the clip's
    window, crop plan and geometry."""

    path: str
    spec: ModelSpec
    info: VideoInfo
    window: Window
    plan: CropPlan
    geometry: Geometry


def plan_clip(path: str | os.PathLike[str], spec: ModelSpec, start: float | None = 0.0,
              line: Timeline | None = None) -> PlannedClip:
    """Where :func:`read_clip`'s clip lies (its frames, crop and times), from the container alone:
    nothing is decoded. ``line``: the video's :func:`timeline`, where the caller has it already."""
    check_spec(spec, True, "read_clip")
    path = regular_file(path, "input file", "check the path")  # a path object too (decord takes strings only)
    if start is not None and not (isinstance(start, numbers.Real) and math.isfinite(start) and start >= 0):
        raise UserInputError(f"start must be a number of seconds >= 0, or None for the clip in the middle; got "
                             f"{start!r}")
    line = line or timeline(path)
    info = line.info
    check_size(f"'{path}'", info.height, info.width, spec, "video")
    if start is None:
        span = spec.frames * spec.sampling_rate / info.fps
        start = max(0.0, ((info.duration or 0.0) - span) / 2)
    window = line.windows(spec, start=start)[0]
    plan = plan_crops(info.height, info.width, spec, "center")
    nh, nw = plan.size
    times = tuple(line.time_of(int(i)) for i in window.indices)
    geometry = Geometry((info.height, info.width), plan.tiles[0].box, (nw / info.width, nh / info.height), times)
    return PlannedClip(path, spec, info, window, plan, geometry)


def decode_clip(clip: PlannedClip) -> torch.Tensor:
    """The model clip ``(1, 3, T, S, S)`` of a planned clip."""
    info = clip.info
    _, frames = next(iter_window_frames(clip.path, [clip.window], clip.plan.size, clip_decoder(info)))
    return crop_input(frames, clip.spec, clip.plan, clip.plan.tiles[0], (info.height, info.width))
