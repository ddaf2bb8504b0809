"""Splitting a network at a layer with ``torch.fx``, so the part before it runs only once.

The model is traced with the chosen layer as a leaf. Nodes that depend on the layer's output form
the *suffix*; values the suffix reads from before the layer (a skip connection from earlier, the
batch size read off the input) form the *frontier*. The prefix is evaluated once per batch size and
its outputs copied; each optimisation step then runs only the suffix. The split is checked against
the full model's logits before it is used.
"""

from __future__ import annotations

import copy
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

from .attention import fuse_attention
from .depthwise import fast_depthwise
from .graphs import finished, rewritable_copy
from .insertion import Inputs, Taps, expand_batch, fresh, select_inputs
from .token_pool import pool_in_place

log = logging.getLogger(__name__)


class SplitError(RuntimeError):
    """The model cannot be split at the layer (not traceable, layer used twice, check failed)."""


class _LeafTracer(fx.Tracer):
    def __init__(self, leaves: Sequence[str]) -> None:
        super().__init__()
        self._leaves = set(leaves)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self._leaves or super().is_leaf_module(m, module_qualified_name)


def _copy_value(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, (tuple, list)):
        return type(v)(_copy_value(u) for u in v)
    return v


_CONV_BN = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))
_CONVS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
#: The arguments of ``torch.convNd``, in order.
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_MODULES = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_ZERO_PADS = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)


def _fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule | None:
    """A copy of ``gm`` in which each eval-mode batch norm that alone reads a convolution is folded into it.

    The folded convolutions are private copies whose parameters do not require gradients (a
    convolution called as a function, with its weight a module's attribute, gets folded weights as
    buffers of the copy); every other module is shared with ``gm`` (and so with the user's model),
    which is not changed. Returns ``None`` where there is nothing to fold.
    """
    folded = rewritable_copy(gm)
    graph = folded.graph
    modules = dict(gm.named_modules())
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or not isinstance(node.args[0], fx.Node):
            continue
        prev = node.args[0]
        bn = modules.get(node.target)  # type: ignore[arg-type]
        if bn is None or len(prev.users) != 1 or type(bn) not in [b for _c, b in _CONV_BN]:
            continue
        if bn.training or not bn.track_running_stats or bn.running_mean is None:
            continue
        name = f"_folded_{count}"
        if prev.op == "call_module":
            conv = modules.get(prev.target)  # type: ignore[arg-type]
            if conv is None or conv.training or not any(type(conv) is c and type(bn) is b for c, b in _CONV_BN):
                continue
            fused = fuse_conv_bn_eval(conv, bn)
            for p in fused.parameters():
                p.requires_grad_(False)
            folded.add_submodule(name, fused)
            prev.target = name
        elif not _fold_into_function(folded, prev, bn, name):
            continue
        node.replace_all_uses_with(prev)
        graph.erase_node(node)
        count += 1
    return finished(folded, count)


