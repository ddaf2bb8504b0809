"""The still-image figure: photo, bits overlay, colorbar in bits/pixel and a caption."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..results import Unit
from .overlay import CMAP, bits_on_image, overlay, scale_top


@dataclass(frozen=True)
class Caption:
    """Text shown on the figure."""

    predicted: str
    explained: str
    total_bits: float | None
    details: str
    input_side: int
    unit: Unit = Unit.BITS
    prefix_bits: float | None = None  # bits of class tokens: in the total's text, not on the map


def figure_top(bits: np.ndarray, vmax: float | None = None) -> float:
    """The top of a photo figure's colour scale: ``vmax``, or the map's largest value (1 where
    there is nothing above 0)."""
    top = float(vmax) if vmax is not None else scale_top(bits)
    return top if top > 0 else 1.0


def image_figure(
    rgb: np.ndarray,
    bits: np.ndarray,
    box: tuple[float, float, float, float],
    caption: Caption,
    path: str | os.PathLike[str],
    vmax: float | None = None,
) -> float:
    """Write a PNG with the photo (crop box marked) and the bits overlay side by side.

    Args:
        rgb: Original image ``(H, W, 3)`` uint8.
        bits: Bits per model-input pixel ``(S, S)``.
        box: Where the model input lies in the original image ``(x0, y0, x1, y1)``.
        caption: Texts for the title lines.
        path: Output file (written as PNG).
        vmax: Top of the colour scale in bits/pixel; ``None`` uses the map's maximum.

    Returns:
        The ``vmax`` used.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    top = figure_top(bits, vmax)
    on_image = bits_on_image(bits, box, rgb.shape[:2])
    blended = overlay(rgb, on_image, top)
    h, w = rgb.shape[:2]
    fig_w = 11.0
    fig_h = max(3.5, fig_w * 0.5 * h / w + 1.6)
    fig, axes = plt.subplots(1, 2, figsize=(fig_w, fig_h), gridspec_kw={"wspace": 0.04})
    try:
        x0, y0, x1, y1 = box
        axes[0].imshow(rgb)
        axes[0].add_patch(mpatches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", lw=1.2, ls="--"))
        axes[0].set_title(f"input (dashed: the {caption.input_side}x{caption.input_side} model input)", fontsize=9)
        axes[1].imshow(blended)
        total = f"  ·  {caption.total_bits:.1f} bits in total" if caption.total_bits is not None else ""
        if caption.prefix_bits is not None:
            total += f" (+{caption.prefix_bits:.1f} in class tokens, not drawn)"
        axes[1].set_title(f"explained: {caption.explained}{total}", fontsize=9)
        for ax in axes:
            ax.set_axis_off()
        sm = ScalarMappable(norm=Normalize(0.0, top), cmap=CMAP)
        extend = "max" if np.nanmax(bits) > top else "neither"
        cax = make_axes_locatable(axes[1]).append_axes("right", size="3.5%", pad=0.08)
        cbar = fig.colorbar(sm, cax=cax, extend=extend)
        what = Unit(caption.unit).shown
        cbar.set_label(f"{what} / pixel (of the {caption.input_side}x{caption.input_side} model input)", fontsize=8)
        if np.isnan(on_image).any():
            patch = mpatches.Patch(facecolor="#8c8c8c", hatch="////", edgecolor="#d9d9d9", label="not covered by the model input")
            axes[1].legend(handles=[patch], loc="lower right", fontsize=7, framealpha=0.8)
        # the caption just above the panels' titles (at the default height it left an empty band
        # as tall as the titles under it); the saved figure is trimmed to its content
        fig.canvas.draw()
        titles_top = max(ax.title.get_window_extent().y1 for ax in axes) / fig.bbox.height
        fig.suptitle(f"predicted: {caption.predicted}\n{caption.details}", fontsize=9, y=titles_top + 0.01,
                     va="bottom")
        fig.savefig(os.fspath(path), format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return top
