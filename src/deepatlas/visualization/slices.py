"""PNG figures of images, label maps and deformations (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepatlas.files import atomic_path


def _mid_slice(volume: np.ndarray, axis: int = 2) -> np.ndarray:
    """The middle slice along ``axis`` of a 3D volume (2D arrays pass through), transposed for display."""
    volume = np.asarray(volume)
    if volume.ndim == 3:
        volume = np.take(volume, volume.shape[axis] // 2, axis=axis)
    return volume.T


def save_panels(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
    path: str | Path,
    num_classes: int | None = None,
    axis: int = 2,
    dpi: int = 110,
) -> Path:
    """Save a row of panels, each ``(title, image, labels or None)``: the image in grey, the
    class-index labels over it in colour. 3D inputs show their middle slice along ``axis``
    (2 = axial for RAS volumes). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4), squeeze=False)
    for ax, (title, image, labels) in zip(axes[0], panels):
        ax.imshow(_mid_slice(image, axis), cmap="gray", origin="lower", vmin=0, vmax=1)
        if labels is not None:
            lab = _mid_slice(labels, axis).astype(float)
            vmax = num_classes - 1 if num_classes else max(float(lab.max()), 1.0)
            ax.imshow(
                np.ma.masked_where(lab == 0, lab),
                cmap="tab20",
                alpha=0.55,
                origin="lower",
                vmin=0,
                vmax=vmax,
                interpolation="nearest",
            )
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure to PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)
