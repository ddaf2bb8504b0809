"""Random draws that are reproducible and leave the caller's random state alone.

Code that draws from PyTorch's global generators (``reset_parameters``, captum's noise) is run
inside :func:`seeded`: the CPU generator and the named CUDA devices' generators are forked,
seeded, and restored on exit, so the draws depend on the seed alone and the caller's next draws
are the ones it would have made anyway. ``torch.manual_seed`` is not used: it seeds every GPU,
also those not forked (and, before CUDA starts, when it starts).
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import numpy as np
import torch

#: Seeds are whole numbers in ``0 .. SEED_LIMIT - 1`` (what a torch generator takes, as a signed 64-bit number).
SEED_LIMIT = 2 ** 63
#: How messages name that range.
SEED_RANGE = "0 .. 2**63-1"


def derived_seed(*keys: int) -> int:
    """A well-mixed 32-bit seed from a sequence of integers (a base seed and, e.g., an index)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def cuda_devices(tensors: Iterable[torch.Tensor]) -> list[int]:
    """The CUDA devices among ``tensors``' devices (the generators their draws advance)."""
    return sorted({int(t.device.index or 0) for t in tensors if t.is_cuda})


@contextlib.contextmanager
def seeded(seed: int, devices: Iterable[int] = ()) -> Iterator[None]:
    """Within the block, the CPU's and ``devices``' global generators start from ``seed``; after
    it, they are as before."""
    gpus = sorted(set(devices))
    with torch.random.fork_rng(devices=gpus):
        torch.random.default_generator.manual_seed(seed)
        for d in gpus:
            torch.cuda.default_generators[d].manual_seed(seed)
        yield
