"""Networks of one's own, named where a registry name goes: ``path/to/file.py:function`` or
``package.module:function``, optionally with keyword arguments of literal values,
``function(depth=18, classes=("a", "b"))``. The function returns ``(model, spec)``, or a model
carrying its spec as ``model.video_iba_spec``; the registry calls it and checks what it got."""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import os
import re
import sys
import traceback
from types import ModuleType
from typing import Any, Callable

from ..errors import UserInputError, did_you_mean

_ENTRY = re.compile(r"(?P<where>[^:]+\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*)"
                    r"(?:\((?P<args>.*)\))?", re.S)

#: How an entry point is written, for messages.
FORM = "path/to/file.py:function or package.module:function"


def is_entry_point(name: str) -> bool:
    """Whether ``name`` names a function building a network (``file.py:fn``, ``pkg.mod:fn``) rather
    than a registry model (``hf:ORG/NAME`` is a Hugging Face checkpoint)."""
    return not name.startswith("hf:") and _ENTRY.fullmatch(name) is not None


def describe_failure(exc: BaseException) -> str:
    """``Type: message (file:line)`` of the innermost frame, for a one-line error about user code."""
    text = str(exc).strip().splitlines()
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not os.path.abspath(f.filename).startswith(ours)]
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}" + (f": {text[0]}" if text else "") + where


def entry_call(ref: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The function ``ref`` names (see :func:`entry_function`) and the keyword arguments it is
    called with (``{}`` without parentheses).

    Raises:
        UserInputError: arguments that are not ``name=literal`` (numbers, strings, True, False,
            None, and lists, tuples, sets and dicts of them).
    """
    fn = entry_function(ref)
    match = _ENTRY.fullmatch(ref)
    assert match is not None
    return fn, ({} if match["args"] is None else _keywords(ref, match["args"]))


def _keywords(ref: str, text: str) -> dict[str, Any]:
    form = f"give keyword arguments of literal values, e.g. {ref[:ref.index('(')]}(depth=18, pretrained=False)"
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError as exc:
        raise UserInputError(f"cannot read the arguments of '{ref}' ({exc.msg}); {form}") from None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise UserInputError(f"'{ref}' passes arguments without names; {form}")
    values: dict[str, Any] = {}
    for k in call.keywords:
        try:
            values[str(k.arg)] = ast.literal_eval(k.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise UserInputError(f"the argument {k.arg}={ast.unparse(k.value)} of '{ref}' is not a literal value; "
                                 f"{form}") from None
    return values


def entry_function(ref: str) -> Callable[..., Any]:
    """The function ``ref`` names, its module imported (a file's folder goes on ``sys.path`` first,
    as ``python file.py`` would put it, so that the file can import its neighbours)."""
    match = _ENTRY.fullmatch(ref)
    if match is None or ref.startswith("hf:"):
        raise UserInputError(f"'{ref}' does not name a function; give {FORM}")
    where, attr = match["where"], match["attr"]
    module = _file_module(where) if where.endswith(".py") else _package_module(where, attr)
    fn = getattr(module, attr, None)
    if not callable(fn):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise UserInputError(f"'{where}' has no function '{attr}'{did_you_mean(attr, names)}; give {FORM}")
    return fn


def _file_module(where: str) -> ModuleType:
    path = os.path.abspath(where)
    if not os.path.isfile(path):
        raise UserInputError(f"the model file '{where}' does not exist; give {FORM}")
    name = "video_iba_own_" + hashlib.sha256(path.encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserInputError(f"cannot import '{where}' as Python; give {FORM}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UserInputError(f"importing '{where}' failed ({describe_failure(exc)}); fix the file") from exc
    return module


def _package_module(where: str, attr: str) -> ModuleType:
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (where == exc.name or where.startswith(exc.name + ".")):
            raise UserInputError(f"no module named '{exc.name}' to import '{where}' from; install its package, add its "
                                 f"folder to PYTHONPATH, or give the file: path/to/file.py:{attr}") from exc
        raise UserInputError(f"importing '{where}' failed ({describe_failure(exc)}); install what it needs") from exc
    except Exception as exc:
        raise UserInputError(f"importing '{where}' failed ({describe_failure(exc)}); fix the module") from exc


__all__ = ["FORM", "describe_failure", "entry_call", "entry_function", "is_entry_point"]
