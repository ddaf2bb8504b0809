"""`video-iba compare`: a panel per method for stills and clips."""

from __future__ import annotations

import os

import numpy as np

from video_iba.cli import main
from video_iba.io.video import iter_frames

from .videos import encode


def test_compare_photo_and_clip(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    photo = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])
    out = tmp_path / "o"
    assert main(["compare", photo, "--methods", "random,saliency", "--out", str(out)]) == 0
    stem = os.path.splitext(os.path.basename(photo))[0]
    img = np.asarray(Image.open(out / f"{stem}-compare.png"))
    assert img.shape[1] == 3 * 224  # input + two methods
    assert "saliency (|gradient|)" in capsys.readouterr().out
    clip = encode(str(tmp_path / "c.mp4"), frames=40, size=(128, 96))
    assert main(["compare", clip, "--model", "r3d_18", "--weights", "random", "--methods", "saliency,gradcam",
                 "--target", "3", "--out", str(out)]) == 0
    frames = [f.rgb for f in iter_frames(str(out / "c-compare.mp4"))]
    assert len(frames) == 16 and frames[0].shape[1] == 3 * 224  # the model clip's frames, one panel per method
    capsys.readouterr()
    assert main(["compare", clip, "--model", "resnet50", "--out", str(out)]) == 2
    assert "is an image model" in capsys.readouterr().err
