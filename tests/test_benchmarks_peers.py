"""The external registrars of benchmarks/peers.py read their tools' fields right: on a real
validation pair (few iterations), Dice well above no registration, the project's own warp with
the converted displacement reproduces the tool's warped image (the labels are resampled through
that displacement by the project's label interpolation, as every row's are), and the Jacobian
(the folds column) follows the volume change of the warped structures. Skipped without the
tool's package."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import peers
from benchmarks.registration import score
from deepatlas.data.io import load_image, load_label_codes
from deepatlas.data.labels import LabelScheme
from deepatlas.inference.geometry import sample, world_coordinates
from tests.conftest import IXI

pytestmark = pytest.mark.skipif(
    not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI} (shared/data/ixi-2mm)"
)

SHORT = {"greedy": {"iterations": "20x10x0"}, "fireants": {"iterations": (20, 10, 5)}}


def _subject(subject: str):
    return load_image(IXI / "images" / f"{subject}.nii.gz"), load_label_codes(IXI / "labels" / f"{subject}.nii.gz")


def _structure_volumes(jacobian: np.ndarray, warped_labels: np.ndarray, moving_labels: np.ndarray) -> np.ndarray:
    """Per structure of the moving map: (moving volume, warped volume, warped volume weighted by the
    Jacobian), in voxels, for the structures of over 200 voxels."""
    rows = []
    for code in np.unique(moving_labels):
        inside = warped_labels == code
        if code > 0 and (moving_labels == code).sum() > 200:
            rows.append(((moving_labels == code).sum(), inside.sum(), jacobian[inside].sum()))
    return np.array(rows, dtype=np.float64)


@pytest.mark.optional_package
@pytest.mark.parametrize("peer", sorted(SHORT))
def test_peer_field_reproduces_its_own_warp(peer):
    if not peers.available(peer):
        pytest.skip(peers.missing_message(peer))
    torch.set_num_threads(1)
    moving_id, fixed_id = json.loads((IXI / "splits.json").read_text())["validation"][:2]
    (moving, moving_labels), (fixed, fixed_labels) = _subject(moving_id), _subject(fixed_id)
    result = peers.REGISTRARS[peer](**SHORT[peer], threads=1)(moving, fixed, moving_labels)

    scheme = LabelScheme.from_file(IXI / "brain31.json")
    classes = scheme.encode(fixed_labels.array, unknown="background")
    dice = score(result.warped_labels, result.jacobian, classes, scheme)["dice"]
    identity = score(moving_labels.array, np.ones(classes.shape), classes, scheme)["dice"]
    assert dice > identity + 0.05, (dice, identity)

    points = world_coordinates(classes.shape, fixed.affine) + torch.from_numpy(result.displacement)
    ours = sample(torch.from_numpy(moving.array)[None], moving.affine, points)[0].numpy()
    assert np.abs(ours - result.warped).mean() < 1e-3 * np.abs(result.warped).mean()

    volumes = _structure_volumes(result.jacobian, result.warped_labels, moving_labels.array)
    error_without, error_with = (np.median(np.abs(volumes[:, k] / volumes[:, 0] - 1)) for k in (1, 2))
    assert error_with < 0.5 * error_without, (error_with, error_without)
