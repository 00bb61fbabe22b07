"""How sharp an image is: one number per image, to compare a scan with the images a model learned from.

Why: the shipped seg net's volumes follow a scan's sharpness as well as its anatomy (docs/results.md,
"Volumes that do not depend on the scan's sharpness"): validation brains blurred by a Gaussian of one
2 mm voxel read with lateral ventricles 8-9 % smaller. A scan softer (or sharper) than every training
image is outside what the model was trained on, and ``morphometry`` flags its volumes
(:func:`deepatlas.evaluation.volume_range.sharpness_flag`).

The measure: inside the brain (voxels above a tenth of the 99th intensity percentile, eroded by two voxels so
the brain's outline does not count), the mean magnitude of the Laplacian over the mean magnitude of the
gradient, both in millimetres: 1/mm, independent of the intensity scale (both scale alike). Blurring removes
fine detail first, which lowers the Laplacian more than the gradient. ixi-2mm's training brains (2 mm) read
0.73-0.87/mm; validation brains blurred by a Gaussian of half a voxel read about 0.65, by a quarter voxel as
before (docs/results.md). Images on another grid than the training images' read differently (a 1 mm image
shows finer detail): compare images on the model's grid, as ``prepare`` writes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BRAIN_LEVEL = 0.1
"""Voxels above this share of the image's 99th percentile are brain (skull-stripped images: the background
is near 0)."""
ERODE_VOXELS = 2
"""The brain mask is eroded by this many voxels, so the step from brain to background does not count."""


def sharpness(array: np.ndarray, spacing: Sequence[float]) -> float:
    """Mean |Laplacian| / mean |gradient| (1/mm) inside the brain of ``array`` (voxel sizes ``spacing`` in mm
    along its axes); NaN where there is no brain to measure (an empty or constant image)."""
    from scipy import ndimage

    image = np.asarray(array, dtype=np.float64)
    top = np.percentile(image, 99)
    brain = ndimage.binary_erosion(image > BRAIN_LEVEL * top, iterations=ERODE_VOXELS) if top > 0 else None
    if brain is None or not brain.any():
        return float("nan")
    gradients = np.gradient(image, *spacing)
    magnitude = np.sqrt(sum(g**2 for g in gradients))
    laplacian = sum(
        ndimage.correlate1d(image, [1.0, -2.0, 1.0], axis=axis, mode="nearest") / step**2
        for axis, step in enumerate(spacing)
    )
    edges = float(magnitude[brain].mean())
    return float(np.abs(laplacian[brain]).mean() / edges) if edges > 0 else float("nan")
