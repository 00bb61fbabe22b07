"""Warping images, label maps and probability maps along a displacement field.

Convention (as MONAI ``Warp``, which this replaces for speed): a displacement field ``u`` of shape
``B x spatial_dims x HxW[xD]`` is in voxel units, component ``i`` along array
axis ``i``; ``warped(x) = source(x + u(x))``. So a field of constant ``+2`` along
axis 0 makes ``warped[i] = source[i + 2]``: content moves towards lower indices.
Outside the source grid the border value is repeated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# identity sampling grids by (spatial shape, dtype, device), shared with per-pair refinement
# (deepatlas.registration.fields): a step warps at two resolutions (the image, and the anatomy
# loss's coarse grid), which thrashed MONAI Warp's one-grid cache and rebuilt the grid at every
# call; a handful of entries in practice
_GRIDS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _identity_grid(
    spatial: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``1 x *spatial x n`` identity in ``grid_sample``'s normalised coordinates (``align_corners``:
    -1 and 1 at the first and last voxel centres; last axis first, as ``grid_sample`` orders it),
    and the ``n`` factors from voxels to those units in the same order."""
    key = (spatial, dtype, device)
    if key not in _GRIDS:
        if len(_GRIDS) > 16:  # many shapes (a sweep over sizes): start over rather than grow
            _GRIDS.clear()
        scale = [2.0 / max(n - 1, 1) for n in spatial]  # a single-voxel axis maps to -1
        axes = [torch.arange(n, dtype=torch.float64) * f - 1 for n, f in zip(spatial, scale)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)[None]
        _GRIDS[key] = grid.to(device, dtype), torch.tensor(scale[::-1], dtype=dtype, device=device)
    return _GRIDS[key]


def sampling_grid(ddf: torch.Tensor) -> torch.Tensor:
    """The ``grid_sample`` grid (``B x *spatial x dims``, ``align_corners=True``) of ``x + ddf(x)``,
    ``ddf`` ``B x dims x *spatial`` in voxels, component ``i`` along array axis ``i``."""
    base, scale = _identity_grid(tuple(ddf.shape[2:]), ddf.dtype, ddf.device)
    # one pass: identity + displacement in normalised units, components reversed to x, y(, z)
    return torch.addcmul(base, ddf.movedim(1, -1).flip(-1), scale)


def _check_field(source: torch.Tensor, ddf: torch.Tensor) -> None:
    """A displacement field of ``source``'s batch, one component per spatial axis, on its grid."""
    spatial = tuple(source.shape[2:])
    if ddf.shape != (source.shape[0], len(spatial), *spatial):
        raise ValueError(
            f"a {len(spatial)}-d image {tuple(source.shape)} needs a displacement field of shape "
            f"{(source.shape[0], len(spatial), *spatial)}, got {tuple(ddf.shape)}"
        )


def _sample(source: torch.Tensor, ddf: torch.Tensor, mode: str) -> torch.Tensor:
    """``source(x + ddf(x))`` by ``grid_sample`` (border padding), ``ddf`` in voxels, axis order."""
    _check_field(source, ddf)
    return F.grid_sample(source, sampling_grid(ddf), mode=mode, padding_mode="border", align_corners=True)


