"""The overlay MP4: source frames with the bits map, a colorbar, classes, and a bits-per-frame strip.

Bits stay per window at the model clip's resolution until here. For each source frame, every
window covering its time contributes its map interpolated linearly between the two nearest
model frames; crops (tiles) are placed at their boxes; overlapping windows and tiles are
averaged; pixels no crop covers are drawn hatched (not covered, which is not zero bits).
Everything per frame is array arithmetic; text is drawn once per window, not per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import UserInputError
from ..io.sampling import REFERENCE_FPS, Window
from ..io.video import VideoInfo, VideoWriter, iter_frames
from .overlay import CMAP, bits_on_image, colormap, overlay

if TYPE_CHECKING:
    from ..video_pipeline import CropPlan

#: Output panels are scaled so their longer side is at most this many pixels ...
MAX_PANEL_SIDE = 960
#: ... and, for small videos, their height at least this (they are shown on projectors).
MIN_PANEL_HEIGHT = 360
BACKGROUND = (18, 18, 22)
TEXT = (235, 235, 235)
DIM = (160, 160, 170)


@dataclass
class RenderResult:
    frame_indices: np.ndarray
    bits_per_frame: np.ndarray


@dataclass(frozen=True)
class FrameSource:
    """The windows contributing to one source frame: ``(window, k0, k1, weight of k1)``."""

    parts: tuple[tuple[int, int, int, float], ...]


def display_size(height: int, width: int) -> tuple[int, int, float]:
    """``(height, width, scale)`` of one output panel (even sizes)."""
    s = min(MAX_PANEL_SIDE / max(height, width), max(1.0, MIN_PANEL_HEIGHT / height))
    h, w = int(round(height * s / 2)) * 2, int(round(width * s / 2)) * 2
    return max(h, 2), max(w, 2), s


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


def _interp(window_bits: np.ndarray, wi: int, tile: int, k0: int, k1: int, a: float) -> np.ndarray:
    m = window_bits[wi, tile, k0]
    return m if a == 0.0 or k0 == k1 else (1.0 - a) * m + a * window_bits[wi, tile, k1]


def _feather(plan: "CropPlan") -> list[np.ndarray]:
    """Per tile, ``(S, S)`` blending weights in the resized frame, before normalisation: 1 inside,
    falling linearly towards each tile edge that lies inside the frame (an edge on the frame's
    border keeps weight 1), so overlapping crops fade into each other without a seam."""
    nh, nw = plan.size
    c = plan.crop
    out = []
    ramp = np.minimum(np.arange(c) + 0.5, c - np.arange(c) - 0.5) / (c / 4.0)
    for t in plan.tiles:
        wy = np.ones(c)
        wx = np.ones(c)
        if len(plan.tiles) > 1:
            y_in = np.clip(ramp, 0.02, 1.0)
            wy = np.where(np.arange(c) < c / 2, 1.0 if t.top == 0 else y_in, 1.0 if t.top + c >= nh else y_in)
            wx = np.where(np.arange(c) < c / 2, 1.0 if t.left == 0 else y_in, 1.0 if t.left + c >= nw else y_in)
        out.append(np.outer(wy, wx))
    return out


def tile_weights(plan: "CropPlan") -> list[np.ndarray]:
    """Per tile, ``(S, S)`` weights of its cells in the merged map; at every cell of the resized
    frame they sum to 1 over the tiles covering it (feathered where tiles overlap)."""
    nh, nw = plan.size
    total = np.zeros((nh, nw), dtype=np.float64)
    feathers = _feather(plan)
    for t, f in zip(plan.tiles, feathers):
        total[t.top:t.top + plan.crop, t.left:t.left + plan.crop] += f
    return [f / total[t.top:t.top + plan.crop, t.left:t.left + plan.crop] for t, f in zip(plan.tiles, feathers)]


def bits_per_frame(sources: Sequence[FrameSource], window_bits: np.ndarray, plan: "CropPlan") -> np.ndarray:
    """Bits in each source frame, in the model's units: the merged map summed over the frame (each
    cell once, overlapping crops blended by :func:`tile_weights`), averaged over the windows
    covering the frame. For a centre crop this is the bits of the model frame at that time
    (interpolated)."""
    weights = tile_weights(plan)
    sums = np.einsum("wnthk,nhk->wnt", window_bits.astype(np.float64), np.stack(weights))  # (win, tile, T)
    out = np.empty(len(sources))
    for i, src in enumerate(sources):
        vals = [((1 - a) * sums[wi, :, k0] + a * sums[wi, :, k1]).sum() for wi, k0, k1, a in src.parts]
        out[i] = float(np.mean(vals))
    return out


def merged_map(src: FrameSource, window_bits: np.ndarray, plan: "CropPlan", boxes: Sequence[tuple[float, ...]],
               size: tuple[int, int], weights: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The bits map of one source frame at display ``size`` (NaN where no crop reaches): windows
    covering the frame averaged, crops blended with ``weights`` (default :func:`tile_weights`)."""
    ws = list(weights) if weights is not None else tile_weights(plan)
    placed_w = [np.nan_to_num(bits_on_image(w, box, size), nan=0.0) for w, box in zip(ws, boxes)]  # type: ignore[arg-type]
    acc = np.zeros(size, dtype=np.float32)
    wsum = np.zeros(size, dtype=np.float32)
    for wi, k0, k1, a in src.parts:
        for ti, box in enumerate(boxes):
            placed = bits_on_image(_interp(window_bits, wi, ti, k0, k1, a), box, size)  # type: ignore[arg-type]
            ok = ~np.isnan(placed)
            acc[ok] += placed_w[ti][ok] * placed[ok]
            wsum[ok] += placed_w[ti][ok]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, acc / np.maximum(wsum, 1e-12), np.nan).astype(np.float32)


