"""Supervised segmentation loss on labelled images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dice_ce_loss(
    logits: torch.Tensor, labels: torch.Tensor, dice_weight: float = 1.0, ce_weight: float = 1.0, smooth: float = 1e-5
) -> torch.Tensor:
    """Soft Dice (foreground classes) + cross-entropy, from logits and class indices.

    The same value as MONAI's ``DiceCELoss(include_background=False, to_onehot_y=True,
    softmax=True)``, computed without the one-hot target map: with 32 classes that
    map is 32x the label map, and building it took longer than the seg net itself
    on CPU. Per-class overlaps come from ``gather`` and ``scatter_add`` instead.
    """
    batch, classes = logits.shape[:2]
    target = labels[:, 0].long()
    log_probs = torch.log_softmax(logits, dim=1)  # once, for both terms
    ce = F.nll_loss(log_probs, target)
    probs = log_probs.exp().reshape(batch, classes, -1)
    flat = target.reshape(batch, 1, -1)
    hit = probs.gather(1, flat).squeeze(1)
    intersection = torch.zeros(batch, classes, device=logits.device, dtype=probs.dtype).scatter_add_(1, flat[:, 0], hit)
    target_sum = torch.zeros_like(intersection).scatter_add_(1, flat[:, 0], torch.ones_like(hit))
    dice = (2 * intersection + smooth) / (probs.sum(-1) + target_sum + smooth)
    return dice_weight * (1 - dice[:, 1:].mean()) + ce_weight * ce


class SupervisedSegLoss(nn.Module):
    """Soft Dice + cross-entropy between logits ``Bx(K+1)xHxW[xD]`` and class indices ``Bx1xHxW[xD]``.

    Dice alone is slow to start on small structures; cross-entropy alone favours
    the large ones; their sum trains both.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight = dice_weight, ce_weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return dice_ce_loss(logits.float(), labels, self.dice_weight, self.ce_weight)
