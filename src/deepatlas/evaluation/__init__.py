"""Evaluation metrics."""

from deepatlas.evaluation.metrics import dice_per_class, fold_fraction, jacobian_determinant, mean_ignoring_nan

__all__ = ["dice_per_class", "fold_fraction", "jacobian_determinant", "mean_ignoring_nan"]
