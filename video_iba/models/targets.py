"""Which class to explain: a class index or a class name, read against a model's class names."""

from __future__ import annotations

import re
from typing import Sequence

from torch import nn

from ..errors import UserInputError, did_you_mean
from .registry import labels_for


def class_names(model: nn.Module) -> list[str] | None:
    """The class names of a model that carries a spec (``model.video_iba_spec``), in index order;
    ``None`` when it has none (a network of one's own without a spec, a label set without names)."""
    spec = getattr(model, "video_iba_spec", None)
    if spec is None:
        return None
    try:
        names = labels_for(spec)
    except ValueError:
        return None
    return names or None


def resolve_target(text: str | int | None, labels: Sequence[str]) -> int | None:
    """``None``/``"top1"`` -> None (explain the prediction); an index; or a class name (case-insensitive)."""
    if text is None or (isinstance(text, str) and text.lower() == "top1"):
        return None
    if isinstance(text, int) or re.fullmatch(r"-?[0-9]+", text.strip()):  # ASCII digits only
        idx = int(text)
        if not 0 <= idx < len(labels):
            raise UserInputError(f"target {idx} is out of range; the model has {len(labels)} classes "
                                 f"(0..{len(labels) - 1}); give {{target}} a valid index", options=["target"])
        return idx
    wanted = text.strip().lower()
    hits = [i for i, name in enumerate(labels) if name.lower() == wanted]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise UserInputError(f"class name '{text}' is ambiguous (indices {', '.join(map(str, hits))}); give "
                             f"{{target}} an index", options=["target"])
    if re.fullmatch(r"top[0-9]+", wanted):
        raise UserInputError(f"{{target}} takes top1, a class index or a class name, not '{text.strip()}'; the K most "
                             f"probable classes are explained side by side by `video-iba compare --targets topK` "
                             f"(compare_file(..., targets='topK'))", options=["target"])
    raise UserInputError(f"unknown class name '{text}'{_similar_names(wanted, labels)}; give {{target}} a class "
                         f"index or an exact name", options=["target"])


def _similar_names(wanted: str, labels: Sequence[str], n: int = 5) -> str:
    """``" (did you mean ...?)"``: the class names holding every word of ``wanted`` (``cat``: the
    cats, not ``catamaran``), else the closest spellings (case ignored)."""
    words = wanted.split()
    holding = [name for name in labels if all(w in name.lower().split() for w in words)]
    if holding:
        shown = holding[:n] + ([f"{len(holding) - n} more"] if len(holding) > n else [])
        return " (did you mean " + ", ".join(f"'{h}'" if i < n else h for i, h in enumerate(shown)) + "?)"
    lower = {name.lower(): name for name in labels}
    close = did_you_mean(wanted, lower)
    for low, name in lower.items():  # back to the names' own spelling
        close = close.replace(f"'{low}'", f"'{name}'")
    return close


__all__ = ["class_names", "resolve_target"]