def _fold_into_function(gm: fx.GraphModule, conv: fx.Node, bn: nn.Module, name: str) -> bool:
    """Fold ``bn`` into ``conv``, a call of ``torch.convNd`` whose weight (and bias) are attributes of
    ``gm``: the folded ones become buffers ``name_weight`` and ``name_bias`` of ``gm``. Whether it did."""
    if conv.op != "call_function" or conv.target not in _CONVS or type(bn) is not _CONV_BN[_CONVS[conv.target] - 1][1]:
        return False
    named = _conv_arguments(conv)
    weight, bias = named.get("weight"), named.get("bias")
    if not (isinstance(weight, fx.Node) and weight.op == "get_attr") or not (
            bias is None or isinstance(bias, fx.Node) and bias.op == "get_attr"):
        return False
    try:
        w = gm.get_parameter(str(weight.target))
        b = None if bias is None else gm.get_parameter(str(bias.target))
    except AttributeError:  # a buffer or a plain tensor attribute
        return False
    fused_w, fused_b = fuse_conv_bn_weights(w, b, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    gm.register_buffer(f"{name}_weight", fused_w.detach().clone())
    gm.register_buffer(f"{name}_bias", fused_b.detach().clone())
    with gm.graph.inserting_before(conv):
        new_w, new_b = gm.graph.get_attr(f"{name}_weight"), gm.graph.get_attr(f"{name}_bias")
    conv.args, conv.kwargs = (), {**named, "weight": new_w, "bias": new_b}
    for old in (weight, bias):
        if isinstance(old, fx.Node) and not old.users:
            gm.graph.erase_node(old)
    return True


def _conv_arguments(node: fx.Node) -> dict[str, Any]:
    """The arguments of a call of ``torch.convNd``, by name."""
    return {**dict(zip(_CONV_ARGS, node.args)), **node.kwargs}


def _zero_pads(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[int, ...] | None:
    """The pads (last dimension first, as ``F.pad`` takes them) of a node that pads with zeros, else ``None``."""
    if node.op == "call_module" and type(modules.get(node.target)) in _ZERO_PADS:  # type: ignore[arg-type]
        module = modules[node.target]  # type: ignore[index]
        pads = module.padding  # type: ignore[union-attr]
        return tuple(pads) if getattr(module, "value", 0.0) == 0.0 else None
    if node.op == "call_function" and node.target is torch.nn.functional.pad:
        pads = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
        if mode == "constant" and value in (None, 0, 0.0) and isinstance(pads, (tuple, list)) and all(
                isinstance(v, int) for v in pads):
            return tuple(pads)
    return None


def _conv_padding(padding: Any, dims: int) -> tuple[int, ...] | None:
    """A convolution's own padding, one per dimension; ``None`` if not numbers (``"same"``)."""
    if isinstance(padding, int):
        return (padding,) * dims
    if isinstance(padding, (tuple, list)) and len(padding) == dims and all(isinstance(v, int) for v in padding):
        return tuple(padding)
    return None


def _fold_padding(gm: fx.GraphModule) -> fx.GraphModule | None:
    """A copy of ``gm`` in which a zero padding the same on both sides of each dimension that alone
    feeds a convolution becomes the convolution's own padding (TensorFlow ports pad stride-1
    convolutions so: the padded copy and its gradient cost more than the convolution's own
    padding). Convolution modules so changed are private shallow copies sharing their parameters;
    ``None`` where there is nothing to fold."""
    folded = rewritable_copy(gm)
    modules = dict(gm.named_modules())
    count = 0
    for node in list(folded.graph.nodes):
        module = modules.get(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]
        if node.op == "call_function" and node.target in _CONVS:
            named = _conv_arguments(node)
            dims = _CONVS[node.target]  # type: ignore[index]
            padding, source = named.get("padding", 0), named.get("input")
        elif module is not None and type(module) in _CONV_MODULES and module.padding_mode == "zeros":
            dims, padding, source = _CONV_MODULES[type(module)], module.padding, node.args[0] if node.args else None
        else:
            continue
        if not isinstance(source, fx.Node) or len(source.users) != 1 or not source.args:
            continue
        pads, own = _zero_pads(source, modules), _conv_padding(padding, dims)
        if pads is None or own is None or len(pads) > 2 * dims or len(pads) % 2:
            continue
        pairs = [pads[i:i + 2] for i in range(0, len(pads), 2)][::-1]  # first dimension first
        pairs = [(0, 0)] * (dims - len(pairs)) + pairs
        if any(a != b for a, b in pairs):
            continue  # one-sided ("same" with an even kernel and a stride): no convolution padding does that
        new = tuple(o + a for o, (a, _b) in zip(own, pairs))
        if node.op == "call_function":  # every argument by name
            node.args, node.kwargs = (), {**named, "input": source.args[0], "padding": new}
        else:
            conv = copy.copy(module)  # the parameters shared, not copied
            conv.padding = new  # type: ignore[union-attr]
            name = f"_padded_{count}"
            folded.add_submodule(name, conv)  # type: ignore[arg-type]
            node.target, node.args = name, (source.args[0], *node.args[1:])
        folded.graph.erase_node(source)
        count += 1
    return finished(folded, count)


@dataclass(frozen=True)
class _Plan:
    """A model's split suffix as traced and rewritten for inputs of one shape, and what it was built from."""

    key: tuple[Any, ...]
    suffix: fx.GraphModule
    prefix: fx.GraphModule
    n_frontier: int
    note: str


#: Each model's last split (:class:`CachedSuffix` with ``reuse=True``), kept while the model lives: tracing,
#: rewriting and checking each rewrite take from a fraction of a second (ResNet-50) to seconds (MViT) of each input.
_plans: weakref.WeakKeyDictionary[nn.Module, _Plan] = weakref.WeakKeyDictionary()


def _plan_key(model: nn.Module, layers: Sequence[str], x: Inputs, fuse: bool) -> tuple[Any, ...]:
    """What a split depends on: the layers, the rewrites, each input's shape but for the batch (a split runs at any
    batch size), type and device, and the model's modules, modes and tensors (each tensor's identity, storage and
    version, which every in-place change, ``load_state_dict`` included, advances)."""
    inputs = [x] if isinstance(x, torch.Tensor) else list(x)
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return (tuple(layers), fuse, tuple((tuple(t.shape[1:]), t.dtype, t.device) for t in inputs),
            tuple((name, id(m), m.training) for name, m in model.named_modules()),
            tuple((name, id(t), t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape)) for name, t in tensors))


class CachedSuffix:
    """Runner evaluating only the part of ``model`` after the bottleneck layers.

    Args:
        model: The network (not modified; the suffix shares its submodules).
        layers: Dotted module paths of the bottleneck layers (one per pathway for SlowFast).
        x: The input (a tensor or a list of pathway tensors; batch 1, or K inputs fitted together);
            values the suffix reads from before the layers are computed from it once per batch size.
        rs: Each layer's output for ``x`` ``(1, C, *S)`` (or ``(K, ...)``), as captured by hooks (with ``taps``: the
            layers' parts).
        logits: ``model(x)``, used to check the split.
        taps: How parts go back into the layers' outputs (token layouts, tuples); ``None``: the
            layers output the maps themselves.
        fuse: Run torchvision's MViT and Swin3D attention fused (:mod:`.attention`), MViT's token
            poolings on the tokens in place (:mod:`.token_pool`) and depthwise 3-D convolutions
            with a forward convolution for their input gradient (:mod:`.depthwise`); ``False``
            keeps the model's own code (the same arithmetic).
        reuse: Keep the split for the model's next input of this shape (and take the one kept, if
            any): while the model's modules and tensors are unchanged, it is not traced and rewritten
            again, only checked against the input's logits (and built again where that fails).

    Raises:
        SplitError: if the model cannot be traced, a layer is not called exactly once, a layer
            lies after another, or the suffix does not reproduce ``logits``.
    """

    cached = True
    note = "prefix computed once; suffix only per step"

    def __init__(self, model: nn.Module, layers: Sequence[str], x: Inputs, rs: Sequence[torch.Tensor],
                 logits: torch.Tensor, taps: Taps | None = None, fuse: bool = True, reuse: bool = False) -> None:
        self._taps = taps
        self._x = x
        self._cache: dict[tuple[int, tuple[int, int] | None], tuple[Any, ...]] = {}
        self.layers = list(layers)
        key = _plan_key(model, layers, x, fuse) if reuse else None
        kept = _plans.get(model) if reuse else None
        if kept is not None and kept.key == key:
            self._suffix, self._prefix, self.n_frontier, self.note = kept.suffix, kept.prefix, kept.n_frontier, kept.note
            try:
                self._check(rs, logits)
                return
            except SplitError as exc:  # something the fingerprint cannot see (a Python attribute the trace read)
                log.info("the split kept from an earlier input does not reproduce this one (%s); splitting again", exc)
                del _plans[model]  # not kept where the model can no longer be split
                self._cache.clear()
        self._split(model)
        self._rewrite(rs, logits, fuse)
        if key is not None:
            _plans[model] = _Plan(key, self._suffix, self._prefix, self.n_frontier, self.note)

    def _split(self, model: nn.Module) -> None:
        """Trace ``model`` with the layers as leaves and cut it into the suffix and the prefix."""
        layers = self.layers
        try:
            graph = _LeafTracer(layers).trace(model)
        except Exception as exc:  # tracing fails in many ways on dynamic Python code
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise SplitError(f"torch.fx could not trace the model ({type(exc).__name__}: {first})") from exc
        order = list(graph.nodes)
        bs = _bottleneck_nodes(order, layers)
        depends = _dependents(order, bs, layers)
        suffix = [n for n in order if n in depends and n not in bs]
        consts: list[fx.Node] = []
        frontier: list[fx.Node] = []
        for n in suffix:
            for a in n.all_input_nodes:
                if a in depends or a in consts or a in frontier:
                    continue
                (consts if a.op == "get_attr" else frontier).append(a)

        sg = fx.Graph()
        env: dict[fx.Node, fx.Node] = {b: sg.placeholder(f"bottleneck_{i}") for i, b in enumerate(bs)}
        for i, f in enumerate(frontier):
            env[f] = sg.placeholder(f"frontier_{i}")
        for n in consts + suffix:
            env[n] = sg.node_copy(n, lambda a: env[a])
        self._suffix = fx.GraphModule(model, sg)
        self._prefix = _prefix_module(model, order, frontier, depends)
        self.n_frontier = len(frontier)
        self.note = CachedSuffix.note

    def _rewrite(self, rs: Sequence[torch.Tensor], logits: torch.Tensor, fuse: bool) -> None:
        """Apply each rewrite of the suffix that keeps its logits (noted), and check the suffix."""
        checked = False  # whether self._suffix as it is now was checked
        rewrites: list[tuple[Callable[[fx.GraphModule], fx.GraphModule | None], str]] = [
            (_fold_batchnorm, "batch norm folded into the convolutions"),
            (_fold_padding, "zero padding done by the convolutions")]
        if fuse:
            rewrites += [(fuse_attention, "attention fused"), (pool_in_place, "token poolings read in place"),
                         (fast_depthwise, "depthwise input gradients as convolutions")]
        for rewrite, what in rewrites:
            rewritten = rewrite(self._suffix)
            if rewritten is None:
                continue
            kept, self._suffix = self._suffix, rewritten
            try:
                self._check(rs, logits)
                self.note += "; " + what
                checked = True
            except SplitError as exc:
                log.info("%s: the logits differ (%s); not used", what, exc)
                self._suffix = kept
        if not checked:
            self._check(rs, logits)

    def _frontier(self, n: int, inputs: range | None) -> tuple[Any, ...]:
        if self.n_frontier == 0:
            return ()
        key = (n, None if inputs is None else (inputs.start, inputs.stop))
        if key not in self._cache:
            with torch.no_grad():
                out = self._prefix(fresh(expand_batch(select_inputs(self._x, inputs), n)))
            self._cache[key] = tuple(_copy_value(v) for v in out)
        return self._cache[key]

    def _check(self, rs: Sequence[torch.Tensor], logits: torch.Tensor) -> None:
        _check_split(self, rs, logits, "the split network")

    def __call__(self, zs: Sequence[torch.Tensor], inputs: range | None = None) -> torch.Tensor:
        frontier = tuple(_copy_value(v) for v in self._frontier(zs[0].shape[0], inputs))
        outs = self._taps.outputs(zs) if self._taps is not None else zs
        return self._suffix(*outs, *frontier)


def _check_split(run: Callable[[Sequence[torch.Tensor]], Any], rs: Sequence[torch.Tensor], logits: torch.Tensor,
                 what: str) -> None:
    """Raise :class:`SplitError` unless ``run`` maps the captured layer outputs back to ``logits``.

    Run with every input's row twice, so that a batch size cached from the input is caught too.
    """
    with torch.no_grad():
        try:
            out = run([r.repeat_interleave(2, dim=0) for r in rs])
        except (MemoryError, torch.OutOfMemoryError):
            raise  # not a reason to run the whole network: it needs more memory still
        except Exception as exc:
            raise SplitError(f"{what} failed at batch size {2 * rs[0].shape[0]} ({type(exc).__name__}: {exc})") \
                from exc
    ref = logits.repeat_interleave(2, dim=0)
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        raise SplitError(f"{what} gives another output shape than the model")
    tol = 1e-4 * (1.0 + float(ref.abs().max()))
    err = float((out.float() - ref.float()).abs().max())
    if err > tol:
        raise SplitError(f"{what} gives logits that differ from the model's by {err:.3g}")


def _bottleneck_nodes(order: Sequence[fx.Node], layers: Sequence[str]) -> list[fx.Node]:
    """The call of each layer in the traced graph (exactly one each)."""
    bs: list[fx.Node] = []
    for layer in layers:
        calls = [n for n in order if n.op == "call_module" and n.target == layer]
        if len(calls) != 1:
            raise SplitError(f"layer '{layer}' appears {len(calls)} times in the traced graph")
        bs.append(calls[0])
    return bs


def _dependents(order: Sequence[fx.Node], bs: Sequence[fx.Node], layers: Sequence[str]) -> set[fx.Node]:
    """The bottleneck nodes and every node computed from them; refuses a bottleneck after another
    and an output that depends on none."""
    depends = set(bs)
    for n in order[min(order.index(b) for b in bs):]:
        if n not in depends and any(a in depends for a in n.all_input_nodes):
            depends.add(n)
    for b, layer in zip(bs, layers):
        if any(a in depends for a in _ancestors(b)):
            raise SplitError(f"layer '{layer}' lies after another bottleneck layer")
    if next(n for n in order if n.op == "output") not in depends:
        raise SplitError("the model output does not depend on the bottleneck layers")
    return depends


def _prefix_module(model: nn.Module, order: Sequence[fx.Node], frontier: Sequence[fx.Node],
                   depends: set[fx.Node]) -> fx.GraphModule:
    """The network computing the suffix's other inputs (``frontier``): the model's inputs (also
    where the frontier is computed from weights alone, as MViT's position embedding), the
    frontier's ancestors, and the in-place updates of those whose result nobody reads
    (``pos.add_(...)``)."""
    needed: set[fx.Node] = {n for n in order if n.op == "placeholder"}
    for f in frontier:
        needed |= _ancestors(f) | {f}
    grew = True
    while grew:
        grew = False
        for n in order:
            if n not in needed and n not in depends and not n.users and n.op in ("call_method", "call_function") \
                    and any(a in needed for a in n.all_input_nodes):
                needed |= _ancestors(n) | {n}
                grew = True
    pg = fx.Graph()
    penv: dict[fx.Node, fx.Node] = {}
    for n in order:
        if n in needed:
            penv[n] = pg.node_copy(n, lambda a: penv[a])
    pg.output(tuple(penv[f] for f in frontier))
    return fx.GraphModule(model, pg)


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(node.all_input_nodes)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return seen


class BlocksSuffix:
    """Runner for networks that apply ``model.blocks`` one after another (pytorchvideo's ``Net``).

    Such models cannot be traced by torch.fx (their multipathway blocks take and overwrite Python
    lists), but their structure is explicit: with bottlenecks on ``blocks.k`` or on every pathway
    ``blocks.k.multipathway_blocks.i`` of a multipathway block, the rest of the network is that
    block's fusion (if any) followed by ``blocks[k+1:]``. The split is checked against the
    model's logits like :class:`CachedSuffix`.
    """

    cached = True
    note = "prefix computed once; suffix only per step (sequential blocks)"

    def __init__(self, model: nn.Module, layers: Sequence[str], rs: Sequence[torch.Tensor], logits: torch.Tensor,
                 taps: Taps | None = None) -> None:
        self._taps = taps
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, nn.ModuleList):
            raise SplitError("the model has no `blocks` list to run in order")
        parsed = [_block_path(name) for name in layers]
        if any(p is None for p in parsed) or len({p[0] for p in parsed if p is not None}) != 1:
            raise SplitError("the layers are not blocks.K or the pathways blocks.K.multipathway_blocks.I of one block")
        k = parsed[0][0]  # type: ignore[index]
        pathways = [p[1] for p in parsed if p is not None]
        block = blocks[k]
        if pathways == [None]:
            self._fusion: nn.Module | None = None
            self._order: list[int] | None = None
        else:
            branches = getattr(block, "multipathway_blocks", None)
            if None in pathways or not isinstance(branches, nn.ModuleList) \
                    or sorted(pathways) != list(range(len(branches))):  # type: ignore[type-var]
                raise SplitError(f"bottlenecks must sit on every pathway of blocks.{k} (0..{len(branches or []) - 1})")
            self._fusion = getattr(block, "multipathway_fusion", None)
            self._order = [pathways.index(i) for i in range(len(pathways))]
        self._rest = list(blocks)[k + 1:]
        self.layers = list(layers)
        _check_split(self, rs, logits, f"the blocks after blocks.{k}")

    def __call__(self, zs: Sequence[torch.Tensor], inputs: range | None = None) -> torch.Tensor:
        outs = self._taps.outputs(zs) if self._taps is not None else zs  # nothing but the layers' outputs is read
        h: Any
        if self._order is None:
            h = outs[0]
        else:
            h = [outs[j] for j in self._order]  # a new list: the blocks may overwrite it
            if self._fusion is not None:
                h = self._fusion(h)
        for block in self._rest:
            h = block(h)
        return h


