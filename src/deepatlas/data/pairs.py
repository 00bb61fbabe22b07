"""Sampling (moving, fixed) pairs grouped by which image has labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

# group name -> (moving labelled?, fixed labelled?)
GROUPS: dict[str, tuple[bool, bool]] = {
    "neither": (False, False),
    "moving": (True, False),
    "fixed": (False, True),
    "both": (True, True),
}


@dataclass
class PairBatch:
    """A batch of (moving, fixed) pairs of one label group, on one grid and device.

    Attributes:
        group: the label group (:data:`GROUPS`): which side of every pair has labels.
        moving, fixed: images ``B x 1 x *spatial``.
        moving_labels, fixed_labels: class indices ``B x 1 x *spatial`` (long), or ``None`` on
            a side without labels: an unlabelled image's labels are never read.
        moving_index, fixed_index: positions of the images in the training set.
    """

    group: str
    moving: torch.Tensor
    fixed: torch.Tensor
    moving_labels: torch.Tensor | None
    fixed_labels: torch.Tensor | None
    moving_index: list[int]
    fixed_index: list[int]

    @property
    def moving_labelled(self) -> bool:
        return self.moving_labels is not None

    @property
    def fixed_labelled(self) -> bool:
        return self.fixed_labels is not None

    def distinct_labelled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The labelled images of the batch, each once, and their labels: ``L x 1 x *spatial``.

        With one labelled subject every pair of a segmentation step holds the same labelled
        image; training on its copies costs a seg-net pass each and gives the same loss and
        gradient as training on it once."""
        seen: set[int] = set()
        images, labels = [], []
        for side, side_labels, index in (
            (self.moving, self.moving_labels, self.moving_index),
            (self.fixed, self.fixed_labels, self.fixed_index),
        ):
            if side_labels is None:
                continue
            for k, position in enumerate(index):
                if position not in seen:
                    seen.add(position)
                    images.append(side[k : k + 1])
                    labels.append(side_labels[k : k + 1])
        if not images:
            raise ValueError("this batch has no labelled image")
        return torch.cat(images), torch.cat(labels)


class PairSampler:
    """Draws a label-availability group, then a batch of pairs from it; never pairs an image with itself.

    Each step uses one group for the whole batch, so every pair in a batch needs
    the same kind of segmentation (manual or predicted) and the nets run once per
    kind. Groups that cannot be formed (``both`` with one labelled image, any group
    with unlabelled images when every image is labelled) are dropped and the
    weights of the others renormalised.

    Args:
        has_label: per image, whether its labels are available for training.
        weights: sampling weight per group name (missing groups get 0).
        generator: the random source, saved and restored with checkpoints.
    """

    def __init__(
        self, has_label: Sequence[bool], weights: Mapping[str, float], generator: torch.Generator | None = None
    ) -> None:
        unknown = set(weights) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown pair groups {sorted(unknown)}; groups are {list(GROUPS)}")
        self.labelled = [i for i, h in enumerate(has_label) if h]
        self.unlabelled = [i for i, h in enumerate(has_label) if not h]
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.groups = [g for g in GROUPS if weights.get(g, 0) > 0 and self._possible(g)]
        if not self.groups:
            raise ValueError(
                f"no pair group with a positive weight can be formed from {len(self.labelled)} "
                f"labelled and {len(self.unlabelled)} unlabelled images (weights {dict(weights)})"
            )
        self.probs = torch.tensor([float(weights[g]) for g in self.groups], dtype=torch.float64)
        self.probs /= self.probs.sum()

    def _pool(self, labelled: bool) -> list[int]:
        return self.labelled if labelled else self.unlabelled

    def _possible(self, group: str) -> bool:
        moving, fixed = (self._pool(f) for f in GROUPS[group])
        return bool(moving) and bool(fixed) and (moving is not fixed or len(moving) >= 2)

    def sample_group(self) -> str:
        return self.groups[int(torch.multinomial(self.probs, 1, generator=self.generator))]

    def sample(self, batch_size: int, group: str | None = None) -> tuple[str, list[int], list[int]]:
        """Return ``(group, moving_indices, fixed_indices)`` for ``batch_size`` pairs."""
        group = group or self.sample_group()
        if group not in self.groups:
            raise ValueError(f"group {group!r} is not available here (available: {self.groups})")
        moving_pool, fixed_pool = (self._pool(f) for f in GROUPS[group])
        moving, fixed = [], []
        for _ in range(batch_size):
            m = moving_pool[int(torch.randint(len(moving_pool), (1,), generator=self.generator))]
            choices = [i for i in fixed_pool if i != m]
            f = choices[int(torch.randint(len(choices), (1,), generator=self.generator))]
            moving.append(m)
            fixed.append(f)
        return group, moving, fixed
