"""How a pair is registered: one composable pipeline of stages, used by every command.

A stage maps ``(moving, fixed, deformation so far, anatomy)`` to a new :class:`Deformation`
(ICON's ``RegistrationModule`` idea): the registration net predicts one from nothing, the
instance optimiser refines whatever it is given. ``register``, ``atlas-segment``,
``evaluate`` and the Python API all register through :func:`build_pipeline`, so a setting
changes every one of them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from deepatlas.config import Config, RefineConfig
from deepatlas.losses.anatomy import AnatomyLoss
from deepatlas.networks import RegistrationNet, SegmentationNet
from deepatlas.registration.greedy import GreedyOptimizer
from deepatlas.registration.refine import Anatomy, Deformation, InstanceOptimizer


class Stage(Protocol):
    def __call__(
        self, moving: torch.Tensor, fixed: torch.Tensor, start: Deformation | None, anatomy: Anatomy | None
    ) -> Deformation: ...


class NetStage:
    """The registration net's prediction (it ignores any earlier deformation)."""

    def __init__(self, net: RegistrationNet) -> None:
        self.net = net

    @torch.no_grad()
    def __call__(self, moving, fixed, start=None, anatomy=None) -> Deformation:
        device = next(self.net.parameters()).device
        raw = self.net.raw_field(moving.to(device), fixed.to(device)).float()
        if self.net.integrate is None:
            return Deformation(raw)
        return Deformation(self.net.integrate(raw), raw)


class RefineStage:
    """Instance optimisation (:class:`InstanceOptimizer` or :class:`GreedyOptimizer`) of the deformation so far."""

    def __init__(self, optimizer: InstanceOptimizer | GreedyOptimizer) -> None:
        self.optimizer = optimizer

    def __call__(self, moving, fixed, start=None, anatomy=None) -> Deformation:
        with torch.enable_grad():
            return self.optimizer(moving, fixed, start, anatomy)


class RegistrationPipeline:
    """Stages applied in order to one pair (or a batch of pairs on one grid).

    Call with ``moving``, ``fixed`` (``B x 1 x *spatial``, intensities normalised as in
    training) and optionally ``moving_labels`` (``B x 1 x *spatial`` class indices of the moving
    image, on the same grid); returns the final :class:`Deformation` (field in voxels of that grid).
    ``seg_net``: when given, its softmax is computed once per pair and handed to every stage: of
    both images when ``both_sides`` (the anatomy term), of the fixed one alone when only the label
    term (``use_labels``) needs it, which it does only for a pair whose moving labels are given.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        seg_net: SegmentationNet | None = None,
        anatomy_downsample: int = 2,
        both_sides: bool = True,
        use_labels: bool = False,
    ) -> None:
        if not stages:
            raise ValueError("a registration pipeline needs at least one stage")
        self.stages = list(stages)
        self.seg_net = seg_net
        self.anatomy_downsample = anatomy_downsample
        self.both_sides, self.use_labels = both_sides, use_labels

    def __call__(
        self, moving: torch.Tensor, fixed: torch.Tensor, moving_labels: torch.Tensor | None = None
    ) -> Deformation:
        anatomy = self._anatomy(moving, fixed, moving_labels if self.use_labels else None)
        deformation = None
        for stage in self.stages:
            deformation = stage(moving, fixed, deformation, anatomy)
        return deformation

    @torch.no_grad()
    def _anatomy(self, moving: torch.Tensor, fixed: torch.Tensor, labels: torch.Tensor | None) -> Anatomy | None:
        """The seg net's probabilities the stages use (and the moving labels), or None when none does."""
        if self.seg_net is None or not (self.both_sides or labels is not None):
            return None
        device = next(self.seg_net.parameters()).device
        pool = AnatomyLoss(self.anatomy_downsample)
        images = torch.cat([moving, fixed]) if self.both_sides else fixed
        probs = pool.from_logits(self.seg_net(images.to(device)))
        anatomy = Anatomy(
            probs[: len(moving)] if self.both_sides else None, probs[-len(fixed) :], self.anatomy_downsample
        )
        return anatomy if labels is None else anatomy.with_labels(labels.to(device))


def build_pipeline(
    config: Config,
    reg_net: RegistrationNet | None,
    seg_net: SegmentationNet | None = None,
    refine: RefineConfig | None = None,
) -> RegistrationPipeline:
    """The pipeline a run's settings describe: the net (if any), then refinement if enabled.

    ``refine`` replaces ``config.refine`` (e.g. with command-line overrides). Without a net,
    refinement starts from the identity; the seg net is used only when the anatomy weight is > 0
    (both images) or, for pairs whose moving labels are given, the label weight is (the fixed image;
    ``method=adam`` only: greedy has no label term).
    """
    refine = refine or config.refine
    refine.validate()
    stages: list[Stage] = [NetStage(reg_net)] if reg_net is not None else []
    if refine.enabled and refine.method == "greedy":
        stages.append(RefineStage(GreedyOptimizer(refine)))
    elif refine.enabled:
        diffeomorphic = reg_net.integrate is not None if reg_net is not None else config.reg_net.diffeomorphic
        stages.append(RefineStage(InstanceOptimizer(refine, diffeomorphic, config.reg_net.integration_steps)))
    if not stages:
        raise ValueError(
            "nothing registers this pair: no registration net and refinement disabled (refine.enabled=false)"
        )
    both_sides = refine.enabled and refine.anatomy_weight > 0
    use_labels = refine.enabled and refine.method == "adam" and refine.label_weight > 0
    use_seg = seg_net is not None and (both_sides or use_labels)
    return RegistrationPipeline(
        stages, seg_net if use_seg else None, refine.anatomy_downsample, both_sides, use_labels and use_seg
    )
