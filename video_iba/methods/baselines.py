"""The paper's baseline attribution methods, as thin wrappers over Captum, for images and clips.

Every method returns an :class:`~video_iba.results.Attribution` at the model input's
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
* Attention rollout (transformers whose attention composes over all tokens; see :mod:`.rollout`): the
  head's share drawn from each grid token, placed on the input as Grad-CAM's token maps are; the
  same map for every class. ``gae``: its class-specific variant (Chefer et al. 2021), each block's
  attention weighted by the target logit's gradient with respect to it, rectified, averaged over
  heads and accumulated as ``R += Ā R``; placed on the input alike.
* LRP (torchvision VGG and ResNet networks only, through zennit, which handles ResNet's skip
  connections): the EpsilonPlusFlat composite (flat rule in the first layer, z+ in the other
  convolutions, epsilon in the dense layers; Kohlbrenner et al. 2020), batch norm merged into
  the preceding convolution by zennit's canonizers for the duration; relevance starts at the
  target logit.

Multi-pathway models (SlowFast) take a list of tensors, which Captum rejects: they are explained
on the clip through :class:`~video_iba.models.pathways.PackedModel`, whose forward builds the pathways, so a removed
tube disappears from both pathways at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._version import __version__
from ..bottleneck.insertion import (HookedForward, capture_taps, check_logits, first_forward, forward_hook, frozen,
                                   get_module)
from ..errors import UserInputError
from ..models.layers import cam_layer_of
from ..models.layouts import TokenLayout, layouts_for
from ..models.pathways import Pack, one_input
from ..results import Attribution, Unit
from ..seeding import cuda_devices, seeded
from .common import check_input, check_target, model_name, module_path, target_label
from .rollout import (RELEVANCE_NAME, RESIDUAL, ROLLOUT_NAME, attention_relevance, attention_rollout,
                      check_rollout)

log = logging.getLogger(__name__)

#: The baselines, in the order the paper's Table 1 lists them (LRP last, images only), then the
#: attention methods (transformers whose attention composes over all tokens).
BASELINES = ("random", "gradient", "saliency", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam",
             "guided_gradcam", "occlusion8", "occlusion14", "lrp", "rollout", "gae")
SMOOTHGRAD_SAMPLES = 50
SMOOTHGRAD_NOISE = 0.15
IG_STEPS = 50
OCCLUSION_TUBE_FRAMES = 4
#: The baselines that read a layer (``cam_layer``, ``tokens``).
CAM_METHODS = ("gradcam", "guided_gradcam")
#: The baselines that read the blocks' attention: attention rollout and its gradient-weighted relevance.
ATTENTION_METHODS = ("rollout", "gae")
#: The baselines that place tokens on a grid (``tokens``).
TOKEN_METHODS = (*CAM_METHODS, *ATTENTION_METHODS)


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


def _check_cam_options(method: str, cam_layer: Any, tokens: Any) -> None:
    """A Grad-CAM layer is one module name, and only the Grad-CAM methods take one (and a token
    layout, as attention rollout does)."""
    given = [name for name, v in (("cam_layer", cam_layer), ("tokens", tokens))
             if v is not None and method not in (CAM_METHODS if name == "cam_layer" else TOKEN_METHODS)]
    if given:
        takes = TOKEN_METHODS if given == ["tokens"] else CAM_METHODS
        raise UserInputError(f"{' and '.join('{' + g + '}' for g in given)} appl{'y' if len(given) > 1 else 'ies'} to "
                             f"{', '.join(takes[:-1])} and {takes[-1]} only, not to {method}; "
                             f"drop {'them' if len(given) > 1 else 'it'}", options=given)
    if cam_layer is not None and not isinstance(cam_layer, (str, nn.Module)):
        raise UserInputError(f"Grad-CAM reads one layer, got {cam_layer!r}; give {{cam_layer}} one module name",
                             options=["cam_layer"])


def _upsample(cam: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if cam.numel() == 0:
        raise RuntimeError("Grad-CAM returned an empty tensor; the chosen layer gave no map")
    mode = "trilinear" if cam.dim() == 5 else "bilinear"
    return F.interpolate(cam, size=tuple(size), mode=mode, align_corners=False)


def _reduce(attr: torch.Tensor) -> torch.Tensor:
    """``(1, C, *S)`` to ``*S``: the sum over colour channels, in at least float32."""
    return attr.detach().to(torch.promote_types(attr.dtype, torch.float32)).sum(dim=1)[0]


def baseline(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    target: int | str | None = None,
    *,
    pack: Pack | None = None,
    cam_layer: str | nn.Module | None = None,
    tokens: TokenLayout | None = None,
    tube_frames: int = OCCLUSION_TUBE_FRAMES,
    seed: int = 0,
    batch: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Attribution:
    """Attribute ``model``'s decision for ``x`` with the baseline ``method`` (one of :data:`BASELINES`).

    Args:
        method: The baseline.
        model: The classifier; left exactly as it was.
        x: One preprocessed input ``(1, C, H, W)`` or clip ``(1, C, T, H, W)``.
        target: Class to explain (an index, or a class name of the model's spec); ``None``: the
            top-1 prediction.
        pack: For a multi-pathway network: builds its pathway list from the clip (registry models:
            automatic); the network is then explained on the clip, so a removed tube disappears
            from every pathway at once.
        cam_layer: Grad-CAM layer, a module path or a submodule (default: the registry spec's, else
            :func:`~video_iba.models.layers.cam_layer_of`).
        tokens: The token layout of ``cam_layer`` (default: the registry spec's; none: a feature
            map). Grad-CAM then weighs the grid tokens' channels by their mean gradient, with the
            prefix tokens left out, and places the map on the grid. For attention rollout and
            ``gae``: the layout of the attention's tokens (default: the registry spec's that fits them).
        tube_frames: Occlusion tube length in frames for clips.
        seed: Seed of the random map and of SmoothGrad's noise.
        batch: Inputs per forward pass for occlusion, SmoothGrad and integrated gradients (default:
            :func:`perturbation_batch`, from the device's memory).
        on_progress: Called with the number of inputs of each network pass of the methods that
            run many (occlusion, SmoothGrad, integrated gradients; see :func:`network_inputs`).
    """
    if method not in BASELINES:
        raise UserInputError(f"unknown baseline '{method}'; choose one of {', '.join(BASELINES)}")
    _check_cam_options(method, cam_layer, tokens)
    if cam_layer is not None:
        cam_layer = module_path(model, cam_layer, "cam_layer")
    x, pk, _ = check_input(model, x, pack)
    check_fits(method, model, video=pk is not None or x.dim() != 4)
    net = one_input(model, pk)
    t0 = time.perf_counter()
    meta: dict[str, Any] = {"method": method, "channel_reduction": "sum over colour channels"}
    with frozen(model), torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad():
            logits = check_logits(first_forward(net, x), x)
        target = check_target(target, logits, model)
        with warnings.catch_warnings():
            # Captum's notices that it set requires_grad on the input and hooks on ReLUs (both undone)
            warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU.*")
            many = method in MANY_INPUTS or method.startswith("occlusion")
            if batch is None:
                batch = perturbation_batch(net, x, gradients=method in MANY_INPUTS) if many else DEFAULT_BATCH
            meta["batch"] = batch
            run_net = _Counted(net, on_progress) if many and on_progress is not None else net
            values, unit = _run(method, run_net, model, x, target, (cam_layer, tokens), tube_frames, seed, batch, meta)
    if not torch.isfinite(values).all():
        raise RuntimeError(f"{method} produced non-finite values")
    meta.update({"target": target, "seconds": round(time.perf_counter() - t0, 3), "version": __version__,
                 "input_shape": list(x.shape), **model_name(model), **target_label(model, target)})
    return Attribution(values=values.float().cpu(), unit=unit, target=target, capacity=None,
                       logits=logits[0].detach().float().cpu(), meta=meta)


#: Baselines that evaluate the network on many inputs (besides occlusion): their count, per method.
MANY_INPUTS = ("smoothgrad", "integrated_gradients")
#: Inputs per network pass on a CPU (larger batches were no faster there).
DEFAULT_BATCH = 16
#: Share of a CUDA device's free memory that a perturbation batch may take.
CUDA_BUDGET = 0.5


def network_inputs(method: str, shape: Sequence[int], tube_frames: int = OCCLUSION_TUBE_FRAMES) -> int:
    """How many inputs the baseline ``method`` runs through the network for an input of ``shape``
    ``(1, C, [T,] H, W)`` (what its progress counts): occlusion one per window and the input
    itself, SmoothGrad its samples, integrated gradients its steps, the others 1."""
    if method.startswith("occlusion"):
        w = int(method[len("occlusion"):])
        sizes = list(shape[2:])
        windows = [min(tube_frames, sizes[0])] + [w, w] if len(sizes) == 3 else [w, w]
        count = 1
        for n, k in zip(sizes, windows):  # Captum's shifts: the last window may run past the edge
            k = max(1, min(k, n))
            count *= math.ceil((n - k) / k) + 1
        return count + 1
    if method == "smoothgrad":
        return SMOOTHGRAD_SAMPLES
    if method == "integrated_gradients":
        return IG_STEPS
    return 1


def perturbation_batch(net: nn.Module, x: torch.Tensor, gradients: bool) -> int:
    """Inputs per network pass for a baseline that runs many: on a CUDA device as many as fit in
    :data:`CUDA_BUDGET` of its free memory, by the memory one input took (measured, with its
    backward pass where the method needs gradients); on a CPU :data:`DEFAULT_BATCH`."""
    if not x.is_cuda:
        return DEFAULT_BATCH
    torch.cuda.synchronize(x.device)
    base = torch.cuda.memory_allocated(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    probe = x.detach().clone().requires_grad_(gradients)
    with torch.set_grad_enabled(gradients):
        out = net(probe)
        if gradients:
            out[:, 0].sum().backward()
    per_input = max(torch.cuda.max_memory_allocated(x.device) - base, 1)
    del out, probe
    free, _total = torch.cuda.mem_get_info(x.device)
    return int(max(1, min(256, CUDA_BUDGET * free // per_input)))


class _Counted(nn.Module):
    """``net``, reporting the inputs of every pass to ``on_progress``."""

    def __init__(self, net: nn.Module, on_progress: Callable[[int], None]) -> None:
        super().__init__()
        self.net, self.on_progress = net, on_progress

    def forward(self, x: torch.Tensor, *args: Any) -> Any:
        out = self.net(x, *args)
        self.on_progress(int(x.shape[0]))
        return out


def _run(key: str, net: nn.Module, model: nn.Module, x: torch.Tensor, target: int,
         cam: tuple[str | None, TokenLayout | None], tube_frames: int, seed: int, batch: int, meta: dict[str, Any]
         ) -> tuple[torch.Tensor, Unit]:
    from captum import attr as ca

    size = tuple(x.shape[2:])
    if key == "random":
        g = torch.Generator(device="cpu").manual_seed(seed)
        meta["seed"] = seed
        return torch.rand(size, generator=g), Unit.RANDOM
    if key in ("gradient", "saliency"):
        a = ca.Saliency(net).attribute(x, target=target, abs=key == "saliency")
        return _reduce(a), Unit.GRADIENT if key == "gradient" else Unit.ABS_GRADIENT
    if key == "smoothgrad":
        std = SMOOTHGRAD_NOISE * float(x.max() - x.min())

        def cast(inp: torch.Tensor) -> torch.Tensor:  # captum's noise is float32: a half network gets its own type
            return net(inp.to(x.dtype))

        with seeded(seed, cuda_devices([x])):  # captum draws from the global generators; the caller's are kept
            a = ca.NoiseTunnel(ca.Saliency(cast)).attribute(x, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES,
                                                            nt_samples_batch_size=batch, stdevs=std, target=target,
                                                            abs=False)
        meta.update({"samples": SMOOTHGRAD_SAMPLES, "noise_std": std, "seed": seed})
        return _reduce(a), Unit.GRADIENT
    if key == "integrated_gradients":
        a = ca.IntegratedGradients(net).attribute(x, baselines=0.0, target=target, n_steps=IG_STEPS,
                                                  internal_batch_size=batch)
        meta.update({"steps": IG_STEPS, "baseline": "zero (normalised input: the mean colour)"})
        return _reduce(a), Unit.LOGIT
    if key in ("gradcam", "guided_gradcam"):
        spec = getattr(model, "video_iba_spec", None)
        name = cam[0] or (spec.cam_layer if spec is not None and spec.cam_layer else None) or cam_layer_of(net, x)
        meta["cam_layer"] = name
        layer = get_module(model, name, "list the layers with `video-iba layers`")
        layout = layouts_for(model, [name], cam[1])[0]
        shapes: list[tuple[int, ...]] = []  # a feature map layer's output, once per call in the forward pass
        # a registry model lays out its token layers itself: only a model of one's own takes a layout
        tokens_fix = (", or give a token layer its layout with {tokens}" if spec is None
                      else ", or a layer it shows with a token grid" if any(lay for _, lay in spec.layouts) else "")
        if layout is not None:
            meta["cam_tokens"] = repr(layout)
            grid_cam = _token_gradcam(net, layer, name, layout, x, target)
        else:
            def record(_m: Any, _i: Any, out: Any) -> None:
                first = out[0] if isinstance(out, (tuple, list)) and out else out
                shapes.append(tuple(first.shape) if isinstance(first, torch.Tensor) else ())
                if isinstance(out, (tuple, list)) and not all(isinstance(o, torch.Tensor) for o in out):
                    # (tokens, grid size), as MViT's blocks return: captum's hook would fail on it
                    raise UserInputError(f"Grad-CAM's layer '{name}' returns a {type(out).__name__} of "
                                         f"{', '.join(type(o).__name__ for o in out)}, not a feature map; choose a "
                                         f"convolutional layer (`video-iba layers` lists the layers' outputs)"
                                         f"{tokens_fix}", options=["tokens"])

            with forward_hook(layer, record):
                grid_cam = ca.LayerGradCam(net, layer).attribute(x, target=target, relu_attributions=True)
            if len(shapes) > 1:  # a layer run twice per pass (shared weights): captum would keep one of its outputs
                raise UserInputError(f"Grad-CAM's layer '{name}' runs {len(shapes)} times in one forward pass; choose "
                                     f"a layer that runs once with {{cam_layer}}", options=["cam_layer"])
        if isinstance(grid_cam, tuple):
            grid_cam = grid_cam[0]
        if grid_cam.dim() == x.dim() + 1 and grid_cam.shape[2] == 1:  # a photo's one-frame token grid
            grid_cam = grid_cam[:, :, 0]
        if grid_cam.dim() != x.dim():
            shown = shapes[0] if shapes else tuple(grid_cam.shape)
            raise UserInputError(f"Grad-CAM's layer '{name}' outputs shape {shown}, not a feature map "
                                 f"{'(N, C, T, H, W)' if x.dim() == 5 else '(N, C, H, W)'} as the input; choose a "
                                 f"convolutional layer (`video-iba layers` lists the layers' outputs){tokens_fix}",
                                 options=["tokens"])
        up = _upsample(grid_cam.detach().to(torch.promote_types(grid_cam.dtype, torch.float32)), size)[0, 0]
        if key == "gradcam":
            return up, Unit.GRAD_CAM
        return _guided(net, model, x, target) * up, Unit.GUIDED_GRAD_CAM
    if key in ATTENTION_METHODS:
        if key == "rollout":
            grid, unit = attention_rollout(model, x, cam[1]), Unit.ROLLOUT
            meta.update({"residual": RESIDUAL, "class_agnostic": True})
        else:
            grid, unit = attention_relevance(model, x, target, cam[1]), Unit.ATTENTION_RELEVANCE
            meta["class_agnostic"] = False
        if x.dim() == 4:
            grid = grid[:, :, 0]
        return _upsample(grid, size)[0, 0], unit
    if key == "guided_backprop":
        return _guided(net, model, x, target), Unit.GUIDED_GRADIENT
    if key == "lrp":
        return _lrp(model, x, target), Unit.RELEVANCE
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
        return _reduce(a), Unit.LOGIT_DROP
    raise AssertionError(key)


def _token_gradcam(net: nn.Module, module: nn.Module, name: str, layout: TokenLayout, x: torch.Tensor,
                   target: int) -> torch.Tensor:
    """Grad-CAM on a token layer's grid ``(1, 1, T', H', W')``: the grid tokens' channels weighted by
    their gradients' mean over the grid, summed, rectified (the prefix tokens take no part)."""
    _, taps = capture_taps(net, [module], [name], x, [layout])
    parts = [p.requires_grad_(True) for p in taps.parts]  # detached copies: gradients stop here
    with HookedForward(net, [module], x, taps=taps) as hooked:
        logits = hooked(parts)
    grads = torch.autograd.grad(logits[0, target], parts, allow_unused=True)
    grad = grads[0] if grads[0] is not None else torch.zeros_like(parts[0])
    if not any(g is not None and bool(g.abs().sum() > 0) for g in grads):
        raise UserInputError(f"Grad-CAM at '{name}': the logit of class {target} does not depend on this layer (zero "
                             f"gradient on every token; a model with random weights and a zero-initialised head, "
                             f"as torchvision's ViTs, has the same logits for every input); use trained weights")
    if not bool(grad.abs().sum() > 0):
        raise UserInputError(f"Grad-CAM at '{name}' gets no gradient on the grid tokens (after this layer the head "
                             f"reads only the class token); name an earlier block with {{cam_layer}}",
                             options=["cam_layer"])
    weights = grad.mean(dim=tuple(range(2, grad.dim())), keepdim=True)
    return F.relu((weights * parts[0]).sum(dim=1, keepdim=True)).detach()


