"""Structure resizing: labelled training images whose structures grow or shrink, labels with them.

A seg net trained on healthy adults saturates on anatomy beyond them: elderly ventricles twice the
largest it has seen are measured at half their size (issue 38, docs/results.md). Label-driven
deformations (as SynthSeg's synthesis varies shapes) show it sizes the training set does not hold:
per labelled image, a few structures drawn at random are each grown or shrunk by the flow of the
gradient of their smoothed mask (:mod:`deepatlas.registration.growth`, the deformation with which
:mod:`deepatlas.evaluation.atrophy` makes test brains of known volume change), image and labels moved
together, so the pair stays exact.
``augment.resize`` (largest strength, voxels), ``augment.resize_structures`` (how many per image) and
``augment.resize_classes`` (which structures may be drawn) switch it on; it runs inside the run's
augmentation (``augment.enabled``), before the random affine.
"""

from __future__ import annotations

import numpy as np
import torch

from deepatlas.registration.fields import resample_cubic, warp
from deepatlas.registration.growth import growth_flow, mask_direction

SIGMA_VOXELS = 2.0
"""Gaussian smoothing of a structure's mask before its gradient: :data:`deepatlas.evaluation.atrophy.SIGMA_MM`
(4 mm) at the 2 mm grid the models are trained on, smooth enough for an invertible flow."""


def resize_field(labels: torch.Tensor, classes: list[int], strengths: list[float]) -> torch.Tensor:
    """``1 x dims x *spatial``: the displacement (voxels, pull back) that grows each class of ``classes``
    in ``labels`` (``*spatial`` class indices) by its strength (< 0: shrinks it), the flow of
    :mod:`deepatlas.registration.growth` (the synthetic-atrophy benchmark's family)."""
    return growth_flow([mask_direction(labels == k, SIGMA_VOXELS) for k in classes], strengths)


def resize_structures(
    images: torch.Tensor,
    labels: torch.Tensor,
    strength: float,
    count: int,
    generator: torch.Generator,
    eligible: list[int] | None = None,
    image_interpolation: str = "linear",
    label_sampling: str = "nearest",
    sampled_classes: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` (``image_interpolation``: ``linear``, or ``cubic``: :func:`resample_cubic`, on the CPU) and
    ``labels`` (``label_sampling``: ``nearest``, or ``sampled``: :func:`sample_labels_stochastic`, at the
    boundaries of ``sampled_classes`` only when given) of each item
    (``B x 1 x *spatial``) moved by the flow
    of ``sum_k s_k * direction_k`` over ``count`` structures present in it (drawn at random among the
    class indices ``eligible``, default every one; background excluded), each strength ``s_k`` uniform in
    ``[-strength, strength]`` voxels: > 0 grows a structure, < 0 shrinks it. Every draw comes from
    ``generator`` (CPU)."""
    if strength <= 0 or count <= 0:
        return images, labels
    moved_images, moved_labels = [], []
    for image, label in zip(images, labels):
        present = [int(k) for k in torch.unique(label) if int(k) > 0 and (eligible is None or int(k) in eligible)]
        if not present:
            moved_images.append(image)
            moved_labels.append(label)
            continue
        order = torch.randperm(len(present), generator=generator)[:count].tolist()
        strengths = ((torch.rand(len(order), generator=generator) * 2 - 1) * strength).tolist()
        field = resize_field(label[0], [present[i] for i in order], strengths)
        moved_images.append(_moved_image(image, field, image_interpolation))
        moved_labels.append(_moved_labels(label, field, label_sampling, generator, sampled_classes))
    return torch.stack(moved_images), torch.stack(moved_labels)


def _moved_image(image: torch.Tensor, field: torch.Tensor, interpolation: str) -> torch.Tensor:
    """One item's image (``C x *spatial``) at ``x + field(x)`` (``field``: ``1 x dims x *spatial``)."""
    if interpolation == "linear":
        return warp(image[None].float(), field)[0].to(image.dtype)
    channels = [resample_cubic(c.detach().float().cpu().numpy(), field[0].float().cpu()) for c in image]
    return torch.from_numpy(np.stack(channels)).to(image.device, image.dtype)


def _moved_labels(
    label: torch.Tensor,
    field: torch.Tensor,
    sampling: str,
    generator: torch.Generator,
    sampled_classes: list[int] | None = None,
) -> torch.Tensor:
    """One item's label map (``1 x *spatial``) at ``x + field(x)``, by ``sampling`` (``nearest`` / ``sampled``).
    With ``sampled_classes``, a voxel keeps its drawn label only where the drawn or the nearest label is one of
    them: the other structures' boundaries move by nearest neighbour."""
    if sampling == "sampled":
        drawn = sample_labels_stochastic(label, field[0], generator)
        if sampled_classes is None:
            return drawn
    nearest = warp(label[None].float(), field, "nearest")[0].round().to(label.dtype)
    if sampling != "sampled":
        return nearest
    chosen = torch.tensor(sampled_classes, dtype=label.dtype, device=label.device)
    keep = torch.isin(drawn, chosen) | torch.isin(nearest, chosen)
    return torch.where(keep, drawn, nearest)


def sample_labels_stochastic(label: torch.Tensor, field: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``label`` (``C x *spatial`` class indices) at ``x + field(x)`` (``field``: ``dims x *spatial``, voxels),
    each voxel taking the label of one of the ``2^dims`` grid points around its source point, drawn with that
    point's linear-interpolation weight (per axis, the upper neighbour with the fraction's chance; the border
    repeated): the expected one-hot map is the linearly warped one. Nearest neighbour keeps every label where
    the source point is less than half a voxel away, so a boundary moved by a fraction of a voxel (a small
    growth) leaves the labels as they were while the linearly resampled image changes; drawn labels move
    with it by its partial volume on average. Draws from ``generator`` (CPU)."""
    spatial = tuple(label.shape[1:])
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in spatial], indexing="ij")
    index = torch.zeros(spatial, dtype=torch.long)
    for axis, n in enumerate(spatial):
        point = (axes[axis] + field[axis].detach().float().cpu()).clamp(0, n - 1)
        lower = point.floor()
        upper = torch.rand(spatial, generator=generator) < (point - lower)
        index = index * n + (lower.long() + upper.long()).clamp_max(n - 1)
    flat = label.reshape(label.shape[0], -1)
    return flat[:, index.reshape(-1).to(label.device)].reshape(label.shape)


def resize_indices(names: list[str], scheme_names: list[str], key: str = "resize_classes") -> list[int] | None:
    """The class indices of ``augment.<key>`` (``names``: ``resize_classes`` or ``resize_sampled_classes``) in a
    label map's ``scheme_names``; ``None`` (every structure) when it is empty. A name the label map lacks, or its
    background, is refused with the names it has."""
    if not names:
        return None
    unknown = [n for n in names if n not in scheme_names[1:]]
    if unknown:
        raise ValueError(
            f"config augment.{key}: {unknown} not among the label map's structures; choose from {scheme_names[1:]}"
        )
    return [scheme_names.index(n) for n in names]
