"""Applying a trained run to images on their own grids: register, segment, atlas-segment.

Inputs of any shape, spacing and orientation are resampled (in world coordinates)
onto the networks' grid (:func:`network_grid`) and every result is mapped back onto
the input's own grid, so outputs overlay the inputs in ITK-SNAP, 3D Slicer or
FSLeyes. An input already on the training grid is not resampled at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from deepatlas import options
from deepatlas.data.io import Volume, normalize_intensity
from deepatlas.inference.geometry import (
    field_to_world,
    jacobian_determinant_world,
    network_grid,
    resample,
    sample,
    world_coordinates,
)
from deepatlas.inference.run import TrainedRun
from deepatlas.losses.similarity import local_ncc_map
from deepatlas.options import look_up_option
from deepatlas.registration import RegistrationPipeline


@dataclass
class Registration:
    """A registration of ``moving`` onto ``fixed``, everything on the fixed image's grid.

    Attributes:
        warped: the moving image resampled at ``p + displacement(p)`` (its original intensities).
        displacement: ``dims x *fixed_shape`` in mm along the world (NIfTI RAS) axes; the moving
            point matching fixed point ``p`` is ``p + displacement(p)``.
        jacobian: determinant of the Jacobian of ``p -> p + displacement(p)`` (<= 0: folding).
        warped_labels: the moving label map (original codes), nearest neighbour, if given.
        affine: the fixed image's affine, for writing the outputs.
    """

    warped: np.ndarray
    displacement: np.ndarray
    jacobian: np.ndarray
    warped_labels: np.ndarray | None
    affine: np.ndarray


def _on_grid(run: TrainedRun, volume: Volume, shape: tuple[int, ...], affine: np.ndarray) -> torch.Tensor:
    """``volume``, normalised as in training, resampled onto the network grid ``(shape, affine)``."""
    array = normalize_intensity(volume.array) if run.config.data.normalize else volume.array.astype(np.float32)
    return resample(torch.from_numpy(array)[None], volume.affine, shape, affine)


def _check_dims(run: TrainedRun, *volumes: Volume) -> None:
    """Refuse an image whose number of dimensions is not the model's, naming the file."""
    for volume in volumes:
        if volume.array.ndim != len(run.grid_shape):
            raise ValueError(
                f"{volume.path}: a {volume.array.ndim}D image, but the model {run.path} was trained on "
                f"{len(run.grid_shape)}D images"
            )


def _prepare(run: TrainedRun, volume: Volume) -> tuple[torch.Tensor, tuple[int, ...], np.ndarray]:
    _check_dims(run, volume)
    shape, affine = network_grid(volume.array.shape, volume.affine, run.grid_shape, run.grid_affine)
    return _on_grid(run, volume, shape, affine), shape, affine


def _device(run: TrainedRun) -> torch.device:
    return next(run.reg_net.parameters()).device


def register_volumes(
    run: TrainedRun,
    moving: Volume,
    fixed: Volume,
    moving_labels: Volume | None = None,
    pipeline: RegistrationPipeline | None = None,
) -> Registration:
    """Register ``moving`` to ``fixed`` as the run's pipeline says (net, then refinement), or as
    ``pipeline`` says."""
    _check_dims(run, moving, fixed)
    fixed_t, grid_shape, grid_affine = _prepare(run, fixed)
    # the moving image goes onto the *fixed* image's network grid: one grid per pair keeps
    # their world relationship (pre-alignment) intact
    moving_t = _on_grid(run, moving, grid_shape, grid_affine)
    device = _device(run)
    ddf = (
        (pipeline or run.pipeline)(moving_t[None].to(device), fixed_t[None].to(device)).field[0].detach().cpu().double()
    )
    world = field_to_world(ddf, grid_affine)
    # resample() returns the field untouched when the fixed image is on the network grid
    displacement = resample(world, grid_affine, fixed.array.shape, fixed.affine, padding="border")
    fixed_points = world_coordinates(fixed.array.shape, fixed.affine)
    target_points = fixed_points + displacement
    warped = sample(torch.from_numpy(moving.array.astype(np.float32))[None], moving.affine, target_points)[0]
    labels = None
    if moving_labels is not None:
        if moving_labels.array.shape != moving.array.shape:
            raise ValueError(
                f"{moving_labels.path}: label map shape {moving_labels.array.shape} does not match "
                f"the moving image {moving.array.shape}"
            )
        codes = torch.from_numpy(moving_labels.array.astype(np.int32))[None]
        labels = sample(codes, moving_labels.affine, target_points, mode="nearest")[0].numpy()
    jacobian = jacobian_determinant_world(displacement, fixed.affine)
    return Registration(warped.numpy(), displacement.float().numpy(), jacobian.numpy(), labels, fixed.affine)


def segment_volume(run: TrainedRun, image: Volume) -> np.ndarray:
    """Label map of ``image`` on its own grid, in the original label codes."""
    on_grid, shape, affine = _prepare(run, image)
    with torch.no_grad():
        probs = torch.softmax(run.seg_net(on_grid[None].to(_device(run)))[0].cpu(), 0)
    # probabilities, not labels, go back to the input grid: linear interpolation then argmax
    back = resample(probs, affine, image.array.shape, image.affine, padding="border")
    classes = back.argmax(0).numpy()
    return run.scheme.decode(classes)


Registrar = Callable[[Volume, Volume, Volume], Registration]
"""``(moving, fixed, moving_labels) -> Registration``: any registration method (a trained
run's net, or a classical one such as ANTs SyN in ``benchmarks/``)."""


def atlas_segment_volume(
    run: TrainedRun | None,
    atlases: list[tuple[Volume, Volume]],
    target: Volume,
    fusion: str = "weighted",
    window: int = 7,
    registrar: Registrar | None = None,
) -> np.ndarray:
    """Segment ``target`` by registering each labelled atlas to it and fusing the warped labels.

    ``fusion``: ``majority`` (each atlas one vote per voxel) or ``weighted`` (each vote
    weighted by the local normalized cross-correlation between the warped atlas and the
    target around that voxel, so atlases that match locally count more). ``registrar``
    replaces the run's registration net (``run`` may then be None).
    """
    if registrar is None:
        if run is None:
            raise ValueError("atlas segmentation needs a trained run or a registrar")
        registrar = partial(register_volumes, run)
    look_up_option(fusion, options.FUSION, "fusion")
    if not atlases:
        raise ValueError("atlas segmentation needs at least one atlas")
    codes = sorted({int(c) for _, labels in atlases for c in np.unique(labels.array)})
    votes = torch.zeros((len(codes),) + target.array.shape, dtype=torch.float64)
    target_t = torch.from_numpy(normalize_intensity(target.array))[None, None]
    for image, labels in atlases:
        result = registrar(image, target, labels)
        weight = torch.ones(target.array.shape, dtype=torch.float64)
        if fusion == "weighted":
            warped = torch.from_numpy(normalize_intensity(result.warped))[None, None]
            weight = local_ncc_map(warped, target_t, window)[0, 0].double().clamp_min(1e-3)
        index = torch.from_numpy(np.searchsorted(codes, result.warped_labels).astype(np.int64))
        votes.scatter_add_(0, index[None], weight[None])
    return np.asarray(codes)[votes.argmax(0).numpy()]
