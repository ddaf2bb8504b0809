"""Text in frames and panels stays inside its box: long lines are drawn smaller or cut short."""

from __future__ import annotations

import numpy as np

from video_iba.render.text import BACKGROUND, fitted, font, labelled, padded, text_image, wrapped


def _ink_columns(img: np.ndarray) -> np.ndarray:
    return np.nonzero((img != np.array(BACKGROUND, dtype=np.uint8)).any(axis=(0, 2)))[0]


def test_a_line_that_fits_is_drawn_as_given() -> None:
    text, f = fitted("4.80 s", 300, 18)
    assert text == "4.80 s" and f.size == 18


def test_a_long_line_is_drawn_smaller_then_cut_short() -> None:
    line = "4.80 s · +752 bits in class tokens"
    width = font(18).getlength(line) * 0.8
    text, f = fitted(line, width, 18)
    assert text == line and f.size < 18 and f.getlength(text) <= width
    text, f = fitted(line, 60, 18)
    assert text.endswith("…") and len(text) < len(line) and f.size == 8 and f.getlength(text) <= 60


def test_text_images_keep_their_text_inside_the_margin() -> None:
    long = "top-3: " + "  ".join(["playing bagpipes 0.01"] * 6)
    img = text_image([(long, (255, 255, 255)), ("short", (255, 255, 255))], 240, 60, 18)
    ink = _ink_columns(img)
    assert img.shape == (60, 240, 3) and ink.size and ink.min() >= 8 and ink.max() < 240 - 6
    panel = labelled(np.zeros((40, 120, 3), dtype=np.uint8), [long])
    ink = _ink_columns(panel[40:])
    assert ink.size and ink.max() < 120 - 2


def test_padded_centres_an_image_on_the_background() -> None:
    img = np.full((4, 3, 3), 255, dtype=np.uint8)
    out = padded(img, 10)
    assert out.shape == (4, 10, 3) and (out[:, 3:6] == 255).all()
    assert (out[:, :3] == BACKGROUND).all() and (out[:, 6:] == BACKGROUND).all()
    assert padded(img, 2) is img  # wide enough already


def test_a_head_is_wrapped_at_its_separators_and_after_a_long_names_slashes() -> None:
    head = "hf:MCG-NJU/videomae-base-finetuned-kinetics · iba"
    lines = wrapped(head, 204, 13)
    assert lines == ["hf:MCG-NJU/", "videomae-base-finetuned-kinetics", "iba"]  # was one line cut to 'hf:MCG-NJU/…'
    assert wrapped("bits 0-2.13/voxel · layer2 · smoking", 204, 13) == ["bits 0-2.13/voxel · layer2", "smoking"]
    assert wrapped("r3d_18 · iba", 204, 13) == ["r3d_18 · iba"]  # what fits stays one line
    for line in wrapped("|grad-cam| · hf.videomae.encoder.layer.11 · counting money", 204, 13):
        assert font(13).getlength(line) <= 204, line


def test_a_comparisons_strip_puts_a_long_legend_on_more_rows() -> None:
    from video_iba.render.compare import COLOURS, time_strip

    names = ["r3d_18 · iba", "r3d_18 · gradcam", "hf:MCG-NJU/videomae-base-finetuned-kinetics · iba",
             "hf:MCG-NJU/videomae-base-finetuned-kinetics · gradcam"]
    strip = time_strip(np.zeros((4, 30)), 0, 816, names)
    fourth = (strip == np.array(COLOURS[3], dtype=np.uint8)).all(axis=2)
    assert fourth[18:32, 8:400].sum() > 20  # its name on a second row of the legend (was drawn past the edge)
    assert not fourth[:16].any()  # and none of it on the first


def test_a_small_probability_is_not_shown_as_zero() -> None:
    from video_iba.render.text import prob

    assert [prob(p) for p in (0.934, 0.01, 0.0025, 0.000123, 0.0)] == ["0.93", "0.01", "0.0025", "0.00012", "0.00"]
