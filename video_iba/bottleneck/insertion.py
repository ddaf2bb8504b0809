"""Placing a bottleneck in a user's model without leaving a trace on it.

* :func:`frozen` puts the model in eval mode with ``requires_grad=False`` for the duration and
  restores every module's own ``training`` flag and every parameter's ``requires_grad`` afterwards,
  also when an exception is raised.
* :func:`capture` runs the model once and keeps a *copy* of a layer's output (a later in-place
  op such as VGG's ``ReLU(inplace=True)`` would otherwise overwrite it).
* Runners evaluate "the network from the layer onwards" for a batch of restricted feature maps:
  :class:`~video_iba.bottleneck.split.CachedSuffix` (prefix computed once) or :class:`HookedForward`
  (the whole network each time, with a forward hook that substitutes the layer's output).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence, Union

import torch
from torch import nn

from ..errors import UserInputError, did_you_mean

log = logging.getLogger(__name__)


#: A model input: one tensor, or a list of tensors (one per pathway, e.g. SlowFast's slow and fast clips).
Inputs = Union[torch.Tensor, Sequence[torch.Tensor]]


class Runner(Protocol):
    """Maps restricted feature maps, one ``(N, C, *S)`` batch per bottleneck, to logits ``(N, K)``.

    With K inputs fitted together, ``inputs`` says which of them the rows belong to (rows spread
    evenly over them, input by input); ``None``: all K.
    """

    cached: bool
    note: str

    def __call__(self, zs: Sequence[torch.Tensor], inputs: range | None = None) -> torch.Tensor: ...


def select_inputs(x: Inputs, inputs: range | None) -> Inputs:
    """The rows ``inputs`` of a batch of K inputs (all of them for ``None``; a batch-1 input as it is)."""
    if inputs is None:
        return x
    if inputs.step != 1:
        raise ValueError("inputs must be a contiguous range")

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t if t.shape[0] == 1 else t[inputs.start:inputs.stop]

    return rows(x) if isinstance(x, torch.Tensor) else [rows(t) for t in x]


def fresh(x: Inputs) -> Inputs:
    """A new list for list inputs: some models (pytorchvideo's multipathway blocks) overwrite the list they get."""
    return x if isinstance(x, torch.Tensor) else list(x)


def expand_batch(x: Inputs, n: int) -> Inputs:
    """``n`` rows of replicas of the input's rows, in order: a batch-1 input repeated ``n`` times
    (as a view); a batch of K inputs with each row repeated ``n / K`` times (row ``k * n / K + j``
    is input ``k``), the layout of the replicas of several inputs fitted together."""
    def rows(t: torch.Tensor) -> torch.Tensor:
        k = t.shape[0]
        if k == 1:
            return t.expand(n, *t.shape[1:])
        if n % k:
            raise ValueError(f"cannot spread {n} replicas evenly over {k} inputs")
        return t.repeat_interleave(n // k, dim=0)

    if isinstance(x, torch.Tensor):
        return rows(x)
    return [rows(t) for t in x]


def get_module(model: nn.Module, name: str, hint: str = "") -> nn.Module:
    """Return the submodule at dotted path ``name``, or raise a :class:`UserInputError` with close matches."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    suggestion = did_you_mean(name, names)
    raise UserInputError(f"layer '{name}' not found in {type(model).__name__}{suggestion}; "
                         f"{hint or 'list the layers with model.named_modules()'}")


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no weight gradients for the duration; the model's own state is restored after."""
    flags = [(m, m.training) for m in model.modules()]
    # an inference tensor's requires_grad cannot be set back to True outside torch.inference_mode(); no gradient
    # reaches it anyway (the methods that need one refuse such weights)
    params = [p for p in model.parameters() if not p.is_inference()]
    grads = [p.requires_grad for p in params]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
        for p, g in zip(params, grads):
            p.requires_grad_(g)


@contextlib.contextmanager
def forward_hook(module: nn.Module, hook: Callable[..., Any]) -> Iterator[None]:
    """Register ``hook`` on ``module`` for the duration; always removed afterwards."""
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _tokens_need_a_layout(what: str, tokens: torch.Tensor) -> UserInputError:
    return UserInputError(f"{what} tokens {tuple(tokens.shape)} (batch, tokens, channels), which need a token layout "
                          f"to become a map: give one (in Python tokens=video_iba.TokenLayout(grid=(T', H', W'), "
                          f"prefix=P); for a network of your own, its ModelSpec's layouts=), or choose a layer with a "
                          f"feature map (N, C, H, W) or (N, C, T, H, W)")


def _as_tensor_output(out: Any, layer: str) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor) and out[0].dim() == 3:
        # a transformer block returning (tokens, grid size), as MViT's do
        raise _tokens_need_a_layout(f"layer '{layer}' returns a {type(out).__name__} led by", out[0])
    if not isinstance(out, torch.Tensor):
        raise UserInputError(f"layer '{layer}' returns {type(out).__name__}, not a tensor; choose a layer that "
                             f"outputs a feature map (N, C, H, W) or (N, C, T, H, W)")
    if out.dim() == 3:
        raise _tokens_need_a_layout(f"layer '{layer}' outputs", out)
    if out.dim() not in (4, 5):
        raise UserInputError(f"layer '{layer}' outputs shape {tuple(out.shape)}, not a feature map; choose a "
                             f"convolutional layer with output (N, C, H, W) or (N, C, T, H, W)")
    if all(d == 1 for d in out.shape[2:]):
        raise UserInputError(f"layer '{layer}' outputs a map of one cell {tuple(out.shape)}: a bottleneck there has "
                             f"nothing to localise; choose an earlier layer (`video-iba layers` lists their shapes)")
    return out


def first_forward(model: nn.Module, x: Inputs) -> Any:
    """``model(x)``; a model that cannot run on ``x`` at all (a clip given to an image network, a
    wrong number of channels, a clip without its batch axis where the forward unpacks the shape)
    is reported as bad input with the network's own reason."""
    try:
        return model(fresh(x))
    except UserInputError:  # a hook's refusal (a layer's output the bottleneck cannot take) says it all
        raise
    except (RuntimeError, ValueError, IndexError) as exc:  # torch's shape errors; a shape unpacked, an axis read
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else [tuple(t.shape) for t in x]
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        axis = clip_without_batch_axis(x)
        raise UserInputError(f"the model cannot run on an input of shape {shape} ({reason[:200]}); give an input of "
                             f"the shape and kind it was built for{_input_hint(model)}{f' ({axis})' if axis else ''}"
                             ) from exc


def clip_without_batch_axis(x: Any) -> str:
    """For an input ``(3, T, H, W)``, which reads as three photos but is more likely one RGB clip
    without its batch axis, the fix; ``""`` otherwise."""
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] == 3:
        return "if it is one clip (3, T, H, W), add its batch axis with x[None]"
    return ""


