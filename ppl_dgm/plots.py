"""Figures written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["save_grid"]


def save_grid(x: torch.Tensor, path: str | Path, *, image_shape: tuple[int, ...] | None = None,
              title: str | None = None) -> Path:
    """Save a grid of images (rows of ``x`` reshaped to ``image_shape``) as a PNG."""
    n = x.shape[0]
    if image_shape is None:
        side = int(round(math.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise ValueError(f"cannot show points of width {x.shape[1]} as images; give "
                             f"image_shape")
        image_shape = (side, side)
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + (0.4 if title else 0)))
    for i, ax in enumerate(axes.flat if hasattr(axes, "flat") else [axes]):
        ax.axis("off")
        if i < n:
            ax.imshow(x[i].reshape(image_shape).float().numpy(), cmap="gray_r", vmin=0, vmax=1)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
