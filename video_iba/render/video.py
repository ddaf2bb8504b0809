"""The overlay MP4: source frames with the bits map, a colorbar, classes, and a bits-per-frame strip.

Bits stay per window at the model clip's resolution until here. For each source frame, every
window covering its time contributes its map interpolated linearly between the two nearest
model frames; crops (tiles) are placed at their boxes; overlapping windows and tiles are
averaged; pixels no crop covers are drawn hatched (not covered, which is not zero bits).
Everything per frame is array arithmetic; text is drawn once per window, not per frame.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import UserInputError
from ..io.clips import Timeline
from ..io.sampling import FrameSource, Window, frame_sources
from ..io.video import Frame, VideoWriter, iter_frames
from ..models.preprocess import CropPlan, tile_weights
from ..results import ClipAttribution, Unit
from .overlay import CMAP, bits_on_image, colormap, overlay
from .text import BACKGROUND, DIM, TEXT, fmt, font, labelled, padded, prob, text_image

#: Output panels are scaled so their longer side is at most this many pixels ...
MAX_PANEL_SIDE = 960
#: ... and, for small videos, their height at least this (they are shown on projectors).
MIN_PANEL_HEIGHT = 360
#: Output frames are at least this wide, the panels centred, so that the text under them stays
#: legible for tall, narrow videos.
MIN_FRAME_WIDTH = 480
LAYOUTS = ("side-by-side", "overlay")
#: Keyframe sheets: the height of one keyframe, and at most this many keyframes per row.
STILL_HEIGHT = 270
STILLS_PER_ROW = 4
#: A keyframe's column is at least this wide, so that its time and total stay legible.
MIN_STILL_WIDTH = 170
#: Keyframes one sheet holds at most.
MAX_KEYFRAMES = 16


def display_size(height: int, width: int) -> tuple[int, int, float]:
    """``(height, width, scale)`` of one output panel (even sizes)."""
    s = min(MAX_PANEL_SIDE / max(height, width), max(1.0, MIN_PANEL_HEIGHT / height))
    h, w = int(round(height * s / 2)) * 2, int(round(width * s / 2)) * 2
    return max(h, 2), max(w, 2), s


def _interp(window_bits: np.ndarray, wi: int, tile: int, k0: int, k1: int, a: float, unit: Unit) -> np.ndarray:
    m = unit.magnitude(window_bits[wi, tile, k0])
    return m if a == 0.0 or k0 == k1 else (1.0 - a) * m + a * unit.magnitude(window_bits[wi, tile, k1])


def merged_map(src: FrameSource, window_bits: np.ndarray, plan: CropPlan, boxes: Sequence[tuple[float, ...]],
               size: tuple[int, int], weights: Sequence[np.ndarray] | None = None,
               unit: Unit = Unit.BITS) -> np.ndarray:
    """The map of one source frame at display ``size`` (NaN where no crop reaches), in ``unit``'s
    magnitude: windows covering the frame averaged, crops blended with ``weights`` (default
    :func:`tile_weights`). Only the model frames needed are read (the maps may be on disk)."""
    ws = list(weights) if weights is not None else tile_weights(plan)
    return _merged(src, window_bits, boxes, size, _placed_weights(ws, boxes, size), unit)


def _placed_weights(weights: Sequence[np.ndarray], boxes: Sequence[tuple[float, ...]],
                    size: tuple[int, int]) -> list[np.ndarray]:
    """Each crop's blending weights placed on a frame of ``size`` (0 outside its box)."""
    return [np.nan_to_num(bits_on_image(w, box, size), nan=0.0) for w, box in zip(weights, boxes)]  # type: ignore[arg-type]


