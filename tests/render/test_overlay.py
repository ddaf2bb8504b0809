"""Placing bits on the original image, and the overlay's covered / not-covered regions."""

from __future__ import annotations

import numpy as np
import pytest

from video_iba.models import get_spec, preprocess_image
from video_iba.render import bits_on_image, overlay


@pytest.mark.parametrize("model", ["resnet50", "inception_v3", "convnext_tiny"])
@pytest.mark.parametrize("size", [(300, 451), (400, 600), (427, 640), (512, 512), (640, 360), (80, 999), (301, 299)])
def test_bits_land_inside_the_crop_box_only(model: str, size: tuple[int, int]) -> None:
    spec = get_spec(model)
    rgb = np.zeros((*size, 3), dtype=np.uint8)
    _, geo = preprocess_image(rgb, spec)
    bits = np.ones((spec.input_size, spec.input_size), dtype=np.float32)
    placed = bits_on_image(bits, geo.box, size)
    assert placed.shape == size
    covered = ~np.isnan(placed)
    x0, y0, x1, y1 = geo.box
    # the box is rounded to whole pixels: at most one row or column off on each side
    assert abs(covered.sum() - (x1 - x0) * (y1 - y0)) <= (x1 - x0) + (y1 - y0) + 4
    assert np.allclose(placed[covered], 1.0)
    ys, xs = np.nonzero(covered)
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1 and abs(ys.min() - y0) <= 1


def test_uncovered_pixels_are_not_drawn_as_zero_bits() -> None:
    rgb = np.full((20, 30, 3), 128, dtype=np.uint8)
    values = np.full((20, 30), np.nan, dtype=np.float32)
    values[:, 10:20] = 0.0
    out = overlay(rgb, values, vmax=1.0)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    zero_bits = out[:, 10:20].reshape(-1, 3)
    uncovered = out[:, :10].reshape(-1, 3)
    assert not np.isin(uncovered.view([("", np.uint8)] * 3), zero_bits.view([("", np.uint8)] * 3)).all()
    assert (out[:, :10] != out[0, 15]).any(axis=2).all()  # no uncovered pixel looks like a zero-bit pixel


def test_the_photo_figure_has_no_empty_band_under_its_caption(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image
    from skimage import data

    from video_iba.render import Caption, image_figure

    rgb = np.asarray(data.chelsea())  # 451 x 300: landscape, where the band was as tall as the titles
    bits = np.random.default_rng(0).random((224, 224)).astype(np.float32)
    cap = Caption("Egyptian cat 0.36", "Egyptian cat (#285, p=0.36)", 8106.2, "efficientnet_lite0 · layer _blocks.4", 224)
    image_figure(rgb, bits, (113.0, 38.0, 375.0, 300.0), cap, tmp_path / "f.png")
    img = np.asarray(Image.open(tmp_path / "f.png").convert("L"))

    def longest_run(flags: np.ndarray) -> int:
        best = run = 0
        for f in flags:
            run = run + 1 if f else 0
            best = max(best, run)
        return best

    # the photos start at the first row with a long unbroken stretch of non-white pixels (text has gaps)
    first = next(r for r in range(img.shape[0]) if longest_run(img[r] < 250) > 200)
    blank_rows = longest_run((img[:first] > 250).all(axis=1))
    assert blank_rows < 20, blank_rows  # 11 rows here; the band under the caption was 74 rows of docs/chelsea.png
