"""Physical-space resampling: moving volumes between voxel grids through world (mm) coordinates.

A grid is a shape and a voxel-to-world affine (4x4, NIfTI convention; 2D grids use
the first two rows and columns). Sampling a source volume on a target grid maps
each target voxel to world coordinates, optionally displaces it, and maps it into
the source's voxel indices; nothing assumes that the two grids share spacing,
orientation or field of view.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from deepatlas.networks.warp import interpolate_labels


def _linear(affine: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    affine = np.asarray(affine, dtype=np.float64)
    return affine[:dims, :dims], affine[:dims, 3]


CHUNK_VOXELS = 2**19
"""Voxels of an output grid evaluated at once by :func:`sample`, :func:`resample`,
:func:`resample_argmax` and :func:`jacobian_determinant_world` (whole rows of the first axis).
Each voxel being evaluated holds some 200 bytes of float64 coordinates, interpolation weights and
derivatives, plus 4 bytes per class of probabilities: a 256^3 1 mm grid at once needs gigabytes, a
slab of this size about a hundred megabytes. Smaller slabs save little more memory and cost time
in per-slab overhead (many small parallel loops), most on a loaded machine."""


def slabs(shape: tuple[int, ...], chunk: int | None = None) -> list[slice]:
    """Slices of the first axis of a grid ``shape``, each about ``chunk`` voxels (at least one row;
    default :data:`CHUNK_VOXELS`): the slabs chunked evaluation goes through."""
    chunk = CHUNK_VOXELS if chunk is None else chunk
    rows = max(1, chunk // max(1, math.prod(shape[1:])))
    return [slice(start, min(start + rows, shape[0])) for start in range(0, shape[0], rows)]


def world_coordinates(shape: tuple[int, ...], affine: np.ndarray, rows: slice | None = None) -> torch.Tensor:
    """World coordinates (mm) of every voxel: ``dims x *shape`` float64; with ``rows``, only the
    voxels of those rows of the first axis (``dims x len(rows) x *shape[1:]``).

    Each coordinate is summed elementwise from the voxel indices, so a voxel's coordinates are
    the same bits whichever slab it is computed in (chunked and whole-grid results agree exactly)."""
    dims = len(shape)
    matrix, offset = _linear(affine, dims)
    first = range(shape[0])[rows] if rows is not None else range(shape[0])
    axes = [torch.arange(first.start, first.stop, first.step, dtype=torch.float64)]
    axes += [torch.arange(n, dtype=torch.float64) for n in shape[1:]]
    axes = [axis.view([-1 if j == i else 1 for j in range(dims)]) for i, axis in enumerate(axes)]
    out = torch.empty((dims, len(first), *shape[1:]), dtype=torch.float64)
    for i in range(dims):
        out[i] = axes[0] * float(matrix[i, 0])
        for j in range(1, dims):
            out[i] += axes[j] * float(matrix[i, j])
        out[i] += float(offset[i])
    return out


def sample(
    source: torch.Tensor,
    source_affine: np.ndarray,
    points: torch.Tensor,
    mode: str = "bilinear",
    padding: str = "zeros",
    chunk: int | None = None,
) -> torch.Tensor:
    """Sample ``source`` (``C x *source_shape``) at world points ``points`` (``dims x *target_shape``).

    ``mode``: ``bilinear`` (trilinear in 3D) or ``nearest``; ``padding``: ``zeros``
    (background outside the source) or ``border``. Returns ``C x *target_shape``. The points are
    taken in slabs of ``chunk`` (:func:`slabs`), so the interpolation's temporaries stay bounded.
    """
    dims = points.shape[0]
    matrix, offset = _linear(source_affine, dims)
    inverse = np.linalg.inv(matrix)
    values = source.unsqueeze(0).to(torch.float32)
    parts = slabs(tuple(points.shape[1:]), chunk)
    out = None if len(parts) == 1 else torch.empty((source.shape[0], *points.shape[1:]), dtype=source.dtype)
    for rows in parts:
        part = _sample_slab(values, (inverse, offset), points[:, rows], mode, padding)
        part = part.round().to(source.dtype) if not source.dtype.is_floating_point else part.to(source.dtype)
        if out is None:  # one slab (as resample() passes them): no second copy
            return part
        out[:, rows] = part
    return out


def _sample_slab(
    values: torch.Tensor, inverse: tuple[np.ndarray, np.ndarray], points: torch.Tensor, mode: str, padding: str
) -> torch.Tensor:
    """``values`` (``1 x C x *source_shape``, float32) at world ``points``; ``inverse``: the source
    grid's inverse matrix and its offset. Elementwise arithmetic, so a point's value does not
    depend on the slab it is in."""
    matrix, offset = inverse
    dims, sizes = points.shape[0], values.shape[2:]
    shifted = [points[j] - float(offset[j]) for j in range(dims)]
    grid = torch.empty((1, *points.shape[1:], dims), dtype=torch.float32)
    for i in range(dims):
        voxel = shifted[0] * float(matrix[i, 0])
        for j in range(1, dims):
            voxel += shifted[j] * float(matrix[i, j])
        grid[..., dims - 1 - i] = 2 * voxel / max(sizes[i] - 1, 1) - 1  # grid_sample wants x (last axis) first
    return F.grid_sample(values, grid, mode=mode, padding_mode=padding, align_corners=True)[0]


def voxel_coordinates(points: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    """World points ``dims x N`` (mm) as voxel coordinates of the grid of ``affine`` (``dims x N``,
    float64, array-axis order)."""
    dims = points.shape[0]
    matrix, offset = _linear(affine, dims)
    return torch.from_numpy(np.linalg.inv(matrix)) @ (points.double() - torch.from_numpy(offset)[:, None])


def sample_labels(
    codes: torch.Tensor, source_affine: np.ndarray, points: torch.Tensor, linear: bool = True
) -> torch.Tensor:
    """The label map ``codes`` (integer, ``*source_shape``) at world points ``points`` (``dims x
    *target_shape``), its own codes, 0 outside it: each label's indicator interpolated linearly, the
    largest winning (:func:`~deepatlas.networks.warp.interpolate_labels`; ``linear=False``: nearest
    neighbour). Every label map a command writes through a transform is sampled so."""
    dims = points.shape[0]
    out = torch.empty(points.shape[1:], dtype=codes.dtype)
    for rows in slabs(tuple(points.shape[1:])):
        coords = voxel_coordinates(points[:, rows].reshape(dims, -1), source_affine)
        out[rows] = interpolate_labels(codes, coords, linear).reshape(out[rows].shape)
    return out


def resample(
    source: torch.Tensor,
    source_affine: np.ndarray,
    shape: tuple[int, ...],
    affine: np.ndarray,
    mode: str = "bilinear",
    padding: str = "zeros",
    chunk: int | None = None,
) -> torch.Tensor:
    """``source`` (``C x *source_shape``) on the grid ``(shape, affine)``, computed in slabs of
    ``chunk`` voxels: the grid's world coordinates are never all held at once."""
    if tuple(source.shape[1:]) == tuple(shape) and np.allclose(source_affine, affine, atol=1e-4):
        return source
    out = torch.empty((source.shape[0], *shape), dtype=source.dtype)
    for rows in slabs(tuple(shape), chunk):
        out[:, rows] = sample(source, source_affine, world_coordinates(tuple(shape), affine, rows), mode, padding)
    return out


