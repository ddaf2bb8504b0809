"""Shared fixtures: tiny models, real photos, an offline torch hub cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from .nets import TinyCNN


#: ``pytest -n auto`` (the default, pyproject.toml) starts at most this many test processes: each holds
#: torch and up to a few GB for the heaviest tests.
MAX_TEST_PROCESSES = 4


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """One test process per core this process may use, at most :data:`MAX_TEST_PROCESSES`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_TEST_PROCESSES))


def pytest_configure(config: pytest.Config) -> None:
    """Where several test processes share the cores (``pytest -n N``), each computes on one thread,
    and so do the processes its tests start (on two cores, the suite took 943 s against 1301 s in one
    process at two threads: its many small operations and subprocesses gain more from a second
    process than its large ones lose from a second thread)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def _cache_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("xdg_cache"))


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, _cache_home: str) -> None:
    """Every test sees an empty torch hub cache, so nothing depends on this machine's downloads;
    the package's own cache lives in a folder of the test session."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("XDG_CACHE_HOME", _cache_home)


@pytest.fixture
def tiny() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def image_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 3, 32, 32, generator=g)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Real photos from scikit-image, written as files."""
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "rocket"):
        Image.fromarray(np.asarray(getattr(data, name)())).save(os.path.join(d, f"{name}.jpg"), quality=92)
    return str(d)


