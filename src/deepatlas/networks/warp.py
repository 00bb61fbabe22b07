"""Warping images, label maps and probability maps along a displacement field.

Convention (MONAI ``Warp``): a displacement field ``u`` of shape
``B x spatial_dims x HxW[xD]`` is in voxel units, component ``i`` along array
axis ``i``; ``warped(x) = source(x + u(x))``. So a field of constant ``+2`` along
axis 0 makes ``warped[i] = source[i + 2]``: content moves towards lower indices.
Outside the source grid the border value is repeated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Warp

_LINEAR = Warp(mode="bilinear", padding_mode="border")
_NEAREST = Warp(mode="nearest", padding_mode="border")


def warp_image(image: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """(Bi/tri)linear warp of a ``BxCxHxW[xD]`` float image; differentiable in both arguments."""
    return _LINEAR(image, ddf.to(image.dtype))


def warp_probabilities(probs: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Linear warp of one-hot or softmax maps ``Bx(K+1)xHxW[xD]``.

    Linear interpolation keeps the gradient to the displacement field (nearest
    neighbour has none) and keeps each voxel's channels summing to one.
    """
    return _LINEAR(probs, ddf.to(probs.dtype))


def warp_labels(labels: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour warp of an integer label map ``Bx1xHxW[xD]``; no new label values appear."""
    warped = _NEAREST(labels.to(ddf.dtype), ddf)
    return warped.round().to(labels.dtype)


def downsample_field(ddf: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool a displacement field by ``factor`` and rescale it to the coarse grid's voxel units."""
    if factor == 1:
        return ddf
    pool = F.avg_pool3d if ddf.ndim == 5 else F.avg_pool2d
    return pool(ddf, factor, ceil_mode=True) / factor


def downsample_maps(maps: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool probability maps by ``factor`` (they stay probability maps)."""
    if factor == 1:
        return maps
    pool = F.avg_pool3d if maps.ndim == 5 else F.avg_pool2d
    # contiguous: on a channels-last view avg_pool spends most of its time copying
    return pool(maps.contiguous(), factor, ceil_mode=True)


def label_fractions(labels: torch.Tensor, num_classes: int, factor: int = 1) -> torch.Tensor:
    """Fraction of each class in each ``factor``-wide block of a label map.

    ``Bx1xHxW[xD]`` class indices -> ``BxKxH'xW'[xD']`` float, equal to
    ``downsample_maps(one_hot(labels), factor)`` but without building the
    full-resolution one-hot map (K times the label map's size), which made the
    anatomy loss the slowest part of a step.
    """
    batch, spatial = labels.shape[0], labels.shape[2:]
    coarse = [-(-n // factor) for n in spatial]
    index = torch.zeros((), dtype=torch.long, device=labels.device)
    for n, c in zip(spatial, coarse):
        axis = torch.arange(n, device=labels.device) // factor
        index = index.unsqueeze(-1) * c + axis
    cells = int(torch.tensor(coarse).prod())
    counts = torch.bincount(index.reshape(-1), minlength=cells).clamp_min(1)
    flat = labels.reshape(batch, -1).long() * cells + index.reshape(1, -1)
    flat = flat + torch.arange(batch, device=labels.device)[:, None] * (num_classes * cells)
    hist = torch.bincount(flat.reshape(-1), minlength=batch * num_classes * cells).float()
    return (hist.view(batch, num_classes, cells) / counts).view(batch, num_classes, *coarse)
