"""Comparison figures: one labelled panel per method (or per model and method), for a photo (PNG)
or a whole video range (MP4).

Every map is drawn with its own colour scale (the methods' units differ; non-bits maps by
magnitude; a bits map's head names the top of its scale, in bits per pixel or voxel of the model
input). Maps of different models are each placed by their own model's crops and windows. A
video's MP4 shows every source frame of the explained range, as the overlay MP4 of ``explain``
does: the frame, then one overlay per method (windows and crops merged the same way), and below
them a strip with every method's per-frame total, each normalised to its maximum, with a cursor
at the current frame. Several videos make one MP4, a row each, played together from their starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import UserInputError
from ..files import atomic_write
from ..io.clips import Timeline
from ..io.sampling import FrameSource, Window, frame_sources
from ..io.video import VideoWriter
from ..models.preprocess import CropPlan
from ..results import ClipAttribution, Unit
from .overlay import overlay, scale_top
from .text import DIM, TEXT, fmt, labelled, padded, text_image, wrapped
from .video import Placement, Stills, range_frames

#: Side of a photo panel, pixels.
PANEL = 224
#: A video panel's height, pixels (less where the row would be wider than :data:`MAX_ROW_WIDTH`).
CLIP_PANEL_HEIGHT = 240
MAX_ROW_WIDTH = 1920
#: A video panel's column is at least this wide, and a keyframe's cell in its still at least
#: that, so that the heads and times under them stay legible for tall, narrow videos.
MIN_CLIP_PANEL_WIDTH = 160
MIN_KEYFRAME_CELL = 64
#: Pixels between the rows of a comparison grid (and the cells of a video comparison's still).
GRID_GAP = 4
#: A video comparison's still: the width of its row labels and the height of its time labels.
STILL_LABELS = 220
STILL_TIMES = 28
STRIP_HEIGHT = 90
#: A grid of videos: the height of its panels and of each row's strip.
GRID_CLIP_PANEL_HEIGHT = 160
GRID_STRIP_HEIGHT = 60
COLOURS = ((240, 140, 40), (80, 180, 255), (120, 220, 120), (230, 90, 200), (250, 230, 90), (200, 200, 200))


def _heads(explained: str, names: Sequence[str], units: Sequence[Unit], tops: Sequence[float], per: str,
           notes: Sequence[str] | None = None, title: str = "input",
           prefixes: Sequence[float | None] | None = None) -> list[list[str]]:
    """Each panel's head: the input's title and class, then each method's name over its unit; a
    bits map's unit names the top of its colour scale ``tops[i]``, in bits per ``per`` (its maps'
    cell: a pixel or a voxel of the model input). A map whose class tokens hold bits
    (``prefixes[i]``: per photo, or per model clip of a video) says so on a third line, which the
    other heads get empty, so that all have as many lines."""
    extra = [f" · {n}" if n else "" for n in notes] if notes is not None else [""] * len(names)
    scale = [f" 0-{top:.3g}/{per}" if u.information else "" for u, top in zip(units, tops)]
    heads = [[title, f"explained: {explained}"]] + [[m, u.shown + c + e]
                                                    for m, u, c, e in zip(names, units, scale, extra)]
    tokens = [None if b is None else f"+{fmt(b)} bits in class tokens" + (" per clip" if per == "voxel" else "")
              for b in (prefixes or [])]
    if any(tokens):
        heads = [h + [t or ""] for h, t in zip(heads, [None, *tokens])]
    return heads


def _scale(unit: Unit, values: np.ndarray, bits_vmax: float | None) -> float:
    """The top of a panel's colour scale: ``bits_vmax`` for a bits map where given, else its largest value."""
    return bits_vmax if bits_vmax is not None and unit.information else scale_top(values)


