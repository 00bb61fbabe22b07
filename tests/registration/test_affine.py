"""The affine stage on phantoms: a known affine is recovered; the auto criterion sees a misalignment."""

import math

import numpy as np
import pytest
import torch

from deepatlas.data.synthetic import make_phantom
from deepatlas.registration.affine import AffineStage, alignment_ncc, matrix_field
from deepatlas.registration.fields import sampling_grid


def _rotation(angles: list[float], scales: list[float]) -> torch.Tensor:
    """A rotation (degrees, about each axis in turn) times a diagonal scaling, ``dims x dims``."""
    dims = len(scales)
    out = torch.eye(dims)
    for axis, angle in enumerate(angles):
        i, j = [a for a in range(3) if a != axis] if dims == 3 else (0, 1)
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        r = torch.eye(dims)
        r[i, i] = r[j, j] = c
        r[i, j], r[j, i] = -s, s
        out = out @ r
    return out @ torch.diag(torch.tensor(scales))


def _moved(image: torch.Tensor, known: torch.Tensor, margin: tuple[int, ...]) -> torch.Tensor:
    """``image`` (``1 x 1 x *shape``) at ``known [x; 1]`` for every voxel ``x`` of the grid widened
    by ``margin`` (zeros outside the image)."""
    dims = len(margin)
    wide = tuple(n + 2 * m for n, m in zip(image.shape[2:], margin))
    shifted = known.clone()
    shifted[:, dims] -= known[:, :dims] @ torch.tensor(margin, dtype=torch.float32)  # wide voxel e = x + margin
    # sample on the wide grid: positions are voxels of `image`, so express them against its own grid
    field = matrix_field(shifted[None], wide)
    axes = [torch.arange(n, dtype=torch.float32) for n in wide]
    positions = field + torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]
    sizes = torch.tensor(image.shape[2:], dtype=torch.float32).view(1, dims, *[1] * dims)
    grid = (2 * positions / (sizes - 1) - 1).flip(1).permute(0, *range(2, dims + 2), 1)
    return torch.nn.functional.grid_sample(image, grid, padding_mode="zeros", align_corners=True)


@pytest.mark.parametrize(
    "shape, angles, scales, shift",
    [
        ((40, 48, 40), [12.0, -8.0, 5.0], [1.1, 0.92, 1.0], [3.0, -2.0, 2.5]),
        ((48, 56), [15.0], [0.9, 1.12], [4.0, -3.0]),
    ],
)
def test_affine_stage_recovers_a_known_affine(shape, angles, scales, shift):
    """moving(x) = fixed(K x) for a known K: the stage must return M with K M = identity."""
    dims = len(shape)
    image, _ = make_phantom(shape, np.random.default_rng(3))
    fixed = torch.from_numpy(image)[None, None]
    linear = _rotation(angles, scales)
    centre = torch.tensor([(n - 1) / 2 for n in shape])
    known = torch.cat([linear, (centre - linear @ centre + torch.tensor(shift))[:, None]], 1)
    stage = AffineStage()
    margin = stage.margin_for(shape)
    matrix = stage(_moved(fixed, known, margin), fixed, margin)[0]
    square = lambda m: torch.cat([m, torch.eye(dims + 1)[dims:]])  # noqa: E731
    composed = square(known) @ square(matrix)
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(dims, -1)
    error = (composed[:dims, :dims] @ points + composed[:dims, dims:] - points).norm(dim=0)
    assert float(error.max()) < 0.5, f"max error {float(error.max()):.2f} voxels"  # worst grid corner
    assert float(error.mean()) < 0.2


def test_matrix_field_of_the_identity_is_zero_and_warps_by_the_map():
    shape = (6, 7, 5)
    identity = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1)[None]
    assert torch.allclose(matrix_field(identity, shape), torch.zeros(1, 3, *shape))
    shift = identity.clone()
    shift[0, 1, 3] = 2.0  # moving voxel = x + 2 along axis 1
    field = matrix_field(shift, shape)
    assert torch.allclose(field[0, 1], torch.full(shape, 2.0)) and torch.allclose(
        field[0, [0, 2]], torch.zeros(2, *shape)
    )
    assert sampling_grid(field).shape == (1, *shape, 3)


def test_alignment_ncc_sees_a_world_misalignment():
    image = torch.from_numpy(make_phantom((32, 40, 32), np.random.default_rng(0))[0])[None, None]
    threshold = AffineStage().settings.auto_threshold
    assert float(alignment_ncc(image, image)) == pytest.approx(1.0)
    other = torch.from_numpy(make_phantom((32, 40, 32), np.random.default_rng(1))[0])[None, None]
    assert float(alignment_ncc(other, image)) > threshold  # another subject, aligned
    shifted = torch.roll(image, 6, dims=2)  # 6 of 32 voxels: a 12 mm shift at 2 mm
    assert float(alignment_ncc(shifted, image)) < threshold


def test_a_moving_image_without_its_margin_is_refused():
    image = torch.rand(1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="margins"):
        AffineStage()(image, image, (4, 4, 4))
