"""Operations on displacement and velocity fields used by per-pair optimisation.

All fields are ``B x dims x *spatial`` in **voxel units of their own grid**, component
``i`` along array axis ``i``, and pull back (MONAI ``Warp`` convention, as in
:mod:`deepatlas.networks.warp`): ``warped(x) = source(x + u(x))``.

These functions run hundreds of times per pair: the sampling grid of the identity is built once
per shape and cached (:func:`deepatlas.networks.warp.sampling_grid`, which training's warps share).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from deepatlas.losses.similarity import box_filter
from deepatlas.networks.warp import sampling_grid


def warp(source: torch.Tensor, field: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``source(x + field(x))`` of ``B x C x *spatial`` on the field's grid; border values repeat outside.

    :func:`deepatlas.networks.warp.warp_image` without its shape check (it runs hundreds
    of times per pair).
    """
    grid = sampling_grid(field.to(source.dtype))
    return F.grid_sample(source, grid, mode=mode, padding_mode="border", align_corners=True)


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The field of ``x -> y + second(y)`` with ``y = x + first(x)``: apply ``first``, then ``second``."""
    return first + warp(second, first)


def integrate_velocity(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Displacement of the time-1 flow of a stationary velocity field (scaling and squaring).

    The result is a diffeomorphism when ``velocity / 2**steps`` is small enough, which is
    why folds stay rare in diffeomorphic mode whatever the optimiser does to the velocity.
    """
    field = velocity / (2**steps)
    for _ in range(steps):
        field = compose(field, field)
    return field