def _clip_tops(panels: Sequence[ClipPanel], bits_vmax: float | None) -> list[float]:
    """The top of each video panel's colour scale: ``bits_vmax`` for bits maps where given, else the
    map's largest value over its windows."""
    return [bits_vmax if bits_vmax is not None and p.result.unit.information else p.result.peak() or 1.0
            for p in panels]


def comparison_row(rgb: np.ndarray, maps: Sequence[tuple[str, np.ndarray, Unit]], explained: str, *,
                   inputs: Sequence[np.ndarray] | None = None, notes: Sequence[str] | None = None,
                   title: str = "input", bits_vmax: float | None = None,
                   prefixes: Sequence[float | None] | None = None) -> np.ndarray:
    """One comparison row ``(H, W, 3)``: the model input ``rgb`` ``(S, S, 3)`` headed ``title``, and
    one overlay per ``(name, map (S', S'), unit)``, each drawn on its own model input ``inputs[i]``
    (default ``rgb``), its head's second line followed by ``notes[i]`` (e.g. the class a model
    explained). Each map has its own colour scale, but bits maps share ``bits_vmax`` where given;
    a bits map's head names the top of its scale, and the bits of its class tokens ``prefixes[i]``
    where it has any."""
    import cv2

    shown = [unit.magnitude(values) for _, values, unit in maps]
    tops = [_scale(unit, v, bits_vmax) for (_, _, unit), v in zip(maps, shown)]
    heads = _heads(explained, [m for m, _, _ in maps], [u for _, _, u in maps], tops, "px", notes, title, prefixes)

    def panel(img: np.ndarray, values: np.ndarray | None, vmax: float) -> np.ndarray:
        shown = img if values is None else overlay(img, values, vmax)
        return cv2.resize(shown, (PANEL, PANEL), interpolation=cv2.INTER_LINEAR)

    tiles = [labelled(panel(rgb, None, 1.0), heads[0])]
    for i, (values, top, head) in enumerate(zip(shown, tops, heads[1:])):
        tiles.append(labelled(panel(rgb if inputs is None else inputs[i], values, top), head))
    return np.concatenate(tiles, axis=1)


def write_rows(rows: Sequence[np.ndarray], out_path: str) -> None:
    """Write comparison rows of one width as a PNG, one above the other, a thin gap between."""
    from PIL import Image

    gap = np.zeros((GRID_GAP, rows[0].shape[1], 3), dtype=np.uint8)
    stacked = [part for i, row in enumerate(rows) for part in ((gap, row) if i else (row,))]
    with atomic_write(out_path) as tmp:
        Image.fromarray(np.concatenate(stacked, axis=0)).save(tmp, format="PNG")


def clip_panel_size(height: int, width: int, panels: int, panel_height: int = CLIP_PANEL_HEIGHT) -> tuple[int, int, float]:
    """``(height, width, scale)`` of one panel of a video comparison (even sizes)."""
    s = panel_height / height
    if panels * width * s > MAX_ROW_WIDTH:
        s = MAX_ROW_WIDTH / (panels * width)
    return max(2, int(round(height * s / 2)) * 2), max(2, int(round(width * s / 2)) * 2), s


