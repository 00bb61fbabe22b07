"""Registering a pair: the net's prediction, refined per pair (instance optimisation)."""

from deepatlas.registration.pipeline import NetStage, RefineStage, RegistrationPipeline, build_pipeline
from deepatlas.registration.refine import Anatomy, Deformation, InstanceOptimizer

__all__ = [
    "Anatomy",
    "Deformation",
    "InstanceOptimizer",
    "NetStage",
    "RefineStage",
    "RegistrationPipeline",
    "build_pipeline",
]