def _merged(src: FrameSource, window_bits: np.ndarray, boxes: Sequence[tuple[float, ...]], size: tuple[int, int],
            placed_weights: Sequence[np.ndarray], unit: Unit) -> np.ndarray:
    acc = np.zeros(size, dtype=np.float32)
    wsum = np.zeros(size, dtype=np.float32)
    for wi, k0, k1, a in src.parts:
        for ti, box in enumerate(boxes):
            placed = bits_on_image(_interp(window_bits, wi, ti, k0, k1, a, unit), box, size)  # type: ignore[arg-type]
            off = np.isnan(placed)
            placed[off] = 0.0  # adding 0 where the crop does not reach: the same sums as leaving those cells out
            w = np.where(off, np.float32(0.0), placed_weights[ti])
            wsum += w
            w *= placed
            acc += w
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, acc / np.maximum(wsum, 1e-12), np.nan).astype(np.float32)


def _colorbar(width: int, height: int, vmax: float, size: int, unit: Unit = Unit.BITS,
              clipped: bool = False) -> np.ndarray:
    """The colour scale from 0 to ``vmax`` per voxel (``clipped``: the map has larger values, drawn
    in the top colour, and the label says so)."""
    from PIL import Image, ImageDraw

    bar_w = max(60, width - 16)
    ramp = colormap(np.linspace(0, vmax, bar_w)[None, :].repeat(max(6, height // 4), 0), vmax, CMAP)
    img = Image.new("RGB", (width, height), BACKGROUND)
    img.paste(Image.fromarray((ramp * 255 + 0.5).astype(np.uint8)), (8, 4))
    draw = ImageDraw.Draw(img)
    y = 6 + max(6, height // 4)
    draw.text((8, y), "0", fill=TEXT, font=font(size))
    label = f"{'≥ ' if clipped else ''}{vmax:.3g} {unit.shown}/voxel"
    tw = draw.textlength(label, font=font(size))
    draw.text((8 + bar_w - tw, y), label, fill=TEXT, font=font(size))
    return np.asarray(img)


def _strip(values: np.ndarray, width: int, height: int, size: int, unit: Unit = Unit.BITS) -> np.ndarray:
    """A filled curve of bits per frame over the whole range, with its peak labelled."""
    from PIL import Image, ImageDraw

    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    top_pad, bottom = size + 6, height - 4
    peak = float(values.max()) if len(values) and values.max() > 0 else 1.0
    xs = np.linspace(0, len(values) - 1, width) if len(values) > 1 else np.zeros(width)
    v = np.interp(xs, np.arange(len(values)), values) if len(values) > 1 else np.full(width, values[0] if len(values) else 0)
    h = np.rint((v / peak) * (bottom - top_pad)).astype(int)
    rows = np.arange(height)[:, None]
    fill = (rows <= bottom) & (rows > bottom - h[None, :])
    img[fill] = (240, 140, 40)
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text((8, 2), f"{unit.shown} per frame (peak {fmt(peak)})", fill=DIM, font=font(size))
    return np.asarray(pil).copy()


class _Canvas:
    """The parts of the overlay MP4's frames that stay the same (sizes, header, strip, class lines per
    window set), and the composition of one output frame."""

    def __init__(self, result: ClipAttribution, panels: int, panel: tuple[int, int], labels: Sequence[str],
                 vmax: float, title: str, top_k: int) -> None:
        self.result, self.labels, self.top_k = result, labels, top_k
        self.ph, self.pw = panel
        self.width = width = max(panels * self.pw, MIN_FRAME_WIDTH)
        self.x0 = (width - panels * self.pw) // 2  # where the panels start
        self.size = max(11, min(18, width // 60))
        self.info_h = int(self.size * 1.35) * 3 + 10
        strip_h = max(40, self.size * 4)
        bar_w = min(max(220, width // 3), width // 2)
        line_h = int(self.size * 1.35) + 8
        small = max(10, self.size - 3)
        self.header = np.concatenate([text_image([(title, TEXT)], width - bar_w, line_h, self.size),
                                      _colorbar(bar_w, line_h, vmax, small, result.unit,
                                                result.peak() > vmax)[:, :bar_w]], axis=1)
        self.strip = _strip(result.per_source_frame, width, strip_h, small, result.unit)
        self.rest_h = self.info_h - self.header.shape[0]
        self.window_probs = result.window_probs.astype(np.float64).mean(axis=1)
        self.window_prefix = (None if result.prefix_bits is None
                              else result.prefix_bits.astype(np.float64).sum(axis=2).mean(axis=1))
        # the counter's column: as wide as its longest lines can be (up to half the frame)
        widest = self._counter(float(np.max(result.per_source_frame, initial=0)), 999.99,
                               None if self.window_prefix is None else float(self.window_prefix.max()))
        need = max(font(self.size).getlength(t) for t in widest) + 24
        self.counter_w = int(min(width // 2, max(200, 15 * self.size, need)))
        self._lines: dict[tuple[int, ...], np.ndarray] = {}

    def _counter(self, frame_bits: float, seconds: float, prefix_bits: float | None) -> tuple[str, str]:
        """The counter's two lines: the frame's total, then its time (and the class tokens' bits,
        which are not on the grid, so in words)."""
        when = f"{seconds:.2f} s"
        if prefix_bits is not None:
            when += f" · +{fmt(prefix_bits)} bits in class tokens"
        return f"{fmt(frame_bits)} {self.result.unit.shown} in frame", when

    def prefix_at(self, src: FrameSource) -> float | None:
        """The class tokens' bits of the windows showing ``src`` (their mean); ``None`` without any."""
        if self.window_prefix is None:
            return None
        return float(np.mean(self.window_prefix[sorted({wi for wi, *_ in src.parts})]))

    def class_lines(self, src: FrameSource) -> np.ndarray:
        """Top classes and the explained class's probability, averaged over the windows of ``src``."""
        key = tuple(sorted({wi for wi, *_ in src.parts}))
        if key not in self._lines:
            probs = np.mean([self.window_probs[k] for k in key], axis=0)
            order = np.argsort(-probs, kind="stable")[:self.top_k]  # ties in index order, as the top-1 target
            top = "  ".join(f"{self.labels[i]} {prob(probs[i])}" for i in order)
            target = self.result.target
            self._lines[key] = text_image([(f"top-{self.top_k}: {top}", DIM),
                                           (f"explained: {self.labels[target]} (p={prob(probs[target])})", TEXT)],
                                          self.width - self.counter_w, self.rest_h, self.size)
        return self._lines[key]

    def compose(self, panels: Sequence[np.ndarray], src: FrameSource, pos: int, seconds: float) -> np.ndarray:
        """One output frame: the panels, the header, the class lines, the counter and the strip with its cursor."""
        ph, top = self.ph, self.ph + self.header.shape[0]
        canvas = np.empty((ph + self.info_h + self.strip.shape[0], self.width, 3), dtype=np.uint8)
        canvas[:] = BACKGROUND
        for i, panel in enumerate(panels):
            canvas[:ph, self.x0 + i * self.pw:self.x0 + (i + 1) * self.pw] = panel
        canvas[ph:top] = self.header
        lines = self.class_lines(src)
        canvas[top:ph + self.info_h, :lines.shape[1]] = lines
        total, when = self._counter(float(self.result.per_source_frame[pos]), seconds, self.prefix_at(src))
        counter = text_image([(total, TEXT), (when, DIM)], self.width - lines.shape[1], self.rest_h, self.size)
        canvas[top:ph + self.info_h, lines.shape[1]:] = counter
        canvas[ph + self.info_h:] = self.strip
        x = int(round(pos / max(1, len(self.result.source_frame_indices) - 1) * (self.width - 1)))
        canvas[ph + self.info_h:, max(0, x - 1):x + 1] = (255, 255, 255)
        return canvas


class Placement:
    """Where the crops' maps go in frames drawn at ``size`` (``scale`` times the source)."""

    def __init__(self, plan: CropPlan, scale: float, size: tuple[int, int]) -> None:
        self.plan, self.size = plan, size
        self.boxes = [tuple(v * scale for v in t.box) for t in plan.tiles]
        self.placed = _placed_weights(tile_weights(plan), self.boxes, size)

    def merged(self, src: FrameSource, values: np.ndarray, unit: Unit) -> np.ndarray:
        """The map of one source frame at the drawn size (see :func:`merged_map`)."""
        return _merged(src, values, self.boxes, self.size, self.placed, unit)


def range_frames(path: str, indices: np.ndarray, size: tuple[int, int], timeline: Timeline,
                 windows: Sequence[Window]) -> Iterator[tuple[int, Frame, FrameSource]]:
    """``(position in the range, frame decoded at size (width, height), the windows covering it)`` for
    every source frame of ``indices`` (consecutive); a video that ends early is reported as truncated."""
    first, last = int(indices[0]), int(indices[-1])
    sources = [frame_sources(timeline.time_of(int(i)), windows) for i in indices]
    n = 0
    for frame in iter_frames(path, size=size, first=first):  # from the keyframe before the range
        if frame.index > last:
            break
        yield frame.index - first, frame, sources[frame.index - first]
        n += 1
    if n != len(indices):
        raise UserInputError(f"decoded {n} frames of {len(indices)} in the range of {path}; the file may be truncated; "
                             f"re-encode it")


class Stills:
    """Overlay panels kept while the MP4 is rendered, at chosen positions of the range (the
    keyframes of :func:`keyframe_sheet`)."""

    def __init__(self, positions: Sequence[int]) -> None:
        self.positions = set(int(p) for p in positions)
        #: position -> (panel, its time in seconds, the class tokens' bits of its windows or None)
        self.kept: dict[int, tuple[np.ndarray, float, float | None]] = {}

    @classmethod
    def spread(cls, frames: int, count: int) -> "Stills":
        """The middle frame of each of ``count`` equal parts of a range of ``frames`` frames."""
        k = min(count, frames)
        return cls([int(np.floor((i + 0.5) * frames / k)) for i in range(k)] if k else [])

    def offer(self, pos: int, panel: np.ndarray, seconds: float, prefix_bits: float | None = None) -> None:
        if pos in self.positions:
            self.kept[pos] = (panel.copy(), seconds, prefix_bits)


def keyframe_sheet(result: ClipAttribution, stills: Stills, vmax: float, title: str) -> np.ndarray:
    """A still of a video's explanation ``(H, W, 3)``: the title and colour bar, the kept overlay
    panels in time order (each with its time, its frame's total and, where the layer has class
    tokens, their bits; at most :data:`STILLS_PER_ROW` a row), and the per-frame strip of the
    whole range with a marker at every keyframe."""
    import cv2

    if not stills.kept:
        raise UserInputError("no keyframes were rendered; the range holds no frames")
    panels = []
    for pos in sorted(stills.kept):
        panel, seconds, prefix = stills.kept[pos]
        w = max(2, int(round(panel.shape[1] * STILL_HEIGHT / panel.shape[0])))
        small = cv2.resize(panel, (w, STILL_HEIGHT), interpolation=cv2.INTER_AREA)
        total = float(result.per_source_frame[pos])
        caption = [f"{seconds:.2f} s", f"{fmt(total)} {result.unit.shown} in frame"]
        if prefix is not None:  # not on the grid, so in words, as the MP4's counter says it
            caption.append(f"+{fmt(prefix)} bits in class tokens")
        panels.append(labelled(padded(small, MIN_STILL_WIDTH), caption, 14))
    cols = math.ceil(len(panels) / math.ceil(len(panels) / STILLS_PER_ROW))  # rows as full as they can be
    ph, pw = panels[0].shape[:2]
    gap = 4
    width = cols * pw + (cols - 1) * gap
    rows = []
    for start in range(0, len(panels), cols):
        row = np.empty((ph, width, 3), dtype=np.uint8)
        row[:] = BACKGROUND
        for i, panel in enumerate(panels[start:start + cols]):
            row[:, i * (pw + gap):i * (pw + gap) + panel.shape[1]] = panel[:, :min(panel.shape[1], pw)]
        rows.append(padded(row, MIN_FRAME_WIDTH))
    width = rows[0].shape[1]
    size = max(14, min(22, width // 90))
    line_h = int(size * 1.35) + 8
    bar_w = min(max(220, width // 3), width // 2)
    header = np.concatenate([text_image([(title, TEXT)], width - bar_w, line_h, size),
                             _colorbar(bar_w, line_h, vmax, size - 3, result.unit, result.peak() > vmax)[:, :bar_w]],
                            axis=1)
    strip = _strip(result.per_source_frame, width, max(40, size * 4), size - 3, result.unit)
    n = len(result.source_frame_indices)
    for pos in stills.kept:
        x = int(round(pos / max(1, n - 1) * (width - 1)))
        strip[:, max(0, x - 1):x + 1] = (255, 255, 255)
    spacer = np.empty((gap, width, 3), dtype=np.uint8)
    spacer[:] = BACKGROUND
    parts = [header] + [p for row in rows for p in (row, spacer)] + [strip]
    return np.concatenate(parts, axis=0)


def keyframes_path(video: str) -> str:
    """Where the keyframe still of the video output ``OUT/<name>.mp4`` goes: ``OUT/<name>-keyframes.png``."""
    return os.path.splitext(video)[0] + "-keyframes.png"


def write_keyframes(path: str, result: ClipAttribution, stills: Stills, vmax: float, title: str) -> None:
    """Write the :func:`keyframe_sheet` as a PNG at ``path`` (callers write it atomically)."""
    from PIL import Image

    Image.fromarray(keyframe_sheet(result, stills, vmax, title)).save(path, format="PNG")


def render_clip(
    result: ClipAttribution,
    path: str,
    out_path: str,
    *,
    timeline: Timeline,
    windows: Sequence[Window],
    plan: CropPlan,
    labels: Sequence[str],
    vmax: float,
    layout: str,
    title: str,
    on_frame: Callable[[int], None] | None = None,
    top_k: int = 3,
    stills: Stills | None = None,
) -> int:
    """Write the overlay MP4 of ``result`` over its source frames (one output frame each) at the
    source's frame rate; returns the number of frames written.

    Args:
        result: The explanation (maps per window and crop, totals per source frame).
        path: The explained video.
        out_path: The MP4 to write (callers write it atomically).
        timeline, windows, plan: The video's frame times, the model clips and the crops explained.
        labels: Class names of the model's outputs.
        vmax: Top of the colour scale, in the map's unit per voxel.
        layout: ``"side-by-side"`` (original | overlay) or ``"overlay"``.
        title: The header line.
        on_frame: Called with 1 after every written frame (progress).
        stills: Keeps the overlay panels at its positions (for :func:`keyframe_sheet`).
    """
    info = timeline.info
    ph, pw, scale = display_size(info.height, info.width)
    side_by_side = layout == "side-by-side"
    canvas = _Canvas(result, 2 if side_by_side else 1, (ph, pw), labels, vmax, title, top_k)
    place = Placement(plan, scale, (ph, pw))
    with VideoWriter(out_path, info.fps) as writer:
        for pos, frame, src in range_frames(path, result.source_frame_indices, (pw, ph), timeline, windows):
            over = overlay(frame.rgb, place.merged(src, result.values, result.unit), vmax)
            panels = [frame.rgb, over] if side_by_side else [over]
            if stills is not None:
                stills.offer(pos, over, timeline.time_of(frame.index), canvas.prefix_at(src))
            writer.write(canvas.compose(panels, src, pos, timeline.time_of(frame.index)))
            if on_frame is not None:
                on_frame(1)
    return writer.frames
