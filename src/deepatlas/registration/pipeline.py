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
    training); returns the final :class:`Deformation` (field in voxels of that grid).
    ``seg_net``: when given and a stage uses anatomy, its softmax of both images is computed
    once per pair and handed to every stage.
    """

    def __init__(
        self, stages: Sequence[Stage], seg_net: SegmentationNet | None = None, anatomy_downsample: int = 2
    ) -> None:
        if not stages:
            raise ValueError("a registration pipeline needs at least one stage")
        self.stages = list(stages)
        self.seg_net = seg_net
        self.anatomy_downsample = anatomy_downsample

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> Deformation:
        anatomy = self._anatomy(moving, fixed) if self.seg_net is not None else None
        deformation = None
        for stage in self.stages:
            deformation = stage(moving, fixed, deformation, anatomy)
        return deformation

    @torch.no_grad()
    def _anatomy(self, moving: torch.Tensor, fixed: torch.Tensor) -> Anatomy:
        device = next(self.seg_net.parameters()).device
        pool = AnatomyLoss(self.anatomy_downsample)
        logits = self.seg_net(torch.cat([moving, fixed]).to(device))
        probs = pool.from_logits(logits)
        return Anatomy(probs[: len(moving)], probs[len(moving) :], self.anatomy_downsample)


def build_pipeline(
    config: Config,
    reg_net: RegistrationNet | None,
    seg_net: SegmentationNet | None = None,
    refine: RefineConfig | None = None,
) -> RegistrationPipeline:
    """The pipeline a run's settings describe: the net (if any), then refinement if enabled.

    ``refine`` replaces ``config.refine`` (e.g. with command-line overrides). Without a net,
    refinement starts from the identity; the seg net is used only when the anatomy weight is > 0.
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
    use_seg = seg_net is not None and refine.enabled and refine.anatomy_weight > 0
    return RegistrationPipeline(stages, seg_net if use_seg else None, refine.anatomy_downsample)
