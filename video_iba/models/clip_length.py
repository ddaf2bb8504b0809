"""Video networks on clips of another length than their own (weights trained on such clips).

A 3-D CNN's convolutions take clips of any length, but its head often averages the last feature
map over time with a pooling whose temporal kernel is that map's length at the clip length the
network was built for (pytorchvideo's SlowFast, Slow, I3D and X3D heads): on longer clips it would
average windows of the map (SlowFast's two pathways then disagree in length and fail), on shorter
ones it fails. The same network built for clips of another length has that kernel at the length of
its own map, so here every 3-D average pooling whose temporal kernel spans its whole input at the
network's own clip length is set to span its whole input at the new one; its spatial kernel and
everything else stay (no weights depend on the clip length). Found by running the network's
skeleton on the ``meta`` device (no memory, no compute; on the CPU where a network cannot run
there), once at each length.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

#: Makes the network's input from a clip ``(1, 3, T, S, S)`` (SlowFast: its pathways).
Feed = Callable[[torch.Tensor], Any]


def _pools(model: nn.Module) -> dict[str, nn.AvgPool3d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.AvgPool3d)}


def _triple(v: Any) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)  # type: ignore[return-value]


def _spans(pool: nn.AvgPool3d, length: int) -> bool:
    """Whether ``pool`` averages an input of ``length`` time steps over all of them (more than one:
    a pooling of a one-step map may pool each step alone)."""
    return int(_triple(pool.kernel_size)[0]) == length > 1 and int(_triple(pool.padding)[0]) == 0


def spanning_pools(skeleton: nn.Module, feed: Feed, own: tuple[int, ...], device: str = "meta") -> list[str]:
    """The 3-D average poolings of ``skeleton`` (the network built on ``device``, ``meta`` unless
    it cannot run there) whose temporal kernel spans their whole input for a clip of shape
    ``own``; any error of its forward pass is raised."""
    pools = _pools(skeleton)
    lengths: dict[str, int] = {}

    def seen(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            lengths.setdefault(name, int(args[0].shape[2]))
        return hook

    handles = [m.register_forward_pre_hook(seen(n)) for n, m in pools.items()]
    try:
        _run(skeleton, feed, own, device)
    finally:
        for h in handles:
            h.remove()
    return [n for n, length in lengths.items() if _spans(pools[n], length)]


def refit_pools(skeleton: nn.Module, feed: Feed, names: Sequence[str], new: tuple[int, ...], device: str = "meta"
                ) -> dict[str, tuple[int, int, int]]:
    """The kernels that make the poolings ``names`` of ``skeleton`` (:func:`spanning_pools`) span
    their whole input for a clip of shape ``new`` in time (the same spatial kernels); set so in
    ``skeleton``, which is then run on ``new``: any error of its forward pass is raised (a clip
    too short for the network)."""
    pools = _pools(skeleton)
    kernels: dict[str, tuple[int, int, int]] = {}

    def refit(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(m: nn.Module, args: tuple[Any, ...]) -> None:
            _, kh, kw = _triple(m.kernel_size)
            kernels[name] = m.kernel_size = (int(args[0].shape[2]), int(kh), int(kw))  # type: ignore[assignment]
        return hook

    handles = [pools[n].register_forward_pre_hook(refit(n)) for n in names]
    try:
        _run(skeleton, feed, new, device)
    finally:
        for h in handles:
            h.remove()
    _run(skeleton, feed, new, device)  # the network as it now is
    return kernels


def _run(skeleton: nn.Module, feed: Feed, shape: tuple[int, ...], device: str) -> None:
    with torch.no_grad():
        skeleton(feed(torch.zeros(shape, device=device)))


def set_pool_kernels(model: nn.Module, kernels: dict[str, tuple[int, int, int]]) -> None:
    """Give the 3-D average poolings named in ``kernels`` (as :func:`refit_pools` found them) those
    kernels."""
    pools = _pools(model)
    for name, kernel in kernels.items():
        pools[name].kernel_size = kernel  # type: ignore[assignment]


__all__ = ["Feed", "spanning_pools", "refit_pools", "set_pool_kernels"]
