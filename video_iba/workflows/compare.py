"""``video-iba compare``: one figure (photo) or one MP4 (video) with a labelled panel per method,
or per model and method.

Every method explains the same target with the same model, through the same stages as
``explain``: for a video, every window of the range and every source frame, so the comparison
MP4 lasts as long as the range it explains. Several models each explain the input with their own
preprocessing, windows and target, and are drawn on the same source frames. Several photos (or a
folder of them) make a grid, one row per photo, in one PNG; several videos one MP4, a row per
video, played together. Beside the picture, every panel's result is saved as a
:class:`~video_iba.results.Comparison` (``.npz``), from which the picture is drawn and can be
drawn again (``video-iba redraw``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import UserInputError
from ..files import atomic_writes, check_writable_dir
from ..io.discovery import find_images, find_videos, has_images, is_video_file
from ..methods.attribute import check_method
from ..methods.baselines import CAM_METHODS
from ..models.targets import resolve_target
from ..render.compare import (ClipPanel, ClipRow, compare_clip, compare_clip_grid, compare_grid_keyframes,
                              compare_keyframes, comparison_row, grid_clip_frames, write_png, write_rows)
from ..render.draw import normalised_to_rgb
from ..render.overlay import scale_top
from ..render.video import Stills, keyframes_path
from .._version import __version__
from ..results import Attribution, ClipAttribution, Comparison, Panel, Unit
from .explain import SHARED, MapStore, Options, assemble_clip, attribute_windows, output_paths, predict
from .inputs import InputPlan, plan_input, refuse_video_options
from .session import Bar, Progress, Session, Settings, as_tuple, no_progress, settings_for

#: Photos one comparison grid holds at most (a row each).
MAX_GRID_ROWS = 16
#: Videos one comparison grid holds at most (a row each, played together).
MAX_VIDEO_GRID_ROWS = 6


@dataclass
class Compared:
    """What :func:`compare_file` wrote: the figure or MP4, the explained class, and each panel's
    name (the method; with several models ``model · method``, with several classes ``class ·
    method``), unit, and the class (index and name) it explained. With several models or classes,
    ``target`` and ``label`` are the first panel's.
    ``keyframes``: a video comparison's still (``options.keyframes``), else ``None``.
    ``npz``: every panel's result, a :class:`~video_iba.results.Comparison` (``OUT/<stem>-compare.npz``).
    """

    output: str
    target: int
    label: str
    panels: list[tuple[str, Unit, int, str]]
    keyframes: str | None = None
    npz: str | None = None

    @property
    def units(self) -> list[tuple[str, Unit]]:
        """Each panel's name and unit."""
        return [(name, unit) for name, unit, _, _ in self.panels]


@dataclass
class Grid:
    """What :func:`compare_grid` wrote: the PNG (photos) or MP4 (videos), and per row its input
    and panels (name, unit, and the class, index and name, its model explained, as
    :attr:`Compared.panels`); ``keyframes``: the still of a grid of videos
    (``options.keyframes``), else ``None``; ``npz``: every panel's result, a
    :class:`~video_iba.results.Comparison` (``OUT/compare-grid.npz``)."""

    output: str
    rows: list[tuple[str, list[tuple[str, Unit, int, str]]]]
    keyframes: str | None = None
    npz: str | None = None


@dataclass
class _Model:
    """One model of a comparison, or one class of a comparison of classes: its sessions (one per
    method), input plan and target (-1: not yet chosen: the input's ``rank``-th most probable
    class, 0 the top-1)."""

    name: str
    sessions: list[Session]
    plan: InputPlan
    target: int
    rank: int = 0
    by_class: bool = False  # one of several classes of one model: its panels are headed by the class
    given: int = field(init=False)  # the target asked for (-1: each input's ranked class)

    def __post_init__(self) -> None:
        self.given = self.target

    @property
    def label(self) -> str:
        return self.sessions[0].labels[self.target]

    @property
    def heading(self) -> str:
        """What tells its panels from the others': the class, or the model."""
        return self.label if self.by_class else self.name

    def on(self, plan: InputPlan) -> "_Model":
        """The same model and class asked for, on another input."""
        return _Model(self.name, self.sessions, plan, self.given, self.rank, self.by_class)


