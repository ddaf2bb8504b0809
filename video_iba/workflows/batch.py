"""Batch explanation: ``video-iba explain FOLDER`` (or a list file), resumable, sharded over torchrun ranks.

Inputs: every image and video under a folder (recursive, sorted), or the lines of a ``.txt``
file (see :func:`~video_iba.io.discovery.batch_inputs`). Each input is explained on its own (the
same settings for all; photos and videos each with their model, loaded once per process) and
written under ``OUT`` at its path relative to the folder (``a/b.jpg`` -> ``OUT/a/b.png`` and
``.npz``), atomically.

``OUT/manifest.jsonl`` gets one line per input as soon as it is done: input, outputs, target,
label, total bits (information methods), seconds, status (``ok`` or ``error: ...``) and rank.
Under torchrun each rank takes every ``world``-th input and appends to its own
``manifest.rank<r>.jsonl``; rank 0 merges them into ``manifest.jsonl`` at the end. A rerun skips
every input with an ``ok`` line in any manifest, so a killed run loses nothing already written,
and a failing input is recorded and does not stop the others.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..distributed import barrier, gather, process_group, rank, shard
from ..errors import UserInputError
from ..files import ensure_writable_dir
from ..io.discovery import batch_inputs
from ..io.ledger import Ledger, read_records, rewrite_records
from .explain import Options, explain_file
from .inputs import plan_input
from .session import Progress, Sessions, Settings, no_progress

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


@dataclass
class BatchCounts:
    """Inputs of a batch run: explained now, done in an earlier run, failed (summed over ranks);
    ``lead``: this process is rank 0."""

    inputs: int
    done: int
    skipped: int
    failed: int
    lead: bool = True


def explain_batch(path: str, settings: Settings, out_dir: str, options: Options = Options(),
                  progress: Progress = no_progress) -> BatchCounts:
    """Explain every input of a folder or list file into ``out_dir`` (see the module text); call it
    on every rank under torchrun."""
    inputs, base = batch_inputs(path)
    with process_group(settings.device) as device:
        sessions = Sessions(dataclasses.replace(settings, device=device))

        def one(p: str, out_sub: str) -> dict[str, Any]:
            session = sessions.for_input(p)
            return explain_file(session, plan_input(p, session.spec, options.span), out_sub, options).manifest

        counts = run_batch(inputs, base, out_dir, one, progress)
        totals = {k: sum(c[k] for c in gather(counts)) for k in counts}
        lead = rank() == 0
    return BatchCounts(len(inputs), totals["done"], totals["skipped"], totals["failed"], lead)


def _manifests(out_dir: str) -> list[str]:
    return [MANIFEST] + sorted(n for n in os.listdir(out_dir) if n.startswith("manifest.rank") and n.endswith(".jsonl"))


def _done(out_dir: str) -> set[str]:
    return {os.path.abspath(r["input"]) for name in _manifests(out_dir)
            for r in read_records(os.path.join(out_dir, name)) if r.get("status") == "ok"}


def run_batch(
    inputs: Sequence[str],
    base: str,
    out_dir: str,
    explain_one: Callable[[str, str], dict[str, Any]],
    progress: Progress = no_progress,
) -> dict[str, int]:
    """Explain every input not yet done; ``explain_one(path, out_subdir)`` returns the manifest fields.

    Returns this rank's counts: ``done`` (this run), ``skipped`` (finished earlier), ``failed``.
    """
    ensure_writable_dir(out_dir)
    finished = _done(out_dir)
    barrier()  # every rank has read the manifests before any writes
    me = rank()
    mine = shard(list(inputs))
    todo = [p for p in mine if os.path.abspath(p) not in finished]
    counts = {"done": 0, "skipped": len(mine) - len(todo), "failed": 0}
    bar = progress("explaining", len(todo), "input")
    try:
        with Ledger(os.path.join(out_dir, f"manifest.rank{me}.jsonl")) as manifest:
            for path in todo:
                rel = os.path.relpath(os.path.dirname(os.path.abspath(path)), os.path.abspath(base))
                sub = os.path.normpath(os.path.join(out_dir, rel)) if not rel.startswith("..") else out_dir
                t0 = time.perf_counter()
                entry: dict[str, Any] = {"input": os.path.abspath(path)}
                try:
                    entry.update(explain_one(path, sub))
                    entry["status"] = "ok"
                    counts["done"] += 1
                except (UserInputError, RuntimeError, OSError, ValueError) as exc:
                    entry["status"] = f"error: {exc}"
                    counts["failed"] += 1
                    log.warning("%s failed: %s", path, exc)
                entry.update({"seconds": round(time.perf_counter() - t0, 3), "rank": me})
                manifest.append(entry)
                bar.update(1)
    finally:
        bar.close()
    barrier()
    if me == 0:
        _merge_manifests(out_dir)
    barrier()
    return counts


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
