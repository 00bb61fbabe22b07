"""Training: objectives, schedule, trainer, checkpoints."""

from deepatlas.networks.factory import build_networks
from deepatlas.training.objectives import DeepAtlasObjectives
from deepatlas.training.schedule import Schedule
from deepatlas.training.trainer import Trainer

__all__ = ["DeepAtlasObjectives", "Schedule", "Trainer", "build_networks"]
