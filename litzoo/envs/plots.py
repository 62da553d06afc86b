"""Pictures of values on the grid world: learned next to exact, as Zhao's book draws them (no Lightning)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

from litzoo.envs.grid_world import GridWorld


def plot_values_side_by_side(
    grid: GridWorld,
    left: tuple[np.ndarray, Optional[np.ndarray]],
    right: tuple[np.ndarray, Optional[np.ndarray]],
    titles: Sequence[str] = ("learned", "exact"),
    suptitle: str = "",
    path: Optional[str] = None,
) -> np.ndarray:
    """Two :meth:`GridWorld.render_values` pictures side by side, e.g. learned (left) vs exact (right) values.

    ``left`` / ``right``: ``(values, policy)``, values of every state (S,) and an S x A policy or ``None``.
    Writes a PNG to ``path`` if given; returns the RGB image (H, W, 3). Uses matplotlib's Agg canvas directly
    (no display, no global pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = [grid.render_values(values, policy, precision=1) for values, policy in (left, right)]
    fig = Figure(figsize=(9, 4.8), dpi=100)
    canvas = FigureCanvasAgg(fig)
    for i, (image, title) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(suptitle, fontsize=10)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        fig.savefig(path)
    return rgb
