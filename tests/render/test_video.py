"""The keyframe sheet's and overlay's colour scale says when the map goes above its top; the sheet names
the class tokens' bits under each still, as the MP4's counter does."""

from __future__ import annotations

import numpy as np

from video_iba.render.video import Stills, keyframe_sheet
from video_iba.results import ClipAttribution, Unit


def _result(peak: float) -> ClipAttribution:
    values = np.full((1, 1, 4, 8, 8), 0.25, dtype=np.float32)
    values[0, 0, 0, 0, 0] = peak
    return ClipAttribution(
        values=values, unit=Unit.BITS, target=0, window_starts=np.array([0.0]),
        window_frame_indices=np.arange(4)[None], window_looped=np.array([False]),
        window_probs=np.full((1, 1, 2), 0.5, dtype=np.float32), window_seconds=np.array([0.1]),
        crop_boxes=np.array([[0, 0, 8, 8]], dtype=np.float64), source_frame_indices=np.arange(4),
        per_source_frame=np.ones(4), meta={})


def _sheet(peak: float, vmax: float, prefix_bits: float | None = None) -> np.ndarray:
    stills = Stills.spread(4, 2)
    for pos in stills.positions:
        stills.offer(pos, np.full((32, 32, 3), 90, dtype=np.uint8), pos / 10, prefix_bits)
    return keyframe_sheet(_result(peak), stills, vmax, "title")


def test_the_scale_label_marks_a_map_above_its_top() -> None:
    at_top, below_top, above = _sheet(1.0, 1.0), _sheet(0.5, 1.0), _sheet(2.0, 1.0)
    header = slice(0, 30)
    # the header differs only where the label reads "≥ 1 bits/voxel" instead of "1 bits/voxel"
    np.testing.assert_array_equal(at_top[header], below_top[header])
    changed = np.argwhere((above[header] != at_top[header]).any(axis=2))
    assert len(changed) > 0
    assert changed[:, 1].min() > above.shape[1] * 0.5  # in the colour bar's label, on the right


def test_the_stills_name_the_class_tokens_bits() -> None:
    plain, tokens = _sheet(1.0, 1.0), _sheet(1.0, 1.0, prefix_bits=362.0)
    assert tokens.shape[0] > plain.shape[0] and tokens.shape[1] == plain.shape[1]  # one caption line more
    np.testing.assert_array_equal(tokens[:30], plain[:30])  # the header as it was
    np.testing.assert_array_equal(tokens[-40:], plain[-40:])  # and the per-frame strip