def _guided(net: nn.Module, model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    from captum import attr as ca

    with _out_of_place_relus(model):
        a = ca.GuidedBackprop(net).attribute(x, target=target)
    return _reduce(a)


def check_fits(method: str, model: nn.Module, video: bool, name: str | None = None) -> None:
    """Refuse, before any work, a baseline this network cannot take: LRP outside torchvision's VGG
    and ResNet image networks, Guided Backprop and Guided Grad-CAM on a network without ``nn.ReLU``
    modules, attention rollout and ``gae`` on a network whose attention does not compose over all
    tokens (:func:`~.rollout.check_rollout`). Other methods take any network. ``name`` names the network
    in the message."""
    if method == "lrp":
        if video:
            raise UserInputError("LRP is available for images only (torchvision VGG and ResNet networks); choose "
                                 "another method for clips")
        _check_lrp_network(model, name)
    elif method in ("guided_backprop", "guided_gradcam"):
        _check_relus(method, model, name)
    elif method in ATTENTION_METHODS:
        check_rollout(model, name, ROLLOUT_NAME if method == "rollout" else RELEVANCE_NAME)


def _check_relus(method: str, model: nn.Module, name: str | None) -> None:
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        kinds = sorted({type(m).__name__ for m in model.modules() if type(m).__module__ == nn.GELU.__module__
                        and not isinstance(m, (nn.MultiheadAttention, nn.Softmax, nn.LogSoftmax))})
        raise UserInputError(f"{'Guided Backprop' if method == 'guided_backprop' else 'Guided Grad-CAM'} rewrites "
                             f"nn.ReLU modules and {name or 'this model'} has none"
                             + (f" (it uses {', '.join(kinds)})" if kinds else "")
                             + "; it would return the plain gradient: choose another method")


def _check_lrp_network(model: nn.Module, name: str | None) -> None:
    import torchvision

    if not isinstance(model, (torchvision.models.ResNet, torchvision.models.VGG)):
        raise UserInputError(f"LRP is available for torchvision VGG and ResNet networks, whose layers zennit's rules "
                             f"and canonizers cover, not {name or 'this model'}'s {type(model).__name__}: choose "
                             f"another method")


def _lrp(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    import torchvision

    try:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlusFlat
        from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    except ImportError as exc:  # pragma: no cover - zennit is a dependency
        raise UserInputError("LRP needs the zennit package: pip install zennit") from exc
    canonizer = ResNetCanonizer() if isinstance(model, torchvision.models.ResNet) else VGGCanonizer()
    composite = EpsilonPlusFlat(canonizers=[canonizer])

    def start(logits: torch.Tensor) -> torch.Tensor:
        onehot = torch.zeros_like(logits)
        onehot[:, target] = 1.0
        return logits * onehot

    with _out_of_place_relus(model), Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x.clone().requires_grad_(True), start)
    return _reduce(relevance.detach())


__all__ = ["ATTENTION_METHODS", "BASELINES", "CAM_METHODS", "TOKEN_METHODS", "baseline", "check_fits"]
