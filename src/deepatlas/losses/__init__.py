"""Losses of DeepAtlas: similarity, regularisation, anatomy and supervised segmentation."""

from deepatlas.losses.anatomy import AnatomyLoss, soft_dice_loss
from deepatlas.losses.inverse_consistency import inverse_consistency_loss
from deepatlas.losses.regularization import make_regularizer
from deepatlas.losses.segmentation import SupervisedSegLoss
from deepatlas.losses.similarity import LocalNCCLoss, MSELoss, MutualInformationToFixed, make_similarity

__all__ = [
    "AnatomyLoss",
    "LocalNCCLoss",
    "MSELoss",
    "MutualInformationToFixed",
    "SupervisedSegLoss",
    "inverse_consistency_loss",
    "make_regularizer",
    "make_similarity",
    "soft_dice_loss",
]
