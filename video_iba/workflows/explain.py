"""Explaining a file, photo or video, in the same stages.

1. **plan** the model inputs (:func:`~video_iba.workflows.inputs.plan_input`): a photo is one
   window of one frame, a video the windows covering the range, each at one or more crops;
2. **predict and choose the target**: the given class, or the top-1 class of the softmax averaged
   over every window and crop (a pass of the model over the video; with a single input the
   method's own top-1);
3. **attribute** every window and crop with the session's method;
4. **assemble** the result: an :class:`~video_iba.results.Attribution` for a photo, a
   :class:`~video_iba.results.ClipAttribution` for a video, with the metadata;
5. **render** the figure (PNG) or the overlay MP4, and **save** it with the ``.npz``, both
   atomically (a failure leaves neither).

A video is read as a stream, never whole: once to choose the target (skipped when a target is
given), once to explain every window, once to render. Maps are kept per window at the model
clip's resolution with the crop boxes and source-frame indices; only rendering maps them onto
every source frame.
"""

from __future__ import annotations

import contextlib
import logging
import math
import operator
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .._version import __version__
from ..errors import UserInputError
from ..files import atomic_writes, check_names, check_writable_dir, make_folder, remove_empty
from ..io.clips import Timeline
from ..io.sampling import REFERENCE_FPS, Window, frame_sources, source_frame_totals
from ..models.preprocess import CropPlan
from ..models.targets import resolve_target
from ..render.figure import Caption, figure_top, image_figure
from ..render.text import prob
from ..render.video import LAYOUTS, MAX_KEYFRAMES, Stills, keyframes_path, render_clip, write_keyframes
from ..results import Attribution, ClipAttribution, Unit
from .inputs import InputPlan, Range, plan_input, refuse_video_options
from .outputs import refuse_overwriting_inputs
from .session import Progress, Session, Settings, no_progress

log = logging.getLogger(__name__)

#: A video's maps larger than this are kept in a temporary file until they are saved.
SPILL_BYTES = 2 ** 30
#: ``vmax`` for one colour scale over several maps: the largest value among them (comparisons, batches, redraw).
SHARED = "shared"
#: The fit's settings copied into a video's metadata from its first window.
FIT_META = ("layer", "beta", "steps", "samples", "lr", "alpha_init", "smoothing_sigmas", "min_std", "stats",
            "stats_source", "prefix_cached", "prefix_note", "feature_shape", "input_shape", "seed", "precision",
            "inputs_per_fit")


def check_vmax(vmax: Any) -> None:
    """Refuse a colour scale's top other than ``None``, a finite number > 0 or :data:`SHARED`."""
    if vmax is not None and vmax != SHARED and not (
            isinstance(vmax, (int, float)) and not isinstance(vmax, bool) and math.isfinite(vmax) and vmax > 0):
        raise UserInputError(f"{{vmax}} must be a finite number > 0 or '{SHARED}' (one scale for several maps), "
                             f"got {vmax!r}", options=["vmax"])


def check_layout(layout: Any) -> None:
    """Refuse a video layout other than those of :data:`LAYOUTS`."""
    if layout not in LAYOUTS:
        raise UserInputError(f"unknown layout '{layout}'; give {{layout}} one of {', '.join(LAYOUTS)}",
                             options=["layout"])


def check_keyframes(keyframes: Any, fewest: int = 0) -> None:
    """Refuse a keyframe count other than an integer from ``fewest`` to :data:`MAX_KEYFRAMES`."""
    if not (isinstance(keyframes, int) and not isinstance(keyframes, bool) and fewest <= keyframes <= MAX_KEYFRAMES):
        raise UserInputError(f"{{keyframes}} must be an integer from {fewest} to {MAX_KEYFRAMES}, got {keyframes!r}",
                             options=["keyframes"])


