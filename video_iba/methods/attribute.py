"""Every attribution method behind one name: :data:`METHODS` and :func:`attribute`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import UserInputError, did_you_mean
from ..models.pathways import Pack
from ..results import Attribution
from .baselines import BASELINES, CAM_METHODS, baseline
from .iba import explain
from .readout import Readout, explain_readout


@dataclass(frozen=True)
class Method:
    """What a caller needs to know about a method.

    Attributes:
        name: Its name (``explain --method NAME``).
        information: Its maps are information in bits (the two bottlenecks).
        fitted: It optimises a mask per input in ``steps`` steps (the per-sample bottleneck;
            progress is counted in steps).
        uses_statistics: It takes per-neuron statistics (``--stats``).
        uses_readout: It needs a trained readout (``--readout``).
        uses_cam_layer: It reads a layer's activations and gradients (Grad-CAM: ``--cam-layer``).
    """

    name: str
    information: bool = False
    fitted: bool = False
    uses_statistics: bool = False
    uses_readout: bool = False
    uses_cam_layer: bool = False


METHODS: dict[str, Method] = {
    "iba": Method("iba", information=True, fitted=True, uses_statistics=True),
    **{name: Method(name, uses_cam_layer=name in CAM_METHODS) for name in BASELINES},
    "readout": Method("readout", information=True, uses_readout=True),
}


def check_method(name: str) -> Method:
    """The method called ``name`` (case and ``-``/``_`` insensitive), or a clear error."""
    key = name.strip().lower().replace("-", "_")
    if key not in METHODS:
        raise UserInputError(f"unknown method '{name}'{did_you_mean(key, METHODS)}; choose one of "
                             f"{', '.join(METHODS)}")
    return METHODS[key]


def attribute(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    target: int | str | None = None,
    *,
    pack: Pack | None = None,
    seed: int = 0,
    readout: Readout | None = None,
    **options: Any,
) -> Attribution:
    """Attribute ``model``'s decision for ``x`` with any method of :data:`METHODS`.

    Args:
        method: ``"iba"`` (per-sample information bottleneck, :func:`~video_iba.methods.iba.explain`),
            ``"readout"`` (a trained readout bottleneck, one forward pass) or a baseline.
        model: The classifier; left exactly as it was.
        x: One preprocessed input ``(1, C, H, W)`` or clip ``(1, C, T, H, W)``.
        target: Class to explain (an index, or a class name of the model's spec); ``None``: the
            top-1 prediction.
        pack: For a multi-pathway network: builds its pathway list from the clip (registry models
            such as SlowFast: automatic).
        seed: Seed of the method's randomness (IBA's noise, SmoothGrad's noise, the random map).
        readout: The trained readout, for ``method="readout"``.
        options: Further keywords of the method: IBA's ``layer``, ``stats``, ``config``, ...;
            a baseline's ``tube_frames``, ``batch``; Grad-CAM's ``cam_layer`` and ``tokens``.

    Returns:
        An :class:`~video_iba.results.Attribution` at ``x``'s resolution, in the method's unit.
    """
    m = check_method(method)
    if m.uses_readout:
        if not isinstance(readout, Readout):
            raise UserInputError("the readout method needs a trained readout: give {readout} a checkpoint of "
                                 "`video-iba train-readout`", options=["readout"])
        _no_options(m, options)
        return explain_readout(model, readout, x, target, pack=pack)
    if readout is not None:
        raise UserInputError(f"{{readout}} applies to the readout method only, not to {m.name}", options=["readout"])
    if m.fitted:
        return explain(model, x, target, pack=pack, seed=seed, **options)
    if "layer" in options:
        fix = "; Grad-CAM's layer is {cam_layer}" if m.uses_cam_layer else ""
        raise UserInputError(f"{{layer}} is the bottleneck's layer (method iba), which {m.name} does not use{fix}",
                             options=["layer", "cam_layer"])
    return baseline(m.name, model, x, target, pack=pack, seed=seed, **options)


def attribute_many(
    method: str,
    model: nn.Module,
    xs: Sequence[torch.Tensor],
    targets: Sequence[int | None],
    *,
    pack: Pack | None = None,
    seed: int = 0,
    readout: Readout | None = None,
    **options: Any,
) -> list[Attribution]:
    """:func:`attribute` for several inputs ``(1, C, ...)`` and their targets: the per-sample
    bottleneck fits them together in one optimisation (each result as alone at the same seed);
    other methods explain them one by one."""
    if len(xs) != len(targets) or not xs:
        raise UserInputError(f"give one target per input: {len(xs)} inputs, {len(targets)} targets")
    if check_method(method).fitted and len(xs) > 1:
        if readout is not None:
            raise UserInputError(f"{{readout}} applies to the readout method only, not to {method}",
                                 options=["readout"])
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) > 1:
            raise UserInputError(f"inputs fitted together must have one shape, got {sorted(shapes)}")
        out = explain(model, torch.cat(list(xs)), list(targets), pack=pack, seed=seed, **options)
        return list(out)
    return [attribute(method, model, x, t, pack=pack, seed=seed, readout=readout, **options)
            for x, t in zip(xs, targets)]


def _no_options(m: Method, options: dict[str, Any]) -> None:
    if options:
        raise UserInputError(f"{', '.join(sorted(options))} do not apply to the {m.name} method")
