"""`video_iba.draw`: a map over the model input it explains, in a notebook, a PNG or an MP4."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import video_iba
from video_iba import Attribution, ClipAttribution, ModelSpec, Unit, UserInputError
from video_iba.models import preprocess_clip
from video_iba.render.overlay import ALPHA, CMAP, colormap

from ..helpers import read_frames

MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
SPEC = ModelSpec(name="toy", family="own", modality="video", frames=4, sampling_rate=1, input_size=32, resize=32,
                 mean=MEAN, std=STD, labels="own", label_names=("a", "b"))


def _clip() -> tuple[np.ndarray, torch.Tensor]:
    t, y, x = np.meshgrid(np.arange(4), np.arange(32), np.arange(32), indexing="ij")
    frames = np.stack([x * 8, y * 8, 40 + t * 50], axis=-1).astype(np.uint8)  # smooth: H.264 keeps it
    x, _ = preprocess_clip(frames, SPEC)
    return frames, x


def _expected(rgb: np.ndarray, values: np.ndarray, top: float) -> np.ndarray:
    blend = (1 - ALPHA) * rgb / 255.0 + ALPHA * colormap(values, top, CMAP)
    return np.clip(blend * 255 + 0.5, 0, 255)


def test_a_clip_map_is_drawn_over_the_frames_it_explains(tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, x = _clip()
    values = np.zeros((4, 32, 32), np.float32)
    values[2, 8:16, 8:16] = 3.0  # bits in one frame's square
    attr = Attribution(values=values, unit=Unit.BITS, target=0)
    drawn = video_iba.draw(attr, x, SPEC, path=tmp_path / "c.mp4")
    assert drawn.shape == (4, 32, 32, 3) and drawn.dtype == np.uint8
    # the preprocessed input is turned back into its frames (within rounding), the map blended over them
    assert np.abs(drawn.astype(int) - _expected(frames, values, 3.0)).max() <= 2
    square, elsewhere = drawn[2, 10:14, 10:14].astype(int), drawn[0, 10:14, 10:14].astype(int)
    assert (square[..., 0] > elsewhere[..., 0] + 60).all()  # inferno's top is bright yellow, its bottom black
    # the model's spec, its frames as uint8 and mean/std give the same drawing
    model = torch.nn.Identity()
    model.video_iba_spec = SPEC  # type: ignore[assignment]
    assert np.array_equal(video_iba.draw(attr, x, model), drawn)
    assert np.abs(video_iba.draw(attr, frames).astype(int) - drawn.astype(int)).max() <= 1
    assert np.array_equal(video_iba.draw(attr, x[0], mean=MEAN, std=STD), drawn)
    written = read_frames(str(tmp_path / "c.mp4"))  # H.264: close, not equal
    assert len(written) == 4 and np.abs(np.stack(written).astype(int) - drawn.astype(int)).mean() < 8
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp")] == []


def test_a_photo_and_a_baseline_are_drawn_by_magnitude_on_their_own_scale(tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, x = _clip()
    photo, xp = frames[0], x[:, :, 0]
    values = np.linspace(-2.0, 2.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    attr = Attribution(values=values, unit=Unit.GRADIENT, target=1)
    drawn = video_iba.draw(attr, xp, SPEC, path=tmp_path / "p.png")
    assert drawn.shape == (32, 32, 3)
    assert np.abs(drawn.astype(int) - _expected(photo, np.abs(values), 2.0)).max() <= 2
    with Image.open(tmp_path / "p.png") as saved:
        assert np.array_equal(np.asarray(saved), drawn)
    half = video_iba.draw(attr, xp, SPEC, vmax=1.0)  # a lower top saturates more of the map
    assert np.abs(half.astype(int) - _expected(photo, np.abs(values), 1.0)).max() <= 2


def test_with_its_geometry_a_map_is_placed_on_the_original_photo_and_clip() -> None:
    import dataclasses

    from video_iba.models import preprocess_image
    from video_iba.render.overlay import bits_on_image, overlay

    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, size=(40, 64, 3), dtype=np.uint8)  # wider than high: a centre crop
    x, geo = preprocess_image(photo, dataclasses.replace(SPEC, modality="image"))
    values = np.zeros((32, 32), np.float32)
    values[:, 16:] = 2.0  # the crop's right half
    attr = Attribution(values=values, unit=Unit.BITS, target=0)
    drawn = video_iba.draw(attr, photo, geometry=geo)
    assert drawn.shape == photo.shape
    assert np.array_equal(drawn, overlay(photo, bits_on_image(values, geo.box, (40, 64)), 2.0))
    x0, _, x1, _ = geo.box
    assert 0 < x0 and x1 < 64  # the photo's sides were not seen: hatched or greyed, never the colormap
    left = drawn[:, : int(x0) - 1].astype(int)
    assert (np.abs(left[..., 0] - left[..., 2]) <= 1).all()
    frames = np.stack([photo, photo[:, ::-1]])
    clip = Attribution(values=np.stack([values, values[:, ::-1]]), unit=Unit.BITS, target=0)
    both = video_iba.draw(clip, frames, geometry=geo)
    assert both.shape == (2, 40, 64, 3) and np.array_equal(both[0], drawn)
    with pytest.raises(UserInputError, match="with geometry, x is the original uint8 RGB"):
        video_iba.draw(attr, x, SPEC, geometry=geo)


@pytest.mark.parametrize("call, message", [
    (lambda a, c, x: video_iba.draw(a, x), "give the model or its spec, or mean= and std="),
    (lambda a, c, x: video_iba.draw(a, x[:, :, :2], SPEC), "x has shape (1, 3, 2, 32, 32), the map (4, 32, 32)"),
    (lambda a, c, x: video_iba.draw(a, np.zeros((4, 16, 16, 3), np.uint8)), "x's RGB frames are (4, 16, 16, 3)"),
    (lambda a, c, x: video_iba.draw(a, x, SPEC, vmax=0), "vmax is the top of the colour scale"),
    (lambda a, c, x: video_iba.draw(a, x, SPEC, path="c.png"), "a clip's drawing is written as an .mp4"),
    (lambda a, c, x: video_iba.draw(a, x, SPEC, path="c.mp4", fps=0), "fps must be a number > 0"),
    (lambda a, c, x: video_iba.draw(a, x, mean=(0.5,), std=(0.2,)), "one value per colour channel"),
    (lambda a, c, x: video_iba.draw(c, x, SPEC), "drawn over its source frames by explain_file"),
    (lambda a, c, x: video_iba.draw(x, x, SPEC), "draw takes an Attribution"),
])
def test_draw_refuses_what_it_cannot_draw(call, message, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    _, x = _clip()
    attr = Attribution(values=np.ones((4, 32, 32), np.float32), unit=Unit.BITS, target=0)
    clip_result = ClipAttribution.__new__(ClipAttribution)
    with pytest.raises(UserInputError, match=None) as err:
        call(attr, clip_result, x)
    assert message in str(err.value) and os.listdir(tmp_path) == []