def _input_hint(model: nn.Module) -> str:
    """What a registry model takes (its spec's input), and how to make it; ``""`` for other models."""
    spec = getattr(model, "video_iba_spec", None) or getattr(getattr(model, "model", None), "video_iba_spec", None)
    side = getattr(spec, "input_size", None)
    if spec is None or not isinstance(side, int):
        return ""
    if getattr(spec, "modality", "image") == "video":
        return (f": {spec.name} takes clips (1, 3, {spec.frames}, {side}, {side}), as "
                f"video_iba.read_clip(path, model.video_iba_spec) reads them")
    return f": {spec.name} takes (1, 3, {side}, {side}), as video_iba.preprocess_image(image, model.video_iba_spec) makes it"


def check_logits(out: Any, x: Inputs) -> torch.Tensor:
    """The model's output for ``x``, checked to be logits ``(N, classes)`` with one row per input."""
    n = x.shape[0] if isinstance(x, torch.Tensor) else x[0].shape[0]
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == n:
        return out
    if isinstance(out, torch.Tensor):
        raise UserInputError(f"the model returns {tuple(out.shape)} for {n} input(s); attribution needs a classifier "
                             f"returning logits ({n}, classes)")
    fix = ("; wrap it so that forward returns model(x).logits with the axes it expects (a Hugging Face video "
           "classifier: video_iba.wrap_hf(model) does this)"
           if hasattr(out, "logits") or (isinstance(out, dict) and "logits" in out) else "")
    raise UserInputError(f"the model returns {type(out).__name__}, not a tensor; attribution needs a classifier "
                         f"returning logits (N, classes){fix}")


class Adapter(Protocol):
    """How a layer's output becomes the tensors a bottleneck restricts ("parts") and back.

    Part 0 is the layer's channels-first map ``(N, C, *S)`` (smoothed and drawn); further parts are
    token sets ``(N, C, P)`` (a transformer's class tokens: restricted, not smoothed, not drawn).
    ``join(split(out))`` rebuilds ``out``, at any batch size.
    """

    def split(self, out: Any, layer: str) -> tuple[list[torch.Tensor], Any]: ...

    def join(self, parts: Sequence[torch.Tensor], context: Any) -> Any: ...


