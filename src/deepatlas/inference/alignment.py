"""Bringing a raw scan into the template's space: a world-coordinate affine and one resampling.

A raw scan may have any orientation, spacing and field of view, and its world origin may be
anywhere (scanner coordinates, not MNI). :func:`align_to_template` first shifts its intensity
centre of mass (in millimetres) onto the template's, then runs the 12-parameter
:class:`~deepatlas.registration.affine.AffineStage` on the template grid (the scan resampled
onto that grid widened by the stage's margin), and returns the composed world map.
:func:`resample_to_template` then samples the scan (or its label map) once through that map.

Downsampling (a 1 mm scan onto the 2 mm template grid) smooths first, so the prepared image
is the scan seen at 2 mm, not every other voxel of it (aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from deepatlas.data.io import Volume, normalize_intensity
from deepatlas.inference.geometry import apply_affine, extend_grid, sample, voxel_map_to_world, world_coordinates
from deepatlas.registration.affine import AffineSettings, AffineStage, centre_of_mass, global_ncc
from deepatlas.registration.fields import pool_image

SCORE_POOLING = 2
"""The alignment score compares the aligned scan and the template pooled this many times (4 mm at
2 mm voxels): gross anatomy (ventricles, cortex outline), not folds in which subjects differ."""


@dataclass(frozen=True)
class TemplateAlignment:
    """``matrix``: 4x4 world map (mm), template point ``p`` -> scan point ``matrix [p; 1]``.
    ``score``: global NCC of the aligned scan and the template, pooled :data:`SCORE_POOLING` x
    (1 = identical up to intensity scale); ``start_score``: the same after the centre-of-mass shift
    alone, before the affine stage."""

    matrix: np.ndarray
    score: float
    start_score: float


def antialias(volume: Volume, spacing: float) -> np.ndarray:
    """``volume``'s array smoothed for sampling at ``spacing`` mm: a Gaussian of ``(k - 1) / 2``
    voxels along each axis that is ``k`` times finer than ``spacing`` (none along coarser axes)."""
    sigmas = [max(0.0, (spacing / s - 1) / 2) for s in volume.spacing]
    if max(sigmas) < 0.25:
        return volume.array
    return gaussian_filter(volume.array.astype(np.float32), sigmas, mode="nearest")


def _world_centre_of_mass(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Intensity centre of mass in world coordinates (mm): ``dims``."""
    voxels = centre_of_mass(torch.from_numpy(array.astype(np.float32))[None, None])[0].double().numpy()
    dims = array.ndim
    return affine[:dims, :dims] @ voxels + affine[:dims, 3]


def _score(aligned: torch.Tensor, template: torch.Tensor) -> float:
    """Alignment score of two ``1 x *grid`` images on the template grid (see :class:`TemplateAlignment`)."""
    pooled = [pool_image(image[None].float(), SCORE_POOLING).flatten(1) for image in (aligned, template)]
    return float(global_ncc(*pooled)[0])


def align_to_template(volume: Volume, template: Volume, settings: AffineSettings | None = None) -> TemplateAlignment:
    """The affine world map bringing ``volume`` (3D, any grid) onto ``template`` (see module doc)."""
    if volume.array.ndim != template.array.ndim:
        raise ValueError(f"{volume.path}: a {volume.array.ndim}D image; the template is {template.array.ndim}D")
    dims, shape = template.array.ndim, tuple(template.array.shape)
    scan = torch.from_numpy(normalize_intensity(antialias(volume, min(template.spacing))))[None]
    fixed = torch.from_numpy(normalize_intensity(template.array))[None]
    start = np.eye(4)
    start[:dims, 3] = _world_centre_of_mass(scan[0].numpy(), volume.affine) - _world_centre_of_mass(
        fixed[0].numpy(), template.affine
    )
    on_grid = sample(scan, volume.affine, apply_affine(world_coordinates(shape, template.affine), start))
    stage = AffineStage(settings)
    margin = stage.margin_for(shape)
    wide_shape, wide_affine = extend_grid(shape, template.affine, margin)
    wide = sample(scan, volume.affine, apply_affine(world_coordinates(wide_shape, wide_affine), start))
    voxel_map = stage(wide[None], fixed[None], margin)[0].double().numpy()
    matrix = start @ voxel_map_to_world(voxel_map, template.affine)
    aligned = sample(scan, volume.affine, apply_affine(world_coordinates(shape, template.affine), matrix))
    return TemplateAlignment(matrix, _score(aligned, fixed), _score(on_grid, fixed))


def resample_to_template(volume: Volume, alignment: TemplateAlignment, template: Volume, labels: bool) -> np.ndarray:
    """``volume`` sampled once on the template grid through ``alignment.matrix``: intensities
    smoothed for the template's spacing, normalised (0..1) and linearly interpolated; label maps
    (``labels=True``) by nearest neighbour, codes unchanged."""
    points = apply_affine(world_coordinates(tuple(template.array.shape), template.affine), alignment.matrix)
    if labels:
        codes = torch.from_numpy(volume.array.astype(np.int32))[None]
        return sample(codes, volume.affine, points, mode="nearest")[0].numpy()
    scan = torch.from_numpy(normalize_intensity(antialias(volume, min(template.spacing))))[None]
    return sample(scan, volume.affine, points)[0].numpy()
