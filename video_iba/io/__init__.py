"""Input and output: image and video reading, atomic file writing."""

from .atomic import atomic_write, atomic_writes, ensure_writable_dir
from .image import read_image
from .video import Frame, VideoInfo, iter_frames, probe_video

__all__ = ["atomic_write", "atomic_writes", "ensure_writable_dir", "read_image", "Frame", "VideoInfo", "iter_frames",
           "probe_video"]
