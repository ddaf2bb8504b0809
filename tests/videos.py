"""Writing small test videos with PyAV (H.264 MP4 by default)."""

from __future__ import annotations

from fractions import Fraction
from typing import Callable

import numpy as np


def bar_frame(i: int, size: tuple[int, int]) -> np.ndarray:
    """Frame ``i``: black with a white vertical bar at column ``2 i``."""
    img = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    img[:, (2 * i) % size[0]] = 255
    return img


def encode(path: str, frames: int = 60, size: tuple[int, int] = (96, 64), fps: int = 30, faststart: bool = True,
           audio_only: bool = False, codec: str = "libx264", pix_fmt: str = "yuv420p", container: str = "mp4",
           pts: list[int] | None = None, content: Callable[[int, tuple[int, int]], np.ndarray] = bar_frame,
           rotation: int = 0, pixel_aspect: Fraction | None = None) -> str:
    """Write a small video (or an AAC-only file) and return its path.

    ``pts``: presentation times in units of 1/1000 s for a variable frame rate (one per frame).
    ``rotation``: a display matrix turning the frames this many degrees counter-clockwise (phones).
    ``pixel_aspect``: the stream's sample aspect ratio (an anamorphic video's stored pixels are this
    many times wider as displayed).
    """
    import av

    options = {"movflags": "faststart"} if faststart and container == "mp4" else {}
    with av.open(path, "w", format=container, options=options) as out:
        if audio_only:
            stream = out.add_stream("aac", rate=16000)
            for i in range(20):
                samples = np.zeros((1, 1024), dtype=np.float32)
                frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
                frame.sample_rate, frame.pts = 16000, i * 1024
                for packet in stream.encode(frame):
                    out.mux(packet)
        else:
            stream = out.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
            if rotation:
                stream.set_display_rotation(rotation)
            if pixel_aspect is not None:
                stream.codec_context.sample_aspect_ratio = pixel_aspect
            if pts is not None:
                stream.codec_context.time_base = Fraction(1, 1000)
            for i in range(frames):
                frame = av.VideoFrame.from_ndarray(content(i, size), format="rgb24")
                if pts is not None:
                    frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def moving_square(i: int, size: tuple[int, int]) -> np.ndarray:
    """Frame ``i``: grey with a yellow 16-pixel square moving right by 3 pixels a frame."""
    w, h = size
    img = np.full((h, w, 3), 40, dtype=np.uint8)
    x = (3 * i) % max(1, w - 16)
    img[h // 3:h // 3 + 16, x:x + 16] = (250, 200, 30)
    return img
