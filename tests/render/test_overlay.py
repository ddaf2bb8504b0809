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


def test_the_overlay_is_the_blend_of_photo_and_colormap_and_the_uncovered_cells_are_grey_or_hatched() -> None:
    # the plain formula in float64, cell by cell, against the vectorised in-place code
    from matplotlib import colormaps

    from video_iba.render.overlay import ALPHA, CMAP

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    values = rng.random((37, 53)).astype(np.float32) * 3.0  # a third above the scale's top
    values[:, :9] = np.nan  # not covered: a band, as beside a centre crop
    values[5, 20], values[6, 20], values[7, 20] = np.inf, -np.inf, -1.0
    out = overlay(rgb, values, vmax=2.0)
    table = colormaps[CMAP](np.arange(256))[:, :3]
    img = rgb / 255.0
    for y in range(37):
        for x in range(53):
            v = values[y, x]
            if np.isnan(v):
                hatched = ((x + y) // 2) % 6 == 0
                want = np.full(3, 0.7) if hatched else np.full(3, img[y, x].mean() * 0.45 + 0.25)
            else:
                level = min(int(np.clip(v / 2.0, 0.0, 1.0) * 256), 255)
                want = (1 - ALPHA) * img[y, x] + ALPHA * table[level]
            assert np.abs(out[y, x].astype(int) - np.round(want * 255)).max() <= 1, (y, x)


def test_the_colormap_takes_nan_as_zero_and_infinities_as_the_ends_of_the_scale() -> None:
    from video_iba.render import colormap

    values = np.array([[np.nan, 0.0, -np.inf, 1e-3], [np.inf, 5.0, 1e38, 5e-4]], dtype=np.float32)
    c = colormap(values, 1e-3)
    assert c.shape == (2, 4, 3) and c.dtype == np.float32
    assert np.array_equal(c[0, 0], c[0, 1]) and np.array_equal(c[0, 2], c[0, 1])
    assert np.array_equal(c[1, 0], c[0, 3]) and np.array_equal(c[1, 1], c[0, 3]) and np.array_equal(c[1, 2], c[0, 3])
    assert np.array_equal(colormap(np.float32(0.5), 1.0), colormap(np.array([0.5]), 1.0)[0])  # a single value too
    assert not np.array_equal(c[1, 3], c[0, 1]) and not np.array_equal(c[1, 3], c[0, 3])
