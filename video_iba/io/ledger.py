"""Append-only JSON Lines files (batch manifests, evaluation scores, training logs).

A record is written as one line and flushed at once, so a killed run loses at most the line it
was writing. That cut line is dropped when the file is next opened for appending (new records
then start on their own line) and skipped when the file is read.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterator

from ..files import atomic_write, make_folder


def drop_unfinished_line(path: str | os.PathLike[str]) -> bool:
    """Cut the file back to its last complete line, where an interrupted writer left a line without
    its newline; returns whether something was cut."""
    if not os.path.exists(path):
        return False
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)
            return True
    return False


def read_records(path: str | os.PathLike[str], strict: bool = False) -> Iterator[dict[str, Any]]:
    """The JSON objects of a ledger in file order (nothing when it does not exist).

    Lines that are not JSON objects (a line cut by a kill) are skipped, or with ``strict`` raise
    ``ValueError`` naming the line.
    """
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                yield record
            elif strict:
                raise ValueError(f"line {number} is not a JSON object")


class Ledger:
    """A ledger opened for appending: ``with Ledger(path) as ledger: ledger.append({...})``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fh: Any = None

    def __enter__(self) -> "Ledger":
        make_folder(os.path.dirname(os.path.abspath(self.path)))
        drop_unfinished_line(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")
        return self

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as a line and flush it."""
        if self._fh is None:
            raise RuntimeError("Ledger.append must be called inside a `with` block")
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def __exit__(self, *exc: object) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()


def rewrite_records(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> None:
    """Replace a ledger's content with ``records``, atomically."""
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")


def keep_records(path: str | os.PathLike[str], keep: Callable[[dict[str, Any]], bool]) -> None:
    """Keep only the records for which ``keep`` is true (nothing happens when the file does not exist)."""
    if os.path.exists(path):
        rewrite_records(path, [r for r in read_records(path) if keep(r)])
