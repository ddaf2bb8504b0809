"""The copy of a traced network that each rewrite of the split suffix (:mod:`.split`) edits."""

from __future__ import annotations

from torch import fx


def rewritable_copy(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` with a graph of its own, to rewrite and then ``recompile()``; its modules
    stay shared with ``gm`` (and so with the user's model), which is not changed."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    return fx.GraphModule(gm, graph)


__all__ = ["rewritable_copy"]
