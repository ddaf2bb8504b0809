"""Atomic file output: write to a temporary file beside the target, then rename it into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator, Sequence

from ..errors import UserInputError


def _temp_beside(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    except OSError as exc:
        raise UserInputError(f"cannot write to '{folder}' ({exc.strerror or exc}); choose a writable output folder") from exc
    os.close(fd)
    return tmp


def _default_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give: 0666 minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def ensure_writable_dir(folder: str | os.PathLike[str]) -> None:
    """Create ``folder`` if needed and check that files can be written there, before any long computation."""
    os.unlink(_temp_beside(os.path.join(os.fspath(folder), "probe")))


@contextlib.contextmanager
def atomic_writes(paths: Sequence[str | os.PathLike[str]]) -> Iterator[list[str]]:
    """Yield one temporary path per target; on success all are renamed into place, else all removed.

    A reader never sees a half-written target, and a failure leaves every target as it was.
    """
    targets = [os.fspath(p) for p in paths]
    temps: list[str] = []
    try:
        for t in targets:
            temps.append(_temp_beside(t))
        yield list(temps)
        mode = _default_mode()
        for tmp, target in zip(temps, targets):
            with contextlib.suppress(OSError):  # temporary files are private (0600); outputs are not
                os.chmod(tmp, mode)
            os.replace(tmp, target)
        temps = []
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[str]:
    """Single-file form of :func:`atomic_writes`."""
    with atomic_writes([path]) as (tmp,):
        yield tmp


def drop_unfinished_line(path: str | os.PathLike[str]) -> bool:
    """Cut an append-only line file (JSONL) back to its last complete line, where an interrupted
    writer left a line without its newline; returns whether something was cut."""
    if not os.path.exists(path):
        return False
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)
            return True
    return False

