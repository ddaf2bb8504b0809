"""A comparison panel names the bits its class tokens hold, as the single explanation's figure does."""

from __future__ import annotations

import numpy as np

from video_iba.render.compare import PANEL, comparison_row
from video_iba.results import Unit


def test_a_panel_names_the_bits_of_its_class_tokens() -> None:
    rgb = np.full((32, 32, 3), 90, dtype=np.uint8)
    values = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    maps = [("iba", values, Unit.BITS), ("saliency", values, Unit.GRADIENT)]
    plain = comparison_row(rgb, maps, "tench")
    tokens = comparison_row(rgb, maps, "tench", prefixes=[139.0, None])
    assert tokens.shape[1] == plain.shape[1] and tokens.shape[0] > plain.shape[0]  # one line more under every panel
    two = PANEL + 3 + 2 * int(13 * 1.4)  # the panels and their heads' first two lines
    np.testing.assert_array_equal(tokens[:two], plain[:two])
    third = tokens[two:]
    width = third.shape[1] // 3
    texts = [(third[:, i * width:(i + 1) * width] != third[0, 0]).any() for i in range(3)]
    assert texts == [False, True, False]  # only the IBA panel's third line has text
    np.testing.assert_array_equal(comparison_row(rgb, maps, "tench", prefixes=[None, None]), plain)