@dataclass(frozen=True)
class Options:
    """How one input is explained and drawn (the session holds the model and method).

    Attributes:
        target: ``None``/``"top1"`` (the top-1 class; for a video of the softmax averaged over
            windows and crops), a class index or an exact class name; one target per input.
        span: A video's range, window stride and crop coverage.
        layout: A video's ``"side-by-side"`` (original | overlay) or ``"overlay"`` only.
        vmax: Top of the colour scale in the map's unit per pixel or voxel (default: the map's
            largest value); or ``"shared"``: the largest value of the maps of a comparison (its
            bits maps) or of a batch (:func:`~video_iba.workflows.batch.explain_batch`).
        keyframes: A video's keyframe sheet: this many overlay frames, the middle one of each
            of as many equal parts of the range, in one PNG ``OUT/<stem>-keyframes.png`` with
            the per-frame strip (0: none; at most :data:`MAX_KEYFRAMES`).
        maps_only: Write only the ``.npz`` (maps, metadata, and the layout and colour scale a
            drawing would have), no figure or MP4: for runs where drawing would take longer than
            explaining; :func:`~video_iba.workflows.redraw.redraw` draws them later.
    """

    target: str | int | None = None
    span: Range = field(default_factory=Range)
    layout: str = "side-by-side"
    vmax: float | str | None = None
    keyframes: int = 0
    maps_only: bool = False

    def __post_init__(self) -> None:
        check_keyframes(self.keyframes)
        check_vmax(self.vmax)
        check_layout(self.layout)
        if not isinstance(self.maps_only, bool):
            raise UserInputError(f"{{maps_only}} takes True or False, got {self.maps_only!r}", options=["maps_only"])
        if self.maps_only and (self.keyframes or self.vmax == SHARED):
            given = ("{keyframes} draws a keyframe sheet" if self.keyframes
                     else f"{{vmax}} {SHARED} puts the drawings on one scale")
            raise UserInputError(f"{given} and {{maps_only}} draws nothing; drop it here, and give it to `video-iba "
                                 f"redraw` when the .npz files are drawn", options=["keyframes", "vmax", "maps_only"])
        if self.target is not None and not isinstance(self.target, str):
            try:
                object.__setattr__(self, "target", operator.index(self.target))  # a numpy integer too
            except TypeError:
                raise UserInputError(f"{{target}} takes top1, a class index or a class name, got {self.target!r}",
                                     options=["target"]) from None


@dataclass
class Explained:
    """What :func:`explain_file` wrote.

    Attributes:
        result: The photo's :class:`Attribution` or the video's :class:`ClipAttribution`.
        outputs: The figure (``.png``) or overlay (``.mp4``), then the ``.npz`` (then a video's
            keyframe sheet, where asked); with ``maps_only`` the ``.npz`` alone.
        label: The explained class's name.
        top: The five most probable classes ``(name, probability)`` (a video: of the mean softmax).
        windows, crops: Model inputs explained (a photo: 1 and 1).
        frames: Frames of the overlay MP4 (a photo: 1; not drawn: 0).
    """

    result: Attribution | ClipAttribution
    outputs: list[str]
    label: str
    top: list[tuple[str, float]]
    windows: int = 1
    crops: int = 1
    frames: int = 1

    @property
    def manifest(self) -> dict[str, Any]:
        """The fields a batch manifest records."""
        fitted = self.result.meta.get("inputs_per_fit")
        return {"output": [os.path.abspath(p) for p in self.outputs], "target": self.result.target,
                "label": self.label, "total_bits": self.result.total,
                **({"inputs_per_fit": fitted} if fitted is not None else {})}


@dataclass
class WindowMaps:
    """A window's explanation besides its maps (which go to a :class:`MapStore`): per crop and
    bottleneck layer the bits per feature cell, per crop the softmax, the unit, the seconds it took."""

    unit: Unit = Unit.BITS
    feature_bits: list[list[np.ndarray]] = field(default_factory=list)
    prefix_bits: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0


