"""Data: finding subjects, label schemes, checked loading, splits, pair sampling, demo phantoms."""

from deepatlas.data.dataset import ImageSet, load_image_set
from deepatlas.data.errors import DataError
from deepatlas.data.labels import LabelScheme
from deepatlas.data.pairs import GROUPS, PairBatch, PairSampler
from deepatlas.data.prepare import TrainingData, prepare_data
from deepatlas.data.splits import choose_labelled, load_splits
from deepatlas.data.subjects import Subject, find_subjects

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
    "prepare_data",
]
