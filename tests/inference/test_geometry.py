import numpy as np
import torch

from deepatlas.inference.geometry import (
    field_to_world,
    jacobian_determinant_world,
    network_grid,
    resample,
    world_coordinates,
)


def test_resampling_between_grids_follows_world_coordinates():
    # a volume that is a linear function of world x; any grid must see the same function
    source_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    source_affine[:3, 3] = [-10, -12, -8]
    world = world_coordinates((11, 13, 9), source_affine)
    source = (world[0] * 0.5 + 3).float()[None]
    target_affine = np.array([[0, -1.5, 0, 4], [1.5, 0, 0, -3], [0, 0, 1.0, 1], [0, 0, 0, 1]])  # rotated, other spacing
    out = resample(source, source_affine, (5, 6, 4), target_affine)
    expected = world_coordinates((5, 6, 4), target_affine)[0] * 0.5 + 3
    assert torch.allclose(out[0].double(), expected, atol=1e-4)


def test_labels_resample_with_nearest_neighbour_and_keep_codes():
    labels = torch.from_numpy(np.random.default_rng(0).choice([0, 4, 1000], (8, 8, 8)).astype(np.int32))[None]
    out = resample(labels, np.eye(4), (5, 5, 5), np.diag([1.3, 1.3, 1.3, 1]), mode="nearest")
    assert out.dtype == torch.int32 and set(out.unique().tolist()) <= {0, 4, 1000}


def test_network_grid_keeps_a_training_grid_and_recentres_others():
    train_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    same = np.diag([2.0, 2.0, 2.0, 1.0])
    same[:3, 3] = [5, 6, 7]
    assert network_grid((10, 12, 10), same, (10, 12, 10), train_affine)[1] is not None
    assert np.allclose(network_grid((10, 12, 10), same, (10, 12, 10), train_affine)[1], same)
    other = np.diag([1.0, 1.0, 1.0, 1.0])
    shape, affine = network_grid((30, 30, 30), other, (10, 12, 10), train_affine)
    assert shape == (10, 12, 10)
    centre = lambda s, a: a[:3, :3] @ ((np.array(s) - 1) / 2) + a[:3, 3]  # noqa: E731
    assert np.allclose(centre(shape, affine), centre((30, 30, 30), other))
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), [2, 2, 2])


def test_world_field_and_its_jacobian():
    affine = np.diag([2.0, 3.0, 1.0, 1.0])
    ddf = torch.zeros(3, 6, 6, 6, dtype=torch.float64)
    ddf[0] = 1.0  # one voxel along axis 0 = 2 mm
    assert torch.allclose(field_to_world(ddf, affine)[0], torch.full((6, 6, 6), 2.0, dtype=torch.float64))
    # a world displacement u = 0.1 * x (mm) has Jacobian determinant 1.1 whatever the spacing
    world = world_coordinates((6, 6, 6), affine)
    u = torch.zeros_like(world)
    u[0] = 0.1 * world[0]
    assert torch.allclose(jacobian_determinant_world(u, affine), torch.full((6, 6, 6), 1.1), atol=1e-5)


def test_a_voxel_map_becomes_the_same_map_in_world_coordinates():
    """A map of the voxels of a rotated 1.5 mm grid, expressed in mm, moves world points alike."""
    from deepatlas.inference.geometry import apply_affine, extend_grid, voxel_map_to_world

    grid = np.array([[0, -1.5, 0, 4], [1.5, 0, 0, -3], [0, 0, 1.5, 1], [0, 0, 0, 1]])
    voxel_map = np.array([[1.1, 0.1, 0, 2.0], [0, 0.9, 0, -1.0], [0, 0, 1.0, 0.5]])  # voxel -> voxel
    world_map = voxel_map_to_world(voxel_map, grid)
    index = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in (4, 5, 3)], indexing="ij"))
    mapped_index = torch.einsum("ij,j...->i...", torch.from_numpy(voxel_map[:, :3]), index)
    mapped_index += torch.from_numpy(voxel_map[:, 3]).view(3, 1, 1, 1)
    expected = apply_affine(mapped_index, grid)  # voxel indices -> world
    assert torch.allclose(apply_affine(world_coordinates((4, 5, 3), grid), world_map), expected, atol=1e-9)
    shape, wide = extend_grid((4, 5, 3), grid, (2, 1, 3))
    assert shape == (8, 7, 9)
    assert torch.allclose(world_coordinates(shape, wide)[:, 2:6, 1:6, 3:6], world_coordinates((4, 5, 3), grid))
