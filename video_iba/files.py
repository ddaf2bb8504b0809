"""Files written atomically and read back safely.

Every output of the package is written to a temporary file beside its target and renamed into
place, so a reader never sees a half-written file and a failure leaves the target as it was.
Files saved with ``torch.save`` (statistics, readout checkpoints, model weights) are read with
``weights_only=True`` and a recorded format string, so a foreign or truncated file is refused
with one clear message instead of unpickled.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
from typing import Any, Iterator, Sequence

import torch

from .errors import UserInputError


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, hex (to tell whether a file changed between two runs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _existing_above(folder: str) -> str:
    """The nearest folder at or above ``folder`` that exists (``folder`` itself when it does);
    a file on the way is refused."""
    above = folder
    while not os.path.isdir(above) and os.path.dirname(above) != above:
        if os.path.lexists(above):
            raise UserInputError(f"cannot write to '{folder}': '{above}' is a file, not a folder; give an output folder "
                                 f"that is not a file's name")
        above = os.path.dirname(above)
    return above


def make_folder(folder: str | os.PathLike[str]) -> list[str]:
    """Create ``folder`` and the folders above it that are missing; the ones created, outermost
    first (for :func:`remove_empty`)."""
    path = os.path.abspath(os.fspath(folder))
    existing = _existing_above(path)
    made: list[str] = []
    below = path
    while below != existing:
        made.append(below)
        below = os.path.dirname(below)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot write to '{path}' ({exc.strerror or exc}); choose a writable output folder") from exc
    return made[::-1]


def remove_empty(folders: Sequence[str]) -> None:
    """Remove those of ``folders`` (made by :func:`make_folder`, outermost first) that are empty,
    innermost first: a command that wrote nothing leaves no folder behind."""
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:  # not empty (written to, or by someone else), or gone
            return


def _temp_beside(path: str, made: list[str]) -> str:
    """A new temporary file in ``path``'s folder, which is created if missing (the folders made
    are added to ``made``)."""
    folder = os.path.dirname(os.path.abspath(path))
    made.extend(make_folder(folder))
    try:
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


def check_names(paths: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse output names longer than the file system allows, and folders where a file is to be
    written, before any work is done."""
    for p in paths:
        if os.path.isdir(p):
            raise UserInputError(f"'{os.fspath(p)}' is a folder; give the path of a file to write, in it or elsewhere")
        name = os.path.basename(os.fspath(p))
        folder = _existing_above(os.path.dirname(os.path.abspath(p)))
        try:
            limit = os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError):
            limit = 255
        if len(os.fsencode(name)) > limit:
            raise UserInputError(f"the output name '{name[:40]}...' is {len(os.fsencode(name))} bytes, more than the "
                                 f"{limit} the file system allows; rename the input or shorten the output name")


#: Suffixes of the files the commands write: an output folder still to be made with such a name
#: was meant to be a file.
FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".mp4", ".mkv", ".webm", ".avi", ".mov", ".npz", ".pt")


def check_writable_dir(folder: str | os.PathLike[str]) -> None:
    """Check that files can be written to ``folder`` before any long computation, without
    creating it (the first file written there does): a probe file in the folder, or, where it is
    still to be made, in the nearest folder above it. A folder still to be made with a file's
    suffix (``--out result.png``) is refused."""
    path = os.fspath(folder)
    if not os.path.isdir(path) and os.path.splitext(path.rstrip("/" + os.sep))[1].lower() in FILE_SUFFIXES:
        raise UserInputError(f"'{path}' looks like a file name, and {{out_dir}} is the folder the outputs go to "
                             f"(named after each input); give a folder such as out", options=["out_dir"])
    probe_in = _existing_above(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=probe_in)
    except OSError as exc:
        where = f"write to '{path}'" if os.path.isdir(path) else f"make the folder '{path}' in '{probe_in}'"
        raise UserInputError(f"cannot {where} ({exc.strerror or exc}); choose a writable output folder") from exc
    os.close(fd)
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_writes(paths: Sequence[str | os.PathLike[str]]) -> Iterator[list[str]]:
    """Yield one temporary path per target; on success all are renamed into place, else all removed.

    A reader never sees a half-written target, and a failure leaves every target as it was (and
    no folder made for them).
    """
    targets = [os.fspath(p) for p in paths]
    check_names(targets)
    temps: list[str] = []
    made: list[str] = []
    try:
        for t in targets:
            temps.append(_temp_beside(t, made))
        try:
            yield list(temps)
            mode = _default_mode()
            for tmp, target in zip(temps, targets):
                with contextlib.suppress(OSError):  # temporary files are private (0600); outputs are not
                    os.chmod(tmp, mode)
                os.replace(tmp, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise UserInputError(f"no space left writing '{targets[0]}' ({exc.strerror}); free some space or write to "
                                 f"another output folder") from exc
        temps, made = [], []
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        remove_empty(made)  # after a failure, the folders made for the targets, when empty


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[str]:
    """Single-file form of :func:`atomic_writes`."""
    with atomic_writes([path]) as (tmp,):
        yield tmp


def save_payload(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """``torch.save`` a mapping of plain values and tensors to ``path``, atomically."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)  # to a file object: given a path, torch names the archive after it ('.tmp-x' fails)


def regular_file(path: str | os.PathLike[str], what: str, fix: str, empty: str | None = None) -> str:
    """``path`` as a string, when it names an existing regular file (a folder, a named pipe or a
    device is refused: reading them fails or blocks); ``what`` and ``fix`` word the error. With
    ``empty`` (its fix), an empty file (0 bytes: an interrupted copy or download) is refused too."""
    if not isinstance(path, (str, os.PathLike)):
        raise UserInputError(f"{what} must be a path (str or os.PathLike), not {type(path).__name__}; {fix}")
    p = os.fspath(path)
    if not os.path.exists(p):
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", p):
            raise UserInputError(f"{what} '{p}' is a URL; files are read from disk: download it first")
        if p.startswith("~"):
            raise UserInputError(f"{what} '{p}' does not exist ('~' is expanded by a shell, not in Python: give "
                                 f"os.path.expanduser('{p}')); {fix}")
        raise UserInputError(f"{what} '{p}' does not exist; {fix}")
    if not os.path.isfile(p):
        raise UserInputError(f"'{p}' is not a regular file (a folder, pipe or device); {fix}")
    if empty is not None and os.path.getsize(p) == 0:
        raise UserInputError(f"'{p}' is empty (0 bytes); {empty}")
    return p


def read_torch_file(path: str | os.PathLike[str], what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU.

    Args:
        path: The file.
        what: What the file should be, for messages (``"statistics file"``).
        fix: How to get a good one (``"create one with `video-iba estimate`"``).

    Raises:
        UserInputError: a missing path, anything that is not a regular file, or a file torch
            cannot read without unpickling arbitrary objects (foreign, truncated or corrupt).
    """
    p = regular_file(path, what, fix)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign, truncated or pickled files
        raise UserInputError(f"'{p}' is not a readable {what} ({type(exc).__name__}); {fix}") from exc


def load_payload(path: str | os.PathLike[str], fmt: str, what: str, fix: str) -> dict[str, Any]:
    """A mapping written by :func:`save_payload` whose ``"format"`` entry is ``fmt``."""
    payload = read_torch_file(path, what, fix)
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise UserInputError(f"'{os.fspath(path)}' is not a video-iba {what}; {fix}")
    return payload
