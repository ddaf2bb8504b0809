"""Errors raised for bad input.

Every :class:`UserInputError` carries a one-line message naming the problem and the fix; the
command-line interface prints it and exits with status 2.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class UserInputError(ValueError):
    """Input that cannot be used as given (bad file, unknown name, out-of-range value)."""


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" (did you mean 'a' or 'b'?)"`` for close matches of ``word``, else ``""``."""
    matches = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    if not matches:
        return ""
    quoted = [f"'{m}'" for m in matches]
    joined = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f" (did you mean {joined}?)"
