"""Explaining a video file: windows, crops, one target, per-window bits, and the overlay MP4.

The video is read three times as a stream (never whole): once to pick the target (mean softmax
over windows; skipped when a target is given), once to explain every window, once to render.
Bits are kept per window at the model clip's resolution ``(T, S, S)`` with the crop box and the
source-frame indices; only rendering maps them onto every source frame.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ._version import __version__
from .api import explain
from .bottleneck.insertion import frozen
from .config import IBAConfig
from .errors import UserInputError
from .io.atomic import atomic_writes, ensure_writable_dir
from .io.sampling import REFERENCE_FPS, Window, plan_windows
from .io.video import VideoInfo, frame_times, iter_frames, probe_video
from .models import get_spec, labels_for, pathways, resize_crop_normalize
from .models.preprocess import resized_size
from .models.registry import ModelSpec
from .pipeline import Loaded, check_classes, load_stats_files, resolve_device, resolve_target

log = logging.getLogger(__name__)

COVERAGES = ("center", "tiles")
LAYOUTS = ("side-by-side", "overlay")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp")

#: ``(desc, total, unit) -> (update(n), close())``: how progress is reported (the CLI passes tqdm).
ProgressFactory = Callable[[str, int, str], tuple[Callable[[int], None], Callable[[], None]]]


def _no_progress(_desc: str, _total: int, _unit: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    return (lambda _n: None), (lambda: None)


@dataclass(frozen=True)
class Tile:
    """One square crop of the resized frame: ``(top, left)`` there, and its box in source pixels."""

    top: int
    left: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class CropPlan:
    """How frames become model clips: decode size ``(height, width)`` and the crops taken from it."""

    size: tuple[int, int]
    crop: int
    tiles: tuple[Tile, ...]


def plan_crops(height: int, width: int, spec: ModelSpec, coverage: str) -> CropPlan:
    """The crops for ``coverage``.

    ``center``: the shorter side is resized to the model's resize side and the centre square is
    cropped, as the model was evaluated. ``tiles``: the shorter side is resized to the crop side
    and ``ceil(long / crop)`` evenly spaced, overlapping squares cover the whole frame.
    """
    if coverage not in COVERAGES:
        raise UserInputError(f"unknown coverage '{coverage}'; choose {' or '.join(COVERAGES)}")
    crop = spec.input_size
    short = spec.resize if coverage == "center" else crop
    nh, nw = resized_size(height, width, short)
    if coverage == "center":
        offsets = [(int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0)))]
    else:
        long_side = max(nh, nw)
        n = max(1, math.ceil(long_side / crop - 1e-9))
        starts = [int(round(v)) for v in np.linspace(0, long_side - crop, n)] if n > 1 else [int(round((long_side - crop) / 2))]
        offsets = [(0, s) if nw >= nh else (s, 0) for s in starts]
    sx, sy = nw / width, nh / height
    tiles = tuple(Tile(t, l, (l / sx, t / sy, (l + crop) / sx, (t + crop) / sy)) for t, l in offsets)
    return CropPlan((nh, nw), crop, tiles)


#: Environment variable choosing the decoder of model clips: ``auto`` (decord when installed,
#: else PyAV), ``pyav`` or ``decord``.
DECODER_ENV = "VIDEO_IBA_DECODER"


def clip_decoder() -> str:
    """The decoder used for model clips: ``"decord"`` (optional, random access) or ``"pyav"``."""
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
    return "decord"


def iter_window_frames(path: str, windows: Sequence[Window], size: tuple[int, int],
                       decoder: str = "pyav") -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(window index, (T, h, w, 3) frames)`` in window order, frames resized to ``size``.

    PyAV decodes the video once as a stream and keeps only the frames the remaining windows
    need, so memory is bounded by the frames spanned by one window. decord (``decoder="decord"``)
    reads each window's frames by index instead, which skips decoding unused frames' pixels.
    """
    if not windows:
        return
    if decoder == "decord":
        yield from _decord_windows(path, windows, size)
        return
    needed = np.unique(np.concatenate([w.indices for w in windows]))
    lo, hi = int(needed.min()), int(needed.max())
    wanted = set(needed.tolist())
    buffer: dict[int, np.ndarray] = {}
    nxt = 0
    h, w = size
    for frame in iter_frames(path, size=(w, h)):
        if frame.index < lo:
            continue
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
    try:
        vr = decord.VideoReader(path, width=w, height=h, num_threads=1)
    except Exception as exc:  # decord raises its own error types
        raise UserInputError(f"decord cannot open '{path}' ({type(exc).__name__}): the file may be truncated or corrupt; "
                             f"re-encode it (or set {DECODER_ENV}=pyav for PyAV's diagnosis)") from exc
    if info.frames and len(vr) < info.frames * 0.98:
        raise UserInputError(f"'{path}' is truncated: the container announces {info.frames} frames but only "
                             f"{len(vr)} can be read; re-download or re-encode the file")
    for wi, win in enumerate(windows):
        if int(win.indices.max()) >= len(vr):
            raise UserInputError(f"'{path}' has {len(vr)} frames, fewer than frame {int(win.indices.max())}; the file may "
                                 f"be truncated; re-encode it")
        try:
            frames = vr.get_batch([int(i) for i in win.indices]).asnumpy()
        except Exception as exc:
            raise UserInputError(f"decord cannot decode '{path}' ({type(exc).__name__}); the file may be truncated or "
                                 f"corrupt; "
                                 f"set {DECODER_ENV}=pyav or re-encode it") from exc
        yield wi, frames


