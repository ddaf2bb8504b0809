"""The copy of a traced network that each rewrite of the split suffix (:mod:`.split`) edits, and
its end."""

from __future__ import annotations

from torch import fx


def rewritable_copy(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` with a graph of its own, to rewrite and then ``recompile()``; its modules
    stay shared with ``gm`` (and so with the user's model), which is not changed."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    return fx.GraphModule(gm, graph)


def finished(rewritten: fx.GraphModule, count: int) -> fx.GraphModule | None:
    """``rewritten`` after ``count`` rewrites, its graph checked and its code generated again; or
    ``None`` where nothing was rewritten."""
    if count == 0:
        return None
    rewritten.graph.lint()
    rewritten.recompile()
    return rewritten


__all__ = ["finished", "rewritable_copy"]
