"""Batch explanation: ``video-iba explain FOLDER`` (or a list file), resumable, sharded over torchrun ranks.

Inputs: every image and video under a folder (recursive, sorted), or the lines of a ``.txt``
file (one path per line, relative paths taken from the list file's folder, ``#`` comments and
blank lines ignored). Each input is explained on its own (the same command-line settings for
all) and written under ``OUT`` at its path relative to the folder (``a/b.jpg`` ->
``OUT/a/b.png`` and ``.npz``), atomically.

``OUT/manifest.jsonl`` gets one line per input as soon as it is done: input, outputs, target,
label, total bits (IBA and readout), seconds, status (``ok`` or ``error: ...``) and rank. Under
torchrun each rank takes every ``world``-th input and appends to its own
``manifest.rank<r>.jsonl``; rank 0 merges them into ``manifest.jsonl`` at the end. A rerun skips
every input with an ``ok`` line in any manifest, so a killed run loses nothing already written,
and a failing input is recorded and does not stop the others. The model (and readout) is loaded once
per process and shared by all inputs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from . import distributed
from .errors import UserInputError
from .io.atomic import atomic_write, drop_unfinished_line, ensure_writable_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


def is_batch_input(path: str) -> bool:
    return os.path.isdir(path) or path.lower().endswith(".txt")


def batch_inputs(path: str) -> tuple[list[str], str]:
    """The inputs of a folder or list file, and the folder their output paths are relative to."""
    from .pipeline import IMAGE_SUFFIXES
    from .video_pipeline import VIDEO_SUFFIXES

    if os.path.isdir(path):
        files = sorted(str(p) for p in Path(path).rglob("*")
                       if p.is_file() and p.suffix.lower() in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES))
        if not files:
            raise UserInputError(f"no images or videos found in '{path}'; give a folder of inputs or a list file")
        return files, path
    if not os.path.isfile(path):
        raise UserInputError(f"list file '{path}' does not exist; give a folder or a .txt file of paths")
    base = os.path.dirname(os.path.abspath(path))
    files = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#"):
                files.append(line if os.path.isabs(line) else os.path.join(base, line))
    if not files:
        raise UserInputError(f"list file '{path}' names no inputs; give one path per line")
    return files, base


def _done(out_dir: str) -> set[str]:
    done: set[str] = set()
    for name in os.listdir(out_dir):
        if name == MANIFEST or (name.startswith("manifest.rank") and name.endswith(".jsonl")):
            with open(os.path.join(out_dir, name), encoding="utf-8") as fh:
                for line in fh:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a kill
                    if r.get("status") == "ok":
                        done.add(os.path.abspath(r["input"]))
    return done


def run_batch(
    inputs: Sequence[str],
    base: str,
    out_dir: str,
    explain_one: Callable[[str, str], dict[str, Any]],
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> dict[str, int]:
    """Explain every input not yet done; ``explain_one(path, out_subdir)`` returns the manifest fields.

    Returns counts: ``done`` (this run), ``skipped`` (finished earlier), ``failed``.
    """
    ensure_writable_dir(out_dir)
    finished = _done(out_dir)
    distributed.barrier()  # every rank has read the manifests before any writes
    rank = distributed.rank()
    mine = distributed.shard(list(inputs))
    todo = [p for p in mine if os.path.abspath(p) not in finished]
    counts = {"done": 0, "skipped": len(mine) - len(todo), "failed": 0}
    tick = progress(len(todo)) if progress is not None else None
    part = os.path.join(out_dir, f"manifest.rank{rank}.jsonl")
    drop_unfinished_line(part)  # a line cut by a kill: new lines start on their own
    with open(part, "a", encoding="utf-8") as manifest:
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
            entry.update({"seconds": round(time.perf_counter() - t0, 3), "rank": rank})
            manifest.write(json.dumps(entry) + "\n")
            manifest.flush()
            if tick is not None:
                tick(1)
    distributed.barrier()
    if rank == 0:
        _merge_manifests(out_dir)
    distributed.barrier()
    return counts


def _merge_manifests(out_dir: str) -> None:
    """``manifest.jsonl``: the last line per input over all manifests, sorted by input."""
    latest: dict[str, str] = {}
    names = [MANIFEST] + sorted(n for n in os.listdir(out_dir) if n.startswith("manifest.rank") and n.endswith(".jsonl"))
    for name in names:
        path = os.path.join(out_dir, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r["input"] in latest and json.loads(latest[r["input"]]).get("status") == "ok" \
                        and r.get("status") != "ok":
                    continue  # an earlier success stands
                latest[r["input"]] = json.dumps(r)
    with atomic_write(os.path.join(out_dir, MANIFEST)) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for key in sorted(latest):
            fh.write(latest[key] + "\n")
    for name in names[1:]:
        os.remove(os.path.join(out_dir, name))


__all__ = ["is_batch_input", "batch_inputs", "run_batch", "MANIFEST"]
