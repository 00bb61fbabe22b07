"""What each training step trains on: which images, drawn how, moved to the device.

One :class:`BatchDrawer` per trainer. Every draw comes from one generator (the trainer saves
and restores its state), so a resumed run draws what an uninterrupted one would; with several
processes every one draws the whole global batch from the same state and keeps its slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from deepatlas.config import ScheduleConfig
from deepatlas.data.dataset import ImageSet
from deepatlas.data.pairs import GROUPS, PairBatch, PairSampler
from deepatlas.training.distributed import World


class BatchDrawer:
    """Pairs for registration and segmentation steps, labelled images for supervised steps, and
    labelled + taught images for distilled steps (:mod:`deepatlas.training.teachers`).

    Args:
        train: the training images (``N x 1 x *spatial`` on the CPU) and which labels may be used.
        schedule: the batch size and the pair groups' weights.
        generator: the source of every draw (the trainer's: saved in its checkpoints).
        world: the training processes; this one keeps its slice of each global batch.
        device: where the drawn images and labels go.
    """

    def __init__(
        self, train: ImageSet, schedule: ScheduleConfig, generator: torch.Generator, world: World, device: torch.device
    ) -> None:
        self.train_set, self.size, self.generator, self.device = train, schedule.batch_size, generator, device
        self.world, self.slice = world, world.local_slice(schedule.batch_size)
        self.labelled = train.labelled_indices()
        if not self.labelled:
            raise ValueError("the training set has no labelled image")
        self.unlabelled = [i for i in range(len(train.ids)) if i not in set(self.labelled)]
        for key in ("reg_pair_weights", "seg_pair_weights"):  # a typo must not pass for "no such pairs"
            if unknown := sorted(set(getattr(schedule, key)) - set(GROUPS)):
                raise ValueError(f"config schedule.{key}: unknown pair groups {unknown}; groups are {list(GROUPS)}")
        has_label = train.has_label.tolist()
        self.reg_pairs = PairSampler(has_label, schedule.reg_pair_weights, generator)
        try:
            self.seg_pairs: PairSampler | None = PairSampler(has_label, schedule.seg_pair_weights, generator)
        except ValueError:  # every image labelled: segmentation steps are supervised only
            self.seg_pairs = None

    def to_device(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``B x 1 x *spatial`` and labels (long) of the training images at ``indices``."""
        images = self.train_set.images[indices].to(self.device, non_blocking=True)
        labels = self.train_set.labels[indices].to(self.device, non_blocking=True).long()
        return images, labels

    def pairs(
        self, sampler: PairSampler, group: str | None = None, swap: Callable[[list[int]], list[int]] | None = None
    ) -> PairBatch:
        """A batch from ``sampler``; ``swap`` may replace the unlabelled images drawn (teachers)."""
        group, moving, fixed = sampler.sample(self.size, group)
        moving, fixed = moving[self.slice], fixed[self.slice]
        labelled_m, labelled_f = GROUPS[group]
        if swap is not None:
            moving, fixed = (
                side if labelled else swap(side) for side, labelled in ((moving, labelled_m), (fixed, labelled_f))
            )
        (m_img, m_lab), (f_img, f_lab) = self.to_device(moving), self.to_device(fixed)
        return PairBatch(
            group, m_img, f_img, m_lab if labelled_m else None, f_lab if labelled_f else None, moving, fixed
        )

    def labelled_batch(self) -> list[int]:
        """This process's labelled images for a supervised step, distinct within the batch.

        Drawn without replacement: a batch holding one image twice costs a second forward pass and
        teaches nothing new. With fewer labelled images than the batch size (one-shot), one process
        takes each once (a smaller, cheaper batch); several processes still need a full global
        batch to slice, so there the draw repeats images."""
        count = len(self.labelled)
        if count >= self.size:
            pick = torch.randperm(count, generator=self.generator)[: self.size].tolist()
        elif self.world.size == 1:
            return list(self.labelled)
        else:
            pick = torch.randint(count, (self.size,), generator=self.generator).tolist()
        return [self.labelled[i] for i in pick][self.slice]

    def distil_batch(
        self, step: int, teachable: Callable[[list[int]], list[int]], taught_share: float = 0.5
    ) -> tuple[list[int], list[int]]:
        """This process's images of a distilled step and, of them, the taught (unlabelled) ones,
        which come last: ``taught_share`` of the images taught, the rest labelled, a fractional
        place given to the taught side on the steps where the running total reaches a whole image
        (0.5: half each, an odd half alternating between steps; at batch 1, 0.75: three taught
        steps in four); ``teachable`` may swap taught images for ones that have a teacher."""
        due = taught_share * self.size  # taught images per step, on average
        taught_count = math.floor((step + 1) * due + 1e-9) - math.floor(step * due + 1e-9)
        count, wanted = len(self.labelled), self.size - taught_count
        pick = torch.randperm(count, generator=self.generator)[:wanted] if count >= wanted else None
        if pick is None:  # fewer labelled images than their share of the batch: repeat some
            pick = torch.randint(count, (wanted,), generator=self.generator)
        draw = torch.randint(len(self.unlabelled), (taught_count,), generator=self.generator).tolist()
        taught = teachable([self.unlabelled[k] for k in draw])
        chosen = ([self.labelled[i] for i in pick.tolist()] + taught)[self.slice]
        return chosen, [i for i in chosen if i not in set(self.labelled)]

    def describe(self, moving: list[int], fixed: list[int] | None = None) -> str:
        """The images (or pairs) of a step by subject ID, for error messages."""
        ids = self.train_set.ids
        if fixed is None:
            return "images " + ", ".join(ids[i] for i in moving)
        return "pairs " + ", ".join(f"{ids[m]} -> {ids[f]}" for m, f in zip(moving, fixed))
