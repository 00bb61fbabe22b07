"""Registering a pair: an affine stage, the net's prediction, refined per pair (instance optimisation), inverses."""

from deepatlas.registration.affine import AffineSettings, AffineStage, alignment_ncc
from deepatlas.registration.greedy import GreedyOptimizer
from deepatlas.registration.inverse import invert_deformation, invert_field
from deepatlas.registration.pipeline import NetStage, RefineStage, RegistrationPipeline, build_pipeline
from deepatlas.registration.refine import Anatomy, Deformation, InstanceOptimizer

__all__ = [
    "AffineSettings",
    "AffineStage",
    "Anatomy",
    "Deformation",
    "GreedyOptimizer",
    "InstanceOptimizer",
    "NetStage",
    "RefineStage",
    "RegistrationPipeline",
    "alignment_ncc",
    "build_pipeline",
    "invert_deformation",
    "invert_field",
]
