"""``video-iba compare``: one figure (stills) or one MP4 (clips) with a labelled panel per method.

For a clip, the first model clip of the video (or of ``--start``) is explained by every method
and shown frame by frame on a shared time axis: the input frame, then one overlay per method,
each with its own colour scale (the methods' units differ), and below them a strip with every
method's per-frame magnitude (normalised to its maximum) and a cursor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .baselines import attribute, check_method
from .errors import UserInputError
from .io.atomic import atomic_write, ensure_writable_dir
from .render.overlay import overlay

PANEL = 224


def _maps(model: torch.nn.Module, x: torch.Tensor, target: int | None, methods: Sequence[str],
          kwargs: Callable[[str], dict[str, Any]], progress: Callable[[int], None] | None) -> list[tuple[str, np.ndarray, str, int]]:
    out = []
    for m in methods:
        a = attribute(m, model, x, target, **kwargs(m))
        v = a.values.numpy()
        out.append((m, v if a.unit == "bits" else np.abs(v), a.unit, a.target))
        if progress is not None:
            progress(1)
    return out


def _label(img: np.ndarray, lines: Sequence[str], size: int = 13) -> np.ndarray:
    from PIL import Image, ImageDraw

    from .render.video import _font

    bar = Image.new("RGB", (img.shape[1], int(size * 1.4) * len(lines) + 6), (18, 18, 22))
    d = ImageDraw.Draw(bar)
    for i, text in enumerate(lines):
        d.text((4, 3 + i * int(size * 1.4)), text, fill=(235, 235, 235), font=_font(size))
    return np.concatenate([img, np.asarray(bar)], axis=0)


def _to_rgb(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(3, H, W)`` normalised input back to uint8 RGB."""
    rgb = x.transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def _panel(rgb: np.ndarray, values: np.ndarray | None, vmax: float) -> np.ndarray:
    import cv2

    img = rgb if values is None else overlay(rgb, values, vmax)
    return cv2.resize(img, (PANEL, PANEL), interpolation=cv2.INTER_LINEAR)


def compare(
    model: torch.nn.Module,
    x: torch.Tensor,
    methods: Sequence[str],
    out_path: str,
    *,
    target: int | None = None,
    labels: Sequence[str] | None = None,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    fps: float = 8.0,
    method_kwargs: Callable[[str], dict[str, Any]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[str, str, int]]:
    """Render the comparison of ``methods`` on one preprocessed input ``x`` to ``out_path`` (PNG or MP4).

    The frames shown are the model input itself (after resize and crop), so every panel covers
    the same pixels. Returns ``(method, unit, target)`` per panel.
    """
    keys = [check_method(m) for m in methods]
    if not keys:
        raise UserInputError("no methods given; e.g. --methods iba,gradcam,saliency")
    ensure_writable_dir(os.path.dirname(os.path.abspath(out_path)))
    maps = _maps(model, x, target, keys, method_kwargs or (lambda _m: {}), progress)
    tgt = maps[0][3]
    name = labels[tgt] if labels is not None else f"class {tgt}"
    heads = [["input", f"explained: {name}"]] + [[m, u if u == "bits" or u.startswith("|") else f"|{u}|"]
                                                 for m, _, u, _ in maps]
    vmaxes = [float(v.max()) if v.max() > 0 else 1.0 for _, v, _, _ in maps]
    if x.dim() == 4:
        rgb = _to_rgb(x[0].numpy(), mean, std)
        tiles = [_label(_panel(rgb, None, 1.0), heads[0])]
        tiles += [_label(_panel(rgb, v, vm), h) for (_, v, _, _), vm, h in zip(maps, vmaxes, heads[1:])]
        from PIL import Image

        with atomic_write(out_path) as tmp:
            Image.fromarray(np.concatenate(tiles, axis=1)).save(tmp, format="PNG")
    else:
        from .io.video import VideoWriter

        frames = x.shape[2]
        per_frame = np.stack([v.sum(axis=(1, 2)) / max(v.sum(axis=(1, 2)).max(), 1e-12) for _, v, _, _ in maps])
        with VideoWriter(out_path, fps) as w:
            for t in range(frames):
                rgb = _to_rgb(x[0, :, t].numpy(), mean, std)
                tiles = [_label(_panel(rgb, None, 1.0), heads[0])]
                tiles += [_label(_panel(rgb, v[t], vm), h) for (_, v, _, _), vm, h in zip(maps, vmaxes, heads[1:])]
                row = np.concatenate(tiles, axis=1)
                w.write(np.concatenate([row, _time_strip(per_frame, t, row.shape[1], [m for m, *_ in maps])], axis=0))
    return [(m, u, t) for m, _, u, t in maps]


def _time_strip(per_frame: np.ndarray, t: int, width: int, names: Sequence[str]) -> np.ndarray:
    """Each method's per-frame magnitude (normalised) as a line over the shared time axis, cursor at ``t``."""
    import cv2

    h = 90
    img = np.full((h, width, 3), 18, dtype=np.uint8)
    n = per_frame.shape[1]
    xs = np.linspace(8, width - 8, n).astype(int)
    colours = [(240, 140, 40), (80, 180, 255), (120, 220, 120), (230, 90, 200), (250, 230, 90), (200, 200, 200)]
    x_text = 8
    for i, row in enumerate(per_frame):
        pts = np.stack([xs, (h - 8 - row * (h - 24)).astype(int)], axis=1).reshape(-1, 1, 2)
        cv2.polylines(img, [pts.astype(np.int32)], False, colours[i % len(colours)], 2)
        cv2.putText(img, names[i], (x_text, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colours[i % len(colours)], 1)
        x_text += cv2.getTextSize(names[i], cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] + 16
    img[:, max(0, xs[t] - 1):xs[t] + 1] = 255
    cv2.putText(img, "per-frame magnitude / its maximum (0 at the bottom)", (width - 330, h - 4),
                cv2.FONT_HERSHEY_SIMPLEX, 0.35, (160, 160, 170), 1)
    return img


def output_path(input_path: str, out_dir: str, video: bool) -> str:
    return os.path.join(out_dir, f"{Path(input_path).stem}-compare.{'mp4' if video else 'png'}")
