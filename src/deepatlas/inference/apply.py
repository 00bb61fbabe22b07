"""Applying a trained run to images on their own grids: register, segment, atlas-segment.

Inputs of any shape, spacing and orientation are resampled (in world coordinates)
onto the networks' grid (:func:`network_grid`) and every result is mapped back onto
the input's own grid, so outputs overlay the inputs in ITK-SNAP, 3D Slicer or
FSLeyes. An input already on the training grid is not resampled at all.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from deepatlas import options
from deepatlas.data.augment import lateral_axis
from deepatlas.data.io import (
    MIN_EXTENT_MM,
    Volume,
    check_extent,
    check_label_grid,
    grid_spacing,
    load_labelled,
    normalize_intensity,
)
from deepatlas.data.labels import LabelScheme
from deepatlas.inference.alignment import ModelSpaceReport, to_model_space
from deepatlas.inference.geometry import (
    apply_affine,
    extend_grid,
    field_to_world,
    jacobian_determinant_world,
    network_grid,
    resample,
    resample_argmax,
    sample,
    sample_labels,
    slabs,
    voxel_coordinates,
    voxel_map_to_world,
    world_coordinates,
)
from deepatlas.inference.run import TrainedRun
from deepatlas.networks.segmentation import mirrored_softmax
from deepatlas.networks.warp import label_corners
from deepatlas.options import look_up_option
from deepatlas.registration import Deformation, RegistrationPipeline
from deepatlas.registration.affine import AffineSettings, AffineStage, alignment_ncc, foreground
from deepatlas.registration.fields import shift_cubic, shift_linear
from deepatlas.registration.fusion import NCC_WINDOW, LabelVotes, similarity_weight, vote_within_classes
from deepatlas.registration.inverse import invert_deformation


@dataclass
class Registration:
    """A registration of ``moving`` onto ``fixed``, everything on the fixed image's grid.

    Attributes:
        warped: the moving image resampled at ``p + displacement(p)`` (its original intensities).
        displacement: ``dims x *fixed_shape`` in mm along the world (NIfTI RAS) axes; the moving
            point matching fixed point ``p`` is ``p + displacement(p)`` (affine stage included).
        jacobian: determinant of the Jacobian of ``p -> p + displacement(p)`` (<= 0: folding).
        warped_labels: the moving label map (original codes), if given, sampled by
            :func:`~deepatlas.inference.geometry.sample_labels` (each label's indicator interpolated
            linearly, the largest winning, as greedy's ``LABEL``; not nearest neighbour).
        affine: the fixed image's affine, for writing the outputs.
        affine_stage: what the affine stage did (:class:`AffineStageReport`), None if not asked about.
        model_space: whether the fixed image was first brought into the model's space (``align``).
        inverse: ``dims x *moving_shape`` in mm on the moving image's grid: the fixed point matching
            moving point ``q`` is ``q + inverse(q)``; with ``RegistrationOptions.inverse`` only.
        inverse_affine: the moving image's affine, for writing ``inverse``.
        inverse_consistency: ``{"mean_mm", "p95_mm"}`` of ``|p + u(p) + v(p + u(p)) - p|`` over the
            fixed image's foreground, with ``inverse``.
    """

    warped: np.ndarray
    displacement: np.ndarray
    jacobian: np.ndarray
    warped_labels: np.ndarray | None
    affine: np.ndarray
    affine_stage: AffineStageReport | None = None
    model_space: ModelSpaceReport | None = None
    inverse: np.ndarray | None = None
    inverse_affine: np.ndarray | None = None
    inverse_consistency: dict[str, float] | None = None


@dataclass
class AffineStageReport:
    """Whether the affine stage ran for a pair, why, and the world map it found.

    ``ncc``: :func:`~deepatlas.registration.affine.alignment_ncc` of the two images on the fixed
    network grid after world-coordinate resampling (``auto`` mode only); ``matrix``: 4x4, fixed world point (mm) ->
    moving world point, the map applied before the deformation, or None.
    """

    ran: bool
    why: str
    ncc: float | None = None
    matrix: np.ndarray | None = None


@dataclass
class RegistrationOptions:
    """What :func:`register_volumes` does around the run's pipeline.

    ``affine``: ``off`` (the default of the Python API: registrations as before the stage existed),
    ``on``, or ``auto`` (the default of ``register`` and ``atlas-segment``: the stage runs when the
    pair's alignment NCC is below ``affine_settings.auto_threshold``); ``align``: the same choices
    for bringing the *fixed* image into the model's space first (affine to the run's template; the
    networks then see both images as they saw the training images); ``inverse``: also compute the
    fixed-to-moving field and its inverse-consistency error (``inverse_iterations`` fixed-point
    iterations when the run is not diffeomorphic); ``strip``: the commands' brain extraction of
    whole-head scans as they read them (:func:`deepatlas.inference.strip.strip`; ``register_volumes``
    takes volumes as they are); ``force``: the commands go on with an input whose alignment score is
    far below a brain's (:func:`~deepatlas.inference.alignment.alignment_warning`); ``label_term``: the
    moving labels, where given, also guide the refinement (``refine.label_weight``; ``atlas-segment``
    and ``register`` with ``--label-term``), rather than only being warped.
    """

    affine: str = "off"
    align: str = "off"
    inverse: bool = False
    strip: str = "off"
    force: bool = False
    label_term: bool = False
    affine_settings: AffineSettings = field(default_factory=AffineSettings)
    inverse_iterations: int = 30

    def validate(self) -> None:
        look_up_option(self.affine, options.AFFINE, "affine stage")
        look_up_option(self.align, options.AFFINE, "align")
        look_up_option(self.strip, options.STRIP, "strip")
        self.affine_settings.validate()
        if self.inverse_iterations < 1:
            raise ValueError(f"inverse_iterations must be >= 1, got {self.inverse_iterations}")


def _normalized(run: TrainedRun, volume: Volume) -> torch.Tensor:
    """``1 x *shape``: the volume's intensities normalised as in training."""
    array = normalize_intensity(volume.array) if run.config.data.normalize else volume.array.astype(np.float32)
    return torch.from_numpy(array)[None]


def _on_grid(run: TrainedRun, volume: Volume, shape: tuple[int, ...], affine: np.ndarray) -> torch.Tensor:
    """``volume``, normalised as in training, resampled onto the network grid ``(shape, affine)``."""
    return resample(_normalized(run, volume), volume.affine, shape, affine)


def _check_dims(run: TrainedRun, *volumes: Volume) -> None:
    """Refuse an image whose number of dimensions is not the model's, or that is too small for it
    (:func:`min_extent_mm`), naming the file."""
    minimum = min_extent_mm(run)
    for volume in volumes:
        if volume.array.ndim != len(run.grid_shape):
            raise ValueError(
                f"{volume.path}: a {volume.array.ndim}D image, but the model {run.path} was trained on "
                f"{len(run.grid_shape)}D images"
            )
        if minimum is not None:
            trained = " x ".join(f"{e:.0f}" for e in _grid_extent(run))
            why = f"too small for the model {run.path}, trained on {trained} mm images: give the whole scan"
            check_extent(volume, minimum, why)


def _grid_extent(run: TrainedRun) -> list[float]:
    """The training grid's extent along each axis (mm)."""
    return [n * s for n, s in zip(run.grid_shape, grid_spacing(run.grid_affine, len(run.grid_shape)))]


def min_extent_mm(run: TrainedRun) -> float | None:
    """The narrowest field of view (mm, along any axis) an input of ``run`` may cover: ``prepare``'s
    rule (:data:`~deepatlas.data.io.MIN_EXTENT_MM`: less is a slab or a localiser, not a brain), but
    never more than half the training grid's smallest extent, so a model trained on a smaller field
    (the test suite's 48 mm phantoms) still refuses a 10 mm crop and accepts its own images. None
    for 2D models: their inputs are slices, which no 3D extent describes."""
    if len(run.grid_shape) != 3:
        return None
    return min(MIN_EXTENT_MM, 0.5 * min(_grid_extent(run)))


def _to_network_grid(
    run: TrainedRun, volume: Volume, align: str = "off"
) -> tuple[torch.Tensor, tuple[int, ...], np.ndarray, ModelSpaceReport]:
    """``volume`` on the grid the networks see it on (``1 x *shape``), that grid, and whether it was
    first brought into the model's space (``align``: :func:`~deepatlas.inference.alignment.to_model_space`)."""
    _check_dims(run, volume)
    shape, affine = network_grid(volume.array.shape, volume.affine, run.grid_shape, run.grid_affine)
    space, report = to_model_space(volume, run.template, align, options.AFFINE_AUTO_THRESHOLD)
    if space is not None:
        shape, affine = tuple(run.template.array.shape), space
    return _on_grid(run, volume, shape, affine), shape, affine, report


def _device(run: TrainedRun) -> torch.device:
    return next(run.reg_net.parameters()).device


@functools.lru_cache(maxsize=1)
def read_atlases(atlases: tuple[tuple[Path, Path], ...]) -> list[tuple[Volume, Volume]]:
    """The atlases' ``(image, label codes)``, read once per process (a worker reads them for every
    target it segments); ``atlases`` is a tuple of ``(image path, label path)``."""
    return [load_labelled(image, labels) for image, labels in atlases]


def register_volumes(
    run: TrainedRun,
    moving: Volume,
    fixed: Volume,
    moving_labels: Volume | None = None,
    pipeline: RegistrationPipeline | None = None,
    options: RegistrationOptions | None = None,
) -> Registration:
    """Register ``moving`` to ``fixed``: the affine stage if ``options`` say so, then the run's
    pipeline (net, then refinement) or ``pipeline``.

    With the affine stage, the moving image is resampled (from its own grid, in world
    coordinates) through the affine ``A`` onto the fixed network grid before the pipeline runs,
    and the result is the composition ``moving point = A(p + u(p))``; the warped image and labels
    are sampled through it from the original moving volume (one interpolation). ``options.inverse``
    adds the fixed-to-moving field and its inverse-consistency error (:class:`Registration`).
    """
    options = options or RegistrationOptions()
    options.validate()
    _check_dims(run, moving, fixed)
    fixed_t, grid_shape, grid_affine, space = _to_network_grid(run, fixed, options.align)
    # the moving image goes onto the *fixed* image's network grid: one grid per pair keeps
    # their world relationship (pre-alignment) intact
    moving_t = _on_grid(run, moving, grid_shape, grid_affine)
    report = _affine_stage(run, moving, (moving_t, fixed_t), (grid_shape, grid_affine), options)
    if report.matrix is not None:  # one interpolation from the moving image's own grid
        points = apply_affine(world_coordinates(grid_shape, grid_affine), report.matrix)
        moving_t = sample(_normalized(run, moving), moving.affine, points)
    device = _device(run)
    labels_t = None
    if options.label_term and moving_labels is not None:
        labels_t = _labels_on_grid(run, moving, moving_labels, (grid_shape, grid_affine), report.matrix)[None]
    deformation = (pipeline or run.pipeline)(moving_t[None].to(device), fixed_t[None].to(device), labels_t)
    world = field_to_world(deformation.field[0].detach().cpu().double(), grid_affine)
    inverse = None
    if options.inverse:  # first: the fixed grid's outputs measure its consistency slab by slab
        steps, iterations = run.config.reg_net.integration_steps, options.inverse_iterations
        inverse = _inverse_field(deformation, steps, grid_affine, moving, report.matrix, iterations)
    out = _fixed_grid_outputs(moving, moving_labels, fixed, (world, grid_affine), report.matrix, inverse)
    jacobian = jacobian_determinant_world(torch.from_numpy(out.displacement), fixed.affine)
    result = Registration(out.warped, out.displacement, jacobian.numpy(), out.labels, fixed.affine, report, space)
    if inverse is not None:
        result.inverse, result.inverse_affine = inverse.numpy(), moving.affine
        result.inverse_consistency = _inverse_consistency(out.residual, fixed)
    return result


def _labels_on_grid(
    run: TrainedRun,
    moving: Volume,
    labels: Volume,
    grid: tuple[tuple[int, ...], np.ndarray],
    matrix: np.ndarray | None,
) -> torch.Tensor:
    """The moving label map as ``1 x *grid`` class indices of ``run.scheme`` (codes outside it as
    background: the label term then leaves them alone) on the network grid ``grid``, sampled as the
    moving image is (through the affine stage's world map ``matrix`` when there is one), by
    :func:`~deepatlas.inference.geometry.sample_labels`."""
    check_label_grid(moving, labels)
    codes = torch.from_numpy(labels.array.astype(np.int32))
    points = world_coordinates(*grid)
    if matrix is not None:
        points = apply_affine(points, matrix)
    on_grid = sample_labels(codes, labels.affine, points).numpy()
    classes = run.scheme.encode(on_grid, source=str(labels.path or "moving labels"), unknown="background")
    return torch.from_numpy(classes.astype(np.int64))[None]


@dataclass
class _FixedGridOutputs:
    """What a registration yields on the fixed image's grid: the displacement (``dims x *shape``, mm,
    float32), the warped image, the warped label codes (int32) or None, and with an inverse the
    inverse-consistency residual ``|p + u(p) + v(p + u(p)) - p|`` (mm) per voxel, else None."""

    displacement: np.ndarray
    warped: np.ndarray
    labels: np.ndarray | None
    residual: torch.Tensor | None


def _fixed_grid_outputs(
    moving: Volume,
    moving_labels: Volume | None,
    fixed: Volume,
    field: tuple[torch.Tensor, np.ndarray],
    matrix: np.ndarray | None,
    inverse: torch.Tensor | None,
) -> _FixedGridOutputs:
    """The registration's outputs on the fixed grid, slab by slab of it (:func:`~deepatlas.inference.geometry.slabs`):
    a 1 mm grid's target points alone would take 400 MB in float64. ``field``: the world displacement
    (mm) on the network grid and that grid's affine; ``matrix``: the affine stage's world map (moving
    point ``A(p + u(p))``) or None; ``inverse``: ``v`` on the moving grid, or None. The moving image
    (linear) and labels (:func:`~deepatlas.inference.geometry.sample_labels`) are sampled once, from
    their own grids, at the target points."""
    world, grid_affine = field
    shape, dims = tuple(fixed.array.shape), fixed.array.ndim
    # the field as it is, not interpolated, when the fixed image is on the network grid
    same_grid = tuple(world.shape[1:]) == shape and np.allclose(grid_affine, fixed.affine, atol=1e-4)
    image = torch.from_numpy(np.asarray(moving.array, dtype=np.float32))[None]
    codes = None
    if moving_labels is not None:
        check_label_grid(moving, moving_labels)
        codes = torch.from_numpy(moving_labels.array.astype(np.int32))
    out = _FixedGridOutputs(
        np.empty((dims, *shape), np.float32),
        np.empty(shape, np.float32),
        None if codes is None else np.empty(shape, np.int32),
        None if inverse is None else torch.empty(shape),
    )
    for rows in slabs(shape):
        points = world_coordinates(shape, fixed.affine, rows)
        displacement = world[:, rows] if same_grid else sample(world, grid_affine, points, padding="border")
        target = points + displacement
        if matrix is not None:  # moving point = A(p + u(p))
            target = apply_affine(target, matrix)
            displacement = target - points
        out.displacement[:, rows] = displacement.numpy()
        out.warped[rows] = sample(image, moving.affine, target)[0].numpy()
        if codes is not None:
            out.labels[rows] = sample_labels(codes, moving_labels.affine, target).numpy()
        if inverse is not None:
            back = sample(inverse, moving.affine, target, padding="border")
            out.residual[rows] = (target + back - points).norm(dim=0)
    return out


def _affine_stage(
    run: TrainedRun,
    moving: Volume,
    images: tuple[torch.Tensor, torch.Tensor],
    grid: tuple[tuple[int, ...], np.ndarray],
    options: RegistrationOptions,
) -> AffineStageReport:
    """Decide on and run the affine stage. ``images``: moving and fixed (``1 x *grid``) on the fixed
    network grid ``grid`` (shape, affine); the estimate uses the moving image on that grid widened
    by the stage's margin, so what the affine brings in from outside the grid is there."""
    if options.affine == "off":
        return AffineStageReport(False, "off")
    ncc, why = None, "asked for"
    if options.affine == "auto":
        ncc = float(alignment_ncc(images[0][None], images[1][None])[0])
        threshold = options.affine_settings.auto_threshold
        if ncc >= threshold:
            return AffineStageReport(False, f"not needed: alignment NCC {ncc:.3f} >= {threshold}", ncc)
        why = f"switched on: alignment NCC {ncc:.3f} < {threshold} (images pooled 4x after world resampling)"
    stage = AffineStage(options.affine_settings)
    margin = stage.margin_for(grid[0])
    wide = resample(_normalized(run, moving), moving.affine, *extend_grid(grid[0], grid[1], margin))
    device = _device(run)
    matrix = stage(wide[None].to(device), images[1][None].to(device), margin)[0]
    return AffineStageReport(True, why, ncc, voxel_map_to_world(matrix.cpu().double().numpy(), grid[1]))


def _inverse_field(
    deformation: Deformation,
    steps: int,
    grid_affine: np.ndarray,
    moving: Volume,
    matrix: np.ndarray | None,
    iterations: int,
) -> torch.Tensor:
    """The fixed-to-moving field ``dims x *moving_shape`` (mm, world axes) on the moving grid.

    ``deformation``: the pipeline's, on the network grid ``grid_affine`` (its velocity integrated
    with ``steps``, else ``iterations`` fixed-point iterations); ``matrix``: the affine stage's world
    map or None. The fixed point matching moving point ``q`` is ``y + w(y)`` with ``y = A^-1 q``.
    """
    inverse_ddf = invert_deformation(deformation, steps, iterations)[0].cpu().double()
    inverse_world = field_to_world(inverse_ddf, grid_affine)  # mm, on the network grid
    shape, back = tuple(moving.array.shape), None if matrix is None else np.linalg.inv(matrix)
    out = torch.empty((len(shape), *shape))  # float32, as written; slab by slab of the moving grid
    for rows in slabs(shape):
        points = world_coordinates(shape, moving.affine, rows)
        before = points if back is None else apply_affine(points, back)
        out[:, rows] = before + sample(inverse_world, grid_affine, before, padding="border") - points
    return out


def _inverse_consistency(residual: torch.Tensor, fixed: Volume) -> dict[str, float]:
    """Mean and 95th percentile (mm) of the inverse-consistency ``residual`` (``|p + u(p) + v(p + u(p)) - p|``
    per fixed voxel, :class:`_FixedGridOutputs`) over the fixed image's foreground."""
    mask = foreground(torch.from_numpy(normalize_intensity(fixed.array))[None, None])[0, 0]
    values = (residual[mask] if bool(mask.any()) else residual.flatten()).double().numpy()
    return {"mean_mm": float(values.mean()), "p95_mm": float(np.percentile(values, 95))}


def _network_probabilities(
    run: TrainedRun, image: Volume, align: str, for_volumes: bool = False
) -> tuple[torch.Tensor, np.ndarray, ModelSpaceReport]:
    """The seg net's class probabilities of ``image`` on the network grid, that grid's affine, and
    how the image was brought into the model's space (``for_volumes``: as :func:`seg_probabilities`')."""
    look_up_option(align, options.AFFINE, "align")
    on_grid, _, affine, report = _to_network_grid(run, image, align)
    return seg_probabilities(run, on_grid, affine, for_volumes), affine, report


SUBVOXEL_SHIFT = 0.25
"""``seg_net.subvoxel_average``'s shifts, voxels: each axis at -1/4 and +1/4, the centres of the two halves of
a voxel, so the 2^dims passes sample where a boundary falls within a voxel evenly."""


@torch.no_grad()
def seg_probabilities(
    run: TrainedRun, on_grid: torch.Tensor, affine: np.ndarray, for_volumes: bool = False
) -> torch.Tensor:
    """The seg net's softmax of one image on the network grid (``1 x *grid``, world matrix ``affine``),
    ``classes x *grid``; averaged with the mirrored image's where ``seg_net.mirror_average`` says
    (:func:`mirror_plan_of`), and over the image moved by :data:`SUBVOXEL_SHIFT` along every axis where
    ``seg_net.subvoxel_average`` says (each pass's probabilities moved back before they are averaged; ``auto``:
    where the caller reads volumes from them, ``for_volumes``)."""
    if not subvoxel_on(run, for_volumes):
        return _mirrored_probabilities(run, on_grid, affine)
    image = on_grid[0].cpu().numpy()
    return _shifted_sum(run, image, affine, ()).div_(2**image.ndim)


def subvoxel_on(run: TrainedRun, for_volumes: bool) -> bool:
    """Whether :func:`seg_probabilities` averages over quarter-voxel shifts for a caller that reads volumes
    (``for_volumes``) or a label map: ``seg_net.subvoxel_average`` ``on``, or ``auto`` for volumes."""
    mode = look_up_option(run.config.seg_net.subvoxel_average, options.SUBVOXEL_AVERAGE, "seg_net.subvoxel_average")
    return mode == "on" or (mode == "auto" and for_volumes)


def _shifted_sum(run: TrainedRun, image: np.ndarray, affine: np.ndarray, chosen: tuple[float, ...]) -> torch.Tensor:
    """The sum over the :data:`SUBVOXEL_SHIFT` shifts of the axes after ``chosen`` (the first axes' shifts) of
    the probabilities of ``image`` moved so, each moved back. Moving back is linear and separable, so each
    axis's is applied to the sum over the later axes: 2 + 4 + 8 moves of the class maps in 3-D, not 3 x 8."""
    if len(chosen) == image.ndim:
        return _mirrored_probabilities(run, torch.from_numpy(shift_cubic(image, chosen))[None], affine)
    axis, total = len(chosen), None
    for shift in (-SUBVOXEL_SHIFT, SUBVOXEL_SHIFT):
        back = [0.0] * image.ndim
        back[axis] = -shift
        part = shift_linear(_shifted_sum(run, image, affine, (*chosen, shift)), back)
        total = part if total is None else total.add_(part)
    return total


def _mirrored_probabilities(run: TrainedRun, on_grid: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    """The seg net's softmax of ``on_grid``, averaged with the mirrored image's where
    ``seg_net.mirror_average`` says (:func:`seg_probabilities`' one pass)."""
    x = on_grid[None].to(_device(run))
    probs = torch.softmax(run.seg_net(x)[0].float().cpu(), 0)
    plan = mirror_plan_of(run, affine, on_grid.ndim - 1)
    if plan is None:
        return probs
    axis, twins = plan
    mirrored = mirrored_softmax(run.seg_net, x, axis, twins)[0].cpu()
    return probs.add_(mirrored).mul_(0.5)  # in place: a 1 mm grid's maps are gigabytes


def mirror_plan_of(run: TrainedRun, affine: np.ndarray, spatial_dims: int) -> tuple[int, list[int]] | None:
    """The array axis and class twins of mirrored inference for ``run`` on a grid with ``affine``, or None
    where ``seg_net.mirror_average`` is off. ``auto`` is off unless the scheme names sides, every one with
    its twin, and the grid has an axis that runs left-right; ``on`` refuses where one of those is missing
    (a mirrored image's classes could not be read back, or the flip would not be a left-right one)."""
    mode = run.config.seg_net.mirror_average
    look_up_option(mode, options.MIRROR_AVERAGE, "seg_net.mirror_average")
    scheme, axis = run.scheme, lateral_axis(affine, spatial_dims)
    column = np.asarray(affine, dtype=np.float64)[:3, axis]
    problems = [
        f"{scheme.unpaired()} name a side without a twin in the run's label scheme" if scheme.unpaired() else "",
        "no class of the run's label scheme names a side (codes alone)" if not any(scheme.sides()) else "",
        "no axis of the model's grid runs left-right" if abs(column[0]) < 0.5 * np.linalg.norm(column) else "",
    ]
    problems = [p for p in problems if p]
    if mode == "off" or (mode == "auto" and problems):
        return None
    if problems:
        raise ValueError(
            f"seg_net.mirror_average=on (--mirror-average on): {'; '.join(problems)}, so mirrored inference would "
            "give wrong labels; use --mirror-average off (or auto)"
        )
    return axis, scheme.mirrored()


def segment_probabilities(run: TrainedRun, image: Volume, align: str = "auto") -> torch.Tensor:
    """The seg net's class probabilities of ``image`` on its own grid: ``classes x *image grid``
    (class ``c`` of ``run.scheme`` in row ``c``); ``align`` as :func:`segment_volume`'s. For callers
    that need the probabilities (a vote): 4 bytes per class and voxel, where labels alone are
    :func:`segment_volume`'s job."""
    probs, affine, _ = _network_probabilities(run, image, align)
    # probabilities, not labels, go back to the input grid: linear interpolation, argmax later
    return resample(probs, affine, image.array.shape, image.affine, padding="border")


def segment_volume(run: TrainedRun, image: Volume, align: str = "auto", for_volumes: bool = False) -> np.ndarray:
    """Label map of ``image`` on its own grid, in the original label codes; ``align``: bring it
    into the model's space first (``on``, ``off``, ``auto``: :func:`~deepatlas.inference.alignment.to_model_space`).
    The default is ``segment``'s (``--align auto``), so the API and the command give one answer for one
    scan; ``off`` for images known to be on the training images' alignment (a prepared dataset).

    The argmax of :func:`segment_probabilities`, taken slab by slab of the input grid
    (:func:`~deepatlas.inference.geometry.resample_argmax`): a 1 mm image's full-resolution
    probabilities would need gigabytes. ``for_volumes``: the label map is read for its volumes
    (``morphometry``), where ``seg_net.subvoxel_average: auto`` averages over quarter-voxel shifts."""
    return segment_with_report(run, image, align, for_volumes)[0]


def segment_with_report(
    run: TrainedRun, image: Volume, align: str = "auto", for_volumes: bool = False
) -> tuple[np.ndarray, ModelSpaceReport]:
    """:func:`segment_volume`'s label map, and how the image was brought into the model's space
    (its ``score``: how well what the seg net saw lines up with the template, the QC of ``segment``)."""
    probs, affine, report = _network_probabilities(run, image, align, for_volumes)
    classes = resample_argmax(probs, affine, image.array.shape, image.affine, padding="border")
    return run.scheme.decode(classes.numpy()), report


def segment_with_probabilities(
    run: TrainedRun, image: Volume, align: str = "auto", for_volumes: bool = False
) -> tuple[np.ndarray, torch.Tensor, ModelSpaceReport]:
    """:func:`segment_with_report`'s label map and report with :func:`segment_probabilities`'s class
    probabilities (``classes x *image grid``; the labels are their argmax), from one pass of the seg net
    and one alignment: ``segment --probabilities``, which asks for the 4 bytes per class and voxel."""
    probs, affine, report = _network_probabilities(run, image, align, for_volumes)
    probs = resample(probs, affine, image.array.shape, image.affine, padding="border")
    return run.scheme.decode(probs.argmax(0).numpy()), probs, report


Registrar = Callable[[Volume, Volume, Volume], Registration]
"""``(moving, fixed, moving_labels) -> Registration``: any registration method (a trained
run's net, or a classical one such as ANTs SyN in ``benchmarks/``)."""


def atlas_segment_volume(
    run: TrainedRun | None,
    atlases: list[tuple[Volume, Volume]],
    target: Volume,
    fusion: str = "weighted",
    window: int = NCC_WINDOW,
    registrar: Registrar | None = None,
    seg_net_weight: float = 0.0,
    align: str = "off",
) -> np.ndarray:
    """Segment ``target`` by registering each labelled atlas to it and fusing the warped labels.

    ``fusion``: ``majority`` (each atlas one vote per voxel) or ``weighted`` (each vote
    weighted by the local normalized cross-correlation between the warped atlas and the
    target around that voxel, so atlases that match locally count more). ``registrar``
    replaces the run's registration net (``run`` may then be None). ``seg_net_weight`` > 0
    adds the run's seg net as one more voter over its classes (its class probabilities of ``target``,
    brought into the model's space as ``align`` says, times the weight):
    :func:`~deepatlas.registration.fusion.vote_within_classes` decides the class with it and keeps the
    atlases' own code within the class (a cortical parcel inside the cortex); where no atlas voted for
    the winning class, its first code, as ``segment`` writes it.
    """
    if registrar is None:
        if run is None:
            raise ValueError("atlas segmentation needs a trained run or a registrar")
        registrar = partial(register_volumes, run)
    look_up_option(fusion, options.FUSION, "fusion")
    if not atlases:
        raise ValueError("atlas segmentation needs at least one atlas")
    check_seg_net_weight(seg_net_weight, run)
    if seg_net_weight > 0:  # the seg net's classes must hold every atlas's codes (or training's rule for those not)
        for _, labels in atlases:
            source = str(getattr(labels, "path", None) or "an atlas label map")
            run.scheme.encode(labels.array, source=source, unknown=run.config.data.unknown_labels)
    # the atlases vote over the codes their label maps hold (none merged, none lost)
    codes = sorted({int(c) for _, labels in atlases for c in np.unique(labels.array)})
    votes = atlas_votes(atlases, target, registrar, fusion, codes, window)
    if seg_net_weight <= 0:
        return np.asarray(codes)[votes.winner().numpy()]
    # the seg net votes over its classes: each code counts for its class (codes outside the classes as in
    # training); the class decided, the atlases' code within it is kept
    classes_of = run.scheme.encode(np.asarray(codes), unknown="background")  # unknown ones allowed above
    probabilities = segment_probabilities(run, target, align)
    classes, fine = vote_within_classes(
        votes, torch.from_numpy(classes_of.astype(np.int64)), probabilities, seg_net_weight
    )
    fine_codes = np.asarray(codes)[fine.clamp_min(0).numpy()]
    return np.where(fine.numpy() >= 0, fine_codes, run.scheme.decode(classes.numpy()))


ATLAS_VOTE_MIN_SHARE = 0.8
"""A run's default seg net vote (``seg_net.atlas_vote``) joins the atlases only when at least this share of
every atlas's labelled (non-zero) voxels carry codes of the run's classes: the atlases then follow the
label protocol the seg net learned. ixi-2mm's own DLMUSE maps: 91-92 % (codes 1, 46 and 69 lie outside
brain31's 31 classes); a map in another protocol (FreeSurfer's aseg codes) puts its cortex and white
matter, most of its voxels, on codes the classes do not hold, and its atlases would be outvoted by a seg
net that labels in another protocol."""


def atlases_share_in_classes(atlases: list[tuple[Volume, Volume]], scheme: LabelScheme) -> float:
    """The smallest share, over ``atlases``, of an atlas's labelled (non-zero) voxels whose codes are codes of
    ``scheme``'s classes (1 for an atlas with no labelled voxel)."""
    known = np.asarray(sorted({int(c) for codes in scheme.codes for c in codes}))
    shares = []
    for _, labels in atlases:
        labelled = np.asarray(labels.array)[np.asarray(labels.array) != 0]
        shares.append(float(np.isin(labelled, known).mean()) if labelled.size else 1.0)
    return min(shares, default=1.0)


def check_seg_net_weight(weight: float, run: TrainedRun | None) -> None:
    """A seg net weight is finite and >= 0, and > 0 only with a run (whose seg net votes)."""
    if not 0 <= weight < math.inf:  # also NaN; an infinite weight makes every vote infinite
        raise ValueError(f"--seg-net-weight must be a finite number >= 0 (0: the atlases alone), got {weight}")
    if weight > 0 and run is None:
        raise ValueError("--seg-net-weight needs a trained run: its seg net is the extra voter")


def atlas_votes(
    atlases: list[tuple[Volume, Volume]],
    target: Volume,
    registrar: Registrar,
    fusion: str,
    labels: LabelScheme | list[int],
    window: int = NCC_WINDOW,
    unknown: str = "error",
) -> LabelVotes:
    """Every atlas registered to ``target`` and its labels counted through the registration, softly
    (:func:`_count_atlas`; ``fusion``: weighted by local NCC, or one vote each). ``labels``: vote
    over a scheme's classes (a code outside it is an error, or background, as ``unknown`` says) or
    over a sorted list of label codes (row ``i``: ``labels[i]``)."""
    if isinstance(labels, LabelScheme):
        scheme, rows = labels, labels.num_classes

        def index(codes: np.ndarray, source: str) -> np.ndarray:
            return scheme.encode(codes, source=source, unknown=unknown)
    else:
        sorted_codes, rows = labels, len(labels)

        def index(codes: np.ndarray, source: str) -> np.ndarray:
            return np.searchsorted(sorted_codes, codes)

    votes = LabelVotes(rows, target.array.shape, dtype=torch.float64)
    target_t = torch.from_numpy(normalize_intensity(target.array))[None, None]
    for image, atlas_labels in atlases:
        result = registrar(image, target, atlas_labels)
        weight = None
        if fusion == "weighted":
            warped = torch.from_numpy(normalize_intensity(result.warped))[None, None]
            weight = similarity_weight(warped, target_t, window)
        classes = index(atlas_labels.array, str(getattr(atlas_labels, "path", None) or "an atlas label map"))
        _count_atlas(
            votes, (torch.from_numpy(np.asarray(classes).astype(np.int64)), atlas_labels.affine), result, weight
        )
    return votes


def _count_atlas(
    votes: LabelVotes, atlas: tuple[torch.Tensor, np.ndarray], result: Registration, weight: torch.Tensor | None
) -> None:
    """One atlas's soft vote: each target voxel votes for the labels of the atlas voxels around the
    point it maps to, in proportion to their linear interpolation weights (times ``weight``, the
    local NCC), slab by slab of the target grid. ``atlas``: its class indices on its own grid and that
    grid's affine. Hard votes of each atlas's interpolated labels threw the partial volumes away;
    on ixi-2mm validation the soft vote added about half a point of fused Dice (docs/results.md,
    "Label interpolation")."""
    classes, affine = atlas
    dims, shape = classes.ndim, tuple(votes.votes.shape[1:])
    for rows in slabs(shape):
        points = world_coordinates(shape, result.affine, rows) + torch.from_numpy(result.displacement[:, rows])
        corner_labels, shares = label_corners(classes, voxel_coordinates(points.reshape(dims, -1), affine))
        votes.add_shares(corner_labels, shares, rows, None if weight is None else weight.reshape(shape)[rows])
