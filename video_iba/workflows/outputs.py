"""Rules for output folders: outputs never replace inputs, one run per folder at a time, one output
name per input.

* An output path that is an input path is refused (a photo explained into its own folder as
  ``.png``); a batch's output folder may not be its input folder, and one inside the input folder is
  left out of the inputs (so a rerun does not explain its own figures).
* A batch, an evaluation and a readout training hold ``OUT/.video-iba.lock`` (the holder's host and
  process id) while they run; a second run into the same folder is refused, a lock left by a
  process that no longer runs on this host is taken over with a warning. Under torchrun rank 0
  holds it for all ranks.
* Inputs of a batch that would write the same outputs (``cat.jpg`` and ``cat.png`` in one folder)
  are named by their whole file name (``cat.jpg.png``, ``cat.png.png``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Iterator, Sequence

from ..distributed import barrier, rank, refuse_on_every_rank
from ..errors import UserInputError
from ..files import make_folder, remove_empty

log = logging.getLogger(__name__)

LOCK = ".video-iba.lock"


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same file (the second may not exist yet)."""
    return os.path.realpath(a) == os.path.realpath(b)


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (after resolving links)."""
    p, f = os.path.realpath(path), os.path.realpath(folder)
    return p == f or p.startswith(f.rstrip(os.sep) + os.sep)


def refuse_overwriting_inputs(outputs: Sequence[str], inputs: Sequence[str]) -> None:
    """Refuse when an output would replace an input."""
    for out in outputs:
        for inp in inputs:
            if same_file(out, inp):
                raise UserInputError(f"the output '{out}' would replace the input '{inp}'; write to another folder "
                                     f"with {{out_dir}}", options=["out_dir"])


def batch_inputs_outside(inputs: Sequence[str], base: str, out_dir: str, folder_input: bool) -> list[str]:
    """The inputs of a batch without those inside its output folder (earlier results); an output
    folder that is the input folder itself is refused."""
    if folder_input and same_file(base, out_dir):
        raise UserInputError(f"the output folder '{out_dir}' is the input folder; its figures would be explained by the "
                             f"next run and outputs could replace inputs: write to another folder with {{out_dir}}",
                             options=["out_dir"])
    kept = [p for p in inputs if not inside(p, out_dir)]
    if len(kept) < len(inputs):
        log.info("left out %d files inside the output folder %s (results of earlier runs)", len(inputs) - len(kept),
                 out_dir)
    if not kept:
        raise UserInputError(f"every input lies inside the output folder '{out_dir}'; write to another folder with "
                             f"{{out_dir}}", options=["out_dir"])
    return kept


def output_stems(inputs: Sequence[str]) -> dict[str, str]:
    """The output name (without suffix) of every input: its stem, or its whole file name where two
    inputs of one folder share a stem."""
    by_key: dict[tuple[str, str], list[str]] = {}
    for p in inputs:
        by_key.setdefault((os.path.dirname(os.path.abspath(p)), Path(p).stem), []).append(p)
    return {p: (Path(p).name if len(group) > 1 else Path(p).stem) for group in by_key.values() for p in group}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _take(path: str) -> str | None:
    """Create the lock file; ``None`` on success, else why not."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path, encoding="utf-8") as fh:
                    holder = json.load(fh)
                host, pid = str(holder["host"]), int(holder["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                host, pid = "?", -1
            if host == me["host"] and pid > 0 and not _alive(pid):
                log.warning("taking over %s, left by process %d, which no longer runs", path, pid)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            return (f"another run (process {pid} on {host}) is writing to '{os.path.dirname(path)}'; wait for it to "
                    f"finish, or write to another folder; if no such run exists, remove {path}")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        return None
    return f"cannot take the lock {path}; remove it if no other run writes there"


@contextlib.contextmanager
def folder_lock(out_dir: str) -> Iterator[None]:
    """Hold ``OUT/.video-iba.lock`` for the duration (rank 0 for all ranks; every rank must enter)."""
    path = os.path.join(out_dir, LOCK)
    made: list[str] = []
    why: str | None = None
    if rank() == 0:
        try:
            made = make_folder(out_dir)
            why = _take(path)
        except UserInputError as exc:
            why = str(exc)
        if why is not None:
            remove_empty(made)
    refuse_on_every_rank(why)
    ended = False
    try:
        yield
        ended = True
    finally:
        if ended:  # after an error no rank waits for the others
            barrier()
        if rank() == 0:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            remove_empty(made)  # a run that wrote nothing leaves no folder
