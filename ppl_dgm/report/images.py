"""Data points and model samples as image grids (PNG bytes for the reports)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["as_images", "grid_png"]


def as_images(x, image_shape: Sequence[int] | None = None) -> tuple[np.ndarray, tuple] | None:
    """``x (n, D)`` as ``(n, H, W)`` grey-level images in [0, 1], or None when the rows do
    not look like images: an explicit ``image_shape``, else square widths (64 = 8x8, 784 =
    28x28) whose values lie in [0, 1] (token ids or real-valued data are not images)."""
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or not np.isfinite(a).all():
        return None
    if image_shape is None:
        side = int(round(math.sqrt(a.shape[1])))
        if side < 4 or side * side != a.shape[1] or a.min() < 0 or a.max() > 1:
            return None
        image_shape = (side, side)
    if int(np.prod(image_shape)) != a.shape[1]:
        return None
    return a.reshape(a.shape[0], *image_shape), tuple(image_shape)


def grid_png(images: np.ndarray, *, titles: Sequence[str] | None = None, cols: int | None = None,
             size: float = 0.75, title: str | None = None) -> bytes:
    """A grid of grey-level images ``(n, H, W)`` (dark = 1) as PNG bytes, optionally with a
    small title over each image."""
    n = images.shape[0]
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    pad = 0.28 if titles else 0.0
    fig, axes = plt.subplots(rows, cols, squeeze=False,
                             figsize=(cols * size, rows * (size + pad) + (0.35 if title else 0)))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            if titles:
                ax.set_title(titles[i], fontsize=6.5, pad=2)
    if title:
        fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
