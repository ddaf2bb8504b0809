"""What every method checks and shares: the input, the target, the layers, bits maps."""

from __future__ import annotations

import contextlib
import logging
import math
import operator
from typing import Any, Sequence

import torch
from torch import nn

from ..bottleneck.heatmap import capacity_to_bits
from ..bottleneck.insertion import clip_without_batch_axis
from ..errors import UserInputError
from ..models.hf import FAMILIES as HF_FAMILIES, IMAGE_FAMILIES as HF_IMAGE_FAMILIES, HFClassifier
from ..models.pathways import Pack, input_packer, packed
from ..models.targets import class_names, resolve_target

log = logging.getLogger(__name__)

LAYER_HINT = "list the layers with `video-iba layers --model NAME` or model.named_modules()"


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating-point type of ``model``'s parameters (float32 for a model without any): the type
    its inputs are given in (a network in half precision takes half-precision inputs)."""
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    return p.dtype if p is not None else torch.float32


def check_eager(model: nn.Module) -> None:
    """Refuse a module compiled with ``torch.compile`` (the bottleneck's hooks, the network's split
    and its layer names are those of the module it wraps) and a Hugging Face classifier not wrapped
    (it returns an output object, a video one takes clips in another axis order, and its tokens
    have no layout until :func:`~video_iba.models.registry.wrap_hf` gives them one)."""
    wrapped = getattr(model, "_orig_mod", None)
    if isinstance(wrapped, nn.Module):
        raise UserInputError(f"the model is compiled with torch.compile ({type(model).__name__}); give the module it "
                             f"compiles, model._orig_mod: hooks and the run from a layer on need the eager network")
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if (kind in HF_FAMILIES or kind in HF_IMAGE_FAMILIES) and not isinstance(model, HFClassifier):
        clips = "takes clips (N, C, T, H, W), " if kind in HF_FAMILIES else ""
        raise UserInputError(f"the model is a Hugging Face {kind} classifier ({type(model).__name__}); wrap it with "
                             f"video_iba.wrap_hf(model): it then {clips}returns logits and knows its token layouts")


def check_input(model: nn.Module, x: Any, pack: Pack | None = None,
                many: bool = False) -> tuple[torch.Tensor, Pack | None, Any]:
    """The input, the model's pack and the network input built from it.

    Args:
        model: The classifier (its parameters' device must be the input's).
        x: One preprocessed input ``(1, C, H, W)`` or clip ``(1, C, T, H, W)``.
        pack: Builds a multi-pathway network's input list from the clip (default: the
            registry spec's, see :func:`~video_iba.models.pathways.input_packer`).
        many: Accept K inputs ``(K, C, ...)``.

    Returns:
        ``(x, pack, network input)``.
    """
    check_eager(model)
    held = next((name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_inference()), None)
    if held is not None:  # gradients cannot pass through them (and their requires_grad cannot be restored)
        raise UserInputError(f"the model's weights were made under torch.inference_mode() ({held} is an inference "
                             f"tensor), which gradients cannot pass through; build or load the model outside it "
                             f"(torch.no_grad() is fine there)")
    if isinstance(x, (list, tuple)):
        raise UserInputError("x is a list; give the clip (1, C, T, H, W) itself: a multi-pathway model builds its "
                             "pathways from it with {pack} (automatic for registry models such as slowfast_r50)",
                             options=["pack"])
    if not isinstance(x, torch.Tensor):
        raise UserInputError(f"x must be a preprocessed tensor (1, C, H, W) or (1, C, T, H, W), not {type(x).__name__}")
    if many and (x.dim() not in (4, 5) or x.shape[0] < 1):
        raise UserInputError(f"x must have shape (K, C, H, W) or (K, C, T, H, W) with K >= 1 inputs, got "
                             f"{tuple(x.shape)}; add a batch axis to one input with x[None]")
    if not many and (x.dim() not in (4, 5) or x.shape[0] != 1):
        fix = ("explain one input at a time, x[i:i + 1] (video_iba.explain fits several at once)"
               if x.dim() in (4, 5) else "add a batch axis to one input with x[None]")
        fix = "; ".join(f for f in (clip_without_batch_axis(x), fix) if f)
        raise UserInputError(f"x must have shape (1, C, H, W) or (1, C, T, H, W), got {tuple(x.shape)}; {fix}")
    if not x.is_floating_point():
        raise UserInputError(f"x must be a float tensor (normalised input), got {x.dtype}")
    p = next(iter(model.parameters()), None)
    if p is not None and p.device != x.device:
        raise UserInputError(f"x is on {x.device} but the model is on {p.device}; move one of them")
    if not bool(torch.isfinite(x).all()):
        raise UserInputError("x contains NaN or infinite values; check how the input was read and preprocessed")
    dtype = model_dtype(model)
    if p is not None and dtype != x.dtype:
        raise UserInputError(f"x is {x.dtype} but the model's parameters are {dtype}; convert x with x.to({dtype})")
    x = x.clone() if x.is_inference() else x.detach()  # made under torch.inference_mode(): gradients need a copy
    pk = input_packer(model, pack)
    return x, pk, packed(x, pk)


def check_target(target: Any, logits: torch.Tensor, model: nn.Module | None = None) -> int:
    """The class to explain: ``target`` (an index, or a class name of ``model``'s spec), or the
    top-1 class of ``logits`` ``(1, K)`` when ``None`` or ``"top1"``. Logits equal for every class
    are reported with a warning: nothing then depends on the input."""
    k = logits.shape[1]
    if isinstance(target, str) and target.strip().lower() == "top1":
        target = None
    if isinstance(target, str):
        names = class_names(model) if model is not None else None
        if names is None:
            raise UserInputError(f"target {target!r} is a class name, but the model has no class names (no "
                                 f"video_iba_spec); give {{target}} a class index", options=["target"])
        target = resolve_target(target, names)
    if bool(logits.isnan().any()):
        raise UserInputError("the model's logits for this input contain NaN; check the model's weights (and that "
                             "the input is preprocessed as the model expects)")
    if k > 1 and bool((logits[0] == logits[0, 0]).all()):
        log.warning("the model gives all %d classes the same logit, so no class can be explained (random weights "
                    "with a zero-initialised head, as torchvision's ViTs?); use trained weights", k)
    if target is None:
        return int(logits[0].argmax())
    if not isinstance(target, (bool, int)):
        with contextlib.suppress(TypeError):
            target = operator.index(target)  # a numpy or torch integer scalar
    if isinstance(target, bool) or not isinstance(target, int):
        raise UserInputError(f"{{target}} takes a class index or a class name, not {target!r}", options=["target"])
    if not 0 <= target < k:
        raise UserInputError(f"target {target} is out of range; the model has {k} classes (0..{k - 1})")
    return target


def layer_names(model: nn.Module, layer: str | nn.Module | Sequence[str | nn.Module] | None,
                distinct: bool = True) -> list[str]:
    """The bottleneck layers: ``layer`` (one name or module, or several), else the registry model's
    default."""
    check_eager(model)
    if layer is None:
        spec = getattr(model, "video_iba_spec", None)
        layer = spec.default_layer if spec is not None else None
        if not layer:
            raise UserInputError("no layer given; name it with {layer} (a dotted module path of the model)",
                                 options=["layer"])
    names = [module_path(model, m) for m in (layer if isinstance(layer, (list, tuple)) else [layer])]
    if not names or (distinct and len(set(names)) != len(names)):
        raise UserInputError(f"layers must be distinct module paths, got {names}")
    return names


def module_path(model: nn.Module, layer: Any, option: str = "layer") -> str:
    """A layer's dotted module path: a name as given, or the path of a submodule of ``model``."""
    if isinstance(layer, str):
        return layer
    if not isinstance(layer, nn.Module):
        raise UserInputError(f"{{{option}}} must be a module path such as 'layer2' or a submodule of the model, got "
                             f"{type(layer).__name__}", options=[option])
    for name, m in model.named_modules():
        if m is layer and name:
            return name
    raise UserInputError(f"the {type(layer).__name__} given as {{{option}}} is not a submodule of the model "
                         f"({'the model itself' if layer is model else 'another network'}); give one of its layers, "
                         f"e.g. by name", options=[option])


def check_channels_first(rs: Sequence[torch.Tensor], x: torch.Tensor, layers: Sequence[str]) -> None:
    """Refuse a layer output that looks channels-last, ``(N, [T,] H, W, C)``: on a square input a
    convolutional map is square, so ``(N, A, A, B)`` with ``B != A`` is read as ``H = W = A``, ``C = B``
    (Swin's stages output this); its channels would be taken for a spatial axis."""
    if x.shape[-1] != x.shape[-2]:
        return
    for r, name in zip(rs, layers):
        if r.shape[-1] != r.shape[-2] and r.shape[-3] == r.shape[-2]:
            raise UserInputError(f"layer '{name}' outputs {tuple(r.shape)}, a channels-last map (N, [T,] H, W, C) "
                                 f"by its shape; a bottleneck needs channels first (N, C, [T,] H, W): choose another "
                                 f"layer, or in Python give its layout, tokens=video_iba.TokenLayout(channels_last=True)")


def bits_map(capacities: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """The map of one or several bottlenecks in bits per input cell: each capacity ``(C, *S)`` in nats
    resized to ``size`` with its total preserved, summed over the bottlenecks."""
    bits = capacity_to_bits(capacities[0], size)
    for cap in capacities[1:]:
        bits = bits + capacity_to_bits(cap, size)
    return bits


def split_capacities(groups: Sequence[Sequence[torch.Tensor]], photo: bool,
                     layouts: Sequence[Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, the capacity ``(C, *grid)`` of its map and, for a token layer with class tokens,
    their bits per token ``(P,)``: ``groups`` holds each layer's capacities (map first, then the
    class tokens' ``(C, P)``). A photo's token grid ``(C, 1, H', W')`` becomes a 2-D map."""
    maps = [g[0][:, 0] if photo and lay is not None and g[0].dim() == 4 and g[0].shape[1] == 1 else g[0]
            for g, lay in zip(groups, layouts)]
    prefix_bits = [(c.double().sum(0) / math.log(2)).float().cpu() for g in groups for c in g[1:]]
    return maps, prefix_bits


def model_name(model: nn.Module) -> dict[str, str]:
    """``{"model": name}`` for registry models (metadata), else nothing."""
    spec = getattr(model, "video_iba_spec", None)
    return {"model": spec.name} if spec is not None else {}


def target_label(model: nn.Module, target: int) -> dict[str, str]:
    """``{"target_label": name}`` for a model whose spec names its classes (metadata), else nothing."""
    names = class_names(model)
    return {"target_label": names[target]} if names is not None and 0 <= target < len(names) else {}
