"""Batch explanation: ``video-iba explain FOLDER`` (or a list file), resumable, sharded over torchrun ranks.

Inputs: every image and video under a folder (recursive, sorted), or the lines of a ``.txt``
file (see :func:`~video_iba.io.discovery.batch_inputs`). Each input is explained with the same
settings (photos and videos each with their model, loaded once per process; the per-sample
bottleneck fits runs of photos of one model together, the session's batch size at a time, each
as alone) and written under ``OUT`` at its path relative to the folder (``a/b.jpg`` ->
``OUT/a/b.png`` and ``.npz``), atomically.

``OUT/manifest.jsonl`` gets one line per input as soon as it is done: input, outputs, target,
label, total bits (information methods), seconds, status (``ok`` or ``error: ...``), rank and
a digest of the settings that decided its outputs (:func:`fingerprint`; a photo's leaves out the
options that apply to videos only, so changing those explains the videos again, not the photos).
Under torchrun each rank takes every ``world``-th input and appends to its own
``manifest.rank<r>.jsonl``; rank 0 merges them into ``manifest.jsonl`` at the end. A rerun skips
every input with an ``ok`` line in any manifest, so a killed run loses nothing already written,
and a failing input is recorded and does not stop the others.

With ``vmax="shared"`` every output is drawn on its own scale as it is explained (a stopped run
leaves usable files), then, once all are done, those not yet on one colour scale, the largest
value of all the batch's maps, are drawn again from their ``.npz`` (as ``video-iba redraw``
does; a rerun with nothing new draws nothing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..distributed import barrier, gather, process_group, rank, same_on_every_rank, shard
from ..errors import UserInputError, failure_reason
from ..files import check_writable_dir, file_digest
from ..io.discovery import batch_inputs, is_video_file
from ..io.ledger import Ledger, read_records, rewrite_records
from ..models.registry import weights_digest
from .explain import SHARED, Explained, Options, explain_file, explain_photos
from .inputs import plan_input
from .outputs import batch_inputs_outside, folder_lock, output_stems
from .redraw import Redraw, check_files, check_workers, draw_npz, drawing_failure, drawing_processes, redraw, shared_top
from .session import Progress, Session, Sessions, Settings, no_progress

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


@dataclass
class Drawing:
    """An input explained, its drawing under way in another process: the manifest fields of its
    explanation, and the drawing's outputs and seconds to come (:func:`~video_iba.workflows.redraw.draw_npz`)."""

    manifest: dict[str, Any]
    drawn: Future[tuple[list[str], float]]


@dataclass
class BatchCounts:
    """Inputs of a batch run (summed over ranks): explained now, done in an earlier run with the same
    settings, failed, and of those explained now, how many again because the settings changed or
    their outputs were missing; ``lead``: this process is rank 0."""

    inputs: int
    done: int
    skipped: int
    failed: int
    changed: int = 0
    missing: int = 0
    lead: bool = True
    vmax: float | None = None
    redrawn: int = 0


