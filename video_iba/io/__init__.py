"""Input and output: images, videos and their clips, input discovery, ledgers."""

from .clips import DECODER_ENV, Timeline, clip_decoder, iter_window_frames, read_clip, timeline
from .discovery import (IMAGE_SUFFIXES, VIDEO_SUFFIXES, batch_inputs, find_images, find_videos, has_images,
                        is_animated_gif, is_batch_input, is_image_file, is_video_file, shared_files)
from .image import read_image
from .labels import read_labels
from .ledger import Ledger, drop_unfinished_line, keep_records, read_records, rewrite_records
from .sampling import REFERENCE_FPS, FrameSource, Window, frame_sources, plan_windows, source_frame_totals
from .video import Frame, VideoInfo, VideoWriter, frame_times, iter_frames, probe_video

__all__ = [
    "DECODER_ENV", "Timeline", "clip_decoder", "iter_window_frames", "read_clip", "timeline",
    "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "batch_inputs", "find_images", "find_videos", "has_images", "is_animated_gif",
    "is_batch_input", "is_image_file", "is_video_file", "shared_files", "read_image", "read_labels",
    "Ledger", "drop_unfinished_line", "keep_records", "read_records", "rewrite_records",
    "REFERENCE_FPS", "FrameSource", "Window", "frame_sources", "plan_windows", "source_frame_totals",
    "Frame", "VideoInfo", "VideoWriter", "frame_times", "iter_frames", "probe_video",
]
