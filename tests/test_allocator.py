"""The allocator setting the command line makes: large tensors reuse freed memory instead of
faulting in fresh pages (counted as page faults in a fresh process, never timed)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

WORKLOAD = """
import json, resource, sys
import torch
import video_iba
applied = video_iba.keep_freed_memory()
x = torch.empty(0)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, above glibc's largest mmap threshold; freed at the next turn
    del x
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0}))
"""


def _run(env_value: str | None) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "VIDEO_IBA_MALLOC"}
    if env_value is not None:
        env["VIDEO_IBA_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", WORKLOAD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_large_tensors_reuse_freed_memory_unless_turned_off() -> None:
    pages = 64 * 2**20 // 4096  # one 64 MiB tensor's pages
    tuned, plain = _run(None), _run("default")
    assert tuned["applied"] is True and plain["applied"] is False
    assert plain["faults"] > 15 * pages, plain  # every tensor faulted in afresh
    assert tuned["faults"] < 3 * pages, tuned  # the first one only: the others reuse its memory
