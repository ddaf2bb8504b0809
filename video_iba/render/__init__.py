"""Rendering: colormaps, overlays, the photo figure, the overlay MP4 and comparison figures."""

from .compare import ClipPanel, compare_clip, comparison_row, write_rows
from .draw import draw, normalised_to_rgb
from .figure import Caption, image_figure
from .overlay import bits_on_image, colormap, overlay
from .video import LAYOUTS, display_size, merged_map, render_clip

__all__ = ["draw", "ClipPanel", "compare_clip", "comparison_row", "normalised_to_rgb", "write_rows", "Caption", "image_figure",
           "bits_on_image", "colormap", "overlay", "LAYOUTS", "display_size", "merged_map", "render_clip"]