class MapStore:
    """The maps of every window and crop of a video, ``(windows, crops, T, S, S)`` float32: in memory,
    or above :data:`SPILL_BYTES` in a temporary file in the output folder, removed by :meth:`close`
    (the array stays readable until it is dropped) with the folders made for it if nothing else was
    written there. A range whose maps do not fit on that disk is refused before any work."""

    def __init__(self, plan: InputPlan, folder: str) -> None:
        shape = (len(plan.windows), len(plan.crops.tiles), plan.spec.frames, plan.crops.crop, plan.crops.crop)
        need = int(np.prod(shape)) * 4
        self.path: str | None = None
        self.made: list[str] = []
        if need <= SPILL_BYTES:
            self.values: np.ndarray = np.empty(shape, dtype=np.float32)
            return
        self.made = make_folder(folder)
        try:
            free = shutil.disk_usage(folder).free
            if need > 0.9 * free:
                raise UserInputError(f"the {shape[0]} windows x {shape[1]} crops of '{plan.path}' need "
                                     f"{need / 2 ** 30:.1f} GiB of maps, more than the {free / 2 ** 30:.1f} GiB free "
                                     f"in '{folder}'; give a larger {{stride}} or a shorter range ({{start}}, {{end}})",
                                     options=["stride", "start", "end"])
            log.warning("keeping the %.1f GiB of maps of %d windows in a temporary file in %s", need / 2 ** 30,
                        shape[0], folder)
            fd, self.path = tempfile.mkstemp(prefix=".maps-", suffix=".f32", dir=folder)
            os.close(fd)
            self.values = np.memmap(self.path, dtype=np.float32, mode="w+", shape=shape)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            self.path = None
        remove_empty(self.made)
        self.made = []


def explain_path(path: str, settings: Settings, out_dir: str, options: Options = Options(),
                 progress: Progress = no_progress) -> Explained:
    """Explain one photo or video file with a new session (see :func:`explain_file`)."""
    refuse_shared(options, f"'{path}' is one file")
    check_writable_dir(out_dir)  # before any work
    plan = plan_input(path, settings.spec_of(settings.model_for(path), bool(settings.layers)), options.span)
    if not plan.is_video:
        refuse_video_options(path, options.span, *(["layout"] if options.layout != Options.layout else []),
                             *(["keyframes"] if options.keyframes else []),
                             *settings.clip_options())
    return explain_file(Session.open(settings, plan.spec.name), plan, out_dir, options, progress)


def explain_file(session: Session, plan: InputPlan | str | os.PathLike[str], out_dir: str | os.PathLike[str],
                 options: Options = Options(), progress: Progress = no_progress, stem: str | None = None) -> Explained:
    """Explain a photo or a video and write ``OUT/<stem>.png`` or ``.mp4`` and ``OUT/<stem>.npz``.

    Args:
        session: The model, method and settings.
        plan: The planned input, or the file's path.
        out_dir: Output folder (created if missing).
        options: Target, a video's range and coverage, drawing.
        progress: Progress reporting (the command line passes tqdm bars).
        stem: The outputs' name without suffix (default: the input's stem).
    """
    refuse_shared(options, f"'{plan if isinstance(plan, (str, os.PathLike)) else plan.path}' is one file (explain "
                           f"several with explain_batch)")
    if isinstance(plan, (str, os.PathLike)):
        if os.path.isdir(plan):
            raise UserInputError(f"'{os.fspath(plan)}' is a folder; explain its inputs with explain_batch, as "
                                 f"`video-iba explain FOLDER` does")
        plan = plan_input(os.fspath(plan), session.spec, options.span)
    out_dir = os.fspath(out_dir)
    outputs = _outputs(plan, out_dir, stem, options.keyframes, options.maps_only)
    target = resolve_target(options.target, session.labels)
    mean_probs = None
    if target is None and plan.count > 1:
        mean_probs = predict(session, plan, progress)
        target = int(mean_probs.argmax())
    t0 = time.perf_counter()
    if not plan.is_video:
        return _photo(session, plan, target, options, outputs, progress)
    store = MapStore(plan, out_dir)
    try:
        first_meta: dict[str, Any] = {}
        windows = attribute_windows(session, plan, target, progress, first_meta, store)
        if target is None:
            target = int(first_meta["target"])
        if mean_probs is None:
            mean_probs = np.mean([p for w in windows for p in w.probs], axis=0)
        result = assemble_clip(session, plan, windows, store.values, target, options, mean_probs, first_meta,
                               time.perf_counter() - t0)
        if options.maps_only:
            write_maps(result, outputs)
            return Explained(result, outputs, session.labels[result.target], result.meta["top5"], len(plan.windows),
                             len(plan.crops.tiles), 0)
        return _render_clip(session, plan, result, options, outputs, progress)
    finally:
        store.close()


def refuse_shared(options: Options, what: str) -> None:
    """Refuse a ``shared`` colour scale where ``what`` (e.g. "'a.jpg' is one file") is drawn on its own."""
    if options.vmax == SHARED:
        raise UserInputError(f"{{vmax}} {SHARED} puts the outputs of a folder or a .txt list of inputs on one colour "
                             f"scale and {what}; give a number, or nothing (each map its own largest value)",
                             options=["vmax"])


