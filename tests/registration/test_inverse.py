"""Inverse fields: fixed-point iteration for displacements, the negated velocity's flow for velocities."""

import math

import pytest
import torch

from deepatlas.registration import Deformation
from deepatlas.registration.fields import compose, integrate_velocity, resize_field
from deepatlas.registration.inverse import invert_deformation, invert_field


def _smooth_field(shape: tuple[int, ...], amplitude: float) -> torch.Tensor:
    """A smooth displacement ``1 x dims x *shape`` (voxels): a sine of each coordinate per component."""
    dims = len(shape)
    axes = [torch.linspace(0, math.pi, n) for n in shape]
    coords = torch.meshgrid(*axes, indexing="ij")
    return amplitude * torch.stack([torch.sin(coords[(i + 1) % dims] + 0.3 * i) for i in range(dims)])[None]


def _interior_residual(forward: torch.Tensor, inverse: torch.Tensor, border: int = 3) -> torch.Tensor:
    """``|u(x) + v(x + u(x))|`` away from the grid border (voxels)."""
    residual = compose(forward, inverse).norm(dim=1)[0]
    return residual[(slice(border, -border),) * residual.ndim]


@pytest.mark.parametrize("shape", [(24, 28, 20), (40, 36)])
def test_fixed_point_inverse_composes_to_the_identity(shape):
    forward = _smooth_field(shape, 2.5)  # up to 2.5 voxels, |grad u| about 0.4
    inverse = invert_field(forward, iterations=30)
    residual = _interior_residual(forward, inverse)  # what is left is trilinear interpolation error
    assert float(residual.max()) < 0.05 and float(residual.mean()) < 0.02
    assert float(_interior_residual(forward, -forward).max()) > 0.3  # the naive inverse is not one


def test_velocity_inverse_is_the_flow_of_the_negated_velocity():
    velocity = _smooth_field((24, 28, 20), 3.0)
    forward = integrate_velocity(velocity, 7)
    inverse = invert_deformation(Deformation(forward, velocity), steps=7)
    residual = _interior_residual(forward, inverse)
    assert float(residual.max()) < 0.05 and float(residual.mean()) < 0.02


def test_a_coarse_velocity_is_inverted_on_its_own_grid_then_resized():
    velocity = _smooth_field((12, 14, 10), 1.5)
    forward = resize_field(integrate_velocity(velocity, 7), (24, 28, 20))
    inverse = invert_deformation(Deformation(forward, velocity), steps=7)
    assert inverse.shape == forward.shape
    residual = _interior_residual(forward, inverse)  # two resizings' interpolation error: up to 0.1 voxel
    assert float(residual.max()) < 0.15 and float(residual.mean()) < 0.03


def test_iterations_must_be_positive():
    with pytest.raises(ValueError, match="iterations"):
        invert_field(torch.zeros(1, 3, 4, 4, 4), iterations=0)
