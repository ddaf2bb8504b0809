"""Keep freed memory in the process, so that large tensors do not cost a page fault per page.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every block above its
mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` when the
tensor is freed, so the next tensor of that size is zero-filled by the kernel page by page. A
3-D network's activations are hundreds of MiB, allocated and freed at every layer of every pass:
measured on ``efficientnet_lite0_i3d``, 5 forward passes of 8 clips of 8 x 224 x 224 took 21.3 s
with 26.4 s of system time (12.7 million page faults) and 4.9 s with 0.7 s of system time (0.09
million) once glibc was told to serve such blocks from its heap and keep what is freed
(peak RSS 1648 MB before, 2157 MB after; then up to 1 GiB was kept, now all of it).

:func:`keep_freed_memory` makes that change for the whole process. The command line calls it
at start; a notebook or a script may call it once. ``VIDEO_IBA_MALLOC=default`` leaves the C
library's behaviour alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

#: ``mallopt`` parameters (glibc's ``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: Freed memory at the top of the heap is never returned to the system (glibc: -1 turns trimming
#: off). A first threshold of 1 GiB gave memory back between the passes of several inputs fitted
#: together (8 GB of replicas) and cost them 10 % in page faults: r3d_18 with 16 clips per fit,
#: 1.345 s per step and input with it, 1.209 s without (one clip per fit: 1.22-1.25 s either way).
TRIM_THRESHOLD = -1
#: The environment variable that turns the change off (value ``default``).
ENV = "VIDEO_IBA_MALLOC"


def keep_freed_memory() -> bool:
    """Serve large blocks from glibc's heap (no ``mmap`` per block) and keep freed memory for reuse.
    Returns whether the change was made: not on other C libraries (macOS, Windows, musl), not when
    ``VIDEO_IBA_MALLOC=default``. Peak memory use grows somewhat, and the process holds its peak
    until it ends (the heap keeps what it once held); the time spent in the kernel on page faults
    goes away."""
    if os.environ.get(ENV, "").strip().lower() == "default":
        log.debug("%s=default: the C library's allocator settings are left alone", ENV)
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: glibc's mallopt, without a library search
        done = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError) as exc:
        log.debug("cannot change the allocator's settings: %s", exc)
        return False
    log.debug("allocator: large blocks from the heap, freed memory kept (%s)", "done" if done else "refused")
    return done


__all__ = ["keep_freed_memory", "ENV"]