def _outputs(plan: InputPlan, out_dir: str, stem: str | None, keyframes: int = 0,
             maps_only: bool = False) -> list[str]:
    """:func:`output_paths` of ``plan`` (``stem`` by default the input's); with ``maps_only`` the ``.npz`` alone."""
    outputs = output_paths(out_dir, stem or Path(plan.path).stem, plan.is_video, [plan.path], keyframes)
    return outputs[1:2] if maps_only else outputs


def output_paths(out_dir: str, stem: str, video: bool, sources: Sequence[str], keyframes: int = 0) -> list[str]:
    """The figure (``.png``) or video (``.mp4``) and the ``.npz`` named ``stem`` in ``out_dir``
    (and a video's keyframe sheet where asked), checked: valid names, none of the inputs
    ``sources`` overwritten, the folder writable (made by the first file written there)."""
    outputs = [os.path.join(out_dir, f"{stem}.{'mp4' if video else 'png'}"), os.path.join(out_dir, f"{stem}.npz")]
    if video and keyframes:
        outputs.append(keyframes_path(outputs[0]))
    check_names(outputs)
    refuse_overwriting_inputs(outputs, sources)
    check_writable_dir(out_dir)
    return outputs


def predict(session: Session, plan: InputPlan, progress: Progress = no_progress) -> np.ndarray:
    """The softmax averaged over every window and crop of ``plan``, ``(K,)`` float64."""
    acc = np.zeros(len(session.labels), dtype=np.float64)
    bar = progress("predicting", plan.count, "clip")
    try:
        for _wi, inputs in plan.units():
            for x in inputs:
                acc += session.predict(x)
                bar.update(1)
    finally:
        bar.close()
    return acc / plan.count


def attribute_windows(session: Session, plan: InputPlan, target: int | None, progress: Progress,
                      first_meta: dict[str, Any], store: MapStore) -> list[WindowMaps]:
    """Explain every window and crop of ``plan`` for ``target``, the maps into ``store``;
    ``first_meta`` receives the first explanation's metadata (the fit's settings). The per-sample
    bottleneck fits the session's batch size of windows and crops at once (a window's seconds are
    then its crops' shares of their fits)."""
    per_unit, unit = session.work((1, 3, plan.spec.frames, plan.crops.crop, plan.crops.crop))
    bar = progress("explaining", plan.count * per_unit, unit)
    out: list[WindowMaps] = []
    units = ((wi, ci, x) for wi, inputs in plan.units() for ci, x in enumerate(inputs))
    try:
        results = session.attribute_all(units, lambda u: u[2], lambda _u: target, bar.update)
        for (wi, ci, _x), attr, seconds in results:
            if isinstance(attr, Exception):
                raise attr
            if wi == len(out):
                out.append(WindowMaps())
            window = out[wi]
            if not first_meta:
                first_meta.update(attr.meta)
            window.unit = attr.unit
            store.values[wi, ci] = attr.values.numpy()
            caps = attr.capacity if isinstance(attr.capacity, list) else [attr.capacity]
            caps = [c for c in caps if c is not None]
            window.feature_bits.append([(c.double().sum(0) / math.log(2)).float().numpy() for c in caps])
            if "prefix_bits" in attr.arrays:
                window.prefix_bits.append(np.asarray(attr.arrays["prefix_bits"], dtype=np.float32))
            assert attr.logits is not None
            window.probs.append(torch.softmax(attr.logits.double(), 0).numpy().astype(np.float32))
            window.seconds += seconds
    finally:
        bar.close()
    if len(out) != len(plan.windows):
        raise UserInputError(f"only {len(out)} of {len(plan.windows)} windows of '{plan.path}' could be read; "
                             f"re-encode the file")
    return out


def _fit_meta(session: Session, first: dict[str, Any]) -> dict[str, Any]:
    if session.method.fitted:
        return {k: first[k] for k in FIT_META}
    return {k: v for k, v in first.items() if k not in ("target", "seconds", "version")}


