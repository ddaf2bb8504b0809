"""`video-iba compare`: a panel per method for photos, and for every source frame of a video range."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from video_iba import Unit
from video_iba.io.video import probe_video
from video_iba.workflows import Options, Range, Settings, compare_file

from ..helpers import read_frames, run_cli
from ..videos import encode, moving_square


def test_compare_photo(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    photo = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])
    out = tmp_path / "o"
    code, stdout, err = run_cli(["compare", photo, "--methods", "random,saliency", "--out", str(out)], capsys)
    assert code == 0, err
    stem = os.path.splitext(os.path.basename(photo))[0]
    img = np.asarray(Image.open(out / f"{stem}-compare.png"))
    assert img.shape[1] == 3 * 224  # input + two methods
    assert "saliency (|gradient|)" in stdout
    res = compare_file(photo, ["saliency", "gradcam"], Settings(), str(tmp_path / "py"))
    assert res.units == [("saliency", Unit.ABS_GRADIENT), ("gradcam", Unit.GRAD_CAM)]
    assert res.label == "Egyptian cat" and os.path.exists(res.output)  # chelsea, sorted first


def test_compare_clip_renders_the_whole_range(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "c.mp4"), frames=40, size=(128, 96), content=moving_square)
    out = tmp_path / "o"
    code, stdout, err = run_cli(["compare", clip, "--model", "r3d_18", "--weights", "random", "--methods",
                                 "saliency,gradcam", "--target", "3", "--out", str(out)], capsys)
    assert code == 0, err
    frames = read_frames(str(out / "c-compare.mp4"))
    # every source frame (not only the 16 frames of the first model clip), at the source's rate
    assert len(frames) == 40 and probe_video(str(out / "c-compare.mp4")).fps == 30
    assert frames[0].shape[1] == 3 * 320  # the frame and two methods, each 240 pixels high
    assert not np.array_equal(frames[5][:240, 320:640], frames[30][:240, 320:640])  # the overlay follows the clip
    assert "#3 " in stdout and "saliency (|gradient|), gradcam (grad-cam)" in stdout
    res = compare_file(clip, ["random"], Settings(model="r3d_18", weights="random"), str(tmp_path / "py"),
                       Options(target=3, span=Range(start=0.2, end=1.0)))
    assert len(read_frames(res.output)) == 24  # [0.2 s, 1.0 s) at 30 fps
    code, _, err = run_cli(["compare", clip, "--model", "resnet50", "--out", str(out)], capsys)
    assert code == 2 and "is an image model" in err