def resize_field(field: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A field on another grid over the same extent, in the new grid's voxel units.

    The grids are those of average pooling: voxel ``i`` of a grid ``f`` times coarser covers
    fine voxels ``f*i .. f*i + f - 1`` (so linear interpolation with align_corners=False), and
    components are rescaled by the ratio of voxel sizes so the same physical displacement results.
    """
    old = tuple(field.shape[2:])
    if old == tuple(shape):
        return field
    ratios = [new / n for new, n in zip(shape, old)]
    scale = torch.tensor(ratios, device=field.device, dtype=field.dtype).view(1, -1, *[1] * len(shape))
    if all(new == 2 * n for new, n in zip(shape, old)):
        resized = field
        for axis in range(2, field.ndim):
            resized = _double(resized, axis)
        return resized * scale
    mode = "trilinear" if field.ndim == 5 else "bilinear"
    return F.interpolate(field, size=shape, mode=mode, align_corners=False) * scale


def _double(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Linear 2x upsampling along one axis (align_corners=False, edges clamped), as
    ``F.interpolate`` computes it but 2-3x faster on CPU with its backward, which matters
    when it runs at every iteration of a per-pair optimisation."""
    n = x.shape[axis]
    before = torch.cat([x.narrow(axis, 0, 1), x.narrow(axis, 0, n - 1)], axis)
    after = torch.cat([x.narrow(axis, 1, n - 1), x.narrow(axis, n - 1, 1)], axis)
    three = 0.75 * x
    return torch.stack([three + 0.25 * before, three + 0.25 * after], axis + 1).flatten(axis, axis + 1)


def coarse_shape(shape: tuple[int, ...], factor: int) -> tuple[int, ...]:
    """Grid shape after pooling by ``factor`` (ceil, so no voxel is dropped)."""
    return tuple(-(-n // factor) for n in shape)


def pool_image(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool ``B x C x *spatial`` by ``factor`` (the image pyramid of coarse levels)."""
    if factor == 1:
        return image
    pool = F.avg_pool3d if image.ndim == 5 else F.avg_pool2d
    return pool(image, factor, ceil_mode=True, count_include_pad=False)


def smooth(field: torch.Tensor, passes: int) -> torch.Tensor:
    """``passes`` 3-wide box filters: a cheap Gaussian-like smoothing that keeps the optimised
    field free of voxel-scale noise, as B-spline parameterisations do.

    Zeros outside the grid, so a smoothed residual tapers off at the image border (background);
    that makes the filter its own adjoint, and its backward pass as cheap as its forward.
    """
    for _ in range(passes):
        field = box_filter(field, 3)
    return field


def diffusion_energy(field: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of every component along every axis (voxel units: the
    displacement gradient is dimensionless, so the value does not depend on the grid's spacing)."""
    return _Diffusion.apply(field)


class _Diffusion(torch.autograd.Function):
    """:func:`diffusion_energy` with its gradient, a discrete Laplacian, written directly: per
    axis ``d = diff(u)``, ``grad[:-1] -= 2 d / N``, ``grad[1:] += 2 d / N`` into one buffer,
    instead of autograd's zero-padded copy per difference (the step runs hundreds of times per pair)."""

    @staticmethod
    def forward(ctx, field: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(field)
        total = field.new_zeros(())
        for axis in range(2, field.ndim):
            if field.shape[axis] > 1:  # a flat axis has no differences (not a NaN mean of none)
                total = total + torch.diff(field, dim=axis).pow(2).mean()
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (field,) = ctx.saved_tensors
        out = torch.zeros_like(field)
        for axis in range(2, field.ndim):
            n = field.shape[axis]
            if n < 2:
                continue
            d = torch.diff(field, dim=axis) * (2.0 * grad / (field.numel() // n * (n - 1)))
            out.narrow(axis, 0, n - 1).sub_(d)
            out.narrow(axis, 1, n - 1).add_(d)
        return out


def resample_cubic(image: np.ndarray, field: torch.Tensor) -> np.ndarray:
    """``image`` (an array) at ``x + field(x)`` (``field``: ``dims x *spatial``, voxels along the array axes, as
    :func:`warp`'s) by cubic B-spline interpolation (edges replicated), clipped to the
    image's own range (the spline overshoots at sharp edges). Linear interpolation is a blur where the
    displacement is fractional: a half-voxel shift alone changed the shipped seg net's hippocampi by
    -2 to -4 % (docs/results.md, "Morphometry against the truth"), a change of the order the synthetic-atrophy
    benchmark asks a method to find; the cubic spline passes through the samples and blurs far less. On the
    CPU (scipy), ~0.15 s at 80 x 96 x 80."""
    from scipy import ndimage

    array = np.asarray(image, dtype=np.float64)
    grid = np.indices(array.shape, dtype=np.float64) + field.double().numpy()
    moved = ndimage.map_coordinates(array, grid, order=3, mode="nearest")
    return np.clip(moved, array.min(), array.max()).astype(np.float32)


def shift_cubic(image: np.ndarray, shift: Sequence[float]) -> np.ndarray:
    """``image`` (an array) at ``x + shift`` (voxels along its axes, the same everywhere) by cubic B-spline
    interpolation (edges replicated), clipped to its own range: :func:`resample_cubic` for a constant field,
    separable, so cheaper (scipy, CPU)."""
    from scipy import ndimage

    array = np.asarray(image, dtype=np.float64)
    moved = ndimage.shift(array, [-float(s) for s in shift], order=3, mode="nearest")
    return np.clip(moved, array.min(), array.max()).astype(np.float32)


def shift_linear(tensor: torch.Tensor, shift: Sequence[float]) -> torch.Tensor:
    """``tensor`` (``C x *spatial``) at ``x + shift`` (voxels along the spatial axes, the same everywhere) by
    linear interpolation, axis by axis, edges replicated; on the tensor's device. For maps that are averaged
    afterwards (probabilities), where a linear sample's blur is harmless."""
    out = tensor
    for axis, offset in enumerate(shift, start=1):
        if offset == 0:
            continue
        n, low = out.shape[axis], math.floor(offset)
        index = torch.arange(n, device=out.device) + low
        below = out.index_select(axis, index.clamp(0, n - 1))
        above = out.index_select(axis, (index + 1).clamp(0, n - 1))
        out = torch.lerp(below, above, float(offset - low))
    return out