def fingerprint(settings: Settings, options: Options, session: Session | None = None,
                weights: str | None = None) -> str:
    """What decides a batch's outputs, as a short digest (the device and the batch size do not):
    the settings and options, the contents of the statistics, readout and weights files they
    name, and with an open ``session`` its model's spec, weights (``weights``: their
    :func:`weights_digest`, where already computed) and class names."""
    s = dataclasses.asdict(settings)
    s.pop("device")
    s.pop("batch_size")
    s["stats"] = [os.path.abspath(p) for p in settings.stats or ()]
    s["readout"] = os.path.abspath(settings.readout) if settings.readout else None
    for key in ("cam_layer", "sampling_rate", "frames"):
        if s[key] is None:
            s.pop(key)  # folders explained before the option existed resume
    shown = dataclasses.asdict(options)
    for key in ("keyframes", "maps_only"):
        if not shown[key]:
            shown.pop(key)  # folders explained before the option existed resume
    decided: dict[str, Any] = {"settings": s, "options": shown}
    files = [*(settings.stats or ()), *([settings.readout] if settings.readout else []),
             *([settings.weights] if os.path.isfile(settings.weights) else [])]
    if files:  # a checkpoint or statistics file rewritten in place is other settings
        decided["files"] = [file_digest(f) for f in files]
    if session is not None:
        decided["model"] = {"spec": dataclasses.asdict(session.spec),
                            "weights": weights or weights_digest(session.model), "labels": list(session.labels)}
    text = json.dumps(decided, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _as_photos_see_them(settings: Settings, options: Options) -> tuple[Settings, Options]:
    """``settings`` and ``options`` with those that apply to videos only (range, stride and
    coverage, layout, keyframe sheet, sampling rate, frames) at their defaults: what decides a photo's
    outputs in a batch (its fingerprint is then the same as of a batch that left them alone)."""
    default = Options()
    return (dataclasses.replace(settings, sampling_rate=None, frames=None),
            dataclasses.replace(options, span=default.span, layout=default.layout, keyframes=default.keyframes))


def explain_batch(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], settings: Settings | None,
                  out_dir: str, options: Options = Options(), progress: Progress = no_progress, *,
                  session: Session | None = None, workers: int = 1) -> BatchCounts:
    """Explain every input of a folder, a list file or a list of paths into ``out_dir`` (see the
    module text; a list's outputs go under ``out_dir`` at their paths relative to the folder holding
    them all); call it on every rank under torchrun.

    ``settings`` open a registry model per kind of input (photos, videos). Or pass
    ``settings=None`` and an open ``session`` (e.g. a model of your own,
    :meth:`Session.for_model`) that explains every input with its model, method and settings; the
    inputs must then all be of the kind its model takes. Under torchrun each rank builds its own
    session (on the rank's device) and the ranks' weights must agree. A rerun redoes the inputs
    explained with other weights, spec or class names.

    ``workers`` > 1 draws the outputs in that many processes of their own while this one explains
    the next inputs (each input's maps are written first, then drawn from them as
    :func:`~video_iba.workflows.redraw.redraw` draws them: the same files); an input's manifest
    line is written once it is drawn. For runs where drawing takes as long as explaining (a GPU
    explains a clip in seconds; drawing its MP4 takes longer) and cores are free.
    """
    check_workers(workers)
    if workers > 1 and options.maps_only:
        raise UserInputError("{workers} draws the outputs and {maps_only} draws none; drop one of them",
                             options=["workers", "maps_only"])
    if (settings is None) == (session is None):
        raise UserInputError("give explain_batch either settings (registry models) or an open session with "
                             "settings=None, " + ("not both" if session is not None else "not neither"))
    inputs, base = batch_inputs(path)
    inputs = batch_inputs_outside(inputs, base, out_dir, isinstance(path, (str, os.PathLike)) and os.path.isdir(path))
    if session is not None:
        _refuse_other_kind(inputs, session)
    chosen = session.settings if session is not None else settings
    assert chosen is not None
    stems = output_stems(inputs)
    check_writable_dir(out_dir)
    with process_group(str(session.device) if session is not None else chosen.device) as device, \
            folder_lock(out_dir), contextlib.ExitStack() as stack:
        if session is not None and device != str(session.device) and device.startswith("cuda"):
            raise UserInputError(f"rank {rank()} runs on {device} and its session's model is on {session.device}; "
                                 f"build each rank's session on cuda:LOCAL_RANK")
        sessions = Sessions(dataclasses.replace(chosen, device=device))

        def session_for(p: str) -> Session:
            return session if session is not None else sessions.for_input(p)

        def model_of(p: str) -> str:
            return session.spec.name if session is not None else chosen.model_for(p)

        digests: dict[str, str] = {}
        for name in sorted({model_of(p) for p in inputs}):  # every rank loads every model once, in order
            digests[name] = weights_digest(session.model if session is not None else sessions.open(name).model)
            same_on_every_rank(digests[name], f"the weights of {name}")

        own_scale = dataclasses.replace(options, vmax=None) if options.vmax == SHARED else options
        drawers = stack.enter_context(drawing_processes(workers)) if workers > 1 else None
        if drawers is not None:  # the maps first; the drawing as redraw draws them, keyframe sheet included
            own_scale = dataclasses.replace(own_scale, maps_only=True, keyframes=0)

        def explain_group(paths: Sequence[str], subs: Sequence[str]) -> list[dict[str, Any] | Exception | Drawing]:
            opened = session_for(paths[0])
            if len(paths) > 1 or not is_video_file(paths[0]):
                done: list[Explained | Exception] = list(
                    explain_photos(opened, paths, subs, own_scale, [stems[p] for p in paths]))
            else:
                plan = plan_input(paths[0], opened.spec, options.span)
                done = [explain_file(opened, plan, subs[0], own_scale, stem=stems[paths[0]])]
            if drawers is None:
                return [r if isinstance(r, Exception) else r.manifest for r in done]
            how = Redraw(keyframes=options.keyframes or None)
            return [r if isinstance(r, Exception) else Drawing(r.manifest, drawers.submit(draw_npz, r.outputs[0], how))
                    for r in done]

        def groups(todo: Sequence[str]) -> list[list[str]]:
            """Runs of photos explained by one model, as many as the model's fits take; videos alone
            (a video's windows and crops are fitted together)."""
            out: list[list[str]] = []
            for p in todo:
                name = None if is_video_file(p) else model_of(p)
                last = out[-1] if out else None
                if name is not None and last and not is_video_file(last[0]) \
                        and model_of(last[0]) == name and len(last) < _fit_size(session_for(p)):
                    last.append(p)
                else:
                    out.append([p])
            return out

        own = digests.get(session.spec.name) if session is not None else None
        by_kind: dict[bool, str] = {}
        for video in {is_video_file(p) for p in inputs}:
            seen = (chosen, options) if video else _as_photos_see_them(chosen, options)
            by_kind[video] = fingerprint(*seen, session, own)
        counts = run_batch(inputs, base, out_dir, explain_group, progress,
                           {p: by_kind[is_video_file(p)] for p in inputs}, groups, 2 * workers)
        vmax = None
        if options.vmax == SHARED:
            vmax, counts["redrawn"] = _share_scale(inputs, out_dir, progress, workers)
        totals = {k: sum(c[k] for c in gather(counts)) for k in counts}
        lead = rank() == 0
    return BatchCounts(len(inputs), totals["done"], totals["skipped"], totals["failed"], totals["changed"],
                       totals["missing"], lead, vmax, totals.get("redrawn", 0))


