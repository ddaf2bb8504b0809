"""How many inputs one fit takes (``--batch-size``), and the grouping of a stream of inputs into fits.

Several inputs fitted together (:func:`~video_iba.methods.iba.explain` with ``(K, ...)``) give each
input the result it gets alone; what changes is how busy the device is and how much memory one
network pass needs. :class:`FitBatches` groups a stream of inputs into fits of K, halves K when the
device runs out of memory (and keeps the smaller K), and explains the inputs of a failing group
one by one, so that one bad input fails alone.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch

from ..errors import OutOfMemory, UserInputError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Inputs per fit on a CUDA device when none is given: the first fit tries this many and halves on
#: running out of memory. On a CPU one input per fit (several are no faster there: see docs/performance.md).
AUTO_CUDA = 16
#: Largest batch size accepted.
MAX_BATCH = 1024


def check_batch_size(size: int | str | None) -> int | None:
    """``None``/``"auto"`` (chosen from the device), or a whole number of inputs per fit."""
    if size is None or (isinstance(size, str) and size.strip().lower() == "auto"):
        return None
    try:
        k = int(size)
        if isinstance(size, float) or isinstance(size, bool) or str(k) != str(size).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise UserInputError(f"{{batch_size}} must be a whole number of inputs per fit or auto, got {size!r}",
                             options=["batch_size"]) from None
    if not 1 <= k <= MAX_BATCH:
        raise UserInputError(f"{{batch_size}} must be between 1 and {MAX_BATCH}, got {k}", options=["batch_size"])
    return k


class FitBatches:
    """Groups inputs into fits of :attr:`size` inputs.

    Args:
        size: Inputs per fit; ``None`` chooses from ``device`` (:data:`AUTO_CUDA` on CUDA, else 1).
        device: Where the fits run.
    """

    def __init__(self, size: int | None, device: torch.device | str = "cpu") -> None:
        dev = torch.device(device)
        self.automatic = size is None
        self.size = check_batch_size(size) or (AUTO_CUDA if dev.type == "cuda" else 1)
        self.device = dev
        self.backed_off = False

    def map(self, items: Iterable[T],
            fit: Callable[[Sequence[T]], Sequence[R]]) -> Iterator[tuple[T, R | Exception, float]]:
        """Each item with its result and its seconds (its share of its fit's), in order: ``fit(group)``
        returns one result per item of the group. Where the device runs out of memory the group is
        retried with half as many inputs; where a group fails otherwise, its inputs are fitted one by
        one and each failure is returned (not raised) with its item."""
        it = iter(items)
        pending: list[T] = []
        done = False
        while True:
            while not done and len(pending) < self.size:
                try:
                    pending.append(next(it))
                except StopIteration:
                    done = True
            if not pending:
                return
            group = pending[:self.size]
            t0 = self._clock()
            try:
                results = list(fit(group))
            except OutOfMemory as exc:
                if len(group) > 1:
                    self._halve(exc)
                    continue
                del pending[:1]
                yield group[0], exc, self._clock() - t0
                continue
            except Exception as exc:  # one input may be at fault: fit each alone, each failure its own
                if len(group) == 1:
                    del pending[:1]
                    yield group[0], exc, self._clock() - t0
                    continue
                log.info("a fit of %d inputs failed (%s); fitting them one by one", len(group), exc)
                del pending[:len(group)]
                for item in group:
                    yield (item, *self._alone(fit, item))
                continue
            if len(results) != len(group):
                raise RuntimeError(f"a fit of {len(group)} inputs returned {len(results)} results")
            share = (self._clock() - t0) / len(group)
            del pending[:len(group)]
            for item, res in zip(group, results):
                yield item, res, share

    def _alone(self, fit: Callable[[Sequence[T]], Sequence[R]], item: T) -> tuple[R | Exception, float]:
        t0 = self._clock()
        try:
            res: R | Exception = list(fit([item]))[0]
        except Exception as exc:
            res = exc
        return res, self._clock() - t0

    def _clock(self) -> float:
        """Wall-clock seconds, after the device has finished its queued work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _halve(self, exc: Exception) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        new = max(1, self.size // 2)
        if not self.backed_off:  # once per run: then the smaller size stays
            log.warning("out of memory with %d inputs per fit (%s); continuing with %d", self.size, exc, new)
        else:
            log.info("out of memory with %d inputs per fit; continuing with %d", self.size, new)
        self.backed_off = True
        self.size = new


__all__ = ["AUTO_CUDA", "MAX_BATCH", "FitBatches", "check_batch_size"]
