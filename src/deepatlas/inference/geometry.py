"""Physical-space resampling: moving volumes between voxel grids through world (mm) coordinates.

A grid is a shape and a voxel-to-world affine (4x4, NIfTI convention; 2D grids use
the first two rows and columns). Sampling a source volume on a target grid maps
each target voxel to world coordinates, optionally displaces it, and maps it into
the source's voxel indices; nothing assumes that the two grids share spacing,
orientation or field of view.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _linear(affine: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    affine = np.asarray(affine, dtype=np.float64)
    return affine[:dims, :dims], affine[:dims, 3]


def world_coordinates(shape: tuple[int, ...], affine: np.ndarray) -> torch.Tensor:
    """World coordinates (mm) of every voxel: ``dims x *shape`` float64."""
    dims = len(shape)
    matrix, offset = _linear(affine, dims)
    index = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"))
    return torch.einsum("ij,j...->i...", torch.from_numpy(matrix), index) + torch.from_numpy(offset).view(
        (dims,) + (1,) * dims
    )


def sample(
    source: torch.Tensor,
    source_affine: np.ndarray,
    points: torch.Tensor,
    mode: str = "bilinear",
    padding: str = "zeros",
) -> torch.Tensor:
    """Sample ``source`` (``C x *source_shape``) at world points ``points`` (``dims x *target_shape``).

    ``mode``: ``bilinear`` (trilinear in 3D) or ``nearest``; ``padding``: ``zeros``
    (background outside the source) or ``border``. Returns ``C x *target_shape``.
    """
    dims = points.shape[0]
    matrix, offset = _linear(source_affine, dims)
    inverse = torch.from_numpy(np.linalg.inv(matrix))
    flat = points.reshape(dims, -1) - torch.from_numpy(offset)[:, None]
    voxels = (inverse @ flat).reshape(points.shape)
    sizes = source.shape[1:]
    normalized = torch.stack([2 * voxels[i] / max(sizes[i] - 1, 1) - 1 for i in range(dims)], dim=-1)
    grid = normalized.flip(-1).unsqueeze(0).to(torch.float32)  # grid_sample wants x (last axis) first
    values = source.unsqueeze(0)
    dtype = values.dtype
    out = F.grid_sample(values.to(torch.float32), grid, mode=mode, padding_mode=padding, align_corners=True)
    out = out[0]
    return out.round().to(dtype) if not dtype.is_floating_point else out.to(dtype)


def resample(
    source: torch.Tensor,
    source_affine: np.ndarray,
    shape: tuple[int, ...],
    affine: np.ndarray,
    mode: str = "bilinear",
    padding: str = "zeros",
) -> torch.Tensor:
    """``source`` (``C x *source_shape``) on the grid ``(shape, affine)``."""
    if tuple(source.shape[1:]) == tuple(shape) and np.allclose(source_affine, affine, atol=1e-4):
        return source
    return sample(source, source_affine, world_coordinates(shape, affine), mode, padding)


def network_grid(
    shape: tuple[int, ...], affine: np.ndarray, train_shape: tuple[int, ...], train_affine: np.ndarray
) -> tuple[tuple[int, ...], np.ndarray]:
    """The grid the networks see for an input on ``(shape, affine)``: the training shape, voxel
    axes (spacing *and* directions) centred on the input's centre, so the network sees anatomy at
    the scale and orientation it was trained on.

    An input whose grid already is that (training shape and voxel axes, any origin) gets its own
    grid back and is not resampled (:func:`resample` compares affines within 1e-4); one with the
    training shape and spacing but flipped or permuted axes is resampled, never read as stored.
    """
    dims = len(shape)
    if len(train_shape) != dims:
        raise ValueError(f"the model was trained on {len(train_shape)}D images, this one is {dims}D")
    matrix, offset = _linear(affine, dims)
    train_matrix, _ = _linear(train_affine, dims)
    centre = matrix @ ((np.array(shape) - 1) / 2) + offset
    out = np.eye(4)
    out[:dims, :dims] = train_matrix
    out[:dims, 3] = centre - train_matrix @ ((np.array(train_shape) - 1) / 2)
    return tuple(train_shape), out


def apply_affine(points: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    """World points ``dims x *shape`` (mm) mapped through a 4x4 world affine (2D: its first two
    rows and columns and its translation column)."""
    dims = points.shape[0]
    matrix, offset = _linear(affine, dims)
    mapped = torch.einsum("ij,j...->i...", torch.from_numpy(matrix).to(points.dtype), points)
    return mapped + torch.from_numpy(offset).to(points.dtype).view((dims,) + (1,) * dims)


def _square(affine: np.ndarray, dims: int) -> np.ndarray:
    """The ``(dims+1) x (dims+1)`` homogeneous matrix of a 4x4 (or already square) affine."""
    matrix, offset = _linear(affine, dims)
    out = np.eye(dims + 1)
    out[:dims, :dims], out[:dims, dims] = matrix, offset
    return out


def voxel_map_to_world(matrix: np.ndarray, grid_affine: np.ndarray) -> np.ndarray:
    """The 4x4 world (mm) map of an affine map in voxel units of a grid.

    ``matrix``: ``dims x (dims+1)``, voxel ``x`` -> ``matrix [x; 1]`` on the grid ``grid_affine``;
    returns ``G M G^-1`` as a 4x4 NIfTI-style matrix (2D maps: identity along the third axis).
    """
    dims = matrix.shape[0]
    grid = _square(grid_affine, dims)
    voxel = np.eye(dims + 1)
    voxel[:dims] = np.asarray(matrix, dtype=np.float64)
    world = grid @ voxel @ np.linalg.inv(grid)
    out = np.eye(4)
    out[:dims, :dims], out[:dims, 3] = world[:dims, :dims], world[:dims, dims]
    return out


def extend_grid(
    shape: tuple[int, ...], affine: np.ndarray, margin: tuple[int, ...]
) -> tuple[tuple[int, ...], np.ndarray]:
    """The grid ``(shape, affine)`` with ``margin[i]`` more voxels on both sides of axis ``i``."""
    dims = len(shape)
    out = np.array(affine, dtype=np.float64)
    out[:dims, 3] -= out[:dims, :dims] @ np.asarray(margin, dtype=np.float64)
    return tuple(n + 2 * m for n, m in zip(shape, margin)), out


def field_to_world(ddf: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    """A displacement ``dims x *shape`` in voxel units of the grid ``affine`` -> millimetres, world axes."""
    dims = ddf.shape[0]
    matrix = torch.from_numpy(_linear(affine, dims)[0]).to(ddf.dtype)
    return torch.einsum("ij,j...->i...", matrix, ddf)


def jacobian_determinant_world(displacement: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    """Jacobian determinant of ``p -> p + u(p)`` for a world displacement (mm) ``dims x *shape`` on a grid.

    Derivatives along the grid's voxel axes by central differences (one-sided at
    the border), converted to world axes with the grid's affine.
    """
    dims = displacement.shape[0]
    inverse = torch.linalg.inv(torch.from_numpy(_linear(affine, dims)[0]))
    grads = torch.gradient(displacement.double(), dim=tuple(range(1, dims + 1)))  # grads[j][i] = du_i/dvox_j
    # J[i][k] = delta_ik + sum_j du_i/dvox_j * inverse[j, k]; the determinant written out per voxel:
    # torch.linalg.det on millions of small matrices took most of the time of a registration's outputs
    jac = [
        [sum(grads[j][i] * float(inverse[j, k]) for j in range(dims)) + (1.0 if i == k else 0.0) for k in range(dims)]
        for i in range(dims)
    ]
    if dims == 2:
        det = jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]
    else:
        det = (
            jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
            - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
            + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0])
        )
    return det.float()
