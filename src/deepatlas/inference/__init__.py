"""Applying trained networks."""

from deepatlas.inference.predict import register, register_with_net, segment, segment_with_net
from deepatlas.inference.run import TrainedRun, load_run

__all__ = ["TrainedRun", "load_run", "register", "register_with_net", "segment", "segment_with_net"]
