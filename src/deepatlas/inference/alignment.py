"""Bringing a raw scan into the template's space: a world-coordinate affine and one resampling.

A raw scan may have any orientation, spacing and field of view, and its world origin may be
anywhere (scanner coordinates, not MNI). :func:`align_to_template` first shifts its intensity
centre of mass (in millimetres) onto the template's, then runs the 12-parameter
:class:`~deepatlas.registration.affine.AffineStage` on the template grid (the scan resampled
onto that grid widened by the stage's margin), and returns the composed world map.
The scan is sampled once through that map (``TemplateAlignment.image``), and its label map by
:func:`labels_to_template`.

Downsampling (a 1 mm scan onto the 2 mm template grid) smooths first, so the prepared image
is the scan seen at 2 mm, not every other voxel of it (aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from deepatlas.data.io import Volume, normalize_intensity
from deepatlas.inference.geometry import apply_affine, extend_grid, sample, voxel_map_to_world, world_coordinates
from deepatlas.registration.affine import AffineSettings, AffineStage, alignment_ncc, centre_of_mass, global_ncc
from deepatlas.registration.fields import pool_image

SCORE_POOLING = 2
"""The alignment score compares the aligned scan and the template pooled this many times (4 mm at
2 mm voxels): gross anatomy (ventricles, cortex outline), not folds in which subjects differ."""


@dataclass(frozen=True)
class TemplateAlignment:
    """``matrix``: 4x4 world map (mm), template point ``p`` -> scan point ``matrix [p; 1]``.
    ``score``: global NCC of the aligned scan and the template, pooled :data:`SCORE_POOLING` x
    (1 = identical up to intensity scale); ``start_score``: the same after the centre-of-mass shift
    alone, before the affine stage; ``image``: the scan sampled once on the template grid through
    ``matrix`` (smoothed for the template's spacing, intensities 0..1), the image ``prepare`` writes."""

    matrix: np.ndarray
    score: float
    start_score: float
    image: np.ndarray = field(repr=False, compare=False)


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
    return TemplateAlignment(matrix, _score(aligned, fixed), _score(on_grid, fixed), aligned[0].numpy())


def labels_to_template(labels: Volume, alignment: TemplateAlignment, template: Volume) -> np.ndarray:
    """A label map (on its scan's grid) sampled once on the template grid through
    ``alignment.matrix``, by nearest neighbour, codes unchanged."""
    points = apply_affine(world_coordinates(tuple(template.array.shape), template.affine), alignment.matrix)
    codes = torch.from_numpy(labels.array.astype(np.int32))[None]
    return sample(codes, labels.affine, points, mode="nearest")[0].numpy()


@dataclass(frozen=True)
class ModelSpaceReport:
    """Whether an input was brought into the model's space (``--align``), why, and how.

    ``ncc``: the auto criterion (the input resampled by world coordinates onto the template grid,
    global NCC with the template, both pooled 4x); ``alignment``: the affine found, or None."""

    aligned: bool
    why: str
    ncc: float | None = None
    alignment: TemplateAlignment | None = None

    def as_dict(self) -> dict:
        out = {"aligned": self.aligned, "why": self.why, "ncc": self.ncc}
        if self.alignment is not None:
            out |= {"score": self.alignment.score, "matrix": self.alignment.matrix.tolist()}
        return out


def to_model_space(
    volume: Volume, template: Volume | None, mode: str, threshold: float
) -> tuple[np.ndarray | None, ModelSpaceReport]:
    """The network grid's affine that puts ``volume`` into the template's space, or None to keep the
    default grid; ``mode``: ``on``, ``off`` or ``auto`` (align when the criterion is below ``threshold``).

    The grid is the template's shape with affine ``A @ template.affine`` (``A``: the template-to-scan
    world map), a grid in the scan's own world space: the networks see the scan as they saw the
    training images, and results resample back onto the scan's grid through world coordinates.
    """
    if mode == "off" or (template is None and mode == "auto"):
        return None, ModelSpaceReport(False, "off" if mode == "off" else "the run has no template")
    if template is None:
        raise ValueError(
            "--align on: the run has no template.nii.gz and was not trained on the shipped template's grid"
        )
    ncc = None
    if mode == "auto":
        shape = tuple(template.array.shape)
        on_grid = sample(
            torch.from_numpy(normalize_intensity(volume.array))[None],
            volume.affine,
            world_coordinates(shape, template.affine),
        )
        fixed = torch.from_numpy(normalize_intensity(template.array))[None]
        ncc = float(alignment_ncc(on_grid[None], fixed[None])[0])
        if ncc >= threshold:
            return None, ModelSpaceReport(
                False, f"already in the model's space: template NCC {ncc:.3f} >= {threshold}", ncc
            )
    alignment = align_to_template(volume, template)
    why = "asked for" if ncc is None else f"template NCC {ncc:.3f} < {threshold}"
    return alignment.matrix @ template.affine, ModelSpaceReport(True, why, ncc, alignment)