def _share_scale(inputs: Sequence[str], out_dir: str, progress: Progress, workers: int = 1) -> tuple[float | None, int]:
    """Draw every explained input of the batch on one colour scale, the largest value of their maps
    (on every rank, each drawing its share of them); the top of that scale (``None`` where none was
    explained) and how many outputs this rank drew again (those drawn on another scale)."""
    finished = _finished(out_dir)
    npzs = [o for p in inputs for o in finished.get(os.path.abspath(p), {}).get("output", []) if o.endswith(".npz")]
    mine = shard(npzs)
    scales = check_files(mine)
    every = [s for part in gather(scales) for s in part]
    if not every:
        return None, 0
    top = shared_top(every)
    stale = [p for p, s in zip(mine, scales) if s.drawn != top]
    if stale:
        redraw(stale, Redraw(vmax=top), progress, workers=workers)
    return top, len(stale)


def _refuse_other_kind(inputs: Sequence[str], session: Session) -> None:
    """Refuse a batch holding inputs of the kind the session's model does not take."""
    video = session.spec.is_video
    other = [p for p in inputs if is_video_file(p) != video]
    if other:
        kind, takes = ("photos", "videos") if video else ("videos", "photos")
        raise UserInputError(f"{len(other)} of the {len(inputs)} inputs are {kind} (first: '{other[0]}') and "
                             f"{session.spec.name} takes {takes}; explain them with a session of a model that takes "
                             f"{kind}, or list the {takes} alone in a .txt file")


def _fit_size(session: Session) -> int:
    return session.batches.size if session.batches is not None and session.method.fitted else 1


def _manifests(out_dir: str) -> list[str]:
    return [MANIFEST] + sorted(n for n in os.listdir(out_dir) if n.startswith("manifest.rank") and n.endswith(".jsonl"))


def _finished(out_dir: str) -> dict[str, dict[str, Any]]:
    """The last ``ok`` record of every input in the manifests."""
    return {os.path.abspath(r["input"]): r for name in _manifests(out_dir)
            for r in read_records(os.path.join(out_dir, name)) if r.get("status") == "ok" and "input" in r}


def _reason_to_redo(record: dict[str, Any] | None, settings: str | None) -> str | None:
    """Why an input is explained (again): ``"new"``, ``"changed"``, ``"missing"``, or ``None`` (done)."""
    if record is None:
        return "new"
    if settings is not None and record.get("settings", settings) != settings:  # lines of older versions: unknown
        return "changed"
    if not all(os.path.exists(p) for p in record.get("output", [])):
        return "missing"
    return None


