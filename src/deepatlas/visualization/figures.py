"""Figures of a registration and a segmentation: slices, overlays, deformation grid, Jacobian, curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepatlas.visualization.slices import save_figure

PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend: figures are written, never shown (no display
    needed), and matplotlib is imported only when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def planes(volume: np.ndarray) -> dict[str, np.ndarray]:
    """Middle slices of a 3D (RAS) volume in the three planes, oriented for display; 2D passes through."""
    if volume.ndim == 2:
        return {"slice": volume.T}
    return {name: np.take(volume, volume.shape[axis] // 2, axis=axis).T for name, axis in PLANES.items()}


def slices_figure(
    images: dict[str, np.ndarray],
    path: Path,
    labels: dict[str, np.ndarray] | None = None,
    num_classes: int | None = None,
) -> Path:
    """Rows: the named images; columns: planes. With ``labels`` (same names), class overlays."""
    plt = pyplot()
    names = list(images)
    cols = list(planes(images[names[0]]))
    fig, axes = plt.subplots(len(names), len(cols), figsize=(2.6 * len(cols), 2.6 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        shown = planes(images[name])
        overlay = planes(labels[name]) if labels and labels.get(name) is not None else None
        for c, plane in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(shown[plane], cmap="gray", origin="lower")
            if overlay is not None:
                lab = overlay[plane].astype(float)
                ax.imshow(
                    np.ma.masked_where(lab == 0, lab),
                    cmap="tab20",
                    alpha=0.5,
                    origin="lower",
                    vmin=0,
                    vmax=(num_classes or lab.max() + 1) - 1,
                    interpolation="nearest",
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
            if r == 0:
                ax.set_title(plane)
    fig.tight_layout()
    return save_figure(fig, path)


def grid_figure(displacement_vox: np.ndarray, background: np.ndarray, path: Path, spacing: int = 4) -> Path:
    """The deformation as a warped grid: lines of a regular grid pulled through the displacement
    (voxel units, ``dims x *shape``), drawn in each plane over the fixed image."""
    plt = pyplot()
    dims = displacement_vox.shape[0]
    shape = displacement_vox.shape[1:]
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    mapped = coords + displacement_vox  # where each fixed voxel samples the moving image
    views = (
        {"slice": (None, 0, 1)} if dims == 2 else {n: (a, *[d for d in range(3) if d != a]) for n, a in PLANES.items()}
    )
    fig, axes = plt.subplots(1, len(views), figsize=(3.2 * len(views), 3.2), squeeze=False)
    for ax, (plane, (axis, u, v)) in zip(axes[0], views.items()):
        if axis is None:
            pu, pv, bg = mapped[u], mapped[v], background
        else:
            mid = shape[axis] // 2
            pu, pv, bg = (np.take(mapped[u], mid, axis), np.take(mapped[v], mid, axis), np.take(background, mid, axis))
        ax.imshow(bg.T, cmap="gray", origin="lower", alpha=0.6)
        for i in range(0, pu.shape[0], spacing):
            ax.plot(pu[i, :], pv[i, :], color="tab:orange", lw=0.6)
        for j in range(0, pu.shape[1], spacing):
            ax.plot(pu[:, j], pv[:, j], color="tab:orange", lw=0.6)
        ax.set_xlim(0, pu.shape[0] - 1)
        ax.set_ylim(0, pu.shape[1] - 1)
        ax.set_title(plane)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)


def jacobian_figure(jacobian: np.ndarray, path: Path) -> Path:
    """Jacobian determinant per plane: blue = compression, red tones = expansion, solid red = fold (J <= 0)."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap, TwoSlopeNorm

    shown = planes(jacobian)
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown) + 0.8, 3.2), squeeze=False)
    norm = TwoSlopeNorm(vcenter=1.0, vmin=0.0, vmax=2.0)
    for ax, (plane, jac) in zip(axes[0], shown.items()):
        im = ax.imshow(np.clip(jac, 0, 2), cmap="PuOr_r", norm=norm, origin="lower")
        folds = np.ma.masked_where(jac > 0, np.ones_like(jac))
        ax.imshow(folds, cmap=ListedColormap(["red"]), origin="lower", interpolation="nearest")
        ax.set_title(f"{plane}: {int((jac <= 0).sum())} folded voxels")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="det J (folds in red)")
    return save_figure(fig, path)


def curves_figure(metrics_file: Path, path: Path) -> Path:
    """Training losses per phase (running median) and validation Dice against the step."""
    plt = pyplot()
    from deepatlas.training.logger import read_metrics

    records = read_metrics(Path(metrics_file))  # a run killed mid-append has a cut last line
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for phase in ("seg_pretrain", "reg_pretrain", "reg", "seg"):
        rows = [r for r in records if r["kind"] == phase and r.get("loss") is not None]
        if rows:
            steps, loss = np.array([r["step"] for r in rows]), np.array([r["loss"] for r in rows])
            k = max(1, len(loss) // 50)
            smooth = np.array([np.median(loss[max(0, i - k) : i + 1]) for i in range(len(loss))])
            left.plot(steps, smooth, label=phase, lw=1)
    left.set_xlabel("step")
    left.set_ylabel("loss (running median)")
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)
    val = [r for r in records if r["kind"] == "validation"]
    for key in ("seg_dice", "reg_dice"):
        pts = [(r["step"], r[key]) for r in val if r.get(key) is not None]
        if pts:
            right.plot(*zip(*pts), marker="o", ms=3, label=f"validation {key.replace('_', ' ')}")
    right.set_xlabel("step")
    right.set_ylabel("Dice")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, "no validation during training", ha="center", va="center", transform=right.transAxes)
    fig.tight_layout()
    return save_figure(fig, path)