def time_strip(per_frame: np.ndarray, t: int, width: int, names: Sequence[str], height: int = STRIP_HEIGHT) -> np.ndarray:
    """Each method's per-frame total (rows of ``per_frame``, each normalised to its maximum) as a line
    over the shared time axis, with a cursor at frame ``t``; the legend above the lines takes as
    many rows as its names need."""
    import cv2

    img = np.full((height, width, 3), 18, dtype=np.uint8)
    n = per_frame.shape[1]
    xs = np.linspace(8, width - 8, n).astype(int) if n > 1 else np.full(1, width // 2)
    at, x_text, y_text = [], 8, 14
    for name in names:
        w = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0]
        if x_text > 8 and x_text + w > width - 8:  # the next row of the legend
            x_text, y_text = 8, y_text + 14
        at.append((x_text, y_text))
        x_text += w + 16
    top = min(y_text + 2, height - 16)  # the lines' top, below the legend
    for i, row in enumerate(per_frame):
        colour = COLOURS[i % len(COLOURS)]
        pts = np.stack([xs, (height - 8 - row * (height - 8 - top)).astype(int)], axis=1).reshape(-1, 1, 2)
        cv2.polylines(img, [pts.astype(np.int32)], False, colour, 2)
        cv2.putText(img, names[i], at[i], cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
    img[:, max(0, xs[t] - 1):xs[t] + 1] = 255
    cv2.putText(img, "per-frame total / its maximum (0 at the bottom)", (max(8, width - 310), height - 4),
                cv2.FONT_HERSHEY_SIMPLEX, 0.35, (160, 160, 170), 1)
    return img


@dataclass(frozen=True)
class ClipPanel:
    """One map of a video comparison: its name, the result, and the windows and crops its model
    explained (maps of different models are placed by their own), with an optional note after
    its unit (e.g. the class its model explained)."""

    name: str
    result: ClipAttribution
    windows: Sequence[Window]
    plan: CropPlan
    note: str = ""


@dataclass(frozen=True)
class ClipRow:
    """One video of a comparison: its panels (all over the same source frames), the video and its
    timeline, the class its input panel names, and that panel's title."""

    panels: Sequence[ClipPanel]
    path: str
    timeline: Timeline
    explained: str
    title: str = "input"

    @property
    def seconds(self) -> float:
        """How long the row plays: from its first source frame to the end of its last."""
        indices = self.panels[0].result.source_frame_indices
        line = self.timeline
        return line.time_of(int(indices[-1])) - line.time_of(int(indices[0])) + 1.0 / line.info.fps


def _row_frames(row: ClipRow, *, panel_height: int = CLIP_PANEL_HEIGHT, strip_height: int = STRIP_HEIGHT,
                bits_vmax: float | None = None, stills: Stills | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(position in the range, seconds since its start, the row drawn)`` for every source frame of
    the row: the frame and one overlay per panel, headed, over the strip of per-frame totals."""
    panels = row.panels
    if not panels:
        raise UserInputError("no methods to compare")
    indices = panels[0].result.source_frame_indices
    if any(not np.array_equal(p.result.source_frame_indices, indices) for p in panels):
        raise UserInputError("the maps to compare cover different source frames; explain them over one range")
    line = row.timeline
    info = line.info
    names = [p.name for p in panels]
    vmaxes = _clip_tops(panels, bits_vmax)
    heads = _heads(row.explained, names, [p.result.unit for p in panels], vmaxes, "voxel", [p.note for p in panels],
                   row.title, [p.result.prefix_total for p in panels])
    ph, pw, scale = clip_panel_size(info.height, info.width, len(panels) + 1, panel_height)
    places = [Placement(p.plan, scale, (ph, pw)) for p in panels]
    # the windows covering each frame, once per set of windows (one per model: its methods share it)
    by_windows: dict[int, list[FrameSource]] = {}
    for p in panels:
        if id(p.windows) not in by_windows:
            by_windows[id(p.windows)] = [frame_sources(line.time_of(int(i)), p.windows) for i in indices]
    sources = [by_windows[id(p.windows)] for p in panels]
    totals = _relative_totals(panels)
    start = line.time_of(int(indices[0]))
    for pos, frame, _src in range_frames(row.path, indices, (pw, ph), line, panels[0].windows):
        shown = [frame.rgb] + [overlay(frame.rgb, place.merged(src[pos], p.result.values, p.result.unit), vmax)
                               for p, place, src, vmax in zip(panels, places, sources, vmaxes)]
        if stills is not None:
            stills.offer(pos, np.stack(shown), line.time_of(frame.index))
        drawn = np.concatenate([labelled(padded(img, MIN_CLIP_PANEL_WIDTH), head) for img, head in zip(shown, heads)],
                               axis=1)
        strip = time_strip(totals, pos, drawn.shape[1], names, strip_height)
        yield pos, line.time_of(frame.index) - start, np.concatenate([drawn, strip], axis=0)


def compare_clip(
    panels: Sequence[ClipPanel],
    path: str,
    out_path: str,
    *,
    timeline: Timeline,
    explained: str,
    on_frame: Callable[[int], None] | None = None,
    stills: Stills | None = None,
    bits_vmax: float | None = None,
) -> int:
    """Write the comparison MP4 of ``panels`` (all over the same source frames) at the source's frame
    rate; returns the number of frames written. ``stills`` keeps, at its positions, the frame and
    every method's overlay as drawn (stacked, for :func:`compare_keyframes`)."""
    row = ClipRow(panels, path, timeline, explained)
    with VideoWriter(out_path, timeline.info.fps) as writer:
        for _pos, _t, image in _row_frames(row, bits_vmax=bits_vmax, stills=stills):
            writer.write(image)
            if on_frame is not None:
                on_frame(1)
    return writer.frames


def grid_clip_frames(rows: Sequence[ClipRow]) -> tuple[float, int]:
    """The frame rate of a grid of videos (its fastest row's) and how many frames it lasts (its
    longest row)."""
    fps = max(r.timeline.info.fps for r in rows)
    return fps, max(1, int(math.ceil(max(r.seconds for r in rows) * fps - 1e-6)))


def compare_clip_grid(rows: Sequence[ClipRow], out_path: str, *, on_frame: Callable[[int], None] | None = None,
                      bits_vmax: float | None = None, stills: Sequence[Stills] | None = None) -> int:
    """Write one MP4 of several videos' comparisons, a row per video drawn as :func:`compare_clip`
    draws one (smaller), played together from their starts: at the frame rate of the fastest
    row, each row showing its source frame of that moment and, once it has ended, its last frame.
    ``stills`` (one per row) keep, at their positions, the row's frame and overlays as drawn (for
    :func:`compare_grid_keyframes`). Returns the number of frames written."""
    if stills is not None and len(stills) != len(rows):
        raise ValueError(f"{len(stills)} stills for {len(rows)} rows")
    fps, total = grid_clip_frames(rows)
    frames = [_row_frames(r, panel_height=GRID_CLIP_PANEL_HEIGHT, strip_height=GRID_STRIP_HEIGHT, bits_vmax=bits_vmax,
                          stills=None if stills is None else stills[i])
              for i, r in enumerate(rows)]
    current = [next(f)[2] for f in frames]
    coming = [next(f, None) for f in frames]
    width = max(image.shape[1] for image in current)
    width += width % 2

    def padded(image: np.ndarray) -> np.ndarray:
        return np.concatenate([image, _gap(image.shape[0], width - image.shape[1])], axis=1)

    current = [padded(image) for image in current]
    with VideoWriter(out_path, fps) as writer:
        for k in range(total):
            t = k / fps
            for i, f in enumerate(frames):
                while coming[i] is not None and coming[i][1] <= t + 1e-6:  # type: ignore[index]
                    current[i] = padded(coming[i][2])  # type: ignore[index]
                    coming[i] = next(f, None)
            parts = [part for i, image in enumerate(current) for part in ((_gap(GRID_GAP, width), image) if i else (image,))]
            grid = np.concatenate(parts, axis=0)
            if grid.shape[0] % 2:
                grid = np.concatenate([grid, _gap(1, width)], axis=0)
            writer.write(grid)
            if on_frame is not None:
                on_frame(1)
    if stills is not None:
        for f in frames:  # a row's frames after the grid's last moment (rounding), for its stills
            for _ in f:
                pass
    return writer.frames


def compare_grid_keyframes(rows: Sequence[ClipRow], stills: Sequence[Stills],
                           bits_vmax: float | None = None) -> np.ndarray:
    """A still of a grid of videos ``(H, W, 3)``: for each row, its title over the still
    :func:`compare_keyframes` draws of it (its kept frames, at the grid's panel size)."""
    blocks = []
    for row, kept in zip(rows, stills, strict=True):
        sheet = compare_keyframes(row.panels, kept, row.explained, bits_vmax)
        blocks.append(np.concatenate([text_image([(row.title, TEXT)], sheet.shape[1], STILL_TIMES, 15), sheet]))
    width = max(b.shape[1] for b in blocks)
    parts = []
    for i, b in enumerate(blocks):
        if i:
            parts.append(_gap(4 * GRID_GAP, width))
        parts.append(np.concatenate([b, _gap(b.shape[0], width - b.shape[1])], axis=1))
    return np.concatenate(parts, axis=0)


def compare_keyframes(panels: Sequence[ClipPanel], stills: Stills, explained: str,
                      bits_vmax: float | None = None) -> np.ndarray:
    """A still of a video comparison ``(H, W, 3)``: a column per kept frame (headed by its time), a
    row for the frame and one per method (headed, on the left, by its name, unit and note), and
    below them every method's per-frame total with a marker at each kept frame."""
    if not stills.kept:
        raise UserInputError("no keyframes were rendered; the range holds no frames")
    names = [p.name for p in panels]
    heads = _heads(explained, names, [p.result.unit for p in panels], _clip_tops(panels, bits_vmax), "voxel",
                   [p.note for p in panels], prefixes=[p.result.prefix_total for p in panels])
    positions = sorted(stills.kept)
    cells = np.stack([np.stack([padded(panel, MIN_KEYFRAME_CELL) for panel in stills.kept[pos][0]])
                      for pos in positions], axis=1)  # (rows, columns, h, w, 3)
    rows, cols, h, w = cells.shape[:4]
    gap, side, size, line = GRID_GAP, STILL_LABELS, 13, STILL_TIMES
    top = text_image([("", TEXT)], side, line, size)
    times = [text_image([(f"{stills.kept[pos][1]:.2f} s", TEXT)], w, line, size) for pos in positions]
    lines = [np.concatenate([top] + [part for t in times for part in (_gap(line, gap), t)], axis=1)]
    for r in range(rows):
        texts = [(t, TEXT) for t in wrapped(heads[r][0], side - 16, size)]
        texts += [(t, DIM) for line in heads[r][1:] if line for t in wrapped(line, side - 16, size)]
        head = text_image(texts, side, h, size)
        parts = [head] + [part for c in range(cols) for part in (_gap(h, gap), cells[r, c])]
        lines += [_gap(gap, side + cols * (w + gap)), np.concatenate(parts, axis=1)]
    width = lines[-1].shape[1]
    totals = _relative_totals(panels)
    n = len(panels[0].result.source_frame_indices)
    strip = time_strip(totals, positions[0], width, names)
    xs = np.linspace(8, width - 8, n).astype(int) if n > 1 else np.full(1, width // 2)
    for pos in positions[1:]:
        strip[:, max(0, xs[pos] - 1):xs[pos] + 1] = 255
    return np.concatenate(lines + [_gap(gap, width), strip], axis=0)


def _relative_totals(panels: Sequence[ClipPanel]) -> np.ndarray:
    """Every panel's per-frame total over its maximum ``(panels, frames)``, as the strip draws them."""
    return np.stack([p.result.per_source_frame / max(float(np.max(p.result.per_source_frame)), 1e-12)
                     for p in panels])


def _gap(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 18, dtype=np.uint8)


def write_png(image: np.ndarray, out_path: str) -> None:
    """Write ``image`` ``(H, W, 3)`` uint8 as a PNG, atomically."""
    from PIL import Image

    with atomic_write(out_path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


__all__ = ["ClipPanel", "ClipRow", "comparison_row", "compare_clip", "compare_clip_grid", "compare_grid_keyframes",
           "compare_keyframes", "grid_clip_frames", "time_strip", "write_png", "write_rows"]
