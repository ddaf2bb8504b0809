"""torch.distributed glue: process group set-up under ``torchrun``, sharding, gathering.

Every command runs unchanged as a single process. Started by ``torchrun --nproc-per-node N``
(which sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``), it joins the process group: NCCL when
the device is CUDA (each rank on the GPU of its ``LOCAL_RANK``), gloo otherwise.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from .errors import UserInputError

T = TypeVar("T")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def auto_device() -> str:
    """What ``--device auto`` means here: ``cuda`` when a CUDA device is present, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def checked_device(name: Any, choices: str = "cpu, cuda or cuda:N") -> torch.device:
    """``name`` as a torch device; an unknown name, a CUDA device where there is none (never a
    silent CPU run) and kinds other than CPU and CUDA are refused, ``choices`` naming the fix."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UserInputError(f"unknown device '{name}'; give {{device}} {choices}", options=["device"]) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device '{name}' requested but CUDA is not available here; give {{device}} cpu",
                             options=["device"])
    if dev.type not in ("cpu", "cuda"):
        raise UserInputError(f"device '{name}' is not supported; give {{device}} {choices}", options=["device"])
    return dev


def describe_device(device: str) -> str:
    """The device for a message: ``cuda:0 (NVIDIA H200)``, ``cpu``."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def setup(device: str) -> str:
    """Join the process group when launched as one of several processes; returns the device to use
    (``auto`` is resolved by :func:`auto_device`; ``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    if device == "auto":
        device = auto_device()
    if not launched():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def teardown(sync: bool = True) -> None:
    """Leave the process group. With ``sync`` (the normal end of a command) the ranks first wait
    for each other: a rank that destroys its group while a peer still completes the last
    collective can abort that peer (gloo). After an error no rank waits for the others."""
    if dist.is_available() and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str) -> Iterator[str]:
    """:func:`setup` for the duration of a command, then :func:`teardown` (waiting for the other
    ranks only when the command ended normally); yields the device to use."""
    device = setup(device)
    ok = False
    try:
        yield device
        ok = True
    finally:
        teardown(sync=ok)


def shard(items: Sequence[T], pad: bool = False) -> list[T]:
    """This rank's items: every ``world``-th one from ``rank``, so ranks share nothing. With ``pad``
    (training only), shorter shards repeat their first items so every rank has as many (a rank
    with none of its own, when there are fewer items than ranks, repeats the first items)."""
    w, r = world_size(), rank()
    out = list(items[r::w])
    if pad and w > 1 and items:
        source = out or list(items)
        longest = (len(items) + w - 1) // w
        out += [source[k % len(source)] for k in range(longest - len(out))]
    return out


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (a list of one object when single)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_over_ranks(values: Sequence[float], device: torch.device | str) -> list[float]:
    """The element-wise sum of ``values`` over all ranks (float64), on every rank."""
    if world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in t.cpu().tolist()]


def same_on_every_rank(value: Any, what: str) -> None:
    """Refuse to go on when ``value`` differs between ranks (every rank must call it)."""
    values = gather(value)
    if any(v != values[0] for v in values):
        raise UserInputError(f"{what} differ between ranks ({', '.join(map(str, values))}); every process must use "
                             f"the same files and settings")


def refuse_on_every_rank(reason: str | None) -> None:
    """Raise :class:`UserInputError` with the first rank's ``reason`` that is not ``None``, on every
    rank (every rank must call it; typically only rank 0 has a reason)."""
    refusals = [r for r in gather(reason) if r]
    if refusals:
        raise UserInputError(refusals[0])


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


__all__ = ["setup", "teardown", "process_group", "shard", "gather", "barrier", "rank", "world_size", "launched",
           "sum_over_ranks", "same_on_every_rank"]