class ModelSuffix:
    """Runner for models that run their own network after a layer: ``model.video_iba_suffix(layer)``
    returns ``f(input, layer output) -> logits`` (or ``None`` for layers it cannot start from), as
    the Hugging Face wrappers do, whose encoders torch.fx cannot trace. Checked against the model's
    logits like :class:`CachedSuffix`."""

    cached = True
    note = "prefix computed once; suffix only per step (the model's own suffix)"

    def __init__(self, model: nn.Module, layers: Sequence[str], x: Inputs, rs: Sequence[torch.Tensor],
                 logits: torch.Tensor, taps: Taps | None = None) -> None:
        make = getattr(model, "video_iba_suffix", None)
        rest = make(layers[0]) if callable(make) and len(layers) == 1 else None
        if rest is None:
            raise SplitError("the model does not run its network from these layers (video_iba_suffix)")
        self._rest, self._x, self._taps, self.layers = rest, x, taps, list(layers)
        _check_split(self, rs, logits, f"the model's own suffix after {layers[0]}")

    def __call__(self, zs: Sequence[torch.Tensor], inputs: range | None = None) -> torch.Tensor:
        outs = self._taps.outputs(zs) if self._taps is not None else zs
        return self._rest(fresh(expand_batch(select_inputs(self._x, inputs), zs[0].shape[0])), outs[0])  # type: ignore[no-any-return]


