"""Evaluation metrics on hard label maps and displacement fields."""

from __future__ import annotations

import numpy as np
import torch


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice of each foreground class ``1..K`` between class-index maps of any (equal) shape.

    A class absent from both maps gets NaN (undefined, left out of means), not 1.
    Returns a float64 tensor of ``K`` values.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    k = num_classes
    confusion = torch.bincount(target * k + pred, minlength=k * k).reshape(k, k).double()
    inter = confusion.diag()
    total = confusion.sum(0) + confusion.sum(1)
    dice = 2 * inter / total
    dice[total == 0] = float("nan")
    return dice[1:]


def jacobian_determinant(ddf: torch.Tensor) -> torch.Tensor:
    """Jacobian determinant of ``x -> x + u(x)`` for a field ``B x dims x HxW[xD]`` in voxel units.

    Derivatives by central differences in the interior and one-sided differences
    at the border (``torch.gradient``), in voxel units; returns ``BxHxW[xD]``.
    """
    dims = ddf.shape[1]
    if dims != ddf.ndim - 2:
        raise ValueError(f"field must be B x {ddf.ndim - 2} x spatial, got {tuple(ddf.shape)}")
    grads = torch.gradient(ddf.double(), dim=tuple(range(2, ddf.ndim)))
    # J[i][j] = d(x_i + u_i)/d x_j
    jac = torch.stack([torch.stack([grads[j][:, i] + (1.0 if i == j else 0.0) for j in range(dims)], -1)
                       for i in range(dims)], -2)
    return torch.linalg.det(jac).float()


def fold_fraction(ddf: torch.Tensor) -> float:
    """Fraction of voxels whose Jacobian determinant is <= 0 (the deformation folds there)."""
    return float((jacobian_determinant(ddf) <= 0).float().mean())


def mean_ignoring_nan(values: torch.Tensor | np.ndarray) -> float:
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    return float(array.mean()) if array.size else float("nan")