class FeatureMap:
    """The adapter of a layer that outputs a feature map ``(N, C, H, W)`` or ``(N, C, T, H, W)``."""

    def split(self, out: Any, layer: str) -> tuple[list[torch.Tensor], Any]:
        return [_as_tensor_output(out, layer)], None

    def join(self, parts: Sequence[torch.Tensor], context: Any) -> Any:
        return parts[0]


@dataclass
class Taps:
    """The bottleneck tensors of one input and how to put them back into the layers' outputs.

    Attributes:
        parts: Every layer's parts, in layer order (``(1, C, *S)`` maps, ``(1, C, P)`` token sets).
        layers, adapters, contexts: Per layer.
        counts: Parts per layer.
    """

    parts: list[torch.Tensor]
    layers: list[str]
    adapters: list[Adapter]
    contexts: list[Any]
    counts: list[int]

    def grouped(self, items: Sequence[Any]) -> list[list[Any]]:
        """A flat list of per-part items grouped per layer."""
        out, i = [], 0
        for n in self.counts:
            out.append(list(items[i:i + n]))
            i += n
        return out

    def outputs(self, parts: Sequence[torch.Tensor]) -> list[Any]:
        """Each layer's output with its parts replaced by ``parts``."""
        return [a.join(g, c) for a, g, c in zip(self.adapters, self.grouped(parts), self.contexts)]

    @property
    def is_map(self) -> list[bool]:
        """Per part: whether it is a layer's map (smoothed, drawn) rather than a token set."""
        return [i == 0 for n in self.counts for i in range(n)]


