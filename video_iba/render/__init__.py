"""Rendering: colormaps, overlays and figures in bits."""

from .figure import Caption, image_figure
from .overlay import bits_on_image, colormap, overlay

__all__ = ["Caption", "image_figure", "bits_on_image", "colormap", "overlay"]
