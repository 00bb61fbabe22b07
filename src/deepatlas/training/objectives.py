"""The DeepAtlas objectives: what one registration step and one segmentation step minimise.

Shapes: images ``Bx1xHxW[xD]`` in [0, 1], labels ``Bx1xHxW[xD]`` class indices,
fields ``B x spatial_dims x HxW[xD]`` in voxels (see :mod:`deepatlas.networks.warp`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deepatlas.config import LossConfig
from deepatlas.data.pairs import PairBatch
from deepatlas.losses import AnatomyLoss, SupervisedSegLoss, make_regularizer, make_similarity, soft_dice_loss
from deepatlas.losses.inverse_consistency import inverse_consistency_loss
from deepatlas.networks.warp import warp_image

# images, labels -> the same, randomly changed (deepatlas.data.augment.augment with its settings)
Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class DeepAtlasObjectives(nn.Module):
    """Losses of both phases, given the two networks.

    The frozen network of a phase runs under ``torch.no_grad``: in the registration
    phase the seg net only supplies segmentations of unlabelled images, in the
    segmentation phase the reg net only supplies displacement fields.
    """

    def __init__(
        self, reg_net: nn.Module, seg_net: nn.Module, num_classes: int, cfg: LossConfig, teacher_loss: str = "anatomy"
    ) -> None:
        super().__init__()
        self.reg_net, self.seg_net, self.num_classes, self.cfg = reg_net, seg_net, num_classes, cfg
        self.teacher_loss = teacher_loss  # options.TEACHER_LOSS
        self.similarity = make_similarity(cfg.similarity, cfg.lncc_window)
        self.regularizer = make_regularizer(cfg.regularizer)
        self.anatomy = AnatomyLoss(downsample=cfg.anatomy_downsample)
        self.supervised = SupervisedSegLoss(dice_weight=cfg.supervised_dice_weight)

    def _segmentation(
        self, image: torch.Tensor, labels: torch.Tensor | None, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A segmentation on the anatomy loss grid: manual labels, or (``labels`` None) the seg net's softmax."""
        if labels is not None:
            return self.anatomy.from_labels(labels, self.num_classes)
        if logits is None:
            logits = self.seg_net(image)
        return self.anatomy.from_logits(logits)

    def registration(self, batch: PairBatch, use_anatomy: bool = True) -> dict[str, torch.Tensor]:
        """Similarity + regulariser (+ inverse consistency, + anatomy) for the reg net; the seg net is frozen."""
        moving, fixed = batch.moving, batch.fixed
        ddf = self.reg_net(moving, fixed)
        sim = self.similarity(warp_image(moving, ddf), fixed)
        reg = self.regularizer(ddf)
        total = self.cfg.similarity_weight * sim + self.cfg.regularizer_weight * reg
        out = {"similarity": sim, "regularizer": reg}
        if self.cfg.inverse_consistency_weight > 0:
            icon = inverse_consistency_loss(ddf, self.reg_net(fixed, moving), self.cfg.inverse_consistency)
            total = total + self.cfg.inverse_consistency_weight * icon
            out["inverse_consistency"] = icon
        if use_anatomy and self.cfg.anatomy_weight_reg > 0:
            with torch.no_grad():
                moving_seg = self._segmentation(moving, batch.moving_labels)
                fixed_seg = self._segmentation(fixed, batch.fixed_labels)
            anat = self.anatomy(moving_seg, fixed_seg, ddf)
            total = total + self.cfg.anatomy_weight_reg * anat
            out["anatomy"] = anat
        out["loss"] = total
        return out

    def segmentation(
        self, batch: PairBatch, teachers: torch.Tensor | None = None, augment: Augment | None = None
    ) -> dict[str, torch.Tensor]:
        """Supervised loss on the labelled image(s) + anatomy loss through the frozen reg net.

        With exactly one image of the pair labelled this is DeepAtlas' weak supervision:
        the labelled image's labels, warped onto the unlabelled one (or the unlabelled
        one's prediction warped onto them), train the seg net where there are no labels.
        ``teachers`` (``B x 1 x *spatial`` class indices, :mod:`deepatlas.training.teachers`):
        labels already warped onto the unlabelled images by refined registration; then the
        anatomy loss compares the seg net's prediction of those images with them directly, on its
        coarse grid (``teacher_loss`` ``anatomy``) or, as manual labels, by DiceCE at full
        resolution (``supervised``). ``augment`` changes the labelled images of the supervised
        loss only (:mod:`deepatlas.data.augment`): the anatomy loss needs them as they are, aligned
        with the pair's registration.
        """
        if not (batch.moving_labelled or batch.fixed_labelled):
            raise ValueError("a segmentation step needs at least one labelled image per pair")
        images, labels = batch.distinct_labelled()
        if augment is not None:
            images, labels = augment(images, labels)
        sup = self.supervised(self.seg_net(images), labels)
        out = {"supervised": sup, "loss": self.cfg.supervised_weight * sup}
        if (batch.moving_labelled and batch.fixed_labelled) or self.cfg.anatomy_weight_seg <= 0:
            return out
        # the labelled side enters the anatomy loss as its labels: only the unlabelled side needs the net
        logits = self.seg_net(batch.fixed if batch.moving_labelled else batch.moving)
        if teachers is not None and self.teacher_loss == "supervised":
            anat = self.supervised(logits, teachers)
        elif teachers is not None:
            target = self.anatomy.from_labels(teachers, self.num_classes)
            anat = soft_dice_loss(self.anatomy.from_logits(logits), target, self.anatomy.include_background)
        else:
            with torch.no_grad():
                ddf = self.reg_net(batch.moving, batch.fixed)
            # each side: its labels where it has them, else the logits (of the one unlabelled side)
            moving_seg = self._segmentation(batch.moving, batch.moving_labels, logits)
            fixed_seg = self._segmentation(batch.fixed, batch.fixed_labels, logits)
            anat = self.anatomy(moving_seg, fixed_seg, ddf)
        out["anatomy"] = anat
        out["loss"] = out["loss"] + self.cfg.anatomy_weight_seg * anat
        return out

    def supervised_only(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Seg-net pre-training (and the seg-only baseline): DiceCE on labelled images."""
        sup = self.supervised(self.seg_net(images), labels)
        return {"supervised": sup, "loss": self.cfg.supervised_weight * sup}
