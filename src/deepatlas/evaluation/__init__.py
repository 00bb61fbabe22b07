"""Evaluation metrics."""

from deepatlas.evaluation.metrics import (
    dice_per_class,
    finite_mean,
    fold_fraction,
    hausdorff95,
    hausdorff95_per_class,
    jacobian_determinant,
    sd_log_jacobian,
)

__all__ = [
    "dice_per_class",
    "fold_fraction",
    "hausdorff95",
    "hausdorff95_per_class",
    "jacobian_determinant",
    "finite_mean",
    "sd_log_jacobian",
]