def compare_file(path: str, methods: Sequence[str], settings: Settings | None, out_dir: str,
                 options: Options = Options(), progress: Progress = no_progress,
                 models: Sequence[str] = (), session: Session | None = None,
                 targets: Sequence[str | int] = ()) -> Compared:
    """Explain ``path`` with every method of ``methods`` (one session, one model load) and write
    ``OUT/<stem>-compare.png`` (photo) or ``.mp4`` (video).

    ``models``: several registry models instead of ``settings.model``, a panel per model and method
    (``model · method``), each model with its own preprocessing, windows and target (``options.target``
    resolved against each model's classes; by default each model's own top-1). Layers,
    statistics and a readout are model-specific and cannot be given with several models;
    ``settings.weights`` must then be ``default`` or ``random``.

    ``session``: an open session whose model (with its weights, statistics and readout) every
    method uses, e.g. a model of your own (:meth:`Session.for_model`); ``settings`` then give
    only the methods' options, each method the ones that apply to it.

    ``targets``: several classes of the one model instead of ``options.target``, a panel per class
    and method (``class · method``): class indices or names, or ``"topK"`` alone (the input's K
    most probable classes, K >= 2).
    """
    _refuse_maps_only(options)
    names, settings, chosen = _check_comparison(methods, settings, models, session)
    classes = _check_targets(targets, options, chosen)
    several = bool(chosen) or bool(classes)
    check_writable_dir(out_dir)  # before any work
    plans = _plans(path, settings, chosen, options, session)
    if not plans[0].is_video:
        refuse_video_options(path, options.span, *_photo_refusals(options, settings))
    compared = _per_class(_models(plans, names, settings, options, session), classes)  # inputs checked before loads
    out, npz, *still = output_paths(out_dir, f"{Path(path).stem}-compare", compared[0].plan.is_video, [path],
                                    options.keyframes)
    _choose_targets(compared, progress)
    first = compared[0]
    if first.plan.is_video:
        panels = _clip(compared, options, out, progress, several)
        return Compared(out, first.target, first.label, panels, still[0] if still else None, npz)
    bar = progress("comparing", sum(len(m.sessions) for m in compared), "method")
    try:
        attrs = _attributions([compared], bar)
    finally:
        bar.close()
    vmax = _bits_top(options, (a for m in attrs[0] for a in m))
    comparison = _photo_comparison([(path, "input", compared, attrs[0])], several, vmax)
    draw_photo_comparison(comparison, out)
    return Compared(out, first.target, first.label, panel_summaries(comparison.panels), None, npz)


