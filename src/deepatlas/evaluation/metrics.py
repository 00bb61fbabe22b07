"""Evaluation metrics on hard label maps and displacement fields."""

from __future__ import annotations

import numpy as np
import torch

from deepatlas.inference.geometry import jacobian_determinant_world


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
    # voxel units are world units of the identity grid
    return torch.stack([jacobian_determinant_world(field, np.eye(4)) for field in ddf])


def fold_fraction(ddf: torch.Tensor) -> float:
    """Fraction of voxels whose Jacobian determinant is <= 0 (the deformation folds there)."""
    return folded_fraction(jacobian_determinant(ddf))


def folded_fraction(jacobian: torch.Tensor | np.ndarray) -> float:
    """Fraction of voxels with Jacobian determinant <= 0; NaN if any determinant is not finite
    (a diverged field has no meaningful fold count, and NaN <= 0 would count it as 'no folds')."""
    jacobian = torch.as_tensor(jacobian)
    if not bool(torch.isfinite(jacobian).all()):
        return float("nan")
    return float((jacobian <= 0).double().mean())


def sd_log_jacobian(jacobian: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None) -> float:
    """Standard deviation of ``log(J)`` (J clipped to [1e-9, 1e9] so folds count as large, finite
    values), over ``mask`` (e.g. the fixed image's foreground) or all voxels. 0 for a rigid map."""
    values = np.log(np.clip(np.asarray(jacobian, dtype=np.float64), 1e-9, 1e9))
    if mask is not None:
        values = values[np.asarray(mask, dtype=bool)]
    return float(values.std()) if values.size else float("nan")


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) between two binary masks.

    The larger of the two directed 95th percentiles of surface-voxel distances
    (each surface voxel of one mask to the nearest surface voxel of the other),
    as MONAI's ``compute_hausdorff_distance(percentile=95)``. NaN when both masks
    are empty, inf when exactly one is.
    """
    from scipy import ndimage

    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if not pred.any() and not target.any():
        return float("nan")
    if not pred.any() or not target.any():
        return float("inf")
    # distances only involve the two surfaces, so a crop around both gives the same values
    both = np.argwhere(pred | target)
    lo, hi = np.maximum(both.min(0) - 1, 0), both.max(0) + 2
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    sp, st = _surface(pred[crop]), _surface(target[crop])
    to_target = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    return float(max(np.percentile(to_target, 95), np.percentile(to_pred, 95)))


def hausdorff95_per_class(
    pred: np.ndarray, target: np.ndarray, num_classes: int, spacing: tuple[float, ...]
) -> list[float]:
    """:func:`hausdorff95` of each foreground class ``1..K-1`` between class-index maps."""
    return [hausdorff95(pred == k, target == k, spacing) for k in range(1, num_classes)]


def finite_mean(values: torch.Tensor | np.ndarray) -> float:
    """Mean of the finite values (NaN: class absent from both maps; inf: HD95 of a missed class)."""
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    return float(array.mean()) if array.size else float("nan")