def capture_taps(model: nn.Module, modules: Sequence[nn.Module], layers: Sequence[str], x: Inputs,
                 adapters: Sequence[Adapter | None] | None = None) -> tuple[torch.Tensor, Taps]:
    """Run ``model(x)`` once without gradients; return its logits and a copy of each layer's parts."""
    ads: list[Adapter] = [a or FeatureMap() for a in (adapters or [None] * len(layers))]
    seen: list[list[tuple[list[torch.Tensor], Any]]] = [[] for _ in layers]

    def make_hook(i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            parts, context = ads[i].split(out, layers[i])
            seen[i].append(([p.detach().clone() for p in parts], context))
        return hook

    with contextlib.ExitStack() as stack, torch.no_grad():
        for i, module in enumerate(modules):
            stack.enter_context(forward_hook(module, make_hook(i)))
        logits = first_forward(model, x)
    for layer, outs in zip(layers, seen):
        if not outs:
            raise UserInputError(f"layer '{layer}' did not run in the forward pass; choose a layer the model uses")
        if len(outs) > 1:
            raise UserInputError(f"layer '{layer}' runs {len(outs)} times in one forward pass; choose a layer that "
                                 f"runs once")
    check_logits(logits, x)
    taps = Taps([p for outs in seen for p in outs[0][0]], list(layers), ads, [outs[0][1] for outs in seen],
                [len(outs[0][0]) for outs in seen])
    return logits.detach(), taps


def capture(model: nn.Module, modules: Sequence[nn.Module], layers: Sequence[str], x: Inputs,
            adapters: Sequence[Adapter | None] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``model(x)`` once without gradients; return its logits and a copy of each layer's map."""
    logits, taps = capture_taps(model, modules, layers, x, adapters)
    return logits, [g[0] for g in taps.grouped(taps.parts)]


class _Stop(Exception):
    """Raised inside a hook to end a forward pass once the layer has run."""


def layer_output(model: nn.Module, module: nn.Module, layer: str, x: Inputs) -> torch.Tensor:
    """Output of ``layer`` for ``x`` without running the rest of the network (no gradients)."""
    return layer_outputs(model, [module], [layer], x)[0]


def layer_outputs(model: nn.Module, modules: Sequence[nn.Module], layers: Sequence[str], x: Inputs) -> list[torch.Tensor]:
    """Maps of several layers for ``x``; the forward pass stops once all of them have run."""
    return [parts[0] for parts in layer_parts(model, modules, layers, x)]


def layer_parts(model: nn.Module, modules: Sequence[nn.Module], layers: Sequence[str], x: Inputs,
                adapters: Sequence[Adapter | None] | None = None) -> list[list[torch.Tensor]]:
    """Every layer's parts for ``x`` (see :class:`Adapter`); the forward pass stops once all layers ran."""
    ads: list[Adapter] = [a or FeatureMap() for a in (adapters or [None] * len(layers))]
    return _until_all_ran(model, modules, layers, x,
                          lambda i, out: [p.detach().clone() for p in ads[i].split(out, layers[i])[0]])


def _until_all_ran(model: nn.Module, modules: Sequence[nn.Module], layers: Sequence[str], x: Inputs,
                   keep: Callable[[int, Any], list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """``keep(i, output)`` of the first output of each of ``modules`` (named ``layers``) in a pass on
    ``x`` without gradients, which stops once all have run; a layer that does not run is refused."""
    box: dict[int, list[torch.Tensor]] = {}

    def make_hook(i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if i not in box:
                box[i] = keep(i, out)
            if len(box) == len(modules):
                raise _Stop
        return hook

    with contextlib.ExitStack() as stack, torch.no_grad():
        for i, m in enumerate(modules):
            stack.enter_context(forward_hook(m, make_hook(i)))
        try:
            model(fresh(x))
        except _Stop:
            pass
    missing = [layers[i] for i in range(len(modules)) if i not in box]
    if missing:
        raise UserInputError(f"layer '{missing[0]}' did not run in the forward pass; choose a layer the model uses")
    return [box[i] for i in range(len(modules))]


@contextlib.contextmanager
def upstream_watch(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, list[str]]]:
    """While open, records for each of ``layers`` that runs the names of the modules its output
    depends on in a forward pass: those that started before the layer did (the model itself
    ``""``; a module run earlier on another branch counts too), in the order they started, then
    the layer and its submodules. TorchScript modules, which take no hooks, count for every layer
    with everything inside them. The dict yielded is filled as the layers start; the hooks are
    removed on leaving. Nothing is recorded for no layers."""
    found: dict[str, list[str]] = {}
    if not layers:
        yield found
        return
    started: list[str] = []
    scripted: list[str] = []
    hooked: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule) or any(name.startswith(f"{s}.") for s in scripted):
            scripted.append(name)
        else:
            hooked.append((name, module))

    def make_hook(layer: str) -> Callable[..., None]:
        inside = [f"{layer}.{n}" if n else layer for n, _ in get_module(model, layer).named_modules()]

        def hook(*_args: Any) -> None:
            found.setdefault(layer, list(dict.fromkeys([*started, *scripted, *inside])))
        return hook

    with contextlib.ExitStack() as stack:
        for layer in layers:  # before the others: a layer's own start is not in what started before it
            stack.callback(get_module(model, layer).register_forward_pre_hook(make_hook(layer)).remove)
        for name, module in hooked:
            stack.callback(module.register_forward_pre_hook(lambda *_a, n=name: started.append(n)).remove)
        yield found


def upstream_modules(model: nn.Module, layers: Sequence[str], x: Inputs) -> dict[str, list[str]]:
    """For each of ``layers``, the modules its output depends on in a pass on ``x`` (see
    :func:`upstream_watch`); the pass stops once every layer has run, whatever the layers output."""
    with upstream_watch(model, layers) as found:
        _until_all_ran(model, [get_module(model, layer) for layer in layers], layers, x, lambda _i, _out: [])
    return {layer: found[layer] for layer in layers}


class HookedForward:
    """Runner that evaluates the whole network with each layer's output replaced.

    The network before the layers is recomputed on every call; use it where the model cannot be
    split at the layers. A context manager: the hooks exist only inside ``with``. With ``taps``,
    ``zs`` are the layers' parts, put back into each output by its adapter (tokens, tuples).
    """

    cached = False

    def __init__(self, model: nn.Module, modules: Sequence[nn.Module], x: Inputs, note: str = "",
                 taps: Taps | None = None) -> None:
        self.model, self.modules, self.x, self.note, self.taps = model, list(modules), x, note, taps
        self._outs: Sequence[Any] | None = None
        self._ctx: contextlib.ExitStack | None = None

    def _hook(self, i: int) -> Callable[..., Any]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
            if self._outs is None:
                return out
            z = self._outs[i]
            if isinstance(z, torch.Tensor) and (not isinstance(out, torch.Tensor) or out.shape[1:] != z.shape[1:]):
                raise RuntimeError(f"layer output {getattr(out, 'shape', None)} does not match the bottleneck "
                                   f"{tuple(z.shape)}")
            return z
        return hook

    def __enter__(self) -> "HookedForward":
        self._ctx = contextlib.ExitStack()
        for i, module in enumerate(self.modules):
            self._ctx.enter_context(forward_hook(module, self._hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._ctx is not None
        self._ctx.close()
        self._ctx = None

    def __call__(self, zs: Sequence[torch.Tensor], inputs: range | None = None) -> torch.Tensor:
        if self._ctx is None:
            raise RuntimeError("HookedForward must be used inside a `with` block")
        self._outs = self.taps.outputs(zs) if self.taps is not None else zs
        try:
            return self.model(fresh(expand_batch(select_inputs(self.x, inputs), zs[0].shape[0])))
        finally:
            self._outs = None
