"""Label maps, probability maps and displacement fields on a grid coarser by an integer factor.

The anatomy loss (:mod:`deepatlas.losses.anatomy`) is measured on such a grid: pooled blocks
of ``factor`` voxels per axis (ceil, so no voxel is dropped), fields rescaled to the coarse
grid's voxel units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