def run_batch(
    inputs: Sequence[str],
    base: str,
    out_dir: str,
    explain_group: Callable[[Sequence[str], Sequence[str]], Sequence[dict[str, Any] | Exception | Drawing]],
    progress: Progress = no_progress,
    settings: str | Mapping[str, str] | None = None,
    groups: Callable[[Sequence[str]], Sequence[Sequence[str]]] | None = None,
    drawings_ahead: int = 2,
) -> dict[str, int]:
    """Explain every input not yet done; ``explain_group(paths, out_subdirs)`` returns each input's
    manifest fields, the exception it failed with, or its :class:`Drawing` under way.

    ``groups`` splits the inputs to do into the groups passed together (default: one input each).
    ``settings``: a digest of the settings, for every input or by input. An input counts as done
    when a manifest records it ``ok`` with the same digest and its outputs still exist. Any
    exception of one input, or of its group, or of its drawing, is recorded and the batch goes on;
    an input's line is written when its drawing has ended, and before the next group is explained
    at most ``drawings_ahead`` drawings wait (a drawing process that ended abruptly stops the
    batch). Returns this rank's counts: ``done`` (this run), ``skipped`` (finished earlier),
    ``failed``, ``changed`` and ``missing`` (done again for those reasons).
    """
    check_writable_dir(out_dir)
    finished = _finished(out_dir)
    barrier()  # every rank has read the manifests before any writes
    me = rank()
    mine = shard(list(inputs))
    digests = settings if isinstance(settings, Mapping) else dict.fromkeys(mine, settings)
    reasons = {p: _reason_to_redo(finished.get(os.path.abspath(p)), digests[p]) for p in mine}
    todo = [p for p in mine if reasons[p] is not None]
    counts = {"done": 0, "skipped": len(mine) - len(todo), "failed": 0, "changed": 0, "missing": 0}
    bar = progress("explaining", len(todo), "input")
    drawing: dict[Future[tuple[list[str], float]], tuple[str, dict[str, Any], float]] = {}
    try:
        with Ledger(os.path.join(out_dir, f"manifest.rank{me}.jsonl")) as manifest:

            def record(path: str, res: dict[str, Any] | BaseException, seconds: float) -> None:
                entry: dict[str, Any] = {"input": os.path.abspath(path)}
                if isinstance(res, BaseException):
                    why = failure_reason(res)
                    entry["status"] = f"error: {why}"
                    counts["failed"] += 1
                    log.warning("%s failed: %s", path, why)
                else:
                    entry.update(res)
                    entry["status"] = "ok"
                    counts["done"] += 1
                    if reasons[path] in ("changed", "missing"):
                        counts[str(reasons[path])] += 1
                entry.update({"seconds": round(seconds, 3), "rank": me,
                              **({"settings": digests[path]} if digests[path] is not None else {})})
                manifest.append(entry)
                bar.update(1)

            def settle(most: int) -> None:
                """Record the drawings that have ended, waiting until at most ``most`` are under way."""
                while drawing:
                    ended = {f for f in drawing if f.done()}
                    if not ended and len(drawing) <= most:
                        return
                    if not ended:
                        ended = wait(list(drawing), return_when=FIRST_COMPLETED).done
                    for future in sorted(ended, key=lambda f: drawing[f][0]):
                        path, fields, seconds = drawing.pop(future)
                        error = future.exception()
                        if isinstance(error, BrokenProcessPool):  # the process ended: nothing more is drawn
                            raise drawing_failure(error)
                        if error is not None:
                            record(path, error, seconds)
                        else:
                            outputs, drawn_in = future.result()
                            record(path, {**fields, "output": [os.path.abspath(o) for o in outputs]},
                                   seconds + drawn_in)

            for group in (groups(todo) if groups is not None else [[p] for p in todo]):
                settle(drawings_ahead)
                subs = [_out_sub(out_dir, base, p) for p in group]
                t0 = time.perf_counter()
                try:
                    results: Sequence[dict[str, Any] | Exception | Drawing] = explain_group(group, subs)
                except Exception as exc:  # the group's failure is each input's
                    results = [exc] * len(group)
                seconds = (time.perf_counter() - t0) / len(group)
                for path, res in zip(group, results):
                    if isinstance(res, Drawing):
                        drawing[res.drawn] = (path, res.manifest, seconds)
                    else:
                        record(path, res, seconds)
            settle(0)
    finally:
        for future in drawing:
            future.cancel()
        bar.close()
    barrier()
    if me == 0:
        _merge_manifests(out_dir)
    barrier()
    return counts


def _out_sub(out_dir: str, base: str, path: str) -> str:
    """The output folder of ``path``: its folder relative to ``base``, under ``out_dir``."""
    rel = os.path.relpath(os.path.dirname(os.path.abspath(path)), os.path.abspath(base))
    return os.path.normpath(os.path.join(out_dir, rel)) if not rel.startswith("..") else out_dir


def _merge_manifests(out_dir: str) -> None:
    """``manifest.jsonl``: the last line per input over all manifests, sorted by input; an earlier
    success stands against a later failure."""
    latest: dict[str, dict[str, Any]] = {}
    names = _manifests(out_dir)
    for name in names:
        for r in read_records(os.path.join(out_dir, name)):
            if r["input"] in latest and latest[r["input"]].get("status") == "ok" and r.get("status") != "ok":
                continue
            latest[r["input"]] = r
    rewrite_records(os.path.join(out_dir, MANIFEST), [latest[k] for k in sorted(latest)])
    for name in names[1:]:
        os.remove(os.path.join(out_dir, name))


__all__ = ["MANIFEST", "BatchCounts", "explain_batch", "run_batch"]
