"""Figures of a morphometry: structure volumes per group, mean and difference log-Jacobian maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepatlas.evaluation.morphometry import SUMMARY_ROWS, MorphometryResult
from deepatlas.visualization.figures import planes, pyplot
from deepatlas.visualization.slices import save_figure


def _limit(maps: list[np.ndarray]) -> float:
    """A symmetric colour range for log-Jacobian maps: the 99th percentile of |log J|."""
    values = np.concatenate([np.abs(m).ravel() for m in maps])
    return max(float(np.percentile(values, 99)), 1e-3)


def _logjac_row(axes, logjac: np.ndarray, template: np.ndarray, limit: float, name: str):
    """Mid slices of a log-Jacobian map over the template (grey): red = subject larger, blue = smaller."""
    shown, under = planes(logjac), planes(template)
    image = None
    for ax, plane in zip(axes, shown):
        ax.imshow(under[plane], cmap="gray", origin="lower")
        image = ax.imshow(shown[plane], cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.75, origin="lower")
        ax.set_title(f"{name}: {plane}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return image


def _volume_strips(ax, result: MorphometryResult) -> None:
    """Volumes (mm^3, log axis) per structure, one point per subject, groups side by side, bars at the
    means; a flagged volume (``volumes.csv``'s ``flag``: check it by eye) ringed in red."""
    structures = [s for s in dict.fromkeys(r["structure"] for r in result.volumes) if s not in SUMMARY_ROWS]
    volume = {(r["subject"], r["structure"]): r["mm3"] for r in result.volumes}
    flagged = {(r["subject"], r["structure"]) for r in result.volumes if r.get("flag")}
    width = 0.8 / len(result.groups)
    rng = np.random.default_rng(0)
    ringed = False
    for g, (name, members) in enumerate(result.groups.items()):
        colour = f"C{g}"
        for i, structure in enumerate(structures):
            x = i - 0.4 + width * (g + 0.5)
            shown = [s for s in members if volume[(s, structure)] > 0]  # a log axis cannot show empty structures
            values = np.array([volume[(s, structure)] for s in shown], dtype=float)
            xs = x + rng.uniform(-width / 4, width / 4, values.size)
            ax.scatter(xs, values, s=10, color=colour, label=name if i == 0 else None)
            ring = np.array([(s, structure) in flagged for s in shown], dtype=bool)
            if ring.any():
                label = None if ringed else "flagged (volumes.csv: flag)"
                ax.scatter(xs[ring], values[ring], s=60, facecolors="none", edgecolors="red", lw=1, label=label)
                ringed = True
            if values.size:
                ax.hlines(values.mean(), x - width / 3, x + width / 3, color=colour, lw=1.5)
    ax.set_yscale("log")
    ax.set_xticks(range(len(structures)))
    ax.set_xticklabels(structures, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("volume (mm³)")
    ax.legend(fontsize=8)


def morphometry_figure(result: MorphometryResult, path: Path) -> Path:
    """Top: structure volumes with subjects as points; below: each group's mean log-Jacobian map
    on the template (mid slices; log J > 0 where the subjects are larger than the template)."""
    plt = pyplot()
    cols = len(planes(result.template.array))
    rows = 1 + len(result.mean_logjac)
    structures = len({r["structure"] for r in result.volumes})
    fig = plt.figure(figsize=(max(3.0 * cols, 0.3 * structures) + 1, 3.0 * rows + 1), layout="constrained")
    grid = fig.add_gridspec(rows, cols, height_ratios=[1.4] + [1] * (rows - 1))
    _volume_strips(fig.add_subplot(grid[0, :]), result)
    limit = _limit(list(result.mean_logjac.values()))
    image = None
    for r, (name, logjac) in enumerate(result.mean_logjac.items(), start=1):
        axes = [fig.add_subplot(grid[r, c]) for c in range(cols)]
        image = _logjac_row(axes, logjac, result.template.array, limit, f"mean log J, {name}")
    fig.colorbar(image, ax=fig.axes[1:], shrink=0.7, label="log det J (>0: larger than template)")
    return save_figure(fig, path)


def difference_figure(result: MorphometryResult, path: Path) -> Path:
    """Mid slices of the difference of the groups' mean log-Jacobian maps (second - first group)."""
    plt = pyplot()
    first, second = result.groups
    cols = len(planes(result.template.array))
    fig, axes = plt.subplots(1, cols, figsize=(3.0 * cols + 1, 3.4), squeeze=False, layout="constrained")
    image = _logjac_row(axes[0], result.difference, result.template.array, _limit([result.difference]), "difference")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=f"mean log J: {second} - {first}")
    return save_figure(fig, path)


def morphometry_figures(result: MorphometryResult, output: Path) -> list[Path]:
    """``morphometry.png`` and, with two groups, ``logjac_difference.png`` in ``output``."""
    paths = [morphometry_figure(result, Path(output) / "morphometry.png")]
    if result.difference is not None:
        paths.append(difference_figure(result, Path(output) / "logjac_difference.png"))
    return paths
