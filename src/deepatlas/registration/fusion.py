"""Label fusion: atlases' label maps, warped onto one image, voted into its segmentation.

``atlas-segment`` (:func:`deepatlas.inference.apply.atlas_segment_volume`) and the teachers of
joint training (:mod:`deepatlas.training.teachers`) fuse the same way: each atlas votes for its
warped label at every voxel, with a weight that is, for ``weighted`` fusion, the local normalised
cross-correlation between the warped atlas image and the target around that voxel (atlases that
match locally count more; Artaechevarria et al., 2009). ``atlas-segment --seg-net-weight`` adds
the seg net's class probabilities as one more, soft, vote: the two make different errors (the
seg net follows the cortex and ventricles of the image itself, registration keeps the shape of
small deep structures), so their vote beats each alone (docs/results.md, "Seg net and atlases").
The atlases may hold finer codes than the seg net's classes (cortical parcels inside one cortex class):
:func:`vote_within_classes` decides the class with both and keeps the atlases' code within it.
"""

from __future__ import annotations

import torch

from deepatlas.losses.similarity import local_ncc_map

NCC_WINDOW = 7
"""Voxels per side of the local NCC window that weighs a vote."""
MIN_WEIGHT = 1e-3
"""Floor of a vote's weight: an atlas that anticorrelates locally still breaks a tie."""


def similarity_weight(warped: torch.Tensor, target: torch.Tensor, window: int = NCC_WINDOW) -> torch.Tensor:
    """Per-voxel weight of a warped atlas's vote: local NCC with the target, floored.

    ``warped`` and ``target``: images ``1 x 1 x *spatial``; returns the same shape."""
    return local_ncc_map(warped, target, window).clamp_min(MIN_WEIGHT)


class LabelVotes:
    """Accumulates weighted votes for ``classes`` labels over a grid, one atlas at a time
    (an atlas's warped labels need not be kept once counted).

    Args:
        classes: label values are ``0 .. classes - 1``.
        shape: the spatial grid.
        dtype: of the vote counts (float64 where many atlases must not round ties).
        device: where the votes live.
    """

    def __init__(
        self,
        classes: int,
        shape: tuple[int, ...],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.votes = torch.zeros((classes, *shape), dtype=dtype, device=device)

    def add(self, labels: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Count ``labels`` (integer, the grid's shape) with ``weight`` per voxel (None: 1)."""
        labels = labels.reshape(1, *self.votes.shape[1:]).long()
        weight = torch.ones_like(labels, dtype=self.votes.dtype) if weight is None else weight
        self.votes.scatter_add_(0, labels, weight.reshape(labels.shape).to(self.votes.dtype))

    def add_shares(
        self, labels: torch.Tensor, shares: torch.Tensor, rows: slice | None = None, weight: torch.Tensor | None = None
    ) -> None:
        """Count a soft vote of one atlas: each voxel of the grid's first-axis ``rows`` (all: None) votes
        ``shares`` (``n x k``, the linear interpolation weights of the ``k`` voxels of the atlas around
        the point it maps to, :func:`deepatlas.networks.warp.label_corners`) for their ``labels``
        (``n x k``), times ``weight`` (``n``; None: 1). A voxel between two structures of the atlas
        votes for both in proportion, where its interpolated label would give all to one."""
        grid = self.votes[0]
        first = 0 if rows is None else range(grid.shape[0])[rows].start
        voxels = first * grid[0].numel() + torch.arange(labels.shape[0], device=self.votes.device)
        shares = shares.to(self.votes.device, self.votes.dtype)
        if weight is not None:
            shares = shares * weight.reshape(-1, 1).to(shares)
        index = labels.to(self.votes.device).long() * grid.numel() + voxels[:, None]
        self.votes.view(-1).scatter_add_(0, index.reshape(-1), shares.reshape(-1))

    def add_probabilities(self, probabilities: torch.Tensor, weight: float) -> None:
        """Count a soft vote: ``weight`` times each label's probability (``classes x *grid``, label
        ``c`` in row ``c``), as the seg net gives them; a sure prediction weighs as much as an
        atlas whose warped image matches the target perfectly with ``weight`` 1."""
        if probabilities.shape != self.votes.shape:
            shapes = f"{tuple(probabilities.shape)} against {tuple(self.votes.shape)}"
            raise ValueError(f"probabilities must have one row per label on the votes' grid: {shapes}")
        self.votes.add_(probabilities.to(self.votes), alpha=weight)

    def winner(self) -> torch.Tensor:
        """The label with the most votes at every voxel (the grid's shape, long; ties: the lower label)."""
        return self.votes.argmax(0)


def vote_within_classes(
    fine: LabelVotes, classes_of: torch.Tensor, probabilities: torch.Tensor, weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse atlases' votes for fine labels with a voter over coarser classes (a seg net's probabilities),
    keeping the atlases' fine labels.

    ``fine``: votes for ``K`` fine labels (an atlas's own codes); ``classes_of``: the class (``0 .. C-1``) of
    each fine label (``K``); ``probabilities``: ``C x *grid``, counted times ``weight``. At every voxel the
    class is decided by the fine votes summed per class plus the weighted probabilities; the label within it
    by the fine votes alone (a cortical parcel of the atlases inside the cortex both agree on). Returns the
    class winner and the fine winner (``-1`` where no fine label of the winning class had a vote: the class
    came from the probabilities alone), both of the grid's shape; ties go to the lower index. Slab by slab
    of the grid's first axis, so a ``K``-label mask of the whole grid is never held."""
    classes_of = classes_of.to(fine.votes.device).long()
    shape = fine.votes.shape[1:]
    winner_class = torch.empty(shape, dtype=torch.long, device=fine.votes.device)
    winner_fine = torch.empty_like(winner_class)
    step = max(1, shape[0] // 8)
    for start in range(0, shape[0], step):
        rows = slice(start, min(start + step, shape[0]))
        votes = fine.votes[:, rows]
        summed = torch.zeros((probabilities.shape[0], *votes.shape[1:]), dtype=votes.dtype, device=votes.device)
        summed.index_add_(0, classes_of, votes)
        summed.add_(probabilities[:, rows].to(summed), alpha=weight)
        winner_class[rows] = summed.argmax(0)
        member = classes_of.view(-1, *[1] * (votes.ndim - 1)) == winner_class[rows][None]
        masked = torch.where(member, votes, torch.full_like(votes, -1.0))
        best, index = masked.max(0)
        winner_fine[rows] = torch.where(best > 0, index, torch.full_like(index, -1))
    return winner_class, winner_fine
