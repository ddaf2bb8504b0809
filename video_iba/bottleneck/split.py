"""Splitting a network at a layer with ``torch.fx``, so the part before it runs only once.

The model is traced with the chosen layer as a leaf. Nodes that depend on the layer's output form
the *suffix*; values the suffix reads from before the layer (a skip connection from earlier, the
batch size read off the input) form the *frontier*. The prefix is evaluated once per batch size and
its outputs copied; each optimisation step then runs only the suffix. The split is checked against
the full model's logits before it is used.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import fx, nn

log = logging.getLogger(__name__)


class SplitError(RuntimeError):
    """The model cannot be split at the layer (not traceable, layer used twice, check failed)."""


class _LeafTracer(fx.Tracer):
    def __init__(self, leaf: str) -> None:
        super().__init__()
        self._leaf = leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name == self._leaf or super().is_leaf_module(m, module_qualified_name)


def _copy_value(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, (tuple, list)):
        return type(v)(_copy_value(u) for u in v)
    return v


_CONV_BN = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))


def _fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule | None:
    """A copy of ``gm`` in which each eval-mode batch norm that alone reads a convolution is folded into it.

    The folded convolutions are private copies whose parameters do not require gradients; every
    other module is shared with ``gm`` (and so with the user's model), which is not changed.
    Returns ``None`` where there is nothing to fold.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    graph = fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    folded = fx.GraphModule(gm, graph)
    modules = dict(gm.named_modules())
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or not isinstance(node.args[0], fx.Node):
            continue
        prev = node.args[0]
        bn, conv = modules.get(node.target), modules.get(prev.target) if prev.op == "call_module" else None
        if conv is None or bn is None or len(prev.users) != 1 or not any(
                type(conv) is c and type(bn) is b for c, b in _CONV_BN):
            continue
        if bn.training or conv.training or not bn.track_running_stats or bn.running_mean is None:
            continue
        fused = fuse_conv_bn_eval(conv, bn)
        for p in fused.parameters():
            p.requires_grad_(False)
        name = f"_folded_{count}"
        folded.add_submodule(name, fused)
        prev.target = name
        node.replace_all_uses_with(prev)
        graph.erase_node(node)
        count += 1
    if count == 0:
        return None
    folded.recompile()
    return folded


class CachedSuffix:
    """Runner evaluating only the part of ``model`` after ``layer``.

    Args:
        model: The network (not modified; the suffix shares its submodules).
        layer: Dotted module path of the bottleneck layer.
        x: The input ``(1, ...)``; the prefix is evaluated on it (expanded to each batch size used).
        r: The layer's output for ``x`` ``(1, C, *S)``, as captured by a hook.
        logits: ``model(x)``, used to check the split.

    Raises:
        SplitError: if the model cannot be traced, the layer is not called exactly once, or the
            suffix does not reproduce ``logits``.
    """

    cached = True
    note = "prefix computed once; suffix only per step"

    def __init__(self, model: nn.Module, layer: str, x: torch.Tensor, r: torch.Tensor, logits: torch.Tensor) -> None:
        try:
            graph = _LeafTracer(layer).trace(model)
        except Exception as exc:  # tracing fails in many ways on dynamic Python code
            raise SplitError(f"torch.fx could not trace the model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
        calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
        if len(calls) != 1:
            raise SplitError(f"layer '{layer}' appears {len(calls)} times in the traced graph")
        b = calls[0]
        order = list(graph.nodes)
        depends = {b}
        for n in order[order.index(b) + 1:]:
            if any(a in depends for a in n.all_input_nodes):
                depends.add(n)
        out_node = next(n for n in order if n.op == "output")
        if out_node not in depends:
            raise SplitError(f"the model output does not depend on layer '{layer}'")
        suffix = [n for n in order if n in depends and n is not b]
        consts: list[fx.Node] = []
        frontier: list[fx.Node] = []
        for n in suffix:
            for a in n.all_input_nodes:
                if a in depends or a in consts or a in frontier:
                    continue
                (consts if a.op == "get_attr" else frontier).append(a)

        sg = fx.Graph()
        env: dict[fx.Node, fx.Node] = {b: sg.placeholder("bottleneck")}
        for i, f in enumerate(frontier):
            env[f] = sg.placeholder(f"frontier_{i}")
        for n in consts + suffix:
            env[n] = sg.node_copy(n, lambda a: env[a])
        self._suffix = fx.GraphModule(model, sg)

        needed: set[fx.Node] = set()
        stack = [b, *frontier]
        while stack:
            n = stack.pop()
            if n not in needed:
                needed.add(n)
                stack.extend(n.all_input_nodes)
        pg = fx.Graph()
        penv: dict[fx.Node, fx.Node] = {}
        for n in order:
            if n in needed:
                penv[n] = pg.node_copy(n, lambda a: penv[a])
        pg.output((penv[b], *[penv[f] for f in frontier]))
        self._prefix = fx.GraphModule(model, pg)

        self._x = x
        self._cache: dict[int, tuple[Any, ...]] = {}
        self.layer = layer
        self.n_frontier = len(frontier)
        self.note = CachedSuffix.note
        folded = _fold_batchnorm(self._suffix)
        if folded is not None:
            unfolded, self._suffix = self._suffix, folded
            try:
                self._check(r, logits)
                self.note += "; batch norm folded into the convolutions"
                return
            except SplitError as exc:
                log.info("batch norm folding changed the logits (%s); using the unfolded network", exc)
                self._suffix = unfolded
        self._check(r, logits)

    def _frontier(self, n: int) -> tuple[Any, ...]:
        if self.n_frontier == 0:
            return ()
        if n not in self._cache:
            with torch.no_grad():
                out = self._prefix(self._x.expand(n, *self._x.shape[1:]))
            self._cache[n] = tuple(_copy_value(v) for v in out[1:])
        return self._cache[n]

    def _check(self, r: torch.Tensor, logits: torch.Tensor) -> None:
        with torch.no_grad():
            try:
                out = self(r.expand(2, *r.shape[1:]).clone())
            except Exception as exc:
                raise SplitError(f"the split network failed at batch size 2 ({type(exc).__name__}: {exc})") from exc
        ref = logits.expand(2, -1)
        if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
            raise SplitError("the split network's output has another shape than the model's")
        tol = 1e-4 * (1.0 + float(ref.abs().max()))
        err = float((out.float() - ref.float()).abs().max())
        if err > tol:
            raise SplitError(f"the split network's logits differ from the model's by {err:.3g}")

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        frontier = tuple(_copy_value(v) for v in self._frontier(z.shape[0]))
        return self._suffix(z, *frontier)