def _block_path(name: str) -> tuple[int, int | None] | None:
    parts = name.split(".")
    if len(parts) == 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1]), None
    if len(parts) == 4 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] == "multipathway_blocks" \
            and parts[3].isdigit():
        return int(parts[1]), int(parts[3])
    return None


def split_runner(model: nn.Module, layers: Sequence[str], x: Inputs, rs: Sequence[torch.Tensor],
                 logits: torch.Tensor, taps: Taps | None = None) -> CachedSuffix | BlocksSuffix | ModelSuffix:
    """The cheapest runner that reproduces the model: the model's own suffix where it has one, a
    torch.fx split (kept for the model's next input of the same shape), else sequential blocks.

    Raises:
        SplitError: naming why none applies.
    """
    if callable(getattr(model, "video_iba_suffix", None)):
        try:
            return ModelSuffix(model, layers, x, rs, logits, taps)
        except SplitError as own_error:
            log.info("%s; trying torch.fx", own_error)
    try:
        return CachedSuffix(model, layers, x, rs, logits, taps, reuse=True)
    except SplitError as fx_error:
        try:
            return BlocksSuffix(model, layers, rs, logits, taps)
        except SplitError as blocks_error:
            raise SplitError(f"{fx_error}; {blocks_error}") from blocks_error