@dataclass
class WindowResult:
    """The explanation of one window: per tile, bits ``(T, S, S)``, per-pathway bits at the feature
    resolution (channel sum of the capacity), softmax, and the fit's history."""

    bits: list[np.ndarray] = field(default_factory=list)
    feature_bits: list[list[np.ndarray]] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class VideoResult:
    mp4: str
    npz: str
    target: int
    label: str
    top: list[tuple[str, float]]
    total_bits: float
    windows: int
    tiles: int
    meta: dict[str, Any]


def _clip_input(frames: np.ndarray, spec: ModelSpec, plan: CropPlan, tile: Tile, source: tuple[int, int],
                device: torch.device) -> Any:
    short = min(plan.size)
    x, _ = resize_crop_normalize(frames, resize=short, crop=plan.crop, mean=spec.mean, std=spec.std,
                                 offset=(tile.top, tile.left), source_size=source)
    clip = x.permute(1, 0, 2, 3)[None].contiguous().to(device)
    return pathways(spec, clip)


def clip_at(path: str, spec: ModelSpec, start: float = 0.0, device: torch.device | str = "cpu") -> Any:
    """The model input for the centre crop of the model clip starting at ``start`` seconds of a
    video (a pathway list for SlowFast)."""
    info = probe_video(path)
    times = frame_times(path)
    n = len(times) if times is not None else int(info.frames or round((info.duration or 0) * info.fps))
    window = plan_windows(n, info.fps, spec.frames, spec.sampling_rate, start=start, times=times)[0]
    plan = plan_crops(info.height, info.width, spec, "center")
    _, frames = next(iter_window_frames(path, [window], plan.size, clip_decoder()))
    return _clip_input(frames, spec, plan, plan.tiles[0], (info.height, info.width), torch.device(device))