def assemble_clip(session: Session, plan: InputPlan, windows: Sequence[WindowMaps], values: np.ndarray,
                  target: int, options: Options, mean_probs: np.ndarray, first_meta: dict[str, Any],
                  seconds: float) -> ClipAttribution:
    """A video's :class:`ClipAttribution`: the windows' maps ``values`` ``(windows, crops, T, S, S)``,
    their totals per source frame, the metadata."""
    assert plan.line is not None
    spec, cfg, info = session.spec, session.config, plan.line.info
    unit = windows[0].unit
    first, last = plan.frame_range()
    indices = np.arange(first, last + 1)
    per_frame = source_frame_totals([frame_sources(plan.line.time_of(int(i)), plan.windows) for i in indices],
                                    values, plan.crops, magnitude=not unit.information)
    top = session.top(mean_probs)
    span = plan.span
    meta: dict[str, Any] = {
        "method": "iba_per_sample" if session.method.fitted else session.method.name, "unit": unit,
        "model": spec.name, **session.weights_meta, "input": os.path.abspath(plan.path),
        "target": target, "target_label": session.labels[target],
        "target_rule": "given" if options.target not in (None, "top1") else
        "top-1 of the mean softmax over windows and crops",
        "target_probability": float(mean_probs[target]), "predicted": top[0][0], "top5": top,
        **({"layers": session.layers,
            "config": {"beta": cfg.beta, "steps": cfg.steps, "samples": cfg.samples, "lr": cfg.lr,
                       "alpha_init": cfg.alpha_init, "sigma": cfg.sigma, "temporal_sigma": cfg.temporal_sigma,
                       "min_std": cfg.min_std}} if session.method.fitted else {}),
        **_fit_meta(session, first_meta),
        "sampling": {"frames": spec.frames, "rate": spec.sampling_rate, "reference_fps": REFERENCE_FPS,
                     "slowfast_alpha": spec.slowfast_alpha, "source_fps": info.fps, "source_frames": plan.line.frames,
                     "start": span.start, "end": span.end, "stride": span.stride,
                     "clip_seconds": spec.frames * spec.sampling_rate / REFERENCE_FPS,
                     "variable_frame_rate_timestamps": plan.line.times is not None},
        "decoder": plan.decoder, "coverage": span.coverage, "crop": plan.crops.crop, "resized": list(plan.crops.size),
        "windows": len(windows), "tiles": len(plan.crops.tiles),
        "vmax": float(options.vmax) if options.vmax not in (None, SHARED) else None,
        "layout": options.layout,
        "title": f"{spec.name} · {session.labels[target]} (#{target}) · "
                 + (f"β={cfg.beta:g}" if session.method.fitted else session.method.name),
        "bits_unit": f"{unit} per voxel of the {spec.frames}x{plan.crops.crop}x{plan.crops.crop} model clip",
        "seconds_explaining": round(seconds, 3), "version": __version__,
    }
    layers = len(windows[0].feature_bits[0]) if windows[0].feature_bits else 0
    result = ClipAttribution(
        values=values, unit=unit, target=target,
        window_starts=np.array([w.start for w in plan.windows]),
        window_frame_indices=np.stack([w.indices for w in plan.windows]).astype(np.int64),
        window_looped=np.array([w.looped for w in plan.windows]),
        window_probs=np.stack([np.stack(w.probs) for w in windows]),
        window_seconds=np.array([w.seconds for w in windows]),
        crop_boxes=np.array([t.box for t in plan.crops.tiles], dtype=np.float64),
        source_frame_indices=indices.astype(np.int64), per_source_frame=per_frame,
        feature_bits=[np.stack([np.stack([fb[i] for fb in w.feature_bits]) for w in windows]) for i in range(layers)],
        meta=meta, prefix_bits=np.stack([np.stack(w.prefix_bits) for w in windows]) if windows[0].prefix_bits else None,
        class_names=tuple(session.labels))
    if result.meta["vmax"] is None:
        result.meta["vmax"] = float(max(result.peak(), 1e-12))
    return result


def _render_clip(session: Session, plan: InputPlan, result: ClipAttribution, options: Options, outputs: list[str],
                 progress: Progress) -> Explained:
    assert plan.line is not None
    written = draw_clip(result, plan.path, plan.line, plan.windows, plan.crops, options.layout, options.keyframes,
                        outputs, progress)
    return Explained(result, outputs, session.labels[result.target], result.meta["top5"], len(plan.windows),
                     len(plan.crops.tiles), written)


