"""Synthetic atrophy: a brain whose chosen structures grow or shrink by a known amount.

Why: whether a method's volumes *track* a change (ventricles that enlarge, hippocampi that shrink with
age) cannot be read from a test set whose true volumes are only those of the reference labels. Here a
smooth, invertible deformation is applied to an image and its label map together, so the true volume
change is known (measured on the warped labels), and a method's volumes of the warped image can be
compared with it (``benchmarks/morphometry.py``; training can use the same maps as augmentation).

The deformation is training's structure resizing (:mod:`deepatlas.registration.growth`): a stationary
velocity field, per chosen structure its mask smoothed by a Gaussian (``sigma_mm``), its gradient
(pointing into the structure), normalised to a largest magnitude of 1 voxel, times the structure's
strength; the sum is integrated by scaling and squaring, so the map is a diffeomorphism (Jacobian > 0)
as long as the velocity stays smooth. Displacements pull back
(``warped(x) = source(x + u(x))``): a positive strength draws the structure's inside outwards, so it
grows; a negative one shrinks it. Far from every chosen structure the smoothed masks are flat, so
voxels there stay where they were. The image is resampled by a cubic B-spline (linear interpolation
blurs it, which alone moves a seg net's volumes), the label map by nearest neighbour (codes kept),
which lags: a voxel that moves by less than half a voxel keeps its label, so the
label map's change is a step function of the strength (use :attr:`Atrophy.changes` as the truth).

:func:`synthesize_atrophy` finds the strengths that give the requested relative changes (a few
proportional updates: the change grows about linearly with the strength) and returns the achieved
changes, measured on the structures' masks warped linearly (partial volumes, which follow the strength
smoothly; a nearest-neighbour label count moves by whole layers of 2 mm voxels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepatlas.registration.fields import resample_cubic, warp
from deepatlas.registration.growth import growth_flow, mask_direction

SIGMA_MM = 4.0
"""Gaussian smoothing of a structure's mask before its gradient is taken: wide enough that the velocity
is smooth over a 2 mm voxel's neighbours (so the flow stays invertible), narrow enough that the
change stays near the structure (its neighbours are compressed or filled, not the whole brain)."""

IMAGE_RESAMPLING = "cubic-bspline/growth-float32"
"""How the synthetic brains are made: the image resampled by :func:`resample_cubic` (linearly before
2026-12-06), the flow of :mod:`deepatlas.registration.growth` (training's own, smoothed in float32 since
2026-12-06; float64 before). Benchmarks key their caches of atrophied brains' volumes with it, so volumes
of brains made another way are not reused."""


@dataclass
class Atrophy:
    """A synthesized brain: ``image`` (float32) and ``labels`` (codes, nearest neighbour) on the
    input's grid; ``displacement``: ``dims x *shape`` in voxels along the array axes (pull back);
    ``strengths``, ``changes`` and ``label_changes``: per requested structure (its name), the strength
    used, the achieved relative volume change of its mask warped linearly (partial volumes: the truth
    of the benchmark) and that of the nearest-neighbour ``labels`` (voxel counts; steps at 2 mm)."""

    image: np.ndarray
    labels: np.ndarray
    displacement: np.ndarray
    strengths: dict[str, float]
    changes: dict[str, float]
    label_changes: dict[str, float]


def apply_field(image: np.ndarray, labels: np.ndarray, field: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (cubic B-spline, :func:`resample_cubic`) and ``labels`` (nearest, codes kept) at
    ``x + field(x)``."""
    pulled = warp(torch.from_numpy(np.asarray(labels, dtype=np.float32))[None, None], field[None], "nearest")
    return resample_cubic(image, field), pulled[0, 0].round().numpy().astype(labels.dtype)


def synthesize_atrophy(
    image: np.ndarray,
    labels: np.ndarray,
    targets: dict[str, tuple[list[int], float]],
    spacing: list[float] | None = None,
    sigma_mm: float = SIGMA_MM,
    rounds: int = 8,
) -> Atrophy:
    """``image`` and ``labels`` (codes) deformed so that each structure of ``targets`` (name ->
    (its codes, requested relative change, e.g. 0.5 for +50 %, -0.1 for -10 %)) changes by about that
    much. ``spacing``: voxel sizes (mm) along the array axes, for ``sigma_mm`` (default 1 mm).

    The change is measured on the structure's mask warped linearly (its partial-volume sum), which
    follows the strength smoothly; the nearest-neighbour label map's count moves in steps of a whole
    layer of boundary voxels at 2 mm (both are returned). The strengths start at a guess and are
    rescaled by requested / achieved change until within 1 % of the request (or ``rounds`` times)."""
    spacing = spacing or [1.0] * labels.ndim
    sigma = [sigma_mm / s for s in spacing]
    names = list(targets)
    masks = [torch.from_numpy(np.isin(labels, targets[n][0]).astype(np.float32))[None, None] for n in names]
    before = [float(m.sum()) for m in masks]
    if 0 in before:
        raise ValueError(f"synthetic atrophy: structure {names[before.index(0)]!r} is not in the label map")
    directions = [mask_direction(torch.from_numpy(np.isin(labels, targets[n][0])), sigma) for n in names]
    wanted = [targets[n][1] for n in names]
    strengths = [4.0 * w for w in wanted]  # about a voxel's push for a +25 % change of a 2 mm ventricle
    for round_ in range(rounds):
        field = growth_flow(directions, strengths)[0]
        changes = [float(warp(m, field[None]).sum()) / b - 1 for m, b in zip(masks, before)]
        close = all(abs(c - w) <= 0.01 * max(abs(w), 0.1) for c, w in zip(changes, wanted))
        if close or round_ == rounds - 1:
            break
        strengths = [s * _rescale(w, c) for s, w, c in zip(strengths, wanted, changes)]
    warped_image, warped_labels = apply_field(image, labels, field)
    hard = [np.isin(warped_labels, targets[n][0]).sum() / b - 1 for n, b in zip(names, before)]
    return Atrophy(
        warped_image,
        warped_labels,
        field.numpy(),
        dict(zip(names, map(float, strengths))),
        dict(zip(names, changes)),
        dict(zip(names, map(float, hard))),
    )


def _rescale(wanted: float, achieved: float) -> float:
    """The factor for a strength that achieved ``achieved`` instead of ``wanted`` (bounded to 1/4..4,
    so a nearest-neighbour step or a change of the wrong sign does not throw it off)."""
    if abs(achieved) < 1e-3 or wanted * achieved <= 0:
        return 2.0
    return min(4.0, max(0.25, wanted / achieved))
