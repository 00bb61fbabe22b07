"""Mirrored inference: the seg net's probabilities averaged with the mirrored image's, classes read from twins."""

import numpy as np
import pytest
import torch

from deepatlas.data.io import Volume
from deepatlas.data.labels import LabelScheme
from deepatlas.evaluation.metrics import dice_per_class, finite_mean
from deepatlas.inference import load_run
from deepatlas.inference.apply import mirror_plan_of, segment_probabilities
from tests.inference.conftest import SHIPPED as MODEL


def test_mirrored_inference_is_mirror_symmetric_and_no_worse(brain):
    """With averaging, the mirrored brain's probabilities are the brain's mirrored with each class read from
    its twin (exactly: both images get the same two passes); without it they are not, and the average
    scores at least the single pass's Dice."""
    image, labels = brain
    run = load_run(MODEL)
    twins = torch.tensor(run.scheme.mirrored())
    mirrored = Volume(np.ascontiguousarray(image.array[::-1]), image.affine, image.path)  # x is the lateral axis
    assert mirror_plan_of(run, image.affine, 3) == (0, run.scheme.mirrored())

    def gap() -> float:
        as_is, flipped = segment_probabilities(run, image, align="off"), segment_probabilities(run, mirrored, "off")
        return float((flipped.flip(1)[twins] - as_is).abs().max()), as_is

    averaged_gap, averaged = gap()
    run.config.seg_net.mirror_average = "off"
    single_gap, single = gap()
    assert averaged_gap < 1e-4 < single_gap
    reference = torch.from_numpy(run.scheme.encode(labels.array, unknown="background")).long()

    def dice(probs):
        return finite_mean(dice_per_class(probs.argmax(0), reference, run.scheme.num_classes))

    assert dice(averaged) >= dice(single) - 0.002


def test_auto_needs_paired_sides_and_on_refuses_a_twinless_side(brain):
    image, _ = brain
    run = load_run(MODEL)
    run.scheme = LabelScheme.from_codes([0, 4, 11, 12])  # codes alone: no side known
    assert mirror_plan_of(run, image.affine, 3) is None
    run.scheme = LabelScheme(names=["background", "Caudate-L", "Brainstem"], codes=[[0], [1], [2]])
    assert mirror_plan_of(run, image.affine, 3) is None
    run.config.seg_net.mirror_average = "on"
    with pytest.raises(ValueError, match=r"--mirror-average on\): \['Caudate-L'\] name a side without a twin"):
        mirror_plan_of(run, image.affine, 3)
    run.scheme = LabelScheme.from_codes([0, 4, 11, 12])
    with pytest.raises(ValueError, match="no class of the run's label scheme names a side"):
        mirror_plan_of(run, image.affine, 3)
    run.scheme = load_run(MODEL).scheme
    # a 2-D sagittal grid: its array axes run front-back (world y) and up-down (world z)
    sagittal = np.array([[0.0, 0, 1, 0], [2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]])
    with pytest.raises(ValueError, match="no axis of the model's grid runs left-right"):
        mirror_plan_of(run, sagittal, 2)
    run.config.seg_net.mirror_average = "auto"
    assert mirror_plan_of(run, sagittal, 2) is None
    run.config.seg_net.mirror_average = "off"
    assert mirror_plan_of(run, image.affine, 3) is None
