"""Data: finding subjects, label schemes, checked loading, splits, pair sampling, demo phantoms."""

from deepatlas.data.dataset import ImageSet, load_image_set
from deepatlas.data.errors import DataError
from deepatlas.data.labels import LabelScheme
from deepatlas.data.loading import TrainingData, load_training_data
from deepatlas.data.pairs import GROUPS, PairBatch, PairSampler
from deepatlas.data.splits import choose_labelled, load_splits
from deepatlas.data.subjects import Subject, find_subjects

# the name before load_training_data, kept for one release (docs/usage.md: the Python API)
prepare_data = load_training_data

__all__ = [
    "GROUPS",
    "DataError",
    "ImageSet",
    "LabelScheme",
    "PairBatch",
    "PairSampler",
    "Subject",
    "TrainingData",
    "choose_labelled",
    "find_subjects",
    "load_image_set",
    "load_splits",
    "load_training_data",
    "prepare_data",
]
