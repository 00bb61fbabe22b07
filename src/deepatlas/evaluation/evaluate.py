"""Segmentation and registration quality of trained nets on a labelled image set."""

from __future__ import annotations

import torch
from torch import nn

from deepatlas.data.dataset import ImageSet
from deepatlas.evaluation.metrics import dice_per_class, finite_mean, fold_fraction
from deepatlas.inference.predict import register_with_net, segment_with_net
from deepatlas.networks.warp import warp_labels


def consecutive_pairs(n: int) -> list[tuple[int, int]]:
    """Each subject registered to the next (the last to the first): n declared, non-random pairs."""
    return [(i, (i + 1) % n) for i in range(n)] if n > 1 else []


def evaluate_image_set(
    images: ImageSet,
    seg_net: nn.Module | None = None,
    reg_net: nn.Module | None = None,
    pairs: list[tuple[int, int]] | None = None,
    amp: torch.dtype | None = None,
) -> dict:
    """Mean segmentation Dice (seg net vs labels), registration Dice (warped moving labels vs
    fixed labels) and fold fraction, over the labelled subjects of ``images``.

    The nets alone on images already in memory on the training grid: what training validates
    with and sweeps compare runs by. For a trained run's scores as ``deepatlas evaluate``
    reports them (each image on its own grid, refinement, HD95, tables written), call
    :func:`deepatlas.evaluation.evaluate_run.evaluate_run`."""
    labelled = images.labelled_indices()
    k = images.scheme.num_classes
    result: dict = {}
    if seg_net is not None and labelled:
        pred = segment_with_net(seg_net, images.images[labelled], amp=amp)
        per_subject = [dice_per_class(p, images.labels[i], k) for p, i in zip(pred, labelled)]
        per_class = torch.stack(per_subject)
        result["seg_dice"] = finite_mean(per_class)
        result["seg_dice_per_class"] = [finite_mean(c) for c in per_class.T]
    if reg_net is not None:
        pairs = pairs if pairs is not None else consecutive_pairs(len(labelled))
        pairs = [(labelled[a], labelled[b]) for a, b in pairs] if pairs else []
        if pairs:
            moving = images.images[[a for a, _ in pairs]]
            fixed = images.images[[b for _, b in pairs]]
            ddf = register_with_net(reg_net, moving, fixed, amp=amp)
            warped = warp_labels(images.labels[[a for a, _ in pairs]].to(torch.int16), ddf)
            per_pair = torch.stack([dice_per_class(w, images.labels[b], k) for w, (_, b) in zip(warped, pairs)])
            before = torch.stack([dice_per_class(images.labels[a], images.labels[b], k) for a, b in pairs])
            result["reg_dice"] = finite_mean(per_pair)
            result["reg_dice_before"] = finite_mean(before)
            result["folds"] = sum(fold_fraction(d[None]) for d in ddf) / len(pairs)
    return result