def warp_image(image: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """(Bi/tri)linear warp of a ``BxCxHxW[xD]`` float image; differentiable in both arguments."""
    return _sample(image, ddf.to(image.dtype), "bilinear")


def warp_probabilities(probs: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Linear warp of one-hot or softmax maps ``Bx(K+1)xHxW[xD]``.

    Linear interpolation keeps the gradient to the displacement field (nearest
    neighbour has none) and keeps each voxel's channels summing to one.
    """
    return _sample(probs, ddf.to(probs.dtype), "bilinear")


def warp_labels(labels: torch.Tensor, ddf: torch.Tensor, linear: bool = False) -> torch.Tensor:
    """Warp of an integer label map ``Bx1xHxW[xD]``; no new label values appear.

    ``linear=False``: nearest neighbour (``grid_sample``; fast: the validation registration Dice
    during training, the demo, synthetic data).
    ``linear=True``: label interpolation (:func:`interpolate_labels`: each label's indicator
    linearly, the largest winning), with the border repeated as above; about a tenth of a second
    for an 80x96x80 map on one CPU thread, so for labels made once and kept (training's teachers
    and synthesised pairs), not for every step.
    """
    if not linear:
        warped = _sample(labels.to(ddf.dtype), ddf, "nearest")
        return warped.round().to(labels.dtype)
    _check_field(labels, ddf)
    spatial = tuple(labels.shape[2:])
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in spatial], indexing="ij")
    limits = torch.tensor(spatial, dtype=torch.float32).view(-1, *[1] * len(spatial)) - 1
    out = torch.empty_like(labels, device="cpu")
    for b in range(labels.shape[0]):
        points = (torch.stack(axes) + ddf[b].detach().float().cpu()).clamp(min=0).minimum(limits)
        out[b, 0] = interpolate_labels(labels[b, 0].cpu(), points.reshape(len(spatial), -1)).view(spatial)
    return out.to(labels.device)


_CHUNK = 1 << 18


def interpolate_labels(labels: torch.Tensor, coords: torch.Tensor, linear: bool = True) -> torch.Tensor:
    """Labels of ``labels`` (integer, ``*spatial``) at the points ``coords`` (``dims x N`` voxel
    coordinates of that grid, array-axis order); 0 outside the grid.

    ``linear`` (the default): each label's indicator interpolated linearly, the largest winning (ITK's
    generic label interpolator, ANTs' ``genericLabel``, greedy's ``LABEL``), computed from the 2^dims
    voxels that enclose the point without one map per label: each of their labels scores the
    summed interpolation weights of the corners that hold it (ties: the first corner's). A voxel
    centre keeps its own label, so an identity or whole-voxel transform returns the map unchanged;
    between voxels a boundary falls where the labels' partial volumes cross instead of jumping to
    the nearest voxel's side. On ixi-2mm validation pairs this alone raised registration Dice by
    about two points over nearest neighbour (docs/results.md, "Label interpolation").
    ``linear=False``: nearest neighbour.
    """
    dims, spatial = coords.shape[0], tuple(labels.shape)
    coords = coords.float()
    if not linear:
        return _labels_at(labels, coords.round().long(), spatial)
    corners = _corners(dims)
    out = torch.empty(coords.shape[1], dtype=labels.dtype)
    for start in range(0, coords.shape[1], _CHUNK):
        part = coords[:, start : start + _CHUNK]
        base = part.floor()
        votes = _corner_labels(labels, base.long(), corners)  # n x corners
        chunk = out[start : start + part.shape[1]]
        chunk.copy_(votes[:, 0])
        mixed = (votes != votes[:, :1]).any(1).nonzero().squeeze(1)  # the rest: one label all round
        if len(mixed):
            votes, weights = votes[mixed], _corner_weights((part - base)[:, mixed], corners)
            chunk[mixed] = _largest_share(votes, weights)
    return out


def label_corners(labels: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The labels of the 2^dims voxels enclosing each point of ``coords`` (``dims x N`` voxel
    coordinates of ``labels``' grid; 0 outside it) and their linear interpolation weights, both
    ``N x 2^dims``: what :func:`interpolate_labels` votes with, for a caller that sums the shares of
    several label maps (soft atlas votes, :meth:`deepatlas.registration.fusion.LabelVotes.add_shares`)."""
    coords = coords.float()
    corners, base = _corners(coords.shape[0]), coords.floor()
    return _corner_labels(labels, base.long(), corners), _corner_weights(coords - base, corners)


def _corners(dims: int) -> torch.Tensor:
    """The 2^dims corner offsets of a voxel cell, ``2^dims x dims`` of 0 and 1."""
    return torch.cartesian_prod(*[torch.tensor([0, 1])] * dims).reshape(-1, dims)


def _corner_labels(labels: torch.Tensor, base: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """``labels`` at the corners ``base + corners`` of each point (``n x corners``), 0 outside the
    grid: one gather of flat indices for the points whose corners are all inside."""
    spatial = tuple(labels.shape)
    strides = torch.tensor([math.prod(spatial[axis + 1 :]) for axis in range(len(spatial))])
    limits = torch.tensor(spatial)[:, None] - 1
    inside = ((base >= 0) & (base < limits)).all(0)
    votes = torch.empty((base.shape[1], len(corners)), dtype=labels.dtype)
    flat = (base[:, inside] * strides[:, None]).sum(0)
    votes[inside] = labels.reshape(-1)[flat[:, None] + (corners * strides).sum(1)[None]]
    edge = (~inside).nonzero().squeeze(1)
    if len(edge):
        votes[edge] = _labels_at(labels, base[:, edge, None] + corners.T[:, None, :], spatial)
    return votes


def _corner_weights(frac: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Linear interpolation weights of each point's corners, ``n x corners`` (``frac``: ``dims x n``,
    the point's offset from its first corner)."""
    weights = torch.ones((frac.shape[1], len(corners)))
    for axis in range(frac.shape[0]):
        f = frac[axis][:, None]
        weights *= torch.where(corners[:, axis].bool()[None], f, 1 - f)
    return weights


def _largest_share(votes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The label with the largest summed weight among each point's corner labels (``n x corners``)."""
    shares = torch.zeros(votes.shape)
    for k in range(votes.shape[1]):
        shares += weights[:, k : k + 1] * (votes == votes[:, k : k + 1])
    return votes.gather(1, shares.argmax(1, keepdim=True)).squeeze(1)


def _labels_at(labels: torch.Tensor, index: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """``labels`` at integer voxel indices ``index`` (``dims x *points``); 0 outside the grid."""
    inside = torch.ones(index.shape[1:], dtype=torch.bool)
    flat = torch.zeros(index.shape[1:], dtype=torch.long)
    for axis, size in enumerate(spatial):
        inside &= (index[axis] >= 0) & (index[axis] < size)
        flat = flat * size + index[axis].clamp(0, size - 1)
    values = labels.reshape(-1)[flat]
    return torch.where(inside, values, torch.zeros((), dtype=values.dtype))
