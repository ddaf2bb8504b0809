"""``video-iba compare``: one figure (photo) or one MP4 (video) with a labelled panel per method.

Every method explains the same target with the same model, through the same stages as
``explain``: for a video, every window of the range and every source frame, so the comparison
MP4 lasts as long as the range it explains.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import UserInputError
from ..files import atomic_writes, check_names, ensure_writable_dir
from ..models.registry import model_spec
from ..render.compare import compare_clip, compare_image, compare_path, normalised_to_rgb
from ..results import Unit
from .explain import MapStore, Options, assemble_clip, attribute_windows, predict
from .inputs import InputPlan, plan_input
from .outputs import refuse_overwriting_inputs
from .session import Progress, Session, Settings, no_progress, resolve_target


@dataclass
class Compared:
    """What :func:`compare_file` wrote: the figure or MP4, the explained class, each method's unit."""

    output: str
    target: int
    label: str
    units: list[tuple[str, Unit]]


def compare_file(path: str, methods: Sequence[str], settings: Settings, out_dir: str,
                 options: Options = Options(), progress: Progress = no_progress) -> Compared:
    """Explain ``path`` with every method of ``methods`` (one session, one model load) and write
    ``OUT/<stem>-compare.png`` (photo) or ``.mp4`` (video)."""
    names = [m.strip() for m in methods if m.strip()]
    if not names:
        raise UserInputError("no methods given; give {methods} e.g. iba,gradcam,saliency", options=["methods"])
    ensure_writable_dir(out_dir)  # before any work
    plan = plan_input(path, model_spec(settings.model_for(path), bool(settings.layers), settings.weights),
                      options.span)
    session = Session.open(settings, plan.spec.name)
    sessions = [session.with_method(m) for m in names]
    out = compare_path(path, out_dir, plan.is_video)
    check_names([out])
    refuse_overwriting_inputs([out], [path])
    target = resolve_target(options.target, session.labels)
    if target is None:
        probs = predict(session, plan, progress)
        target = int(probs.argmax())
    if plan.is_video:
        units = _clip(sessions, plan, target, options, out, progress)
    else:
        units = _photo(sessions, plan, target, out, progress)
    return Compared(out, target, session.labels[target], units)


def _photo(sessions: Sequence[Session], plan: InputPlan, target: int, out: str,
           progress: Progress) -> list[tuple[str, Unit]]:
    _wi, (x,) = next(plan.units())
    maps: list[tuple[str, np.ndarray, Unit]] = []
    bar = progress("comparing", len(sessions), "method")
    try:
        for s in sessions:
            attr = s.attribute(x, target)
            maps.append((s.method.name, attr.values.numpy(), attr.unit))
            bar.update(1)
    finally:
        bar.close()
    spec = plan.spec
    rgb = normalised_to_rgb(x[0].numpy(), spec.mean, spec.std)
    compare_image(rgb, maps, sessions[0].labels[target], out)
    return [(m, u) for m, _, u in maps]


def _clip(sessions: Sequence[Session], plan: InputPlan, target: int, options: Options, out: str,
          progress: Progress) -> list[tuple[str, Unit]]:
    assert plan.line is not None
    results = []
    stores = [MapStore(plan, os.path.dirname(os.path.abspath(out))) for _ in sessions]
    try:
        for s, store in zip(sessions, stores):
            first: dict[str, Any] = {}
            windows = attribute_windows(s, plan, target, progress, first, store)
            probs = np.mean([p for w in windows for p in w.probs], axis=0)
            results.append((s.method.name, assemble_clip(s, plan, windows, store.values, target, options, probs,
                                                         first, 0.0)))
        bar = progress("rendering", len(results[0][1].source_frame_indices), "frame")
        try:
            with atomic_writes([out]) as (tmp,):
                compare_clip(results, plan.path, tmp, timeline=plan.line, windows=plan.windows, plan=plan.crops,
                             explained=sessions[0].labels[target], on_frame=bar.update)
        finally:
            bar.close()
    finally:
        for store in stores:
            store.close()
    return [(m, r.unit) for m, r in results]


__all__ = ["Compared", "compare_file"]