def compare_grid(paths: str | Sequence[str], methods: Sequence[str], settings: Settings | None, out_dir: str,
                 options: Options = Options(), progress: Progress = no_progress,
                 models: Sequence[str] = (), session: Session | None = None,
                 titles: Sequence[str] | None = None, targets: Sequence[str | int] = ()) -> Grid:
    """Several photos compared in one PNG, ``OUT/compare-grid.png``, or several videos in one MP4,
    ``OUT/compare-grid.mp4``: a row per input in the order given, each drawn as
    :func:`compare_file` draws it (the input headed by its ``titles`` entry, default its file name,
    then a panel per method, or per model and method), each row explaining its input's own top-1
    unless ``options.target`` names a class. The models are loaded once; ``models``, ``session``,
    ``settings`` and ``targets`` (``"topK"``: each input's own K classes) as for
    :func:`compare_file`.

    Photos: 2 to :data:`MAX_GRID_ROWS`. Videos: 2 to :data:`MAX_VIDEO_GRID_ROWS`, each explained
    over ``options.span`` (the same seconds of each) and played together from their starts, at
    the fastest row's frame rate, each row holding its last frame once it has ended (the grid
    lasts as long as the longest); ``options.keyframes`` adds ``OUT/compare-grid-keyframes.png``,
    each video's still over the next. Or a folder of photos or of videos (sorted, headed by their
    paths in the folder; a folder holding both is refused)."""
    _refuse_maps_only(options)
    paths, titles, video = _grid_inputs(paths, titles)
    names, settings, chosen = _check_comparison(methods, settings, models, session)
    classes = _check_targets(targets, options, chosen)
    several = bool(chosen) or bool(classes)
    if not video:
        for p in paths:
            refuse_video_options(p, options.span, *_photo_refusals(options, settings))
    rows_plans = [_plans(p, settings, chosen, options, session) for p in paths]  # every input read before any load
    out, npz, *still = output_paths(out_dir, "compare-grid", video, paths, options.keyframes)
    first = _per_class(_models(rows_plans[0], names, settings, options, session), classes)
    per_plan = len(first) // len(rows_plans[0])  # the classes compared of each model
    rows = [first] + [[m.on(plans[i // per_plan]) for i, m in enumerate(first)] for plans in rows_plans[1:]]
    for row in rows:
        _choose_targets(row, progress)
    if video:
        return Grid(out, _video_grid(rows, paths, titles, options, out, progress, several), still[0] if still else None,
                    npz)
    bar = progress("comparing", len(rows) * sum(len(m.sessions) for m in first), "method")
    try:
        attrs = _attributions(rows, bar)
    finally:
        bar.close()
    vmax = _bits_top(options, (a for r in attrs for m in r for a in m))
    comparison = _photo_comparison(list(zip(paths, titles, rows, attrs)), several, vmax)
    draw_photo_comparison(comparison, out)
    return Grid(out, _summaries(paths, comparison), None, npz)


def _grid_inputs(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 titles: Sequence[str] | None) -> tuple[list[str], list[str], bool]:
    """A grid's inputs (a folder's photos or videos, sorted, titled by their paths in it), their
    titles (default: the file names), and whether they are videos; checked: one kind, 2 to the
    grid's rows, one title each."""
    if isinstance(paths, (str, os.PathLike)):
        folder = os.fspath(paths)
        videos = find_videos(folder)  # refuses what is not a folder
        photos = [] if videos and not has_images(folder) else find_images(folder)
        if videos and photos:
            raise UserInputError(f"'{folder}' holds photos and videos (first: '{photos[0]}', '{videos[0]}') and a "
                                 f"comparison grid holds one kind; give a folder of photos or one of videos")
        paths = videos or photos
        if titles is None:
            titles = [Path(os.path.relpath(p, folder)).as_posix() for p in paths]
    paths = [os.fspath(p) for p in paths]
    kinds = {is_video_file(p) for p in paths}
    if len(kinds) > 1:
        raise UserInputError(f"'{next(p for p in paths if is_video_file(p))}' is a video and "
                             f"'{next(p for p in paths if not is_video_file(p))}' a photo; a comparison grid holds "
                             f"photos or videos, not both")
    video = kinds == {True}
    what, most = ("videos", MAX_VIDEO_GRID_ROWS) if video else ("photos", MAX_GRID_ROWS)
    if not 2 <= len(paths) <= most:
        raise UserInputError(f"a comparison grid holds 2 to {most} {what}, got {len(paths)}; "
                             + (f"compare one {what[:-1]} on its own" if len(paths) < 2 else
                                "give fewer, or explain a folder with `video-iba explain FOLDER`"))
    titles = [os.path.basename(p) for p in paths] if titles is None else [str(t) for t in titles]
    if len(titles) != len(paths):
        raise UserInputError(f"give one title per {what[:-1]}: {len(titles)} titles for {len(paths)} {what}")
    return paths, titles, video


def _npz_path(out: str) -> str:
    """The ``.npz`` of every panel's result beside the comparison ``out``."""
    return os.path.splitext(out)[0] + ".npz"


def _photo_comparison(rows: Sequence[tuple[str, str, Sequence[_Model], Sequence[Sequence[Attribution]]]],
                      several: bool, vmax: float | None) -> Comparison:
    """The photos' panels as a :class:`Comparison`: per row its input, title, models and their
    attributions per method (:func:`_attributions`). Each result keeps the model input it is drawn
    on (``arrays["model_input"]``, uint8 RGB) and its metadata gains the model, the input and the
    class explained, as an explanation's has."""
    panels: list[Panel] = []
    entries: list[dict[str, Any]] = []
    for path, title, models, attrs in rows:
        for model, per_method in zip(models, attrs):
            _wi, (x,) = next(model.plan.units())
            rgb = normalised_to_rgb(x[0].numpy(), model.plan.spec.mean, model.plan.spec.std)
            for s, attr in zip(model.sessions, per_method):
                attr.meta.update({"model": model.name, "input": os.path.abspath(path), "target_label": model.label})
                attr.arrays["model_input"] = rgb
                panels.append(Panel(os.path.abspath(path), _title(model, s.method.name, several), attr,
                                    _note(attr.meta, model.label if several and not model.by_class else None)))
        entries.append(_row_entry(path, title, models))
    return _comparison(panels, entries, vmax)


def _row_entry(path: str, title: str, models: Sequence[_Model]) -> dict[str, Any]:
    """A row of a comparison as its ``meta["rows"]`` holds it: the input, its title, the class its
    input panel names, and its number of panels (one per model and method)."""
    return {"input": os.path.abspath(path), "title": title, "explained": _explained(models),
            "panels": sum(len(m.sessions) for m in models)}


def _comparison(panels: Sequence[Panel], rows: Sequence[dict[str, Any]], vmax: float | None) -> Comparison:
    return Comparison(list(panels), {"bits_vmax": vmax, "rows": list(rows), "version": __version__})


def panel_summaries(panels: Sequence[Panel]) -> list[tuple[str, Unit, int, str]]:
    """Each panel's name, unit and class (index and name), as :attr:`Compared.panels`."""
    return [(p.name, p.result.unit, p.result.target, str(p.result.meta["target_label"])) for p in panels]


def _summaries(paths: Sequence[str], comparison: Comparison) -> list[tuple[str, list[tuple[str, Unit, int, str]]]]:
    """Per row its input (as given) and :func:`panel_summaries`, as :attr:`Grid.rows`."""
    return [(path, panel_summaries(panels)) for path, (_row, panels) in zip(paths, comparison_rows(comparison))]


def comparison_rows(comparison: Comparison) -> list[tuple[dict[str, Any], list[Panel]]]:
    """The rows of ``comparison`` as drawn: each row's entry (input, title, the class its input
    panel names) and its panels.

    Raises:
        UserInputError: a comparison without its rows (one made by hand).
    """
    rows = comparison.meta.get("rows")
    if not isinstance(rows, list) or sum(int(r.get("panels", 0)) for r in rows) != len(comparison.panels):
        raise UserInputError("the comparison lacks the rows it is drawn in (meta['rows']); draw it with compare")
    out, at = [], 0
    for row in rows:
        out.append((row, comparison.panels[at:at + int(row["panels"])]))
        at += int(row["panels"])
    return out


def draw_photo_comparison(comparison: Comparison, out: str) -> None:
    """Draw a comparison of photos, a row per photo (:func:`comparison_rows`), each panel on its
    model input, the bits maps on ``meta["bits_vmax"]`` (``None``: each its own): the PNG ``out``
    and the ``.npz`` beside it, atomically together."""
    images = []
    for row, panels in comparison_rows(comparison):
        inputs = [np.asarray(p.result.arrays["model_input"]) for p in panels]
        maps = [(p.name, p.result.values.numpy(), p.result.unit) for p in panels]
        images.append(comparison_row(inputs[0], maps, str(row["explained"]), inputs=inputs,
                                     notes=[p.note for p in panels], title=str(row["title"]),
                                     bits_vmax=comparison.meta.get("bits_vmax"),
                                     prefixes=[p.result.prefix_total for p in panels]))
    with atomic_writes([out, _npz_path(out)]) as (tmp_png, tmp_npz):
        write_rows(images, tmp_png)
        with open(tmp_npz, "wb") as fh:
            comparison.write_npz(fh)


def draw_clip_comparison(comparison: Comparison, rows: Sequence[ClipRow], out: str, keyframes: int,
                         progress: Progress = no_progress) -> str | None:
    """Draw a comparison of videos from ``rows`` (the comparison's rows, their panels placed on
    their videos): one video's MP4 ``out``, or with several rows the grid's, the bits maps on
    ``meta["bits_vmax"]``, the ``.npz`` beside it and with ``keyframes`` the still, atomically
    together; returns the still's path, or ``None``."""
    vmax = comparison.meta.get("bits_vmax")
    comparison.meta["keyframes"] = keyframes
    grid = len(rows) > 1
    stills = ([Stills.spread(len(r.panels[0].result.source_frame_indices), keyframes) for r in rows]
              if keyframes else None)
    still = keyframes_path(out) if stills is not None else None
    frames = grid_clip_frames(rows)[1] if grid else len(rows[0].panels[0].result.source_frame_indices)
    bar = progress("rendering", frames, "frame")
    try:
        with atomic_writes([out, _npz_path(out)] + ([still] if still is not None else [])) as tmps:
            if grid:
                compare_clip_grid(rows, tmps[0], on_frame=bar.update, bits_vmax=vmax, stills=stills)
            else:
                row = rows[0]
                compare_clip(row.panels, row.path, tmps[0], timeline=row.timeline, explained=row.explained,
                             on_frame=bar.update, stills=None if stills is None else stills[0], bits_vmax=vmax)
            with open(tmps[1], "wb") as fh:
                comparison.write_npz(fh)
            if stills is not None:
                write_png(compare_grid_keyframes(rows, stills, vmax) if grid
                          else compare_keyframes(rows[0].panels, stills[0], rows[0].explained, vmax), tmps[2])
    finally:
        bar.close()
    return still


def _attributions(rows: Sequence[Sequence[_Model]], bar: Bar) -> list[list[list[Attribution]]]:
    """Every row's (photo's) attributions, per model and method, each counted on ``bar``; the
    per-sample bottleneck fits the rows' photos together, its session's batch size at a time (each
    as alone)."""
    out: list[list[list[Attribution]]] = [[[] for _ in row] for row in rows]
    for mi, model in enumerate(rows[0]):
        xs = [next(row[mi].plan.units())[1][0] for row in rows]
        for s in model.sessions:
            for ri, attr, _seconds in s.attribute_all(range(len(rows)), lambda r: xs[r],
                                                      lambda r, mi=mi: rows[r][mi].target):
                if isinstance(attr, Exception):
                    raise attr
                out[ri][mi].append(attr)
                bar.update(1)
    return out


def _photo_refusals(options: Options, settings: Settings) -> list[str]:
    """The options given beside a video's range that a photo cannot use."""
    return [*(["keyframes"] if options.keyframes else []), *settings.clip_options()]


def _check_comparison(methods: Sequence[str], settings: Settings | None, models: Sequence[str],
                      session: Session | None) -> tuple[list[str], Settings, list[str]]:
    """The methods, the settings (default ones for ``None``) and the models compared, checked."""
    names = [m for m in as_tuple(methods, split=True) if m]
    if not names:
        raise UserInputError("no methods given; give {methods} e.g. iba,gradcam,saliency", options=["methods"])
    settings = settings or Settings()
    if session is not None:
        if (models or settings.model or settings.weights != Settings.weights or settings.stats or settings.readout
                or settings.labels or settings.clip_options()):
            raise UserInputError("an open session holds its model, weights, clip sampling, statistics, readout and "
                                 "class names; give the settings only the methods' options (layers, bottleneck "
                                 "settings, Grad-CAM layer, seed, precision)")
    chosen = _check_models(models, settings)
    _check_method_options(names, settings)
    return names, settings, chosen


def _plans(path: str, settings: Settings, chosen: Sequence[str], options: Options,
           session: Session | None) -> list[InputPlan]:
    """The input plan of ``path`` for every model compared."""
    if session is not None:
        return [plan_input(path, session.spec, options.span)]
    return [_plan(path, name, settings, options, bool(chosen)) for name in (chosen or [settings.model_for(path)])]


def _models(plans: Sequence[InputPlan], names: Sequence[str], settings: Settings, options: Options,
            session: Session | None) -> list[_Model]:
    """The models compared on their plans: the open session's, or each registry model loaded."""
    if session is None:
        return [_open(plan, names, settings, options) for plan in plans]
    target = resolve_target(options.target, session.labels)
    return [_Model(session.spec.name, [session.for_method(n, settings) for n in names], plans[0],
                   -1 if target is None else target)]


def _choose_targets(compared: Sequence[_Model], progress: Progress) -> None:
    """Each model's ranked class on its input (the top-1, or the K-th of ``topK``) where no target
    was given; one prediction per model and input."""
    ranked: dict[tuple[int, int], np.ndarray] = {}
    for model in compared:
        if model.target < 0:
            key = (id(model.sessions[0]), id(model.plan))
            if key not in ranked:
                probs = predict(model.sessions[0], model.plan, progress)
                ranked[key] = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")
            model.target = int(ranked[key][model.rank])


#: ``topK`` in ``targets``: the K most probable classes.
_TOP = re.compile(r"top([0-9]+)", re.IGNORECASE)


def _refuse_maps_only(options: Options) -> None:
    if options.maps_only:
        raise UserInputError("a comparison is its drawing and {maps_only} draws nothing; drop it (explain writes "
                             "maps alone)", options=["maps_only"])


def _check_targets(targets: Sequence[str | int], options: Options, models: Sequence[str]) -> list[str | int]:
    """The classes compared (none: ``options.target`` alone), checked before any work: two or more
    distinct ones, or ``topK`` alone with K >= 2."""
    classes = [t.strip() if isinstance(t, str) else t for t in as_tuple(targets, split=True)]
    classes = [t for t in classes if t != ""]
    if not classes:
        if targets:
            raise UserInputError("{targets} is empty; give two or more classes, e.g. 281,285, or top3",
                                 options=["targets"])
        return []
    if options.target is not None and str(options.target).lower() != "top1":
        raise UserInputError("give {target} or {targets}, not both", options=["target", "targets"])
    if models:
        raise UserInputError("{targets} compares classes of one model; drop {models} or {targets}",
                             options=["targets", "models"])
    tops = [t for t in classes if isinstance(t, str) and _TOP.fullmatch(t)]
    if tops and (len(classes) > 1 or int(_TOP.fullmatch(str(tops[0])).group(1)) < 2):  # type: ignore[union-attr]
        raise UserInputError(f"{{targets}} takes topK alone, with K >= 2 (the K most probable classes), or two or "
                             f"more classes; got {','.join(map(str, classes))}", options=["targets"])
    if not tops and len(classes) < 2:
        raise UserInputError("{targets} compares two or more classes; give one class with {target}",
                             options=["targets", "target"])
    if len({str(t).lower() for t in classes}) != len(classes):
        raise UserInputError(f"{{targets}} names a class twice: {','.join(map(str, classes))}", options=["targets"])
    return classes


def _per_class(compared: list[_Model], classes: Sequence[str | int]) -> list[_Model]:
    """The one model compared on each class of ``classes`` (none: ``compared`` as it is)."""
    if not classes:
        return compared
    (model,) = compared
    top = _TOP.fullmatch(str(classes[0])) if isinstance(classes[0], str) else None
    if top:
        k, labels = int(top.group(1)), model.sessions[0].labels
        if k > len(labels):
            raise UserInputError(f"{{targets}} top{k} asks for more classes than the model's {len(labels)}; give "
                                 f"fewer", options=["targets"])
        return [_Model(model.name, model.sessions, model.plan, -1, rank, True) for rank in range(k)]
    out = []
    for c in classes:
        try:
            target = resolve_target(c, model.sessions[0].labels)
        except UserInputError as exc:
            raise UserInputError(exc.template.replace("{target}", "{targets}"),
                                 options=["targets" if o == "target" else o for o in exc.options]) from exc
        out.append(_Model(model.name, model.sessions, model.plan, -1 if target is None else target, 0, True))
    if len({m.target for m in out if m.target >= 0}) != sum(m.target >= 0 for m in out):
        raise UserInputError(f"{{targets}} names a class twice: {','.join(map(str, classes))}", options=["targets"])
    return out


def _check_models(models: Sequence[str], settings: Settings) -> list[str]:
    """The models compared (none: ``settings.model`` alone); refuses what cannot apply to each of them."""
    names = [m for m in as_tuple(models, split=True) if m]
    if len(names) != len(set(names)):
        raise UserInputError(f"{{models}} names a model twice: {','.join(names)}", options=["models"])
    if len(names) < 2:
        if models:
            raise UserInputError("{models} compares two or more models; give one model with {model}",
                                 options=["models", "model"])
        return []
    if settings.model is not None:
        raise UserInputError("give {model} or {models}, not both", options=["model", "models"])
    for given, option in ((settings.layers, "layer"), (settings.cam_layer, "cam_layer"), (settings.stats, "stats"),
                          (settings.readout, "readout")):
        if given:
            raise UserInputError(f"{{{option}}} belongs to one model; drop it to compare several models (each uses "
                                 f"its default layers and its input's own statistics)", options=[option])
    if settings.weights not in ("default", "random"):
        raise UserInputError(f"{{weights}} {settings.weights!r} belongs to one model; compare several models with "
                             f"default or random weights", options=["weights"])
    return names


def _plan(path: str, name: str | None, settings: Settings, options: Options, several: bool) -> InputPlan:
    """The input plan of one model; with several models, a fix that names the model option names
    the models option instead (the model was one of them)."""
    try:
        return plan_input(path, settings.spec_of(name, bool(settings.layers)), options.span)
    except UserInputError as exc:
        if not several or "model" not in exc.options:
            raise
        raise UserInputError(exc.template.replace("{model}", "{models}"),
                             options=["models" if o == "model" else o for o in exc.options]) from exc


def _check_method_options(methods: Sequence[str], settings: Settings) -> None:
    """Statistics, a precision, a readout, layers, a Grad-CAM layer and bottleneck settings need a
    method among ``methods`` that uses them."""
    kinds = [check_method(m) for m in methods]
    changed = sorted(settings.changes)
    if (changed or settings.config is not None) and not any(k.fitted for k in kinds):
        named = ", ".join("{" + k + "}" for k in changed) or "a bottleneck configuration"
        raise UserInputError(f"{named} {'are settings' if len(changed) > 1 else 'is a setting'} of the method iba, "
                             f"which is not among {{methods}}; drop {'them' if len(changed) > 1 else 'it'} or add iba",
                             options=[*changed, "methods"])
    if settings.layers and not any(k.fitted for k in kinds):
        cam = "; Grad-CAM's layer is {cam_layer}" if any(k.uses_cam_layer for k in kinds) else ""
        raise UserInputError("{layer} is the bottleneck's layer of the method iba, which is not among {methods}; drop "
                             "it or add iba" + cam, options=["layer", "methods", "cam_layer"])
    if settings.cam_layer and not any(k.uses_cam_layer for k in kinds):
        raise UserInputError(f"{{cam_layer}} applies to {' and '.join(CAM_METHODS)}, neither of which is among "
                             f"{{methods}}; drop it or add one", options=["cam_layer", "methods"])
    iba_only = (("stats", bool(settings.stats), any(k.uses_statistics for k in kinds)),
                ("batch_size", settings.batch_size is not None, any(k.fitted for k in kinds)),
                ("precision", settings.precision != "fp32", any(k.fitted for k in kinds)))
    for option, given, used in iba_only:
        if given and not used:
            raise UserInputError(f"{{{option}}} applies to the method iba, which is not among {{methods}}; drop it or "
                                 f"add iba", options=[option, "methods"])
    if settings.readout and not any(k.uses_readout for k in kinds):
        raise UserInputError("{readout} applies to the method readout, which is not among {methods}; drop it or add "
                             "readout", options=["readout", "methods"])


def _open(plan: InputPlan, methods: Sequence[str], settings: Settings, options: Options) -> _Model:
    """One model's sessions for its input plan (one per method, sharing the model and readout; each
    method gets the settings that apply to it), and its target where one is given (else -1: its
    top-1, once the outputs are checked)."""
    sessions: list[Session] = []
    for name in methods:
        own = settings_for(check_method(name), settings)
        first = sessions[0] if sessions else None
        readout = next((s.readout for s in sessions if s.readout is not None), None)
        sessions.append(Session.open(own, plan.spec.name, model=None if first is None else first.model,
                                     readout=readout))
    target = resolve_target(options.target, sessions[0].labels)
    return _Model(plan.spec.name, sessions, plan, -1 if target is None else target)


def _title(model: _Model, method: str, several: bool) -> str:
    return f"{model.heading} · {method}" if several else method


def _note(meta: dict[str, Any], label: str | None) -> str:
    """A panel's note after its unit: the layer its method read (the bottleneck's or Grad-CAM's),
    then, with several models, the class its model explained."""
    layer = meta.get("cam_layer") or meta.get("layer") or meta.get("layers")
    if isinstance(layer, (list, tuple)):
        layer = ", ".join(map(str, layer))
    return " · ".join(str(p) for p in (layer, label) if p)


def _explained(compared: Sequence[_Model]) -> str:
    """The class in the input panel's head: the one every model explained, else where to read them."""
    if len({m.label for m in compared}) == 1:
        return compared[0].label
    return "per class, in each panel" if compared[0].by_class else "per model, in each panel"


def _bits_top(options: Options, results: Iterable[Attribution | ClipAttribution]) -> float | None:
    """The bits maps' shared colour scale: ``options.vmax``, or with ``"shared"`` the largest value
    of the bits maps among ``results`` (1 where none is above 0); ``None``: each map its own, or no
    bits map to share it."""
    if options.vmax != SHARED:
        return None if options.vmax is None else float(options.vmax)
    bits = [r for r in results if r.unit.information]
    return scale_top(np.asarray([bits_peak(bits)])) if bits else None


def bits_peak(results: Iterable[Attribution | ClipAttribution]) -> float:
    """The largest value among the bits maps of ``results`` (a video's over all its windows; 0
    without any)."""
    return max((r.peak() if isinstance(r, ClipAttribution) else float(r.values.max())
                for r in results if r.unit.information), default=0.0)


def _stores(compared: Sequence[_Model], folder: str, stores: list[MapStore]) -> None:
    """Add to ``stores`` one store per model and method of ``compared`` for its maps (spilled to
    ``folder`` when large; a range that does not fit there is refused before any work)."""
    for model in compared:
        for _ in model.sessions:
            stores.append(MapStore(model.plan, folder))


def _clip_panels(compared: Sequence[_Model], options: Options, progress: Progress, several: bool,
                 stores: Sequence[MapStore]) -> list[ClipPanel]:
    """Every model's and method's result over the video's range, as panels; their maps go to
    ``stores`` (one per model and method, see :func:`_stores`)."""
    shown: list[ClipPanel] = []
    store_of = iter(stores)
    for model in compared:
        for s in model.sessions:
            store = next(store_of)
            first: dict[str, Any] = {}
            windows = attribute_windows(s, model.plan, model.target, progress, first, store)
            probs = np.mean([p for w in windows for p in w.probs], axis=0)
            result = assemble_clip(s, model.plan, windows, store.values, model.target, options, probs, first, 0.0)
            title = _title(model, s.method.name, several)
            shown.append(ClipPanel(title, result, model.plan.windows, model.plan.crops,
                                   _note(result.meta, model.label if several and not model.by_class else None)))
    return shown


def _clip(compared: Sequence[_Model], options: Options, out: str, progress: Progress,
          several: bool) -> list[tuple[str, Unit, int, str]]:
    return _video_grid([compared], [compared[0].plan.path], ["input"], options, out, progress, several)[0][1]


def _video_grid(rows: Sequence[Sequence[_Model]], paths: Sequence[str], titles: Sequence[str], options: Options,
                out: str, progress: Progress, several: bool) -> list[tuple[str, list[tuple[str, Unit, int, str]]]]:
    """Every video's panels, then one video's comparison MP4 ``out`` or, with several, the grid's
    (see :func:`compare_grid`)."""
    stores: list[list[MapStore]] = []  # per row, every row's made before any work
    try:
        for row in rows:
            stores.append([])
            _stores(row, os.path.dirname(os.path.abspath(out)), stores[-1])
        clip_rows = []
        for title, row, row_stores in zip(titles, rows, stores):
            shown = _clip_panels(row, options, progress, several, row_stores)
            assert row[0].plan.line is not None
            clip_rows.append(ClipRow(shown, row[0].plan.path, row[0].plan.line, _explained(row), title))
        vmax = _bits_top(options, (p.result for r in clip_rows for p in r.panels))
        comparison = _comparison([Panel(os.path.abspath(path), p.name, p.result, p.note)
                                  for path, r in zip(paths, clip_rows) for p in r.panels],
                                 [_row_entry(path, title, row) for path, title, row in zip(paths, titles, rows)], vmax)
        draw_clip_comparison(comparison, clip_rows, out, options.keyframes, progress)
    finally:
        for row_stores in stores:
            for store in row_stores:
                store.close()
    return _summaries(paths, comparison)


__all__ = ["MAX_GRID_ROWS", "MAX_VIDEO_GRID_ROWS", "Compared", "Grid", "compare_file", "compare_grid"]
