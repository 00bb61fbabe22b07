"""Warping images, label maps and probability maps along a displacement field.

Convention (MONAI ``Warp``): a displacement field ``u`` of shape
``B x spatial_dims x HxW[xD]`` is in voxel units, component ``i`` along array
axis ``i``; ``warped(x) = source(x + u(x))``. So a field of constant ``+2`` along
axis 0 makes ``warped[i] = source[i + 2]``: content moves towards lower indices.
Outside the source grid the border value is repeated.
"""

from __future__ import annotations

import torch
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
