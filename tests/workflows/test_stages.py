"""The explain workflow through its Python functions: one set of stages for photos and videos."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import video_iba
from video_iba import Attribution, ClipAttribution, Unit, UserInputError
from video_iba.io.video import probe_video
from video_iba.workflows import Options, Range, Session, Settings, explain_file, explain_path, plan_input

from ..helpers import read_frames
from ..videos import encode, moving_square

FAST = video_iba.IBAConfig(steps=2, samples=2)


def test_a_photo_is_one_window_of_one_frame_and_matches_the_library(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = os.path.join(photo_dir, "coffee.jpg")
    session = Session.open(Settings(model="efficientnet_lite0", config=FAST, seed=3))
    plan = plan_input(path, session.spec)
    assert not plan.is_video and plan.count == 1 and plan.windows == []
    res = explain_file(session, plan, str(tmp_path))
    assert isinstance(res.result, Attribution) and res.label == "espresso" and res.windows == res.crops == 1
    png, npz = res.outputs
    assert png.endswith("coffee.png") and Image.open(png).size[0] > 600  # photo | overlay, with a colorbar
    back = video_iba.load(npz)
    assert isinstance(back, Attribution) and back.unit is Unit.BITS and back.values.shape == (224, 224)
    assert back.meta["top5"][0][0] == "espresso" and back.arrays["crop_box"].shape == (4,)
    # the file workflow's map is the library's map of the same model input, seed and settings
    x, geo = video_iba.preprocess_image(video_iba.read_image(path), session.spec)
    direct = video_iba.explain(session.model, x, config=FAST, seed=3)
    assert torch.equal(back.values, direct.values) and back.target == direct.target
    assert back.arrays["crop_box"].tolist() == list(geo.box)


def test_a_video_is_explained_window_by_window_and_saved_as_a_clip_result(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "clip.mp4"), frames=45, size=(128, 96), fps=30, content=moving_square)
    settings = Settings(model="r3d_18", weights="random", config=FAST)
    torch.manual_seed(0)
    res = explain_path(clip, settings, str(tmp_path / "out"), Options(span=Range(stride=0.5)))
    r = res.result
    assert isinstance(r, ClipAttribution) and r.unit is Unit.BITS
    assert r.values.shape == (res.windows, 1, 16, 112, 112) and res.windows == len(r.window_starts) == 2  # 0 s, tail
    assert r.source_frame_indices.tolist() == list(range(45)) and r.bits_per_frame.shape == (45,)
    mp4, npz = res.outputs
    assert len(read_frames(mp4)) == 45 and probe_video(mp4).fps == pytest.approx(30)
    back = video_iba.load(npz)
    assert isinstance(back, ClipAttribution) and np.array_equal(back.values, r.values)
    assert back.meta["output_frames"] == 45 and back.total_bits == pytest.approx(r.total_bits)
    # each window's map is the library's map of that window's clip
    x, _ = video_iba.read_clip(clip, video_iba.get_spec("r3d_18"), start=float(r.window_starts[1]))
    torch.manual_seed(0)  # the same random network as above
    session = Session.open(settings)
    direct = video_iba.explain(session.model, x, r.target, config=FAST, seed=0)
    assert np.array_equal(direct.values.numpy(), r.values[1, 0])


def test_a_baseline_on_a_video_keeps_its_unit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "clip.mp4"), frames=20, size=(96, 96), fps=30)
    res = explain_path(clip, Settings(model="r3d_18", weights="random", method="gradient"), str(tmp_path / "o"),
                       Options(target=5))
    r = res.result
    assert isinstance(r, ClipAttribution) and r.unit is Unit.GRADIENT and r.target == 5 and r.total is None
    assert r.values.min() < 0  # a signed map is kept signed; figures draw its magnitude
    assert r.feature_bits == [] and np.all(r.per_source_frame >= 0)  # totals of the magnitude
    back = video_iba.load(res.outputs[1])
    assert isinstance(back, ClipAttribution) and back.unit is Unit.GRADIENT


def test_the_wrong_kind_of_input_for_the_model_is_refused(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "clip.mp4"), frames=10)
    with pytest.raises(UserInputError, match="is an image model"):
        plan_input(clip, video_iba.get_spec("resnet18"))
    with pytest.raises(UserInputError, match="is a video model") as err:
        plan_input(os.path.join(photo_dir, "coffee.jpg"), video_iba.get_spec("r3d_18"))
    assert "model=" in str(err.value) and "--model" in err.value.worded(lambda o: f"--{o}")
    tiny = encode(str(tmp_path / "tiny.mp4"), frames=10, size=(48, 24))
    with pytest.raises(UserInputError, match="is 48x24 pixels; r3d_18 needs at least 28 .* use a larger video"):
        video_iba.read_clip(tiny, video_iba.get_spec("r3d_18"))
    with pytest.raises(UserInputError, match="needs at least 28"):
        video_iba.preprocess_clip(np.zeros((4, 24, 48, 3), np.uint8), video_iba.get_spec("r3d_18"))
    with pytest.raises(UserInputError, match="vmax= must be a finite number > 0"):
        Options(vmax=-1.0)
    with pytest.raises(UserInputError, match="end= .* must be after start="):
        Range(start=2.0, end=1.0)
    with pytest.raises(UserInputError, match="stride= must be a finite number of seconds > 0"):
        Range(stride=0)  # was taken, and refused only once a video's windows were planned
    with pytest.raises(UserInputError, match="unknown coverage 'all'; give coverage= one of center, tiles"):
        Range(coverage="all")
    with pytest.raises(UserInputError, match="start= must be a finite number of seconds, got '1'"):
        Range(start="1")  # type: ignore[arg-type]  # was a TypeError comparing a string with 0
    with pytest.raises(UserInputError, match="target= takes top1, a class index or a class name, got 2.5"):
        Options(target=2.5)  # type: ignore[arg-type]  # was a TypeError once the target was resolved
    assert Options(target=np.int64(3)).target == 3
