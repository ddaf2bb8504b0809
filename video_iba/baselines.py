"""The paper's baseline attribution methods, as thin wrappers over Captum, for images and clips.

Every method returns an :class:`~video_iba.attribution.Attribution` at the model input's
resolution, ``(H, W)`` or ``(T, H, W)``, with ``unit`` naming what the values are (only the
information methods are in bits). Colour channels are reduced by one rule for every method:
**the sum over channels** (linear, so a map's sum over a region stays the sum of the method's
per-input-cell attributions, which sensitivity-n relies on).

Choices Captum leaves open, fixed here:

* Gradient: the raw input gradient of the target logit (signed); Saliency: its absolute value
  (Simonyan et al.); SmoothGrad: the gradient averaged over 50 noisy copies with noise std
  0.15 x (max - min) of the input (Smilkov et al.'s recommended 10-20 %); Integrated Gradients:
  50 steps from a zero baseline (the dataset mean colour, since inputs are normalised).
* Guided Backprop rewrites only ``nn.ReLU`` modules: a model without any (ReLU6, functional
  ReLUs) is refused instead of silently giving the plain gradient. In-place ReLUs are switched
  to out-of-place for the duration and restored.
* Grad-CAM at the last module whose output is still a spatial feature map (or ``cam_layer``),
  with ReLU, upsampled bilinearly (images) or trilinearly (clips); Guided Grad-CAM is Guided
  Backprop times that upsampled map.
* Occlusion with ``w x w`` windows (``w`` = 8 or 14) and strides equal to the window (Captum's
  default stride is 1), over ``t x w x w`` tubes for clips; occluded cells are set to 0 in the
  normalised input space (the dataset mean colour); the map is the target-logit drop.
* Random: uniform noise, seeded.
* LRP (torchvision VGG and ResNet networks only, through zennit, which handles ResNet's skip
  connections): the EpsilonPlusFlat composite (flat rule in the first layer, z+ in the other
  convolutions, epsilon in the dense layers; Kohlbrenner et al. 2020), batch norm merged into
  the preceding convolution by zennit's canonizers for the duration; relevance starts at the
  target logit.

Multi-pathway models (SlowFast) take a list of tensors, which Captum rejects: they are explained
on the raw clip through :class:`PackedModel`, whose forward builds the pathways, so a removed
tube disappears from both pathways at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._version import __version__
from .attribution import Attribution
from .bottleneck.insertion import frozen, get_module
from .errors import UserInputError, did_you_mean

log = logging.getLogger(__name__)

METHODS = ("iba", "random", "gradient", "saliency", "smoothgrad", "integrated_gradients", "guided_backprop",
           "gradcam", "guided_gradcam", "occlusion8", "occlusion14", "lrp", "readout")
SMOOTHGRAD_SAMPLES = 50
SMOOTHGRAD_NOISE = 0.15
IG_STEPS = 50
OCCLUSION_TUBE_FRAMES = 4


class PackedModel(nn.Module):
    """A multi-pathway model as a single-input one: ``forward(clip)`` = ``model(pack(clip))``."""

    def __init__(self, model: nn.Module, pack: Callable[[torch.Tensor], list[torch.Tensor]]):
        super().__init__()
        self.model = model
        self.pack = pack

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model(self.pack(clip))


def check_method(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    if key not in METHODS:
        raise UserInputError(f"unknown method '{name}'{did_you_mean(key, METHODS)}; choose one of {', '.join(METHODS)}")
    return key


@contextlib.contextmanager
def _out_of_place_relus(model: nn.Module) -> Iterator[list[nn.ReLU]]:
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    flags = [m.inplace for m in relus]
    try:
        for m in relus:
            m.inplace = False
        yield relus
    finally:
        for m, f in zip(relus, flags):
            m.inplace = f


def cam_layer_of(model: nn.Module, x: torch.Tensor) -> str:
    """The last module (in call order) whose output is a spatial feature map ``(1, C, [T,] h, w)``, h, w > 1,
    among the shallowest such modules (e.g. ResNet ``layer4``); ``model`` may be a :class:`PackedModel`."""
    from .models.layers import layer_table

    if isinstance(model, PackedModel):
        table = layer_table(model, tuple(x.shape), device=x.device, prefix="model.")
    else:
        table = layer_table(model, tuple(x.shape), device=x.device)
    maps = [li for li in table if li.shape is not None and len(li.shape) == x.dim() and li.shape[-1] > 1
            and li.shape[-2] > 1]
    if not maps:
        raise UserInputError("the model has no spatial feature map for Grad-CAM; pass cam_layer")
    depth = min(li.depth for li in maps)
    return [li for li in maps if li.depth == depth][-1].name


def _upsample(cam: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if cam.numel() == 0:
        raise RuntimeError("Grad-CAM returned an empty tensor; the chosen layer gave no map")
    mode = "trilinear" if cam.dim() == 5 else "bilinear"
    return F.interpolate(cam, size=tuple(size), mode=mode, align_corners=False)


def _reduce(attr: torch.Tensor) -> torch.Tensor:
    """``(1, C, *S)`` to ``*S``: the sum over colour channels."""
    return attr.detach().sum(dim=1)[0]


def attribute(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    target: int | None = None,
    *,
    pack: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
    cam_layer: str | None = None,
    tube_frames: int = OCCLUSION_TUBE_FRAMES,
    seed: int = 0,
    batch: int = 16,
    **iba_kwargs: Any,
) -> Attribution:
    """Attribute ``model``'s decision for ``x`` with ``method`` (one of :data:`METHODS`).

    Args:
        method: ``"iba"`` (per-sample information bottleneck, :func:`video_iba.explain`) or a baseline.
        model: The classifier; left exactly as it was.
        x: One preprocessed input ``(1, C, H, W)`` or ``(1, C, T, H, W)`` (for a multi-pathway
            model: the raw clip, with ``pack`` building the pathway list).
        target: Class to explain; ``None``: the top-1 prediction.
        pack: Builds the model's pathway list from ``x`` (SlowFast: :func:`video_iba.models.pathways`).
        cam_layer: Grad-CAM layer (default: :func:`cam_layer_of`).
        tube_frames: Occlusion tube length in frames for clips.
        seed: Seed of the random map (and of IBA's noise).
        batch: Inputs per forward pass for occlusion and integrated gradients.
        iba_kwargs: Passed to :func:`video_iba.explain` for ``method="iba"``; ``readout=`` (a trained
            :class:`~video_iba.readout.Readout`) for ``method="readout"``.
    """
    key = check_method(method)
    if not isinstance(x, torch.Tensor) or x.dim() not in (4, 5) or x.shape[0] != 1:
        raise UserInputError("x must be one preprocessed input (1, C, H, W) or (1, C, T, H, W); for a "
                             "multi-pathway model give the raw clip and pack=...")
    if key == "iba":
        from .api import explain

        inputs: Any = pack(x) if pack is not None else x
        return explain(model, inputs, target, seed=seed, **iba_kwargs)
    if key == "readout":
        from .readout import Readout, explain_readout

        readout = iba_kwargs.get("readout")
        if not isinstance(readout, Readout):
            raise UserInputError("--method readout needs a trained readout: --readout CHECKPOINT (from "
                                 "`video-iba train-readout`)")
        return explain_readout(model, readout, pack(x) if pack is not None else x, target)
    net: nn.Module = PackedModel(model, pack) if pack is not None else model
    x = x.detach()
    t0 = time.perf_counter()
    meta: dict[str, Any] = {"method": key, "channel_reduction": "sum over colour channels"}
    with frozen(model), torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad():
            logits = net(x)
        if logits.dim() != 2 or logits.shape[0] != 1:
            raise UserInputError(f"the model must return logits (1, K), got {tuple(logits.shape)}")
        k = logits.shape[1]
        if target is None:
            target = int(logits[0].argmax())
        elif not 0 <= target < k:
            raise UserInputError(f"target {target} is out of range; the model has {k} classes (0..{k - 1})")
        with warnings.catch_warnings():
            # Captum's notices that it set requires_grad on the input and hooks on ReLUs (both undone)
            warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU.*")
            values, unit = _run(key, net, model, x, target, cam_layer, tube_frames, seed, batch, meta, pack is not None)
    if not torch.isfinite(values).all():
        raise RuntimeError(f"{key} produced non-finite values")
    meta.update({"target": target, "seconds": round(time.perf_counter() - t0, 3), "version": __version__,
                 "input_shape": list(x.shape)})
    spec = getattr(model, "video_iba_spec", None)
    if spec is not None:
        meta["model"] = spec.name
    return Attribution(values=values.float().cpu(), unit=unit, target=target, capacity=None,
                       logits=logits[0].detach().float().cpu(), meta=meta)


def _run(key: str, net: nn.Module, model: nn.Module, x: torch.Tensor, target: int, cam_layer: str | None,
         tube_frames: int, seed: int, batch: int, meta: dict[str, Any], packed: bool) -> tuple[torch.Tensor, str]:
    from captum import attr as ca

    size = tuple(x.shape[2:])
    if key == "random":
        g = torch.Generator(device="cpu").manual_seed(seed)
        meta["seed"] = seed
        return torch.rand(size, generator=g), "random"
    if key in ("gradient", "saliency"):
        a = ca.Saliency(net).attribute(x, target=target, abs=key == "saliency")
        return _reduce(a), "gradient" if key == "gradient" else "|gradient|"
    if key == "smoothgrad":
        std = SMOOTHGRAD_NOISE * float(x.max() - x.min())
        torch.manual_seed(seed)
        a = ca.NoiseTunnel(ca.Saliency(net)).attribute(x, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES,
                                                        nt_samples_batch_size=batch, stdevs=std, target=target,
                                                        abs=False)
        meta.update({"samples": SMOOTHGRAD_SAMPLES, "noise_std": std, "seed": seed})
        return _reduce(a), "gradient"
    if key == "integrated_gradients":
        a = ca.IntegratedGradients(net).attribute(x, baselines=0.0, target=target, n_steps=IG_STEPS,
                                                  internal_batch_size=batch)
        meta.update({"steps": IG_STEPS, "baseline": "zero (normalised input: the mean colour)"})
        return _reduce(a), "logit"
    if key in ("gradcam", "guided_gradcam"):
        name = cam_layer or cam_layer_of(net, x)
        meta["cam_layer"] = name
        layer = get_module(model, name, "list the layers with `video-iba layers`")
        cam = ca.LayerGradCam(net, layer).attribute(x, target=target, relu_attributions=True)
        if isinstance(cam, tuple):
            cam = cam[0]
        if cam.dim() != x.dim():
            raise UserInputError(f"Grad-CAM at '{name}' gave shape {tuple(cam.shape)}, not a feature map of the "
                                 f"input's rank; choose a convolutional layer")
        up = _upsample(cam.detach(), size)[0, 0]
        if key == "gradcam":
            return up, "grad-cam"
        return _guided(net, model, x, target) * up, "guided grad-cam"
    if key == "guided_backprop":
        return _guided(net, model, x, target), "guided gradient"
    if key == "lrp":
        if packed or x.dim() != 4:
            raise UserInputError("LRP is available for images only (torchvision VGG and ResNet networks); choose "
                                 "another method for clips")
        return _lrp(model, x, target), "relevance"
    if key.startswith("occlusion"):
        w = int(key[len("occlusion"):])
        c = x.shape[1]
        window: tuple[int, ...]
        stride: tuple[int, ...]
        if x.dim() == 5:
            t = max(1, min(tube_frames, x.shape[2]))
            window, stride = (c, t, w, w), (c, t, w, w)
        else:
            window, stride = (c, w, w), (c, w, w)
        a = ca.Occlusion(net).attribute(x, sliding_window_shapes=window, strides=stride, baselines=0.0, target=target,
                                        perturbations_per_eval=batch)
        meta.update({"window": list(window[1:]), "stride": list(stride[1:]), "baseline": "zero (normalised input)"})
        # Captum gives every cell of a window the window's logit drop (averaged over the windows
        # covering the cell: one here, strides equal windows); the channel sum makes it C x the drop
        return _reduce(a), "logit drop"
    raise AssertionError(key)


def _guided(net: nn.Module, model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    from captum import attr as ca

    with _out_of_place_relus(model) as relus:
        if not relus:
            kinds = sorted({type(m).__name__ for m in model.modules() if "relu" in type(m).__name__.lower()})
            raise UserInputError("Guided Backprop rewrites nn.ReLU modules and this model has none"
                                 + (f" (it uses {', '.join(kinds)})" if kinds else "")
                                 + "; it would return the plain gradient: choose another method")
        a = ca.GuidedBackprop(net).attribute(x, target=target)
    return _reduce(a)


def _lrp(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    import torchvision

    try:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlusFlat
        from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    except ImportError as exc:  # pragma: no cover - zennit is a dependency
        raise UserInputError("LRP needs the zennit package: pip install zennit") from exc
    if isinstance(model, torchvision.models.ResNet):
        canonizer: Any = ResNetCanonizer()
    elif isinstance(model, torchvision.models.VGG):
        canonizer = VGGCanonizer()
    else:
        raise UserInputError(f"LRP is available for torchvision VGG and ResNet networks, whose layers zennit's rules "
                             f"and canonizers cover; this model is {type(model).__name__}: choose another method")
    composite = EpsilonPlusFlat(canonizers=[canonizer])

    def start(logits: torch.Tensor) -> torch.Tensor:
        onehot = torch.zeros_like(logits)
        onehot[:, target] = 1.0
        return logits * onehot

    with _out_of_place_relus(model), Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x.clone().requires_grad_(True), start)
    return _reduce(relevance.detach())


__all__ = ["METHODS", "PackedModel", "attribute", "cam_layer_of", "check_method"]
