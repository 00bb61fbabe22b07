"""Random augmentation of labelled images for the seg net's supervised loss.

With one or a few labelled images a seg net memorises them: on ixi-2mm the seg net alone,
trained on one image for 45 minutes, drove its loss to 0.001 while its validation Dice fell
from 0.55 to 0.34 (docs/results.md). Showing it each image slightly rotated, scaled, shifted and
with another contrast and noise each time is what nnU-Net-like pipelines do against that.

Shapes: images ``B x 1 x *spatial`` (2D or 3D) in [0, 1] after normalisation, labels
``B x 1 x *spatial`` class indices; angles in degrees, shifts in voxels (rotations are rigid in
voxel space whatever the grid's shape). Every random number is drawn from a ``torch.Generator``
on the CPU, so a run (and a resumed one) is reproducible, on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from deepatlas.config import AugmentConfig
from deepatlas.data.labels import LabelScheme


def _uniform(count: int, limit: float, generator: torch.Generator) -> torch.Tensor:
    """``count`` draws uniform in ``[-limit, limit]`` (float64, CPU)."""
    return (torch.rand(count, generator=generator, dtype=torch.float64) * 2 - 1) * limit


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of one angle (2D) or three angles about the three axes (3D), radians."""
    if angles.numel() == 1:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    matrix = torch.eye(3, dtype=torch.float64)
    for axis, angle in enumerate(angles.tolist()):
        i, j = [k for k in range(3) if k != axis]
        turn = torch.eye(3, dtype=torch.float64)
        turn[i, i] = turn[j, j] = math.cos(angle)
        turn[i, j], turn[j, i] = -math.sin(angle), math.sin(angle)
        matrix = turn @ matrix
    return matrix


def random_affine(spatial: tuple[int, ...], batch: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """``batch x dims x (dims + 1)`` affine matrices for ``F.affine_grid`` (normalised coordinates,
    ``align_corners=True``, axes in ``grid_sample``'s x, y(, z) order): a rotation of up to
    ``cfg.rotate_degrees`` about each axis, an isotropic zoom within ``1 +- cfg.scale`` and a
    shift of up to ``cfg.translate_voxels`` along each axis."""
    dims = len(spatial)
    half = torch.tensor([max(n - 1, 1) / 2 for n in spatial[::-1]], dtype=torch.float64)  # voxels per unit
    thetas = []
    for _ in range(batch):
        angles = _uniform(1 if dims == 2 else 3, math.radians(cfg.rotate_degrees), generator)
        zoom = 1 + float(_uniform(1, cfg.scale, generator))
        # voxels -> normalised units per axis, reversed to x, y(, z)
        shift = _uniform(dims, cfg.translate_voxels, generator) / half
        # rotate in voxel space, not in the normalised one (where a non-cubic grid's axes have
        # different lengths and a rotation would shear): diag(1 / half) @ R @ diag(half)
        linear = _rotation(angles) / zoom * half[None, :] / half[:, None]
        thetas.append(torch.cat([linear, shift[:, None]], dim=1))
    return torch.stack(thetas)


def lateral_axis(affine, spatial_dims: int) -> int:
    """The array axis along which a grid runs left-right: the one whose voxel step moves most along world x
    (left-right in RAS and LPS alike)."""
    column = [abs(float(affine[0][k])) for k in range(spatial_dims)]
    return column.index(max(column))


def mirror_plan(scheme: LabelScheme, affines: list, spatial_dims: int) -> tuple[int, list[int]]:
    """What ``augment.flip`` mirrors: the images' left-right array axis (:func:`lateral_axis`) and each class's
    twin (:meth:`~deepatlas.data.labels.LabelScheme.mirrored`). Refused, naming the setting, where mirroring
    would teach wrong labels: a class that says a side without a twin on the other, or images whose grids
    run left-right along different axes."""
    unpaired = scheme.unpaired()
    if unpaired:
        raise ValueError(
            f"config augment.flip: {unpaired} name a side but have no twin on the other side in the label map, "
            "so a mirrored image would keep their side; name both sides (e.g. Caudate-L and Caudate-R) or set "
            "augment.flip=0"
        )
    axes = {lateral_axis(affine, spatial_dims) for affine in affines}
    if len(axes) > 1:
        raise ValueError(
            f"config augment.flip: the training images run left-right along different array axes {sorted(axes)}; "
            "resample them to one orientation (deepatlas prepare) or set augment.flip=0"
        )
    return axes.pop(), scheme.mirrored()


def mirror(
    images: torch.Tensor, labels: torch.Tensor, chosen: torch.Tensor, axis: int, twins: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``chosen`` items (``B`` booleans) of ``images`` and ``labels`` mirrored along the spatial ``axis``,
    each label turned into its mirror twin's (``twins``: :meth:`~deepatlas.data.labels.LabelScheme.mirrored`),
    so a mirrored left hippocampus is labelled as the right one it now looks like."""
    if not bool(chosen.any()):
        return images, labels
    images, labels = images.clone(), labels.clone()
    table = torch.tensor(twins, device=labels.device)
    dim = 2 + axis
    images[chosen] = images[chosen].flip(dim)
    labels[chosen] = table[labels[chosen].flip(dim).long()].to(labels.dtype)
    return images, labels


def augment(
    images: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` and ``labels`` moved by one random affine per item (images linearly, labels by
    nearest neighbour, the border repeated), then each image's contrast changed by a random gamma
    within ``1 +- cfg.gamma`` (on a log scale) and Gaussian noise of sd up to ``cfg.noise`` added."""
    spatial, batch = tuple(images.shape[2:]), images.shape[0]
    theta = random_affine(spatial, batch, cfg, generator).to(images.device, torch.float32)
    grid = F.affine_grid(theta, [batch, 1, *spatial], align_corners=True)
    moved = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    moved_labels = F.grid_sample(labels.float(), grid, mode="nearest", padding_mode="border", align_corners=True)
    gamma = torch.exp(_uniform(batch, math.log1p(cfg.gamma), generator)).to(images.device, torch.float32)
    moved = moved.clamp_min(0) ** gamma.view(-1, *[1] * (images.dim() - 1))
    if cfg.noise > 0:
        sd = (torch.rand(batch, generator=generator) * cfg.noise).to(images.device)
        noise = torch.randn(moved.shape, generator=generator).to(images.device)
        moved = moved + noise * sd.view(-1, *[1] * (images.dim() - 1))
    return moved.to(images.dtype), moved_labels.round().to(labels.dtype)