def explain_video_file(
    path: str,
    *,
    model_name: str,
    out_dir: str,
    layers: Sequence[str] | None = None,
    target: str | None = None,
    config: IBAConfig | None = None,
    seed: int | None = 0,
    stats_paths: Sequence[str] | None = None,
    weights: str = "default",
    stride: float | None = None,
    start: float = 0.0,
    end: float | None = None,
    coverage: str = "center",
    layout: str = "side-by-side",
    vmax: float | None = None,
    device: str = "cpu",
    progress: ProgressFactory | None = None,
    method: str = "iba",
    readout: str | None = None,
    loaded: Loaded | None = None,
) -> VideoResult:
    """Explain a video and write ``<out_dir>/<stem>.mp4`` (overlay) and ``<stem>.npz`` (bits) atomically.

    Args:
        path: The video file.
        model_name: A video model of the registry (``video-iba models``).
        out_dir: Output folder (created if missing).
        layers: Bottleneck layer(s); default: the model's (SlowFast: one per pathway).
        target: ``None``/``"top1"`` (top-1 of the mean softmax over all windows and crops), an
            index or a class name; one target for the whole video.
        config, seed: Bottleneck settings and noise seed (the same seed for every window).
        stats_paths: Statistics files from ``video-iba estimate``, one per layer.
        weights: As for :func:`video_iba.load_model`.
        stride, start, end: Seconds between window starts (default: one clip length), and the
            time range to explain.
        coverage: ``"center"`` crop or overlapping ``"tiles"`` covering the whole frame.
        layout: ``"side-by-side"`` (original | overlay) or ``"overlay"`` only.
        vmax: Top of the colour scale in bits per voxel (default: the largest value over the video).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        progress: Progress reporting (see :data:`ProgressFactory`).
        method: ``"iba"``, ``"readout"`` or a baseline of :mod:`video_iba.baselines`; baselines' maps
            are stored as ``window_values`` in their own unit and drawn by magnitude.
        readout: For ``method="readout"``: a checkpoint of ``video-iba train-readout``.
        loaded: Models and readouts kept from earlier calls (many inputs, one model load).
    """
    from .render.video import render_video

    from .baselines import attribute, check_method

    method = check_method(method)
    cfg = config or IBAConfig()
    prog = progress or _no_progress
    if method != "iba" and stats_paths:
        raise UserInputError("--stats applies to --method iba only; drop it for baselines")
    if vmax is not None and not vmax > 0:
        raise UserInputError(f"--vmax must be > 0 bits, got {vmax}")
    if layout not in LAYOUTS:
        raise UserInputError(f"unknown layout '{layout}'; choose {' or '.join(LAYOUTS)}")
    if coverage not in COVERAGES:
        raise UserInputError(f"unknown coverage '{coverage}'; choose {' or '.join(COVERAGES)}")
    if start < 0:
        raise UserInputError(f"--start must be >= 0 seconds, got {start}")
    if end is not None and end <= start:
        raise UserInputError(f"--end ({end} s) must be after --start ({start} s)")
    spec = get_spec(model_name)
    if not spec.is_video:
        raise UserInputError(f"{spec.name} is an image model; explain a video with a video model "
                             f"(e.g. --model efficientnet_lite0_i3d or slowfast_r50; `video-iba models` lists them)")
    dev = resolve_device(device)
    info = probe_video(path)
    ensure_writable_dir(out_dir)
    short_side = min(info.width, info.height)
    if short_side < 16:
        raise UserInputError(f"'{path}' is {info.width}x{info.height} pixels; give a video at least 16 pixels high and wide")
    times = frame_times(path)
    n_src = len(times) if times is not None else int(info.frames or round((info.duration or 0) * info.fps))
    if times is not None and len(times) > 2:
        gaps = np.diff(times)
        if gaps.max() > 1.5 * np.median(gaps):
            log.info("%s has a variable frame rate; frames are sampled by their timestamps", path)
    windows = plan_windows(n_src, info.fps, spec.frames, spec.sampling_rate, start=start, end=end, stride=stride,
                           times=times)
    plan = plan_crops(info.height, info.width, spec, coverage)
    decoder = clip_decoder()
    layer_names = list(layers) if layers else list(spec.layers)
    if spec.slowfast_alpha and len(layer_names) != 2:
        raise UserInputError(f"{spec.name} has two pathways: pass --layer twice (slow, then fast), e.g. "
                             f"--layer {spec.layers[0]} --layer {spec.layers[1]}")
    stats = load_stats_files(list(stats_paths or []), spec, layer_names) or None
    loaded = loaded or Loaded()
    model = loaded.model(model_name, weights, dev)
    extra_kw: dict[str, Any] = {}
    if method == "readout":
        extra_kw["readout"] = loaded.readout(readout, spec.name, dev)
    labels = labels_for(spec)
    source = (info.height, info.width)
    n_units = len(windows) * len(plan.tiles)

    tgt = resolve_target(target, labels)
    mean_probs: np.ndarray | None = None
    if tgt is None:
        update, close = prog("predicting", n_units, "clip")
        acc = np.zeros(len(labels), dtype=np.float64)
        try:
            with frozen(model), torch.no_grad():
                for _wi, frames in iter_window_frames(path, windows, plan.size, decoder):
                    for tile in plan.tiles:
                        logits = model(_clip_input(frames, spec, plan, tile, source, dev))
                        check_classes(logits, labels, spec)
                        acc += torch.softmax(logits[0].double(), 0).cpu().numpy()
                        update(1)
        finally:
            close()
        mean_probs = acc / n_units
        tgt = int(mean_probs.argmax())

    results: list[WindowResult] = []
    per_unit = cfg.steps if method == "iba" else 1
    update, close = prog("explaining", n_units * per_unit, "step" if method == "iba" else "clip")
    unit = "bits"
    meta_fit: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        for _wi, frames in iter_window_frames(path, windows, plan.size, decoder):
            wr = WindowResult()
            t1 = time.perf_counter()
            for tile in plan.tiles:
                x = _clip_input(frames, spec, plan, tile, source, dev)
                if method != "iba":
                    clip = x[-1] if isinstance(x, list) else x
                    pack = (lambda c: pathways(spec, c)) if spec.slowfast_alpha else None  # noqa: E731
                    attr = attribute(method, model, clip, tgt, pack=pack, seed=seed or 0,  # type: ignore[arg-type]
                                     **extra_kw)
                    update(1)
                    unit = attr.unit
                    assert attr.logits is not None
                    check_classes(attr.logits[None], labels, spec)
                    wr.bits.append(attr.values.numpy().astype(np.float32))
                    wr.probs.append(torch.softmax(attr.logits.double(), 0).numpy().astype(np.float32))
                    if not meta_fit:
                        meta_fit = {k: v for k, v in attr.meta.items() if k not in ("target", "seconds", "version")}
                    continue
                attr = explain(model, x, tgt, layer=layer_names if len(layer_names) > 1 else layer_names[0],
                               stats=[s.to(dev) for s in stats] if stats and len(stats) > 1 else
                               (stats[0].to(dev) if stats else None),
                               config=cfg, seed=seed, on_step=lambda *_: update(1))
                assert attr.logits is not None
                check_classes(attr.logits[None], labels, spec)
                wr.bits.append(attr.values.numpy().astype(np.float32))
                caps = attr.capacity if isinstance(attr.capacity, list) else [attr.capacity]
                wr.feature_bits.append([(c.double().sum(0) / math.log(2)).float().numpy() for c in caps])  # type: ignore[union-attr]
                wr.probs.append(torch.softmax(attr.logits.double(), 0).numpy().astype(np.float32))
                if not meta_fit:
                    meta_fit = {k: attr.meta[k] for k in ("layer", "beta", "steps", "samples", "lr", "alpha_init",
                                                           "smoothing_sigmas", "min_std", "stats", "stats_source",
                                                           "prefix_cached", "prefix_note", "feature_shape",
                                                           "input_shape", "seed")}
            wr.seconds = time.perf_counter() - t1
            results.append(wr)
    finally:
        close()
    if len(results) != len(windows):
        raise UserInputError(f"only {len(results)} of {len(windows)} windows of '{path}' could be read; re-encode the file")
    if mean_probs is None:
        mean_probs = np.mean([p for r in results for p in r.probs], axis=0)
    window_bits = np.stack([np.stack(r.bits) for r in results])  # (n_win, n_tiles, T, S, S)
    shown = window_bits if unit == "bits" else np.abs(window_bits)  # baselines are drawn by magnitude
    used_vmax = float(vmax) if vmax is not None else float(max(shown.max(), 1e-12))
    top = [(labels[i], float(mean_probs[i])) for i in np.argsort(-mean_probs)[:5]]
    label = labels[tgt]

    first, last = _source_range(times, n_src, info.fps, start, end)
    meta: dict[str, Any] = {
        "method": "iba_per_sample" if method == "iba" else method, "unit": unit, "model": spec.name, "weights": weights, "input": os.path.abspath(path),
        "target": tgt, "target_label": label, "target_rule": "given" if target not in (None, "top1") else
        "top-1 of the mean softmax over windows and crops",
        "target_probability": float(mean_probs[tgt]), "predicted": top[0][0], "top5": top,
        "layers": layer_names, **meta_fit,
        "config": {"beta": cfg.beta, "steps": cfg.steps, "samples": cfg.samples, "lr": cfg.lr,
                   "alpha_init": cfg.alpha_init, "sigma": cfg.sigma, "temporal_sigma": cfg.temporal_sigma,
                   "min_std": cfg.min_std},
        "sampling": {"frames": spec.frames, "rate": spec.sampling_rate, "reference_fps": REFERENCE_FPS,
                     "slowfast_alpha": spec.slowfast_alpha, "source_fps": info.fps, "source_frames": n_src,
                     "start": start, "end": end, "stride": stride, "clip_seconds": spec.frames * spec.sampling_rate / REFERENCE_FPS,
                     "variable_frame_rate_timestamps": times is not None},
        "decoder": decoder, "coverage": coverage, "crop": plan.crop, "resized": list(plan.size), "windows": len(windows),
        "tiles": len(plan.tiles), "vmax": used_vmax, "layout": layout,
        "bits_unit": f"{unit} per voxel of the {spec.frames}x{plan.crop}x{plan.crop} model clip",
        "seconds_explaining": round(time.perf_counter() - t0, 3), "version": __version__,
    }
    stem = Path(path).stem
    mp4, npz = os.path.join(out_dir, f"{stem}.mp4"), os.path.join(out_dir, f"{stem}.npz")
    with atomic_writes([mp4, npz]) as (tmp_mp4, tmp_npz):
        rendered = render_video(
            path, tmp_mp4, info=info, windows=windows, plan=plan, window_bits=shown, unit=unit,
            window_probs=[np.mean(r.probs, axis=0) for r in results], labels=labels, target=tgt,
            vmax=used_vmax, layout=layout, first=first, last=last, times=times,
            title=f"{spec.name} · {label} (#{tgt}) · " + (f"β={cfg.beta:g}" if method == "iba" else method),
            progress=prog)
        meta["output_frames"] = int(len(rendered.frame_indices))
        total = float(window_bits.astype(np.float64).sum(axis=(2, 3, 4)).mean())
        meta["mean_window_bits"] = total
        payload: dict[str, np.ndarray] = {
            "format": np.array("video-iba-video-attribution-1"),
            ("window_bits" if unit == "bits" else "window_values"): window_bits,
            "window_starts": np.array([w.start for w in windows]),
            "window_frame_indices": np.stack([w.indices for w in windows]).astype(np.int64),
            "window_looped": np.array([w.looped for w in windows]),
            "window_probs": np.stack([np.stack(r.probs) for r in results]),
            ("window_total_bits" if unit == "bits" else "window_totals"): window_bits.astype(np.float64).sum(axis=(2, 3, 4)),
            "window_seconds": np.array([r.seconds for r in results]),
            "crop_boxes": np.array([t.box for t in plan.tiles], dtype=np.float64),
            "source_frame_indices": rendered.frame_indices,
            ("bits_per_source_frame" if unit == "bits" else "magnitude_per_source_frame"): rendered.bits_per_frame,
            "target": np.array(tgt, dtype=np.int64),
            "meta": np.array(json.dumps(meta, sort_keys=True)),
        }
        for i in range(len(results[0].feature_bits[0]) if results[0].feature_bits else 0):
            payload[f"feature_bits_{i}"] = np.stack([np.stack([fb[i] for fb in r.feature_bits]) for r in results])
        with open(tmp_npz, "wb") as fh:
            np.savez(fh, **payload)  # type: ignore[arg-type]
    return VideoResult(mp4, npz, tgt, label, top, total, len(windows), len(plan.tiles), meta)


def _source_range(times: np.ndarray | None, n_src: int, fps: float, start: float, end: float | None) -> tuple[int, int]:
    """First and last source frame whose presentation time lies in ``[start, end)``."""
    if times is not None:
        stop = float(times[-1]) + 1.0 / fps if end is None else end
        first = int(np.searchsorted(times, start - 1e-6))
        last = int(np.searchsorted(times, stop - 1e-6)) - 1
    else:
        stop = n_src / fps if end is None else min(end, n_src / fps)
        first = int(math.ceil(start * fps - 1e-6))
        last = min(n_src, int(math.ceil(stop * fps - 1e-6))) - 1
    first = min(max(first, 0), n_src - 1)
    return first, min(max(last, first), n_src - 1)


def is_video_file(path: str) -> bool:
    """Whether ``path`` is treated as a video (by suffix; other files are read as images)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


__all__ = ["explain_video_file", "plan_crops", "iter_window_frames", "is_video_file", "VideoResult", "CropPlan",
           "VideoInfo"]
