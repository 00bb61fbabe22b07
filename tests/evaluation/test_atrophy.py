"""Synthetic atrophy: an invertible, local deformation that changes a structure by the requested amount."""

import numpy as np
import pytest
import torch

from deepatlas.evaluation.atrophy import resample_cubic, synthesize_atrophy
from deepatlas.inference.geometry import jacobian_determinant_world
from deepatlas.registration.fields import warp

SHAPE = (32, 32, 32)
BALL, REST = 5, 1


def _phantom(radius: float = 6.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ball (code 5, bright) in a brain (code 1) filling the grid; and each voxel's distance to the centre."""
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in SHAPE], indexing="ij"))
    distance = np.sqrt((grid**2).sum(0))
    labels = np.where(distance <= radius, BALL, REST).astype(np.int32)
    image = np.where(labels == BALL, 1.0, 0.3).astype(np.float32) + 0.01 * grid[0].astype(np.float32)
    return image, labels, distance


def _jacobian(displacement: np.ndarray) -> np.ndarray:
    return jacobian_determinant_world(torch.from_numpy(displacement).double(), np.eye(4)).numpy()


@pytest.mark.parametrize("change", [0.5, 1.0, -0.2])
def test_the_deformation_is_invertible_and_changes_the_structure_by_about_the_request(change):
    image, labels, _ = _phantom()
    out = synthesize_atrophy(image, labels, {"ball": ([BALL], change)}, spacing=[2.0, 2.0, 2.0])
    assert _jacobian(out.displacement).min() > 0.05  # no fold: a diffeomorphism
    assert out.changes["ball"] == pytest.approx(change, abs=0.02)  # partial volumes, calibrated
    # the label map (nearest neighbour) follows only where a voxel moves by more than half a voxel: it lags
    before = int((labels == BALL).sum())
    hard = int((out.labels == BALL).sum()) / before - 1
    assert 0 <= hard / change <= 1.3
    if change >= 0.5:  # the ball's surface moves by over half a voxel
        assert hard == pytest.approx(change, abs=0.15)
    assert out.label_changes["ball"] == pytest.approx(int((out.labels == BALL).sum()) / before - 1)
    assert set(np.unique(out.labels)) <= {BALL, REST}  # codes kept, none invented by interpolation
    assert (out.strengths["ball"] > 0) == (change > 0)


def test_far_away_voxels_stay_where_they_were():
    image, labels, distance = _phantom()
    out = synthesize_atrophy(image, labels, {"ball": ([BALL], 1.0)}, spacing=[2.0, 2.0, 2.0])
    far = distance > 6 + 5 * 2  # 5 sigma (4 mm = 2 voxels) beyond the ball's surface
    near = (distance > 5) & (distance < 8)
    moved = np.linalg.norm(out.displacement, axis=0)
    assert moved[far].max() < 0.02  # voxels
    assert moved[near].max() > 0.5
    assert np.abs(out.image - image)[far].max() < 1e-3
    assert (out.labels[far] == labels[far]).all()


def test_two_structures_move_independently_and_an_absent_one_is_refused():
    image, labels, _ = _phantom(radius=4.0)
    labels[:, :, :4] = 7  # a slab far from the ball
    out = synthesize_atrophy(image, labels, {"ball": ([BALL], 0.5), "slab": ([7], -0.1)}, spacing=[2.0, 2.0, 2.0])
    assert out.changes["ball"] == pytest.approx(0.5, abs=0.02)
    assert out.changes["slab"] == pytest.approx(-0.1, abs=0.02)
    with pytest.raises(ValueError, match="'missing' is not in the label map"):
        synthesize_atrophy(image, labels, {"missing": ([9], 0.5)})


def test_the_image_is_resampled_without_the_blur_of_linear_interpolation():
    image, _, _ = _phantom()
    still = torch.zeros((3,) + SHAPE)
    assert np.allclose(resample_cubic(image, still), image, atol=1e-5)  # no displacement: the image itself
    half = torch.full((3,) + SHAPE, 0.5)  # half a voxel along every axis: linear averages 8 neighbours
    cubic = resample_cubic(image, half)
    linear = warp(torch.from_numpy(image)[None, None], half[None])[0, 0].numpy()
    inside = np.abs(np.indices(SHAPE) - 15.5).max(0) < 2  # the ball's centre, far from its edge
    assert cubic.min() >= image.min() and cubic.max() <= image.max()  # the spline's overshoot clipped
    edge = (np.abs(np.diff(cubic, axis=0)).max(), np.abs(np.diff(linear, axis=0)).max())
    assert edge[0] > 1.15 * edge[1]  # the ball's edge stays sharper than linear interpolation keeps it
    assert np.allclose(cubic[inside], linear[inside], atol=0.02)
