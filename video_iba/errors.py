"""Errors raised for bad input.

Every :class:`UserInputError` carries a one-line message naming the problem and the fix; the
command-line interface prints it and exits with status 2.

A message that tells the user to change an option names it by a placeholder, ``{beta}``, listed
in ``options``. Library users read it spelled as the Python keyword (``beta=``); the command
line spells it as its flag (``--beta``), or as the key of the ``--config`` file for settings
that have no flag. The placeholder is replaced literally (no ``str.format``), so values quoted
in a message may contain braces.
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterable, Sequence


def python_keyword(option: str) -> str:
    """How a library user passes ``option``: ``beta=``."""
    return f"{option}="


class UserInputError(ValueError):
    """Input that cannot be used as given (bad file, unknown name, out-of-range value).

    Args:
        message: The one-line message; ``{name}`` stands for the option ``name`` (see the module).
        options: The option names used as placeholders in ``message``.
    """

    def __init__(self, message: str, *, options: Sequence[str] = ()) -> None:
        self.template = message
        self.options = tuple(options)
        super().__init__(self.worded(python_keyword))

    def worded(self, spell: Callable[[str], str]) -> str:
        """The message with every option placeholder spelled by ``spell`` (the CLI: its flags)."""
        text = self.template
        for name in self.options:
            text = text.replace("{" + name + "}", spell(name))
        return text


class OutOfMemory(UserInputError):
    """The device ran out of memory for the work asked of it (too many replicas or inputs at once):
    workflows that choose the batch size themselves retry with fewer inputs."""


def failure_reason(exc: BaseException) -> str:
    """Why an input failed, for a record: a :class:`UserInputError`'s message, else ``Type: message``."""
    return str(exc) if isinstance(exc, UserInputError) else f"{type(exc).__name__}: {exc}"


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" (did you mean 'a' or 'b'?)"`` for close matches of ``word``, else ``""``."""
    matches = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    if not matches:
        return ""
    quoted = [f"'{m}'" for m in matches]
    joined = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f" (did you mean {joined}?)"
