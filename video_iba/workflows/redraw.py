"""Drawing explanations again from their ``.npz`` files, without explaining again.

The ``.npz`` holds the maps, the windows and crops, the probabilities and what the drawing says
(title, class names, settings line); the explained photo or video is read again for its pixels and
checked to be the one explained (its size, frame count, frame rate and model clips). The colour
scale (one number, or ``shared``: the largest value over every file given, so they compare on one
scale), a video's layout and its keyframe sheet may change; what is not given stays as drawn
before. The drawing and the ``.npz`` (its metadata recording the new drawing) are written
atomically, by default over the old ones in the ``.npz``'s folder.

A comparison's ``.npz`` (``compare``'s) is drawn again as compare drew it: its bits maps' scale
and a video comparison's still may change; a photo comparison keeps the model inputs it is drawn
on, a video comparison reads its videos again, checked as above.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from ..errors import UserInputError
from ..files import check_writable_dir
from ..io.clips import Timeline, timeline
from ..io.discovery import is_image_file, is_video_file
from ..io.image import load_image, probe_image
from ..io.sampling import Window, plan_windows, short_ranges_noted
from ..models.preprocess import CropPlan, Tile, resized_size
from ..render.overlay import scale_top
from ..render.compare import ClipPanel, ClipRow
from ..results import Attribution, ClipAttribution, Comparison, Unit, load
from .compare import (Compared, Grid, bits_peak, comparison_rows, draw_clip_comparison, draw_photo_comparison,
                      panel_summaries)
from .explain import (SHARED, Explained, check_keyframes, check_layout, check_vmax, draw_clip, draw_photo,
                      output_paths)
from .outputs import inside, same_file
from .session import Progress, as_tuple, no_progress


@dataclass(frozen=True)
class Redraw:
    """What changes in the drawing; ``None`` keeps what the ``.npz`` records.

    Attributes:
        vmax: Top of the colour scale in the map's unit per pixel or voxel, or ``"shared"``: the
            largest value of all the files given.
        layout: A video's ``"side-by-side"`` or ``"overlay"``.
        keyframes: A video's keyframe sheet of this many frames (1 to :data:`~video_iba.render.video.MAX_KEYFRAMES`).
        source: The explained photo or video, where it is no longer where it was explained (one
            ``.npz``); or a folder holding the inputs, each found by its file name (in the
            subfolder its ``.npz`` is in below a folder given, else at the top).
        out_dir: Output folder (default: each ``.npz``'s own).
    """

    vmax: float | str | None = None
    layout: str | None = None
    keyframes: int | None = None
    source: str | None = None
    out_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("source", "out_dir"):
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        check_vmax(self.vmax)
        if self.layout is not None:
            check_layout(self.layout)
        if self.keyframes is not None:
            check_keyframes(self.keyframes, fewest=1)


def result_files(paths: Sequence[str], out_dir: str | None = None) -> list[tuple[str, str]]:
    """The ``.npz`` files given, each with the folder it is written to relative to ``out_dir``:
    files as they are (``""``), folders searched recursively (sorted; the subfolder of each file,
    so that ``out_dir`` mirrors the folder, and nothing already inside ``out_dir``); at least one.

    Raises:
        UserInputError: a folder without ``.npz`` files, or two files that would write the same outputs.
    """
    out: list[tuple[str, str]] = []
    for p in paths:
        if not os.path.isdir(p):
            out.append((p, ""))
            continue
        found = sorted(str(f) for f in Path(p).rglob("*.npz") if f.is_file()
                       and not (out_dir is not None and inside(str(f), out_dir)))
        if not found:
            raise UserInputError(f"no .npz files found in '{p}'; give the output folder of `video-iba explain` or "
                                 f"`compare`, or their .npz files")
        out.extend((f, os.path.relpath(os.path.dirname(f), p)) for f in found)
    if not out:
        raise UserInputError("no .npz file given; give the .npz files written by `video-iba explain`")
    seen: dict[str, str] = {}
    for f, rel in out:
        where = os.path.realpath(os.path.join(out_dir, rel, os.path.basename(f)) if out_dir is not None else f)
        if where in seen and not same_file(seen[where], f):
            raise UserInputError(f"'{seen[where]}' and '{f}' would both be drawn as '{where[:-len('.npz')]}'; redraw "
                                 f"them into separate folders ({{out_dir}})", options=["out_dir"])
        seen[where] = f
    return list({os.path.realpath(f): (f, rel) for f, rel in out}.values())  # a file given twice, drawn once


def redraw(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], how: Redraw = Redraw(),
           progress: Progress = no_progress, workers: int = 1) -> list[Explained | Compared | Grid]:
    """Draw the explanations or comparisons of ``paths`` (an ``.npz`` file of ``explain`` or
    ``compare``, a folder of them, or a list of either) again; what each wrote (an
    :class:`Explained`; for a comparison a :class:`Compared`, of several inputs a :class:`Grid`), in
    the order of the files.

    Every file is read and its photo or video checked before anything is written; each drawing and
    its ``.npz`` are then written atomically, one file after the other, or ``workers`` files at once
    in as many processes (the same files). With ``how.out_dir`` a folder's subfolders are mirrored
    there.

    Raises:
        UserInputError: an unreadable ``.npz``, a missing or different source, a video's option
            for a photo (or ``layout`` for a comparison), a ``shared`` scale over maps in
            different units, outputs that would replace a source or be written twice, ``workers``
            not a positive integer.
    """
    check_workers(workers)
    files = result_files(as_tuple(paths), how.out_dir)
    if how.source is not None and not os.path.isdir(how.source) and len(files) > 1:
        raise UserInputError(f"{{source}} names the input of one .npz and {len(files)} were given; give it the "
                             f"folder holding the inputs, or redraw them one at a time", options=["source"])
    if how.out_dir is not None:
        check_writable_dir(how.out_dir)
    checked = [_check(path, rel, how) for path, rel in files]
    vmax = shared_top(checked) if how.vmax == SHARED else how.vmax
    if len(files) == 1:
        return [_redraw_one(*files[0], how, vmax, progress)]
    bar = progress("redrawing", len(files), "file")
    try:
        if workers > 1:
            return _redraw_in_processes(files, how, vmax, workers, bar.update)
        done: list[Explained | Compared | Grid] = []
        for path, rel in files:
            done.append(_redraw_one(path, rel, how, vmax, progress))
            bar.update(1)
        return done
    finally:
        bar.close()


def check_workers(workers: object) -> None:
    """Refuse a number of drawing processes other than a positive integer."""
    if not (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1):
        raise UserInputError(f"{{workers}} must be an integer >= 1 (processes drawing at once), got {workers!r}",
                             options=["workers"])


def _redraw_in_processes(files: Sequence[tuple[str, str]], how: Redraw, vmax: float | str | None, workers: int,
                         done_one: Callable[[int], object]) -> list[Explained | Compared | Grid]:
    """:func:`_redraw_one` of every file in ``workers`` :func:`drawing_processes`; the first failure
    is raised once the drawings under way have ended, and the files not begun are left as they were."""
    with drawing_processes(min(workers, len(files))) as pool:
        futures = [pool.submit(_redraw_one, path, rel, how, vmax, no_progress) for path, rel in files]
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            done_one(len(finished))
            failed = [f for f in finished if f.exception() is not None]
            if failed:
                for f in pending:
                    f.cancel()
                raise drawing_failure(failed[0].exception())  # type: ignore[arg-type]
    return [f.result() for f in futures]


@contextlib.contextmanager
def drawing_processes(workers: int) -> Iterator[ProcessPoolExecutor]:
    """``workers`` new processes that draw, one file each at a time, with one thread for torch.
    They are spawned, not forked (forking a process whose threads may hold locks can hang the
    child), so each imports the caller's main module, as every spawning pool of Python's does."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of this process's threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        yield pool


def drawing_failure(error: BaseException) -> BaseException:
    """What a drawing process's failure raises: the drawing's own error, or, for a process that
    ended abruptly, one line naming the likely causes and the fix."""
    if isinstance(error, BrokenProcessPool):  # killed (the kernel, out of memory), or failed to start
        failure = UserInputError(f"a drawing process ended abruptly ({error}); where the machine ran out of memory, "
                                 f"draw fewer files at once ({{workers}}); a script giving {{workers}} must make "
                                 f"that call under `if __name__ == \"__main__\":`, as each process imports the "
                                 f"script", options=["workers"])
        failure.__cause__ = error
        return failure
    return error


def draw_npz(path: str, how: Redraw = Redraw()) -> tuple[list[str], float]:
    """Draw the explanation ``path`` (an ``.npz`` of ``explain``) as :func:`redraw` does, in this
    process: its outputs (the drawing, the ``.npz``, a video's keyframe sheet) and the seconds it took."""
    t0 = time.perf_counter()
    drawn = _redraw_one(path, "", how, how.vmax, no_progress)
    return list(drawn.outputs), time.perf_counter() - t0


class Scale(NamedTuple):
    """How an explanation (or a comparison's bits maps) is drawn: the unit, the largest value its
    map draws, and the top of the colour scale its drawing now has."""

    unit: str
    peak: float
    drawn: float


def check_files(paths: Sequence[str], how: Redraw = Redraw()) -> list[Scale]:
    """Read the ``.npz`` files ``paths`` and check their sources (as :func:`redraw` does before
    drawing); the scale of each."""
    return [_check(p, "", how) for p in paths]


def shared_top(scales: Sequence[Scale]) -> float:
    """The top of one colour scale for all of ``scales``: the largest value among them.

    Raises:
        UserInputError: maps in different units.
    """
    units = sorted({s.unit for s in scales})
    if len(units) > 1:
        raise UserInputError(f"one colour scale ({{vmax}} {SHARED}) needs maps in one unit and these are in "
                             f"{' and '.join(units)}; redraw them separately", options=["vmax"])
    return scale_top(np.asarray([s.peak for s in scales], dtype=np.float64))


def _load(path: str) -> Attribution | ClipAttribution | Comparison:
    if not path.lower().endswith(".npz"):
        raise UserInputError(f"'{path}' is not an .npz file; give the .npz written by `video-iba explain` next to "
                             f"its figure or video")
    result = load(path)
    if isinstance(result, Comparison):
        lacking = [] if isinstance(result.meta.get("rows"), list) else ["rows"]
        if any(isinstance(p.result, Attribution) and "model_input" not in p.result.arrays for p in result.panels):
            lacking.append("model inputs")
        if any("target_label" not in p.result.meta for p in result.panels):
            lacking.append("class names")
        if lacking:
            raise UserInputError(f"'{path}' lacks what its drawing needs ({', '.join(lacking)}): it was written by "
                                 f"video-iba {result.meta.get('version', '?')} or by Python's save; compare the "
                                 f"input again with `video-iba compare`")
        return result
    needs = (["title", "top5", "vmax", "sampling", "resized", "crop", "layout"] if isinstance(result, ClipAttribution)
             else ["details", "top5", "target_label", "target_probability", "vmax"])
    lacking = [k for k in needs if k not in result.meta]
    if isinstance(result, ClipAttribution) and result.class_names is None:
        lacking.append("class names")
    if isinstance(result, Attribution) and not {"crop_box", "scale", "image_size"} <= set(result.arrays):
        lacking.append("crop geometry")
    if lacking:
        raise UserInputError(f"'{path}' lacks what its drawing needs ({', '.join(lacking)}): it was written by "
                             f"video-iba {result.meta.get('version', '?')} or by Python's save; explain the input "
                             f"again with `video-iba explain`")
    return result


def _source(path: str, rel: str, result: Attribution | ClipAttribution, how: Redraw) -> str:
    """The explained file: ``how.source`` (a file, or a folder to find it in by name), else where
    it was explained."""
    kind = "video" if isinstance(result, ClipAttribution) else "photo"
    where = str(result.meta.get("input", ""))
    given = how.source
    if given is not None and os.path.isdir(given):
        name = os.path.basename(where)
        looked = list(dict.fromkeys(os.path.normpath(os.path.join(given, r, name)) for r in (rel, "")))
        found = [p for p in looked if os.path.isfile(p)]
        if not found:
            raise UserInputError(f"'{path}' explains '{name}', which is not in {{source}} '{given}' (looked for "
                                 f"{' and '.join(repr(p) for p in looked)}); give the folder holding it",
                                 options=["source"])
        given = found[0]
    if given is not None:
        if not os.path.isfile(given):
            raise UserInputError(f"{{source}} '{given}' is not a file or folder; give the {kind} '{path}' explains",
                                 options=["source"])
        if not (is_video_file(given) if kind == "video" else is_image_file(given)):
            raise UserInputError(f"{{source}} '{given}' is not a {kind}; give the {kind} '{path}' explains",
                                 options=["source"])
        return given
    if not os.path.isfile(where):
        raise UserInputError(f"'{path}' explains '{where}', which is not there any more; give the {kind} with "
                             f"{{source}} (or a folder holding the inputs)", options=["source"])
    return where


def _check(path: str, rel: str, how: Redraw) -> Scale:
    """Read ``path`` and check its source."""
    result = _load(path)
    if isinstance(result, Comparison):
        return _check_comparison(path, rel, result, how)
    source = _source(path, rel, result, how)
    drawn = float(result.meta["vmax"])
    if isinstance(result, ClipAttribution):
        _clip_plan(path, result, source)
        return Scale(result.unit.value, result.peak(), drawn)
    given = [name for name, value in (("layout", how.layout), ("keyframes", how.keyframes)) if value is not None]
    if given:
        named = ", ".join("{" + g + "}" for g in given)
        raise UserInputError(f"{named} appl{'ies' if len(given) == 1 else 'y'} to videos and '{path}' explains a "
                             f"photo; drop {'it' if len(given) == 1 else 'them'}", options=given)
    _same_size(path, result, source, probe_image(source))  # the header only; drawing decodes it
    shown = result.unit.magnitude(result.values.numpy())
    return Scale(result.unit.value, float(shown.max()) if shown.size else 0.0, drawn)


def _check_comparison(path: str, rel: str, comparison: Comparison, how: Redraw) -> Scale:
    """Check a comparison's options and its videos; its bits maps' scale (a photo comparison keeps
    the model inputs it draws on)."""
    video = isinstance(comparison.panels[0].result, ClipAttribution)
    given = [name for name, value in (("layout", how.layout), ("keyframes", None if video else how.keyframes))
             if value is not None]
    if given:
        named = ", ".join("{" + g + "}" for g in given)
        raise UserInputError(f"{named} do{'es' if len(given) == 1 else ''} not apply to '{path}', a comparison of "
                             f"{'videos' if video else 'photos'}; drop {'it' if len(given) == 1 else 'them'}",
                             options=given)
    inputs = {p.input for p in comparison.panels}
    if video and how.source is not None and not os.path.isdir(how.source) and len(inputs) > 1:
        raise UserInputError(f"{{source}} names one video and '{path}' compares {len(inputs)}; give it the folder "
                             f"holding them", options=["source"])
    for p in comparison.panels:
        if isinstance(p.result, ClipAttribution):
            _clip_plan(path, p.result, _source(path, rel, p.result, how))
    drawn = comparison.meta.get("bits_vmax")
    return Scale(Unit.BITS.value, bits_peak(p.result for p in comparison.panels),
                 float("nan") if drawn is None else float(drawn))


def _different(path: str, source: str, what: str, kind: str = "video") -> UserInputError:
    return UserInputError(f"'{source}' is not the {kind} '{path}' explains ({what}); give the explained {kind} with "
                          f"{{source}}", options=["source"])


def _clip_plan(path: str, result: ClipAttribution, source: str) -> tuple[Timeline, list[Window], CropPlan]:
    """The video's timeline, model clips and crops as they were explained, checked against the file."""
    line = timeline(source)
    info, s, m = line.info, result.meta["sampling"], result.meta
    if line.frames != int(s["source_frames"]) or not math.isclose(info.fps, float(s["source_fps"]), rel_tol=1e-6):
        raise _different(path, source, f"{line.frames} frames at {info.fps:g} fps, the explained video "
                                       f"{s['source_frames']} at {float(s['source_fps']):g}")
    size = (int(m["resized"][0]), int(m["resized"][1]))
    if resized_size(info.height, info.width, min(size)) != size:
        stored = info.stored_size
        if stored != (info.width, info.height) and resized_size(stored[1], stored[0], min(size)) == size:
            raise UserInputError(f"'{path}' was explained on the stored pixels of '{source}' ({stored[0]}x{stored[1]}), "
                                 f"which is now read as a player shows it ({info.width}x{info.height}, square "
                                 f"pixels); explain it again")
        raise _different(path, source, f"{info.width}x{info.height} pixels, another shape than the explained video's")
    with short_ranges_noted():  # the explanation said so
        windows = plan_windows(line.frames, info.fps, int(s["frames"]), int(s["rate"]), start=float(s["start"]),
                               end=None if s["end"] is None else float(s["end"]),
                               stride=None if s["stride"] is None else float(s["stride"]), times=line.times)
    if (len(windows) != len(result.window_frame_indices)
            or not np.array_equal(np.stack([w.indices for w in windows]), result.window_frame_indices)):
        raise _different(path, source, "its model clips take other frames")
    sy, sx = size[0] / info.height, size[1] / info.width
    tiles = tuple(Tile(int(round(b[1] * sy)), int(round(b[0] * sx)), tuple(float(v) for v in b))
                  for b in result.crop_boxes)
    return line, windows, CropPlan(size, int(m["crop"]), tiles)


def _same_size(path: str, result: Attribution, source: str, size: tuple[int, int]) -> None:
    """Refuse a photo whose ``(height, width)`` is not the explained one's."""
    full = tuple(int(v) for v in result.arrays["image_size"])
    if tuple(size) != full:
        raise _different(path, source, f"{size[1]}x{size[0]} pixels, the explained photo {full[1]}x{full[0]}", "photo")


def _photo_image(path: str, result: Attribution, source: str) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The photo's pixels, decoded as for the explanation, and the model input's box in them."""
    full = tuple(int(v) for v in result.arrays["image_size"])
    scale = np.asarray(result.arrays["scale"], dtype=np.float64)
    short = int(round(min(scale[0] * full[1], scale[1] * full[0])))  # the model's resize side
    rgb, (h, w) = load_image(source, reduce_to=short)
    _same_size(path, result, source, (h, w))
    fy, fx = rgb.shape[0] / h, rgb.shape[1] / w
    x0, y0, x1, y1 = (float(v) for v in result.arrays["crop_box"])
    return rgb, (x0 * fx, y0 * fy, x1 * fx, y1 * fy)


def _outputs(path: str, rel: str, video: bool, how: Redraw, sources: Sequence[str], keyframes: int) -> list[str]:
    """The drawing's outputs (:func:`output_paths`): named as ``path``, in its folder or
    ``how.out_dir``'s subfolder ``rel``."""
    out_dir = (os.path.normpath(os.path.join(how.out_dir, rel)) if how.out_dir is not None
               else os.path.dirname(os.path.abspath(path)))
    return output_paths(out_dir, Path(path).name[:-len(".npz")], video, sources, keyframes)


def _redraw_comparison(path: str, rel: str, comparison: Comparison, how: Redraw, vmax: float | str | None,
                       progress: Progress) -> Compared | Grid:
    """Draw a comparison again: its picture (a photo's PNG, a video's MP4) named as ``path``, the
    ``.npz`` and a video's still."""
    video = isinstance(comparison.panels[0].result, ClipAttribution)
    if vmax is not None:
        comparison.meta["bits_vmax"] = float(vmax)
    rows = comparison_rows(comparison)
    clip_rows: list[ClipRow] = []
    if video:
        for row, panels in rows:
            shown, source, line = [], "", None
            for p in panels:
                assert isinstance(p.result, ClipAttribution)
                source = _source(path, rel, p.result, how)
                line, windows, crops = _clip_plan(path, p.result, source)
                p.input = p.result.meta["input"] = row["input"] = os.path.abspath(source)
                shown.append(ClipPanel(p.name, p.result, windows, crops, p.note))
            assert line is not None
            clip_rows.append(ClipRow(shown, source, line, str(row["explained"]), str(row["title"])))
    keyframes = how.keyframes if how.keyframes is not None else int(comparison.meta.get("keyframes", 0))
    outputs = _outputs(path, rel, video, how, [str(row["input"]) for row, _ in rows], keyframes)
    out, still = outputs[0], None
    if video:
        still = draw_clip_comparison(comparison, clip_rows, out, keyframes, progress)
    else:
        draw_photo_comparison(comparison, out)
    drawn = [panel_summaries(panels) for _row, panels in rows]
    if len(rows) > 1:
        return Grid(out, [(str(row["input"]), d) for (row, _), d in zip(rows, drawn)], still, outputs[1])
    first = drawn[0][0]
    return Compared(out, first[2], first[3], drawn[0], still, outputs[1])


def _redraw_one(path: str, rel: str, how: Redraw, vmax: float | str | None,
                progress: Progress) -> Explained | Compared | Grid:
    result = _load(path)
    if isinstance(result, Comparison):
        return _redraw_comparison(path, rel, result, how, vmax, progress)
    source = _source(path, rel, result, how)
    top = [(str(n), float(p)) for n, p in result.meta["top5"]]
    result.meta["input"] = os.path.abspath(source)  # where it is now (checked to be the one explained)
    if isinstance(result, ClipAttribution):
        line, windows, crops = _clip_plan(path, result, source)
        keyframes = how.keyframes if how.keyframes is not None else len(result.meta.get("keyframes", []))
        outputs = _outputs(path, rel, True, how, [source], keyframes)
        if vmax is not None:
            result.meta["vmax"] = float(vmax)
        written = draw_clip(result, source, line, windows, crops, how.layout or str(result.meta["layout"]), keyframes,
                            outputs, progress)
        return Explained(result, outputs, str(result.meta["target_label"]), top, len(windows), len(crops.tiles),
                         written)
    image, box = _photo_image(path, result, source)
    outputs = _outputs(path, rel, False, how, [source], 0)
    draw_photo(result, image, box, float(vmax if vmax is not None else result.meta["vmax"]), outputs)
    return Explained(result, outputs, str(result.meta["target_label"]), top)
