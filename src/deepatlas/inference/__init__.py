"""Applying trained networks."""

from deepatlas.inference.predict import register, segment
from deepatlas.inference.run import TrainedRun, load_run

__all__ = ["TrainedRun", "load_run", "register", "segment"]
