"""Affine stage: a 12-parameter (3D; 6 in 2D) alignment of a pair before the deformable stages.

The networks were trained on pre-aligned brains; a pair whose world alignment is poor (another
scanner's head position, a subject not in MNI space) must be brought close first. ICON-style,
the stage is images in, transform out: ``AffineStage()(moving, fixed)`` returns the matrix that
pulls the moving image back onto the fixed one, on the grid both are given on.

Method: Adam on ``x -> (I + L)(x - c) / r + t`` in coordinates centred on the grid centre ``c``
and scaled by the grid's half extent ``r`` (so rotation, scaling and shift steps weigh alike),
started from the centre-of-mass shift, minimising the negative global normalised
cross-correlation of the images pooled 4x, then 2x (coarse to fine). Global NCC suits
same-contrast pairs and is blind to the global intensity scale; the coarse level makes the
basin wide enough for rotations of 20 degrees, scalings of 20 % and shifts of 20 mm.

Whether to run it automatically (:func:`alignment_ncc`): the global NCC of the two images on the
fixed grid, after resampling by world coordinates, both pooled 4x (8 mm at 2 mm voxels: gross
alignment, not the fine anatomy in which subjects differ). Measured on ixi-2mm: 30 pre-aligned
pairs of different subjects 0.972 to 0.989; 36 pairs with the moving brain moved by random
affines as above 0.60 to 0.86. The mildest of those (NCC 0.86) still left the net alone at Dice
0.23 instead of 0.63; the Dice of the two foreground masks, the criterion tried first, put it at
0.864, too close to pre-aligned pairs (0.957 and up) to separate them. 3D test phantoms: 0.957
and up. Below :attr:`AffineSettings.auto_threshold` (``options.AFFINE_AUTO_THRESHOLD``) the stage is switched on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deepatlas import options
from deepatlas.registration.adam import AdamSteps
from deepatlas.registration.fields import pool_image

"""``auto``: the affine stage runs when :func:`alignment_ncc` is below the threshold."""
MIN_LEVEL_SIZE = 16
"""Fewest voxels along every axis of a pooled level (smaller grids are pooled less)."""


@dataclass(frozen=True)
class AffineSettings:
    """How :class:`AffineStage` optimises (defaults measured on ixi-2mm pairs moved by random
    affines: rotations up to 20 degrees, scalings up to 20 %, shifts up to 20 mm)."""

    levels: tuple[int, ...] = (4, 2)
    """Image pooling factor of each level, coarse to fine."""
    iterations: tuple[int, ...] = (150, 50)
    """Adam iterations at each level."""
    lr: float = 0.01
    """Adam step at the first level (scaled with the level's factor after it), in units of the grid's
    half extent (shift) and of the linear part (dimensionless); cosine-decayed to 0 within each level."""
    margin: float = 0.25
    """The moving image is given on the fixed grid extended by this fraction of each axis on both sides."""
    auto_threshold: float = options.AFFINE_AUTO_THRESHOLD
    """``auto`` mode: run the stage when :func:`alignment_ncc` of the pair is below this."""

    def validate(self) -> None:
        if not self.levels or len(self.levels) != len(self.iterations):
            raise ValueError(f"affine levels and iterations need the same, non-zero length: {self}")
        if min(self.levels) < 1 or min(self.iterations) < 1 or not self.lr > 0:
            raise ValueError(f"affine levels and iterations must be >= 1 and lr > 0: {self}")


def _frame(shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, float]:
    """Centre (voxels, ``dims``) and half extent (voxels) of a grid."""
    centre = torch.tensor([(n - 1) / 2 for n in shape], dtype=torch.float32, device=device)
    return centre, max(max(shape) - 1, 1) / 2


def centre_of_mass(image: torch.Tensor) -> torch.Tensor:
    """Intensity centre of mass of ``B x 1 x *spatial`` in voxels: ``B x dims``."""
    dims = image.ndim - 2
    weights = image[:, 0].clamp_min(0)
    total = weights.flatten(1).sum(1).clamp_min(1e-8)
    out = []
    for axis in range(dims):
        index = torch.arange(image.shape[2 + axis], dtype=image.dtype, device=image.device)
        profile = weights.sum(dim=[1 + a for a in range(dims) if a != axis])
        out.append((profile * index).sum(1) / total)
    return torch.stack(out, 1)


def matrix_field(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The displacement ``B x dims x *shape`` (voxels) of ``x -> M [x; 1]``, ``matrix`` ``B x dims x (dims+1)``."""
    dims = len(shape)
    axes = [torch.arange(n, dtype=matrix.dtype, device=matrix.device) for n in shape]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # dims x *shape
    mapped = torch.einsum("bij,j...->bi...", matrix[:, :, :dims], points)
    return mapped + matrix[:, :, dims].view(-1, dims, *[1] * dims) - points[None]


def _level_points(shape: tuple[int, ...], factor: int, device: torch.device) -> torch.Tensor:
    """Full-resolution voxel coordinates ``N x dims`` of the centres of a pooled level's voxels."""
    axes = [
        torch.arange(-(-n // factor), dtype=torch.float32, device=device) * factor + (factor - 1) / 2 for n in shape
    ]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(shape))


def global_ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlation of ``B x N`` rows: ``B``."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)


class AffineStage:
    """Estimates the affine map pulling ``moving`` back onto ``fixed``.

    Call with ``moving``, ``fixed``: ``B x 1 x *spatial`` on one grid (intensities normalised);
    returns ``B x dims x (dims+1)``: the moving voxel matching fixed voxel ``x`` is ``M [x; 1]``
    (voxel units of this grid; :func:`deepatlas.inference.geometry.voxel_map_to_world` gives
    the world map).
    """

    def __init__(self, settings: AffineSettings | None = None) -> None:
        self.settings = settings or AffineSettings()
        self.settings.validate()

    def __call__(
        self, moving: torch.Tensor, fixed: torch.Tensor, margin: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """``margin``: ``moving`` lies on the fixed grid extended by this many voxels on both sides of
        each axis (:meth:`margin_for`), so content the affine brings in from outside the fixed field of
        view is there to match (without it, a brain enlarged 20 % biased the estimate by 1-2 mm)."""
        moving, fixed = moving.detach().float(), fixed.detach().float()
        shape, dims, batch = tuple(fixed.shape[2:]), fixed.ndim - 2, fixed.shape[0]
        margin = torch.tensor(margin or [0] * dims, dtype=torch.float32, device=fixed.device)
        if tuple(moving.shape[2:]) != tuple(int(n + 2 * m) for n, m in zip(shape, margin.tolist())):
            raise ValueError(f"affine stage: moving {tuple(moving.shape)} is not fixed {tuple(fixed.shape)} + margins")
        centre, radius = _frame(shape, fixed.device)
        linear = torch.zeros(batch, dims, dims, device=fixed.device, requires_grad=True)
        shift = (centre_of_mass(moving) - margin - centre_of_mass(fixed)) / radius
        params = (linear, shift.requires_grad_(True))
        with torch.enable_grad():
            for level, iterations in zip(self.settings.levels, self.settings.iterations):
                # a level pooled below MIN_LEVEL_SIZE voxels per axis is a few blurred voxels wide and
                # its NCC optimum is no guide (a 24-voxel phantom pooled 4x came out sheared by 0.3):
                # such levels run at the coarsest pooling that keeps that size, with their own steps
                factor = min(level, max(1, min(shape) // MIN_LEVEL_SIZE))
                lr = self.settings.lr * level / self.settings.levels[0]
                self._level((moving, fixed), params, margin, (factor, iterations, lr))
        with torch.no_grad():
            matrix = torch.eye(dims, device=fixed.device) + linear
            offset = centre - torch.einsum("bij,j->bi", matrix, centre) + radius * shift
            return torch.cat([matrix, offset[..., None]], 2)

    def margin_for(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Voxels to add on each side of each axis of the moving image's grid (``settings.margin``
        of the axis, a multiple of the coarsest pooling factor)."""
        step = max(self.settings.levels)
        return tuple(step * -(-round(self.settings.margin * n) // step) for n in shape)

    def _level(
        self,
        images: tuple[torch.Tensor, torch.Tensor],
        params: tuple[torch.Tensor, torch.Tensor],
        margin: torch.Tensor,
        schedule: tuple[int, int, float],
    ) -> None:
        """Adam on ``params`` (linear part, shift) against the (moving, fixed) images; ``schedule``:
        pooling factor, iterations and initial step of this level."""
        factor, iterations, lr = schedule
        level_moving, level_fixed = (pool_image(image, factor) for image in images)
        moving_shape = torch.tensor(level_moving.shape[2:], dtype=torch.float32, device=margin.device)
        full_shape = tuple(images[1].shape[2:])
        centre, radius = _frame(full_shape, margin.device)
        points = (_level_points(full_shape, factor, margin.device) - centre) / radius  # N x dims
        target, eye = level_fixed.flatten(1), torch.eye(len(full_shape), device=margin.device)
        optimizers = [AdamSteps(param, lr=lr) for param in params]
        for iteration in range(iterations):
            # cosine decay to zero: Adam's steps are ~lr whatever the gradient, so without it the
            # estimate jitters by about one step (lr x half extent: a millimetre) at the end
            for optimizer in optimizers:
                optimizer.lr = lr * (1 + math.cos(math.pi * iteration / iterations)) / 2
            linear, shift = params
            mapped = torch.einsum("bij,nj->bni", eye + linear, points) + shift[:, None]
            voxels = (mapped * radius + centre + margin - (factor - 1) / 2) / factor  # moving level voxels
            grid = (2 * voxels / (moving_shape - 1).clamp_min(1) - 1).flip(-1)
            grid = grid.view(grid.shape[0], *level_fixed.shape[2:], len(full_shape))
            warped = F.grid_sample(level_moving, grid, padding_mode="zeros", align_corners=True)
            loss = -global_ncc(warped.flatten(1), target).sum()
            for param in params:
                param.grad = None
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()


def foreground(image: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """Boolean mask ``B x C x *spatial``: voxels above ``fraction`` of their image's maximum (the
    skull-stripped brain, or the head of an unstripped image)."""
    peak = image.flatten(1).amax(1).view(-1, *[1] * (image.ndim - 1))
    return image > fraction * peak


def alignment_ncc(moving: torch.Tensor, fixed: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Global NCC (``B``) of two images on one grid (``B x 1 x *spatial``), both pooled ``factor`` times.

    Cheap (one pooling, one correlation) and blind to the global intensity scale: how well the
    images' world coordinates align, which decides whether the affine stage is needed.
    """
    return global_ncc(pool_image(moving.float(), factor).flatten(1), pool_image(fixed.float(), factor).flatten(1))