def draw_clip(result: ClipAttribution, source: str, line: Timeline, windows: Sequence[Window], crops: CropPlan,
              layout: str, keyframes: int, outputs: Sequence[str], progress: Progress = no_progress) -> int:
    """Write a video's overlay MP4 and ``.npz`` (then its keyframe sheet where ``keyframes``), all
    atomically, drawn at ``result.meta["vmax"]`` with the result's title and class names; the
    metadata records the drawing. Returns the frames written.

    Args:
        result: The explanation.
        source: The explained video.
        line, windows, crops: Its frame times, the model clips and the crops explained.
        layout: ``"side-by-side"`` or ``"overlay"``.
        keyframes: Overlay frames on the keyframe sheet (0: none).
        outputs: The MP4, the ``.npz`` (and the sheet).
    """
    assert result.class_names is not None
    vmax, title = float(result.meta["vmax"]), str(result.meta["title"])
    result.meta["layout"] = layout
    result.meta.pop("keyframes", None)
    bar = progress("rendering", len(result.source_frame_indices), "frame")
    stills = Stills.spread(len(result.source_frame_indices), keyframes) if keyframes else None
    try:
        with atomic_writes(outputs) as tmps:
            tmp_mp4, tmp_npz = tmps[:2]
            written = render_clip(result, source, tmp_mp4, timeline=line, windows=windows, plan=crops,
                                  labels=result.class_names, vmax=vmax, layout=layout, title=title,
                                  on_frame=bar.update, stills=stills)
            if stills is not None:
                write_keyframes(tmps[2], result, stills, vmax, title)
                result.meta["keyframes"] = sorted(int(result.source_frame_indices[p]) for p in stills.kept)
            result.meta["output_frames"] = int(written)
            _write_npz(result, tmp_npz)
    finally:
        bar.close()
    return written


def write_maps(result: Attribution | ClipAttribution, outputs: Sequence[str]) -> None:
    """Write the ``.npz`` of a new explanation not drawn (``outputs``: it alone), atomically; its
    metadata keeps what a drawing would record, so that a redraw draws it as explain would have."""
    with atomic_writes(outputs) as (tmp_npz,):
        _write_npz(result, tmp_npz)


def _write_npz(result: Attribution | ClipAttribution, path: str) -> None:
    if isinstance(result, ClipAttribution):
        result.meta["mean_window_bits"] = float(result.window_totals.mean())
    with open(path, "wb") as fh:
        result.write_npz(fh)


def _photo(session: Session, plan: InputPlan, target: int | None, options: Options, outputs: list[str],
           progress: Progress) -> Explained:
    """Stages 3-5 of a photo: its one explanation, the figure and the ``.npz``."""
    _wi, (x,) = next(plan.units())
    per_unit, unit = session.work(tuple(x.shape))
    bar = progress("explaining", per_unit, unit)
    try:
        attr = session.attribute(x, target, lambda *_: bar.update(1), bar.update)
    finally:
        bar.close()
    return _finish_photo(session, plan, attr, options, outputs)


@dataclass
class _PhotoJob:
    plan: InputPlan
    outputs: list[str]
    x: torch.Tensor


def explain_photos(session: Session, paths: Sequence[str], out_dirs: Sequence[str], options: Options = Options(),
                   stems: Sequence[str | None] | None = None,
                   progress: Progress = no_progress) -> list[Explained | Exception]:
    """Explain several photos with one model as :func:`explain_file` does one, each written on its
    own; the per-sample bottleneck fits the session's batch size of them at once. Each photo's
    result, or the exception it failed with (one photo's failure leaves the others alone)."""
    refuse_shared(options, "explain_photos draws each photo on its own (explain_batch shares a scale)")
    results: list[Explained | Exception | None] = [None] * len(paths)
    jobs: list[tuple[int, _PhotoJob]] = []
    target = resolve_target(options.target, session.labels)
    for i, (path, out_dir) in enumerate(zip(paths, out_dirs)):
        try:
            plan = plan_input(path, session.spec, options.span)
            if plan.is_video:
                raise UserInputError(f"'{path}' is a video; explain it with explain_file")
            outputs = _outputs(plan, out_dir, stems[i] if stems is not None else None, maps_only=options.maps_only)
            _wi, (x,) = next(plan.units())
            jobs.append((i, _PhotoJob(plan, outputs, x)))
        except Exception as exc:
            results[i] = exc
    per_unit, unit = session.work(tuple(jobs[0][1].x.shape) if jobs else (1, 3, 1, 1))
    bar = progress("explaining", len(jobs) * per_unit, unit)
    try:
        for (i, job), attr, _s in session.attribute_all(jobs, lambda j: j[1].x, lambda _j: target, bar.update):
            if isinstance(attr, Exception):
                results[i] = attr
                continue
            try:
                results[i] = _finish_photo(session, job.plan, attr, options, job.outputs)
            except Exception as exc:
                results[i] = exc
    finally:
        bar.close()
    return [r if r is not None else RuntimeError("not explained") for r in results]


