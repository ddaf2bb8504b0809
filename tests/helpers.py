"""Running the command line the way a user does, and reading back what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from video_iba.cli import main
from video_iba.io.video import iter_frames


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``video-iba ARGV`` in this process: exit code, stdout, stderr."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def break_one_photo(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make writing the figure of the photo ``name`` raise a bug of its own (a failure after its
    explanation), leaving every other photo alone."""
    import video_iba.workflows.explain as wx

    real = wx._finish_photo

    def broken(session: Any, plan: Any, *a: Any, **k: Any) -> Any:
        if plan.path.endswith(name):
            raise ZeroDivisionError("a bug in one input")
        return real(session, plan, *a, **k)

    monkeypatch.setattr(wx, "_finish_photo", broken)


def torchrun(args: list[str], nproc: int = 2, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node NPROC -m video_iba.cli ARGS`` (gloo on the CPU)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "video_iba.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every line of a JSON Lines file."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles)."""
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def read_frames(path: str) -> list[np.ndarray]:
    """Every frame of a video, ``(H, W, 3)`` uint8."""
    return [f.rgb for f in iter_frames(path)]


def hub_checkpoint(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, net: Any, kind: str) -> str:
    """``net`` saved as the checkpoint ``test-org/tiny-KIND-<test>`` in a Hugging Face cache of the
    test's own (the hub's layout, ``HF_HUB_CACHE`` pointed at it); returns ``hf:`` and its id."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    mid = f"test-org/tiny-{kind}-{tmp_path.name}"
    root = cache / ("models--" + mid.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("abc123")
    net.save_pretrained(root / "snapshots" / "abc123")
    return f"hf:{mid}"
