"""Class names of a model's outputs from a file: a text file with one name per line, or JSON (a
list of names, a mapping from index to name, or a configuration holding ``id2label``)."""

from __future__ import annotations

import json
import re

from ..errors import UserInputError
from ..files import regular_file


def read_labels(path: str) -> list[str]:
    """The class names in ``path``, in index order.

    A ``.json`` file holds a list of names, a mapping ``{"0": name, ...}`` covering ``0 .. K-1``, or
    an object with such a mapping under ``id2label`` (a Hugging Face ``config.json``); any other file
    is text, one name per line (surrounding spaces and trailing blank lines dropped; lines
    ``"<index> <name>"`` numbered 0 .. K-1 or 1 .. K, as UCF101's ``classInd.txt``, give the names).
    Names must be distinct and not empty, since a class is chosen by name.
    """
    path = regular_file(path, "labels file", "give a file with one class name per line, in index order")
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is not part of the first name
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read the labels file '{path}' ({type(exc).__name__}); give a UTF-8 text file "
                             f"with one class name per line") from exc
    names = _from_json(path, text) if path.lower().endswith(".json") else _from_lines(path, text)
    if not names:
        raise UserInputError(f"the labels file '{path}' names no class; give one class name per line, in index order")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise UserInputError(f"the labels file '{path}' names '{name}' twice (classes {seen[name]} and {i}); give "
                                 f"each class a distinct name")
        seen[name] = i
    return names


def _from_lines(path: str, text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for i, line in enumerate(lines):
        if not line:
            raise UserInputError(f"line {i + 1} of the labels file '{path}' is empty; give one class name per line, in "
                                 f"index order")
    return _without_indices(lines)


def _without_indices(lines: list[str]) -> list[str]:
    """Lines ``"<index> <name>"`` (or ``index,name``, tab-separated) numbered ``0 .. K-1`` or ``1 .. K``
    in order, as class index files such as UCF101's ``classInd.txt`` are: the names alone. Other
    lines are names as they stand."""
    parts = [re.fullmatch(r"([0-9]+)[ \t,;:]+(\S.*)", line) for line in lines]
    if len(lines) < 2 or not all(parts):
        return lines
    numbers = [int(m.group(1)) for m in parts]  # type: ignore[union-attr]
    if numbers not in (list(range(len(lines))), list(range(1, len(lines) + 1))):
        return lines
    return [m.group(2).strip() for m in parts]  # type: ignore[union-attr]


def _from_json(path: str, text: str) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"the labels file '{path}' is not valid JSON ({exc.msg} at line {exc.lineno}); fix it, or "
                             f"give a text file with one class name per line") from exc
    if isinstance(data, dict) and "id2label" in data:
        data = data["id2label"]
    if isinstance(data, list) and all(isinstance(n, str) and n.strip() for n in data):
        return [n.strip() for n in data]
    if isinstance(data, dict) and all(isinstance(n, str) and n.strip() for n in data.values()):
        try:
            index = {int(k): v.strip() for k, v in data.items()}
        except ValueError:
            index = {}
        if index and sorted(index) == list(range(len(index))):
            return [index[i] for i in range(len(index))]
        raise UserInputError(f"the labels file '{path}' maps keys {_keys(data)} to names; its keys must be the class "
                             f"indices 0 .. K-1")
    raise UserInputError(f"the labels file '{path}' holds no list of class names; give a JSON list of names, a "
                         f"mapping from index to name, or a text file with one name per line")


def _keys(data: dict[str, object]) -> str:
    keys = list(data)
    return ", ".join(repr(k) for k in keys[:3]) + (", ..." if len(keys) > 3 else "")


__all__ = ["read_labels"]