def _finish_photo(session: Session, plan: InputPlan, attr: Attribution, options: Options,
                  outputs: list[str]) -> Explained:
    """Stages 4-5 of a photo: the metadata, the figure and the ``.npz``."""
    spec = session.spec
    assert attr.logits is not None and plan.image is not None
    probs = torch.softmax(attr.logits.double(), 0)
    top = session.top(probs.detach().numpy())  # ties in index order, as the top-1 target
    label = session.labels[attr.target]
    geo = plan.geometry()
    attr.meta.update({
        "model": spec.name, **session.weights_meta, "input": os.path.abspath(plan.path),
        "target_label": label, "target_probability": float(probs[attr.target]), "predicted": top[0][0], "top5": top,
        "bits_unit": f"{attr.unit} per pixel of the {spec.input_size}x{spec.input_size} model input",
    })
    attr.arrays.update({
        "crop_box": np.asarray(geo.box, dtype=np.float64), "scale": np.asarray(geo.scale, dtype=np.float64),
        "image_size": np.asarray(geo.image_size, dtype=np.int64),
    })
    attr.meta["details"] = _details(session, attr)
    if options.maps_only:  # the top of the scale the figure would have had
        attr.meta["vmax"] = figure_top(attr.unit.magnitude(attr.values.numpy()), options.vmax)  # type: ignore[arg-type]
        write_maps(attr, outputs)
    else:
        draw_photo(attr, plan.image, plan.geometry(decoded=True).box, options.vmax, outputs)
    return Explained(attr, outputs, label, top, frames=0 if options.maps_only else 1)


def draw_photo(attr: Attribution, image: np.ndarray, box: tuple[float, float, float, float], vmax: float | None,
               outputs: Sequence[str]) -> None:
    """Write a photo's figure (the map over ``image``, the model input at ``box`` in its pixels) and
    its ``.npz``, both atomically; the caption comes from the metadata (classes, settings line) and
    ``meta["vmax"]`` records the top of the colour scale (``vmax``, or the map's largest value)."""
    m = attr.meta
    caption = Caption(predicted=", ".join(f"{n} {prob(p)}" for n, p in m["top5"][:3]),
                      explained=f"{m['target_label']} (#{attr.target}, p={prob(float(m['target_probability']))})",
                      total_bits=attr.total, details=str(m["details"]), input_side=int(attr.values.shape[-1]),
                      unit=attr.unit, prefix_bits=m.get("prefix_bits"))
    with atomic_writes(outputs) as (tmp_png, tmp_npz):
        m["vmax"] = image_figure(image, attr.unit.magnitude(attr.values.numpy()), box, caption, tmp_png, vmax=vmax)
        with open(tmp_npz, "wb") as fh:
            attr.write_npz(fh)


def _details(session: Session, attr: Attribution) -> str:
    """The figure's line of settings."""
    spec, cfg, m = session.spec, session.config, attr.meta
    if session.method.uses_readout:
        return (f"{spec.name} · readout bottleneck at {m['layer']} "
                f"({os.path.basename(str(session.settings.readout))}, beta {m['beta']:g}) · one forward pass")
    if session.method.fitted:
        stats = m["stats"] if isinstance(m["stats"], str) else "; ".join(m["stats"])
        return (f"{spec.name} · layer {m['layer']} · beta {cfg.beta:g} · {cfg.steps} steps × {cfg.samples} samples · "
                f"seed {m['seed']} · statistics: {stats}")
    extra = f" · layer {m['cam_layer']}" if "cam_layer" in m else ""
    return f"{spec.name} · {session.method.name}{extra} · colours show the magnitude of the {attr.unit} map"