@lru_cache(maxsize=8)
def _font(size: int) -> Any:
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def _text_image(lines: Sequence[tuple[str, tuple[int, int, int]]], width: int, height: int, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    y = max(2, (height - len(lines) * int(size * 1.35)) // 2)
    for text, colour in lines:
        draw.text((8, y), text, fill=colour, font=_font(size))
        y += int(size * 1.35)
    return np.asarray(img)


def _colorbar(width: int, height: int, vmax: float, size: int, unit: str = "bits") -> np.ndarray:
    from PIL import Image, ImageDraw

    bar_w = max(60, width - 16)
    ramp = colormap(np.linspace(0, vmax, bar_w)[None, :].repeat(max(6, height // 4), 0), vmax, CMAP)
    img = Image.new("RGB", (width, height), BACKGROUND)
    img.paste(Image.fromarray((ramp * 255 + 0.5).astype(np.uint8)), (8, 4))
    draw = ImageDraw.Draw(img)
    y = 6 + max(6, height // 4)
    draw.text((8, y), "0", fill=TEXT, font=_font(size))
    label = f"{vmax:.3g} bits/voxel" if unit == "bits" else f"{vmax:.3g} |{unit}|/voxel"
    tw = draw.textlength(label, font=_font(size))
    draw.text((8 + bar_w - tw, y), label, fill=TEXT, font=_font(size))
    return np.asarray(img)


def _strip(values: np.ndarray, width: int, height: int, size: int, unit: str = "bits") -> np.ndarray:
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
    ImageDraw.Draw(pil).text((8, 2), f"{'bits' if unit == 'bits' else '|' + unit + '|'} per frame (peak {_fmt(peak)})", fill=DIM, font=_font(size))
    return np.asarray(pil).copy()


def render_video(
    path: str,
    out_path: str,
    *,
    info: VideoInfo,
    windows: Sequence[Window],
    plan: "CropPlan",
    window_bits: np.ndarray,
    window_probs: Sequence[np.ndarray],
    labels: Sequence[str],
    target: int,
    vmax: float,
    layout: str,
    first: int,
    last: int,
    times: np.ndarray | None,
    title: str,
    progress: Callable[[str, int, str], tuple[Callable[[int], None], Callable[[], None]]],
    top_k: int = 3,
    unit: str = "bits",
) -> RenderResult:
    """Write the overlay MP4 of source frames ``first..last`` (one output frame each) at the source fps."""
    ph, pw, scale = display_size(info.height, info.width)
    panels = 2 if layout == "side-by-side" else 1
    width = pw * panels
    font = max(11, min(18, width // 60))
    info_h = int(font * 1.35) * 3 + 10
    strip_h = max(40, font * 4)
    boxes = [tuple(v * scale for v in t.box) for t in plan.tiles]

    indices = np.arange(first, last + 1)
    t_of = (lambda i: float(times[i])) if times is not None else (lambda i: i / info.fps)
    sources = [frame_sources(t_of(int(i)), windows) for i in indices]
    per_frame = bits_per_frame(sources, window_bits, plan)
    blend = tile_weights(plan)

    bar_w = min(max(220, width // 3), width // 2)
    header = np.concatenate([
        _text_image([(title, TEXT)], width - bar_w, int(font * 1.35) + 8, font),
        _colorbar(bar_w, int(font * 1.35) + 8, vmax, max(10, font - 3), unit)[:, :bar_w]], axis=1)
    strip = _strip(per_frame, width, strip_h, max(10, font - 3), unit)
    text_cache: dict[tuple[int, ...], np.ndarray] = {}
    rest_h = info_h - header.shape[0]
    counter_w = min(width // 2, max(200, 15 * font))

    def class_lines(src: FrameSource, bits_now: float) -> np.ndarray:
        key = tuple(sorted({wi for wi, *_ in src.parts}))
        if key not in text_cache:
            probs = np.mean([window_probs[k] for k in key], axis=0)
            order = np.argsort(-probs)[:top_k]
            top = "  ".join(f"{labels[i]} {probs[i]:.2f}" for i in order)
            text_cache[key] = _text_image([(f"top-{top_k}: {top}", DIM),
                                           (f"explained: {labels[target]} (p={probs[target]:.2f})", TEXT)],
                                          width - counter_w, rest_h, font)
        return text_cache[key]

    update, close = progress("rendering", len(indices), "frame")
    try:
        with VideoWriter(out_path, info.fps) as writer:
            pos = 0
            for frame in iter_frames(path, size=(pw, ph)):
                if frame.index < first:
                    continue
                if frame.index > last:
                    break
                pos = frame.index - first
                src = sources[pos]
                bits = merged_map(src, window_bits, plan, boxes, (ph, pw), blend)
                canvas = np.empty((ph + info_h + strip_h, width, 3), dtype=np.uint8)
                canvas[:] = BACKGROUND
                over = overlay(frame.rgb, bits, vmax)
                if panels == 2:
                    canvas[:ph, :pw] = frame.rgb
                    canvas[:ph, pw:] = over
                else:
                    canvas[:ph, :pw] = over
                canvas[ph:ph + header.shape[0]] = header
                lines = class_lines(src, per_frame[pos])
                canvas[ph + header.shape[0]:ph + info_h, :lines.shape[1]] = lines
                counter = _text_image([(f"{_fmt(per_frame[pos])} {'bits' if unit == 'bits' else '|' + unit + '|'} in frame", TEXT), (f"{t_of(frame.index):.2f} s", DIM)],
                                      width - lines.shape[1], rest_h, font)
                canvas[ph + header.shape[0]:ph + info_h, lines.shape[1]:] = counter
                canvas[ph + info_h:] = strip
                x = int(round(pos / max(1, len(indices) - 1) * (width - 1)))
                canvas[ph + info_h:, max(0, x - 1):x + 1] = (255, 255, 255)
                writer.write(canvas)
                update(1)
            if writer.frames != len(indices):
                raise UserInputError(f"decoded {writer.frames} frames of {len(indices)} in the range of {path}; the file "
                                     f"may be truncated; re-encode it")
    finally:
        close()
    return RenderResult(indices.astype(np.int64), per_frame)


def _fmt(v: float) -> str:
    """Bits for display: whole numbers from 100 up, three significant digits below."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
