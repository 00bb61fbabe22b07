"""Synthesised labelled images: a labelled image and its labels warped onto an unlabelled subject.

DeepAtlas' weak supervision teaches the seg net on *real* unlabelled images with *approximate*
labels (a labelled image's labels warped onto them), and a seg net so taught is capped near its
teachers' Dice. The complement (Zhao et al., CVPR 2019, "Data augmentation using learned
transformations for one-shot medical image segmentation") warps the labelled *image and its labels
together* with the field that registration found to an unlabelled subject: the pair is exact
whatever the registration's error, and its shape is a real subject's. Its appearance comes from
that subject too (:func:`match_appearance`), so the seg net sees the population's shapes and
contrasts, with labels it can trust.

The teachers' cache (:mod:`deepatlas.training.teachers`) makes one synthesised pair per
unlabelled image from the registration it runs anyway (``teachers.synthesis``); the trainer's
distilled step gives that share of its taught places to them.
"""

from __future__ import annotations

import torch

from deepatlas.registration.greedy import gaussian_smooth

GAIN_RANGE = (0.5, 2.0)
"""Bounds of a class's intensity gain: a class nearly constant in one image (background, a
structure a few voxels wide) must not blow the other's noise up or flatten it."""

BLEND_SIGMA = 1.0
"""Voxels of Gaussian blur of the per-class gain and offset maps: a class's mapping fades into its
neighbour's over about a voxel, so the boundaries the seg net learns are the image's, not steps
that the mapping itself would draw along the warped labels."""


def class_statistics(image: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ``image`` in each class of ``labels`` (``classes`` values;
    zeros where a class is absent), from one pass of ``scatter_add``."""
    flat, index = image.reshape(-1).double(), labels.reshape(-1).long()
    count = torch.zeros(classes, dtype=torch.float64, device=image.device).scatter_add_(0, index, torch.ones_like(flat))
    total = torch.zeros_like(count).scatter_add_(0, index, flat)
    squares = torch.zeros_like(count).scatter_add_(0, index, flat * flat)
    mean = total / count.clamp_min(1)
    spread = (squares / count.clamp_min(1) - mean * mean).clamp_min(0).sqrt()
    return mean, spread


def match_appearance(moved: torch.Tensor, labels: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """``moved`` (a labelled image warped onto ``target``, ``1 x 1 x *spatial``) with each class of
    ``labels`` (its warped labels) mapped linearly to the mean and spread of ``target`` there.

    The warped labels cover the target's anatomy approximately, which is all a class's statistics
    need. Gains are bounded by :data:`GAIN_RANGE` (a class without spread in ``moved`` keeps gain 1),
    the gain and offset maps are blurred by :data:`BLEND_SIGMA` voxels, and the result is clipped to
    the target's intensity range. The labels stay exactly those of the returned image.
    """
    mean_m, spread_m = class_statistics(moved, labels, classes)
    mean_t, spread_t = class_statistics(target, labels, classes)
    gain = torch.where(spread_m > 1e-6, spread_t / spread_m.clamp_min(1e-6), torch.ones_like(spread_m))
    gain = gain.clamp(*GAIN_RANGE)
    offset = mean_t - gain * mean_m
    index = labels.long()
    maps = torch.cat([gain.float()[index], offset.float()[index]], dim=1)  # 1 x 2 x *spatial
    maps = gaussian_smooth(maps, BLEND_SIGMA)
    out = moved.float() * maps[:, :1] + maps[:, 1:]
    return out.clamp(float(target.min()), float(target.max()))
