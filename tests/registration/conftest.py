"""The real 4 mm pair that the refinement tests (Adam, greedy) register, and its Dice."""

import pytest

from deepatlas.evaluation.metrics import dice_per_class, finite_mean
from deepatlas.registration.fields import warp
from tests.conftest import real_brains_4mm


@pytest.fixture(scope="module")
def pair(ixi):
    """Two real brains at 4 mm (40x48x40) with their brain31 classes (nearest, by striding)."""
    images, labels, scheme = real_brains_4mm(2)
    return [images[:1], images[1:]], [labels[:1], labels[1:]], scheme


def pair_dice(field, labels, scheme) -> float:
    """Dice of the first image's classes warped by ``field`` (nearest) with the second's."""
    warped = warp(labels[0].double(), field.double(), mode="nearest").round().long()
    return finite_mean(dice_per_class(warped[0, 0], labels[1][0, 0], scheme.num_classes))
