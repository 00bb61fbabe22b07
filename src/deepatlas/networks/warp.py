"""Warping images, label maps and probability maps along a displacement field.

Convention (as MONAI ``Warp``, which this replaces for speed): a displacement field ``u`` of shape
``B x spatial_dims x HxW[xD]`` is in voxel units, component ``i`` along array
axis ``i``; ``warped(x) = source(x + u(x))``. So a field of constant ``+2`` along
axis 0 makes ``warped[i] = source[i + 2]``: content moves towards lower indices.
Outside the source grid the border value is repeated.
"""

from __future__ import annotations

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


def _sample(source: torch.Tensor, ddf: torch.Tensor, mode: str) -> torch.Tensor:
    """``source(x + ddf(x))`` by ``grid_sample`` (border padding), ``ddf`` in voxels, axis order."""
    spatial = tuple(source.shape[2:])
    if ddf.shape != (source.shape[0], len(spatial), *spatial):
        raise ValueError(
            f"a {len(spatial)}-d image {tuple(source.shape)} needs a displacement field of shape "
            f"{(source.shape[0], len(spatial), *spatial)}, got {tuple(ddf.shape)}"
        )
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


def warp_labels(labels: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour warp of an integer label map ``Bx1xHxW[xD]``; no new label values appear."""
    warped = _sample(labels.to(ddf.dtype), ddf, "nearest")
    return warped.round().to(labels.dtype)