def resample_argmax(
    scores: torch.Tensor,
    source_affine: np.ndarray,
    shape: tuple[int, ...],
    affine: np.ndarray,
    padding: str = "border",
    chunk: int | None = None,
) -> torch.Tensor:
    """``resample(scores, ...).argmax(0)`` (linear interpolation of per-class scores, then the best
    class) without the full-resolution ``classes x *shape`` volume: each slab of ``chunk`` voxels
    is interpolated and reduced to class indices (uint8 up to 256 classes, else int64) before the next."""
    dtype = torch.uint8 if scores.shape[0] <= 256 else torch.int64
    if tuple(scores.shape[1:]) == tuple(shape) and np.allclose(source_affine, affine, atol=1e-4):
        return scores.argmax(0).to(dtype)
    out = torch.empty(tuple(shape), dtype=dtype)
    for rows in slabs(tuple(shape), chunk):
        points = world_coordinates(tuple(shape), affine, rows)
        out[rows] = sample(scores, source_affine, points, "bilinear", padding).argmax(0).to(dtype)
    return out


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


def jacobian_determinant_world(
    displacement: torch.Tensor, affine: np.ndarray, chunk: int | None = None
) -> torch.Tensor:
    """Jacobian determinant of ``p -> p + u(p)`` for a world displacement (mm) ``dims x *shape`` on a grid.

    Derivatives along the grid's voxel axes by central differences (one-sided at
    the border), converted to world axes with the grid's affine. Computed (in float64) in slabs of
    ``chunk`` voxels along the first axis, each with one row more on either side, so every row's
    differences are those of the whole field.
    """
    dims = displacement.shape[0]
    inverse = torch.linalg.inv(torch.from_numpy(_linear(affine, dims)[0]))
    shape = tuple(displacement.shape[1:])
    out = torch.empty(shape, dtype=torch.float32)
    for rows in slabs(shape, chunk):
        low, high = max(rows.start - 1, 0), min(rows.stop + 1, shape[0])
        det = _jacobian_slab(displacement[:, low:high].double(), inverse)
        out[rows] = det[rows.start - low : rows.stop - low].float()
    return out


def _jacobian_slab(displacement: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """:func:`jacobian_determinant_world` of ``displacement`` (float64) as if it were the whole field."""
    dims = displacement.shape[0]
    grads = torch.gradient(displacement, dim=tuple(range(1, dims + 1)))  # grads[j][i] = du_i/dvox_j
    # J[i][k] = delta_ik + sum_j du_i/dvox_j * inverse[j, k]; the determinant written out per voxel:
    # torch.linalg.det on millions of small matrices took most of the time of a registration's outputs
    jac = [
        [sum(grads[j][i] * float(inverse[j, k]) for j in range(dims)) + (1.0 if i == k else 0.0) for k in range(dims)]
        for i in range(dims)
    ]
    if dims == 2:
        return jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]
    return (
        jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
        - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
        + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0])
    )
