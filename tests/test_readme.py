"""The README holds what a newcomer runs first: its Python example runs as written, its links resolve."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from video_iba.workflows import demo_clip, demo_photo

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_fits_on_a_screen_and_its_links_resolve() -> None:
    assert len(README.encode()) <= 15_000
    links = re.findall(r"\]\(([^)#]+)\)", README)
    assert links and all((ROOT / link).exists() for link in links if "://" not in link), links
    for page in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+)\)", page.read_text(encoding="utf-8")):
            assert (page.parent / link).exists(), f"{page.name}: {link}"


def test_every_test_the_reliability_page_names_exists() -> None:
    page = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    refs = re.findall(r"`([\w/]+(?:\.py)?)::(\w+)`", page)
    assert len(refs) > 20
    for where, name in refs:
        path = ROOT / "tests" / ("test_reliability.py" if where == "reliability" else where)
        assert f"def {name}(" in path.read_text(encoding="utf-8"), f"{where}::{name}"
    for where in re.findall(r"`([\w/]+\.py)`", page):  # whole files named
        assert (ROOT / where).exists() or (ROOT / "tests" / where).exists(), where


@pytest.mark.slow
def test_the_python_example_runs_as_written(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    code = re.search(r"```python\n(.*?)```", README, re.S)
    assert code is not None
    Image.fromarray(demo_photo("chelsea")).save(tmp_path / "cat.jpg")
    shutil.copy(demo_clip(), tmp_path / "clip.mp4")
    monkeypatch.chdir(tmp_path)
    exec(compile(code.group(1), "README.md", "exec"), {})  # noqa: S102 - the README's own example
    printed = capsys.readouterr().out.splitlines()
    assert "torch.Size([224, 224])" in printed[0] and float(printed[0].split()[0]) > 0
    assert 0 < float(printed[1]) <= 1.5  # a degradation score (normalised curves)
    assert os.path.exists(tmp_path / "clip.npz") and "tensor([" in printed[2]
    with Image.open(tmp_path / "cat-iba.png") as drawn:
        assert drawn.size == (224, 224) and np.asarray(drawn).std() > 10  # the photo, drawn over
    import video_iba

    clip = video_iba.load(tmp_path / "clip.npz")
    assert isinstance(clip, video_iba.Attribution) and tuple(clip.values.shape) == (8, 224, 224)
    assert np.isfinite(clip.total_bits) and clip.total_bits > 0
