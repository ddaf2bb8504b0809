"""Frame sampling by time and sliding windows."""

from __future__ import annotations

import numpy as np
import pytest

from video_iba import UserInputError
from video_iba.io.sampling import clip_seconds, plan_windows, window_at


def test_sampling_rate_is_converted_to_the_source_fps() -> None:
    # SlowFast's fast pathway: 32 frames every 2 frames at 30 fps = 2.13 s
    assert clip_seconds(32, 2) == pytest.approx(32 * 2 / 30)
    w30 = window_at(0.0, 32, 2, 30.0, 1000)
    assert w30.indices.tolist() == list(range(0, 64, 2))
    w25 = window_at(0.0, 8, 8, 25.0, 1000)  # every 8/30 s at 25 fps: nearest source frames
    assert w25.indices.tolist() == [int(round(i * 8 / 30 * 25)) for i in range(8)]
    w60 = window_at(1.0, 4, 2, 60.0, 1000)
    assert w60.indices.tolist() == [60, 64, 68, 72] and not w60.looped


def test_windows_cover_the_range_and_its_tail() -> None:
    ws = plan_windows(250, 25.0, 16, 4, start=0.0, end=None)  # 10 s video, 2.13 s clips
    span = clip_seconds(16, 4)
    assert ws[0].start == 0.0 and ws[-1].start == pytest.approx(10.0 - span)
    assert all(b.start - a.start <= span + 1e-9 for a, b in zip(ws, ws[1:]))
    assert ws[-1].indices.max() <= 249 and not any(w.looped for w in ws)
    strided = plan_windows(250, 25.0, 16, 4, start=2.0, end=6.0, stride=1.0)
    assert [round(w.start, 3) for w in strided] == [2.0, 3.0, round(6.0 - span, 3)]
    assert strided[-1].start + span == pytest.approx(6.0)


def test_short_ranges_loop_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        ws = plan_windows(20, 25.0, 32, 2)  # 0.8 s video, 2.13 s clip
    assert len(ws) == 1 and ws[0].looped
    assert ws[0].indices.min() >= 0 and ws[0].indices.max() <= 19
    assert "shorter than one clip" in caplog.text
    part = plan_windows(250, 25.0, 32, 2, start=4.0, end=5.0)[0]  # loops inside the chosen second only
    assert part.indices.min() >= 100 and part.indices.max() <= 124


@pytest.mark.parametrize("kwargs, match", [
    ({"start": 5.0, "end": 4.0}, "empty"), ({"start": 12.0}, "empty"), ({"stride": 0.0}, "stride"),
    ({"stride": 0.001}, r"stride= 0.001 s is shorter than one frame of the video \(0.04 s at 25 fps\).*at least 0.040"),
])
def test_bad_ranges(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        plan_windows(250, 25.0, 16, 4, **kwargs)


def test_indices_are_integers_in_range() -> None:
    for fps in (23.976, 25.0, 29.97, 30.0, 59.94):
        for w in plan_windows(300, fps, 8, 8, stride=0.5):
            assert w.indices.dtype == np.int64 and 0 <= w.indices.min() and w.indices.max() < 300
