"""The flow that grows or shrinks chosen structures: the gradient of each one's smoothed mask.

One deformation family serves two places: training shows the seg net structures resized this way
(:mod:`deepatlas.training.resize`), and the synthetic-atrophy benchmark deforms test brains by it with a
known volume change (:mod:`deepatlas.evaluation.atrophy`). Per structure, its mask smoothed by a
Gaussian; the gradient points into the structure and is scaled to a largest magnitude of 1 voxel; the
velocity ``sum strength * direction`` is integrated by scaling and squaring, so the map is a
diffeomorphism while the velocity stays smooth. Displacements pull back (``warped(x) = source(x +
u(x))``): a positive strength draws the inside outwards, so the structure grows. Far from every chosen
structure the smoothed masks are flat and nothing moves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deepatlas.registration.fields import integrate_velocity
from deepatlas.registration.greedy import gaussian_kernel, gaussian_smooth

STEPS = 7
"""Scaling-and-squaring steps: the velocity divided by 2**7 moves a point by far less than a voxel."""


def mask_direction(mask: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """``dims x *spatial`` (voxels): the gradient of ``mask`` (``*spatial`` booleans) smoothed by ``sigma``
    voxels (one, or one per axis), pointing into it, scaled so its largest magnitude is 1; zero when the
    mask is empty.

    Smoothed in float32 in the mask's bounding box grown by the kernel's reach and two voxels: beyond it the
    mask and its smoothing are zero, so the result is the whole grid's at the cost of a box (a ventricle's
    is a tenth of a brain's grid)."""
    dims = mask.dim()
    sigmas = [float(s) for s in sigma] if isinstance(sigma, Sequence) else [float(sigma)] * dims
    out = torch.zeros(dims, *mask.shape, device=mask.device)
    if not mask.any():
        return out
    where = mask.nonzero()
    box = tuple(
        slice(max(0, int(lo) - reach), min(n, int(hi) + reach + 1))
        for lo, hi, n, reach in zip(where.amin(0), where.amax(0), mask.shape, _reaches(sigmas))
    )
    smooth = gaussian_smooth(mask[box].float()[None, None], sigmas)[0, 0]
    grads = torch.stack(torch.gradient(smooth), dim=0)
    out[(slice(None), *box)] = grads / grads.norm(dim=0).max().clamp_min(1e-6)
    return out


def _reaches(sigmas: list[float]) -> list[int]:
    """Per axis, how far the smoothing carries a mask's edge (the kernel's radius) plus two voxels: the
    central differences of the gradient and a margin of zeros."""
    return [(len(gaussian_kernel(s)) // 2 if s > 0 else 0) + 2 for s in sigmas]


def growth_flow(directions: Sequence[torch.Tensor], strengths: Sequence[float], steps: int = STEPS) -> torch.Tensor:
    """``1 x dims x *spatial``: the displacement (voxels, pull back) of the time-1 flow of
    ``sum strength * direction`` (each direction ``dims x *spatial``, :func:`mask_direction`)."""
    velocity = sum(float(s) * d for s, d in zip(strengths, directions))
    return integrate_velocity(velocity[None].float(), steps)
