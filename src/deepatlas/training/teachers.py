"""Teachers: refined atlas labels for the unlabelled training images.

DeepAtlas teaches the seg net on an unlabelled image with a labelled image's labels warped
onto it, and the weak supervision is only as good as that warp. The frozen reg net alone
warps them at every segmentation step (registration Dice ~0.62 early in training); per-pair
refinement from the net's field reaches several points more (docs/results.md), but costs
about a second per pair, too much for every step. So a :class:`TeacherCache` computes one
teacher per unlabelled image, when a step first draws it, with the registration pipeline of
the moment (net, then refinement), keeps it as a label map, and recomputes it once it is
``refresh_steps`` old, so the teachers improve as the reg net does. The atlas labels are
carried by label interpolation (as every command writes labels through a transform; about two
points of registration Dice over nearest neighbour on validation pairs, docs/results.md "Label
interpolation"), so a synthesised pair's labels sit where its linearly warped image puts them. Making them may take at
most ``max_share`` of the training time: beyond it, an image without a teacher is swapped for one
that has one (:meth:`TeacherCache.teachable`) and stale teachers are kept. With several labelled
images, each (re)computation warps ``atlases`` randomly drawn ones of them (default one) and
fuses their labels by a vote weighted by local image similarity (as ``atlas-segment`` does):
with five atlases the vote is a better segmentation than any one warp (multi-atlas
segmentation), for ``atlases`` times the cost.

With ``self_teacher`` (``teachers.self_teach_after``), once training has run ``self_teach_from`` seconds
each teacher is remade, when its image is next drawn, from the seg net's own prediction of that image
(:func:`seg_net_labels`): self-training, for when the seg net has come to segment the unlabelled images
better than one registration does. A synthesised pair keeps the registration's exact labels.

Teachers are saved with the run's ``last`` checkpoint (:meth:`TeacherCache.state_dict`, one
byte per voxel and image: 92 MB for 150 images of 80x96x80) so that a resumed run trains on the
labels the stopped one had made, with the reg net of then, and ends as an uninterrupted run
would. With several processes (``torchrun``) each keeps its own cache and only the first
process writes checkpoints: a resumed run gives every process the first one's teachers (valid
teachers of those images, made by the same nets), so it goes on correctly but not bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import torch

from deepatlas.data.pairs import PairBatch
from deepatlas.networks.segmentation import mirrored_softmax
from deepatlas.networks.warp import warp_image, warp_labels
from deepatlas.registration.fusion import LabelVotes, similarity_weight
from deepatlas.registration.pipeline import RegistrationPipeline
from deepatlas.training.synthesis import match_appearance


class TeacherCache:
    """Label maps for unlabelled training images, warped from labelled ones by refined registration.

    Args:
        images: all training images ``N x 1 x *spatial`` (CPU), normalised as in training.
        labels: their label maps ``N x 1 x *spatial`` (read only at ``labelled`` positions).
        labelled: positions of the labelled images (the atlases).
        pipeline: returns the registration pipeline to use now (built from the current reg net).
        refresh_steps: a teacher older than this many training steps is recomputed when drawn.
        seed: seeds the choice of atlases per teacher.
        device: where registration runs.
        atlases: labelled images warped and fused per teacher (at most all of them).
        max_share: most of the training time (``elapsed`` of :meth:`labels_for`) spent on teachers.
        synthesise: with each teacher, also keep a synthesised labelled image
            (:mod:`deepatlas.training.synthesis`): the first atlas's image and labels warped by the
            same registration, its appearance matched to the unlabelled image (:meth:`synthetic_for`).
        appearance: match the synthesised image's intensities to the unlabelled image's (False: the
            labelled image's own, warped).
        self_teacher: maps an image ``1 x 1 x *spatial`` (on ``device``) to its label map ``1 x *spatial``
            from the seg net of now (:func:`seg_net_labels`), or None.
        self_teach_from: training seconds (``elapsed`` of :meth:`labels_for`) from which ``self_teacher``
            remakes each teacher once (and again when stale).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        labelled: list[int],
        pipeline: Callable[[], RegistrationPipeline],
        refresh_steps: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
        atlases: int = 1,
        max_share: float = 1.0,
        synthesise: bool = False,
        appearance: bool = True,
        self_teacher: Callable[[torch.Tensor], torch.Tensor] | None = None,
        self_teach_from: float = math.inf,
    ) -> None:
        if not labelled:
            raise ValueError("teachers need at least one labelled image to warp")
        if atlases < 1:
            raise ValueError(f"teachers need at least one atlas per teacher, got {atlases}")
        self.atlases, self.max_share = min(atlases, len(labelled)), max_share
        self.classes = int(labels[labelled].max()) + 1
        self.images, self.labels, self.labelled = images, labels, list(labelled)
        self.pipeline, self.refresh_steps, self.device = pipeline, refresh_steps, torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.teachers: dict[int, torch.Tensor] = {}  # image position -> 1 x *spatial uint8 label map
        self.made_at: dict[int, int] = {}  # image position -> training step of its teacher
        self.atlas: dict[int, list[int]] = {}  # image position -> the labelled images it was warped from
        self.seconds = 0.0  # total time spent making teachers
        self.synthesise, self.appearance = synthesise, appearance
        # image position -> (1 x *spatial float16 image, 1 x *spatial label map) made with its teacher
        self.synthetic: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.self_teacher, self.self_teach_from = self_teacher, self_teach_from
        self.self_taught: set[int] = set()  # image positions whose teacher is the seg net's prediction
        # class indices fit a byte for every label scheme but the largest atlases
        self.dtype = torch.uint8 if self.classes <= 256 else torch.int32

    def state_dict(self) -> dict:
        """The teachers made so far (``P x 1 x *spatial`` in one tensor), their steps and atlases
        (``P x atlases``), and the atlas-drawing generator: what a resumed run needs to go on
        identically."""
        positions = sorted(self.teachers)
        return {
            "positions": torch.tensor(positions, dtype=torch.long),
            "labels": torch.stack([self.teachers[i] for i in positions]) if positions else torch.zeros(0),
            "made_at": torch.tensor([self.made_at[i] for i in positions], dtype=torch.long),
            "atlas": torch.tensor([self.atlas[i] for i in positions], dtype=torch.long).view(-1, self.atlases),
            "generator": self.generator.get_state(),
            "seconds": self.seconds,
            "self_taught": torch.tensor(sorted(self.self_taught), dtype=torch.long),
            **self._synthetic_state(positions),
        }

    def _synthetic_state(self, positions: list[int]) -> dict:
        """The synthesised pairs of ``positions`` (those that have one), stacked: images in float16
        (the seg net's input precision is not what limits it) and label maps in the teachers' type."""
        kept = [i for i in positions if i in self.synthetic]
        if not kept:
            return {}
        return {
            "synthetic_positions": torch.tensor(kept, dtype=torch.long),
            "synthetic_images": torch.stack([self.synthetic[i][0] for i in kept]),
            "synthetic_labels": torch.stack([self.synthetic[i][1] for i in kept]),
        }

    def load_state_dict(self, state: dict) -> None:
        positions = state["positions"].tolist()
        self.teachers = {i: state["labels"][k].to("cpu", self.dtype) for k, i in enumerate(positions)}
        self.made_at = dict(zip(positions, state["made_at"].tolist()))
        # checkpoints before fused teachers kept one atlas per teacher as a flat tensor
        self.atlas = dict(zip(positions, state["atlas"].reshape(len(positions), -1).tolist() if positions else []))
        self.generator.set_state(state["generator"])
        self.seconds = float(state["seconds"])
        self.self_taught = set(state.get("self_taught", torch.zeros(0, dtype=torch.long)).tolist())
        kept = state.get("synthetic_positions", torch.zeros(0, dtype=torch.long)).tolist()
        self.synthetic = {
            i: (
                state["synthetic_images"][k].to("cpu", torch.float16),
                state["synthetic_labels"][k].to("cpu", self.dtype),
            )
            for k, i in enumerate(kept)
        }

    def stale(self, index: int, step: int) -> bool:
        return index not in self.teachers or step - self.made_at[index] >= self.refresh_steps

    def affordable(self, elapsed: float) -> bool:
        """Whether teachers have taken less than ``max_share`` of ``elapsed`` training seconds
        (or none exists yet, or there is no cap)."""
        return self.max_share >= 1 or not self.teachers or self.seconds < self.max_share * elapsed

    def teachable(self, indices: list[int], elapsed: float) -> list[int]:
        """``indices`` with, once teachers are not :meth:`affordable`, each image that has no
        teacher replaced by a randomly drawn one that has."""
        if self.affordable(elapsed):
            return indices
        taught = sorted(self.teachers)
        draw = torch.randint(len(taught), (len(indices),), generator=self.generator).tolist()
        return [i if i in self.teachers else taught[k] for i, k in zip(indices, draw)]

    def labels_for(self, indices: list[int], step: int, elapsed: float = float("inf")) -> torch.Tensor:
        """Teachers of the images at ``indices`` as ``B x 1 x *spatial`` long on the device,
        making missing ones and, while :meth:`affordable` at ``elapsed`` seconds, remaking stale ones."""
        for index in indices:
            missing = index not in self.teachers or (self.synthesise and index not in self.synthetic)
            registered = index not in self.self_taught
            if missing or (registered and self.stale(index, step) and self.affordable(elapsed)):
                self._make(index, step)
            if self.self_teacher is not None and elapsed >= self.self_teach_from:
                if registered or self.stale(index, step):
                    self._self_teach(index, step)
        return self._stacked(indices)

    @torch.no_grad()
    def _self_teach(self, index: int, step: int) -> None:
        """The teacher of the image at ``index`` remade from the seg net's prediction (its synthesised
        pair, made with the registration, stays)."""
        start = time.perf_counter()
        image = self.images[index : index + 1].to(self.device).float()
        self.teachers[index] = self.self_teacher(image).to("cpu", self.dtype)
        self.self_taught.add(index)
        self.made_at[index] = step
        self.seconds += time.perf_counter() - start

    def _stacked(self, indices: list[int]) -> torch.Tensor:
        """The teachers of ``indices`` (all made) as ``B x 1 x *spatial`` long on the device."""
        return torch.stack([self.teachers[i] for i in indices]).to(self.device).long()

    def synthetic_for(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The synthesised images (float32) and labels (long) made with the teachers of ``indices``
        (all made, with ``synthesise`` on), ``B x 1 x *spatial`` on the device."""
        images = torch.stack([self.synthetic[i][0] for i in indices]).to(self.device).float()
        labels = torch.stack([self.synthetic[i][1] for i in indices]).to(self.device).long()
        return images, labels

    def label_unlabelled_sides(self, batch: PairBatch) -> PairBatch:
        """``batch`` with teachers as the labels of each unlabelled side whose images all have one
        (none is made here): the reg net's anatomy loss then reads refined atlas labels instead of
        the seg net's predictions (``teachers.guide_registration``), and skips the seg net's pass."""
        sides = {}
        for side, labels, indices in (
            ("moving_labels", batch.moving_labels, batch.moving_index),
            ("fixed_labels", batch.fixed_labels, batch.fixed_index),
        ):
            if labels is None and all(i in self.teachers for i in indices):
                sides[side] = self._stacked(indices)
        return dataclasses.replace(batch, **sides) if sides else batch

    @torch.no_grad()
    def _make(self, index: int, step: int) -> None:
        start = time.perf_counter()
        if self.atlases == 1:  # one draw, as before fused teachers existed: same atlases per seed
            atlases = [self.labelled[int(torch.randint(len(self.labelled), (1,), generator=self.generator))]]
        else:
            order = torch.randperm(len(self.labelled), generator=self.generator)[: self.atlases]
            atlases = [self.labelled[int(k)] for k in order]
        fixed = self.images[index : index + 1].to(self.device).float()
        warps = [self._warp(atlas, fixed) for atlas in atlases[:1]]
        if self.atlases == 1:
            teacher = warps[0][0][0]  # 1 x *spatial
        else:
            votes = LabelVotes(self.classes, tuple(fixed.shape[2:]), device=self.device)
            for labels, weight, _ in warps + [self._warp(atlas, fixed) for atlas in atlases[1:]]:
                votes.add(labels, weight)
            teacher = votes.winner()[None]
        self.teachers[index] = teacher.to("cpu", self.dtype)
        if self.synthesise:  # the first atlas's image and labels, moved by the same field
            labels, _, moved = warps[0]
            image = match_appearance(moved, labels, fixed, self.classes) if self.appearance else moved
            self.synthetic[index] = (image[0].to("cpu", torch.float16), labels[0].to("cpu", self.dtype))
        self.made_at[index], self.atlas[index] = step, atlases
        self.seconds += time.perf_counter() - start

    def _warp(self, atlas: int, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The atlas's labels warped onto ``fixed`` by the pipeline of now (``1 x 1 x *spatial``),
        when several atlases vote the weight of its vote (:func:`similarity_weight`), and the atlas
        image warped when something reads it (a vote's weight, a synthesised pair)."""
        moving = self.images[atlas : atlas + 1].to(self.device).float()
        field = self.pipeline()(moving, fixed).field
        # by label interpolation (boundaries where partial volumes cross, not snapped to the nearest
        # voxel's side): made once per teacher, so its ~0.1 s is paid once, not per step
        labels = warp_labels(self.labels[atlas : atlas + 1].to(self.device), field, linear=True)
        if self.atlases == 1 and not self.synthesise:  # nothing to weigh or synthesise
            return labels, None, None
        moved = warp_image(moving, field)
        return labels, None if self.atlases == 1 else similarity_weight(moved, fixed), moved


@torch.no_grad()
def seg_net_labels(
    seg_net: torch.nn.Module, image: torch.Tensor, mirroring: tuple[int, list[int]] | None = None
) -> torch.Tensor:
    """The label map ``B x *spatial`` that ``seg_net`` (put in eval mode for the call) predicts for ``image``
    ``B x 1 x *spatial``: the argmax of its softmax, averaged with the mirrored image's where ``mirroring``
    (the left-right array axis and each class's twin, :func:`deepatlas.data.augment.mirror_plan`) is given,
    each class read from its twin's row, as ``segment`` does by default (``seg_net.mirror_average``)."""
    was_training = seg_net.training
    seg_net.eval()
    try:
        probs = torch.softmax(seg_net(image).float(), 1)
        if mirroring is not None:
            probs = probs + mirrored_softmax(seg_net, image, *mirroring)
    finally:
        seg_net.train(was_training)
    return probs.argmax(1)
