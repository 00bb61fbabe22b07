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
from scipy.stats import rankdata

from deepatlas import options
from deepatlas.data.io import Volume, normalize_intensity
from deepatlas.inference.geometry import (
    apply_affine,
    extend_grid,
    sample,
    sample_labels,
    voxel_map_to_world,
    world_coordinates,
)
from deepatlas.registration.affine import AffineSettings, AffineStage, alignment_ncc, centre_of_mass, global_ncc
from deepatlas.registration.fields import pool_image

SCORE_POOLING = 2
"""The alignment score compares the aligned scan and the template pooled this many times (4 mm at
2 mm voxels): gross anatomy (ventricles, cortex outline), not folds in which subjects differ."""
BRAIN_LEVEL = 0.1
"""The template's brain: its voxels (pooled, intensities 0..1) above this; the rest is background."""


@dataclass(frozen=True)
class TemplateAlignment:
    """``matrix``: 4x4 world map (mm), template point ``p`` -> scan point ``matrix [p; 1]``.
    ``score``: :func:`alignment_score` of the aligned scan (1 = the template's anatomy up to a monotone
    intensity map); ``start_score``: the same after the centre-of-mass shift
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


def alignment_score(aligned: torch.Tensor | np.ndarray, template: torch.Tensor | np.ndarray) -> float:
    """How well a scan sampled on the template grid shows the template's anatomy: the rank (Spearman)
    correlation of the two, pooled :data:`SCORE_POOLING` x, inside the template's brain.

    Ranks, so any monotone intensity map (another scanner, sequence, field strength) leaves it
    unchanged and a contrast-inverted (T2-like) brain scores low; inside the brain only, so a looser
    or tighter brain mask than IXI's does not count, while a skull or a flipped or turned brain puts
    the wrong tissue in it. Global NCC weighed the brain's outline, which spheres and flipped brains
    share and other scanners' brains miss. Calibration: benchmarks/results/alignment_qc/results.md.
    """
    pooled = [
        pool_image(torch.as_tensor(image, dtype=torch.float32)[None, None], SCORE_POOLING)
        for image in (aligned, template)
    ]
    scan, fixed = (image.flatten().double().numpy() for image in pooled)
    brain = fixed > BRAIN_LEVEL * fixed.max()
    if brain.sum() < 2:
        return 0.0
    ranks = [rankdata(values[brain]) for values in (scan, fixed)]
    return float(global_ncc(*(torch.from_numpy(r)[None] for r in ranks))[0])


def _score(aligned: torch.Tensor, template: torch.Tensor) -> float:
    """:func:`alignment_score` of two ``1 x *grid`` images on the template grid."""
    return alignment_score(aligned[0], template[0])


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
    ``alignment.matrix``, codes unchanged (:func:`~deepatlas.inference.geometry.sample_labels`)."""
    points = apply_affine(world_coordinates(tuple(template.array.shape), template.affine), alignment.matrix)
    codes = torch.from_numpy(labels.array.astype(np.int32))
    return sample_labels(codes, labels.affine, points).numpy()


@dataclass(frozen=True)
class ModelSpaceReport:
    """Whether an input was brought into the model's space (``--align``), why, and how.

    ``ncc``: the auto criterion (the input resampled by world coordinates onto the template grid,
    global NCC with the template, both pooled 4x); ``alignment``: the affine found, or None;
    ``score``: :func:`alignment_score` of the input as the networks see it (aligned or not) against
    the template; None with ``--align off`` (nothing asked, nothing checked) or without a template."""

    aligned: bool
    why: str
    ncc: float | None = None
    alignment: TemplateAlignment | None = None
    score: float | None = None

    def as_dict(self) -> dict:
        out = {"aligned": self.aligned, "why": self.why, "ncc": self.ncc, "score": self.score}
        if self.alignment is not None:
            out["matrix"] = self.alignment.matrix.tolist()
        return out


def _on_template_grid(volume: Volume, template: Volume) -> tuple[torch.Tensor, torch.Tensor]:
    """``volume`` resampled by world coordinates onto the template grid, and the template (``1 x *grid``, 0..1)."""
    points = world_coordinates(tuple(template.array.shape), template.affine)
    on_grid = sample(torch.from_numpy(normalize_intensity(volume.array))[None], volume.affine, points)
    return on_grid, torch.from_numpy(normalize_intensity(template.array))[None]


def to_model_space(
    volume: Volume, template: Volume | None, mode: str, threshold: float
) -> tuple[np.ndarray | None, ModelSpaceReport]:
    """The network grid's affine that puts ``volume`` into the template's space, or None to keep the
    default grid; ``mode``: ``on``, ``off`` or ``auto`` (align when the criterion is below ``threshold``).

    The grid is the template's shape with affine ``A @ template.affine`` (``A``: the template-to-scan
    world map), a grid in the scan's own world space: the networks see the scan as they saw the
    training images, and results resample back onto the scan's grid through world coordinates.
    ``auto`` keeps the global NCC criterion, not :func:`alignment_score`: it errs towards aligning
    (other scanners' pre-aligned brains are aligned again, which is cheap and harmless), whereas a
    score threshold that accepts every scanner's brain would leave brains some degrees off as they are.
    """
    if mode == "off" or (template is None and mode == "auto"):
        return None, ModelSpaceReport(False, "off" if mode == "off" else "the run has no template")
    if template is None:
        raise ValueError(
            "--align on: the run has no template.nii.gz and was not trained on the shipped template's grid"
        )
    ncc = None
    if mode == "auto":
        on_grid, fixed = _on_template_grid(volume, template)
        score = _score(on_grid, fixed)
        ncc = float(alignment_ncc(on_grid[None], fixed[None])[0])
        if ncc >= threshold:
            why = f"already in the model's space: template NCC {ncc:.3f} >= {threshold}"
            return None, ModelSpaceReport(False, why, ncc, score=score)
    alignment = align_to_template(volume, template)
    why = "asked for" if ncc is None else f"template NCC {ncc:.3f} < {threshold}"
    return alignment.matrix @ template.affine, ModelSpaceReport(True, why, ncc, alignment, alignment.score)


def alignment_warning(report: ModelSpaceReport, source: object, force: bool = False) -> str | None:
    """The one line to print about an input whose alignment score (``report.score``) is below
    ``options.ALIGNMENT_MIN_SCORE``, or None; below ``options.ALIGNMENT_REFUSE_SCORE`` (no brain the
    model knows in the template's brain: the result would be meaningless) a ``ValueError`` naming
    ``source`` instead, unless ``force``. Nothing with ``--align off`` (no score: the user keeps the
    image as it is, e.g. a pair registered in scanner space)."""
    score = report.score
    if score is None or score >= options.ALIGNMENT_MIN_SCORE:
        return None
    if score < options.ALIGNMENT_REFUSE_SCORE and not force:
        raise ValueError(
            f"{source}: alignment score {score:.3f} < {options.ALIGNMENT_REFUSE_SCORE}: this does not look like a "
            "skull-stripped T1 brain in the template's space (a whole head, another contrast, a failed "
            "alignment, not a brain?); check the image (--strip on for heads), or pass --force to go on anyway"
        )
    return (
        f"{source}: warning: alignment score {score:.3f} < {options.ALIGNMENT_MIN_SCORE}: the result may be poor; "
        "check the image and the result (a whole head, another contrast, a failed alignment?)"
    )
