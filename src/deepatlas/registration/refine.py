"""Instance optimisation: refine one pair's deformation by gradient descent on that pair alone.

A registration network predicts a deformation in one forward pass; what it cannot fit
(the last millimetres of a sulcus, an unusual ventricle) it gets wrong for good. Per-pair
optimisation fits exactly this pair: starting from the net's field (or from zero), it
minimises ``similarity + regularizer_weight * diffusion (+ anatomy_weight * anatomy)``
coarse to fine with Adam, as uniGradICON, ConvexAdam and VoxelMorph's test-time
optimisation do. DeepAtlas adds what they lack: the anatomy term, soft Dice between the
seg net's (or the user's) segmentations of the two images, and, where the moving image has
labels (an atlas), the label term: its one-hot labels warped against the seg net's softmax of
the fixed image, ConvexAdam's class-weighted squared difference (:func:`label_loss`).

Parameterisation, per level ``l`` with image pooling factor ``f_l``: a residual on a
control grid ``max(f_l, control_spacing)`` voxels apart, smoothed by ``smoothing`` box
filters and interpolated linearly, added to the starting field (displacement mode) or to
the starting velocity (diffeomorphic mode, integrated by scaling and squaring on the
control grid). The control grid keeps the unknowns few (fast, smooth) while the
similarity is measured at the level's full image resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from deepatlas.config import RefineConfig
from deepatlas.losses.anatomy import soft_dice_loss
from deepatlas.losses.downsample import label_fractions
from deepatlas.losses.similarity import LocalNCCToFixed, MINDToFixed, MutualInformationToFixed
from deepatlas.registration.adam import AdamSteps
from deepatlas.registration.fields import (
    coarse_shape,
    compose,
    diffusion_energy,
    integrate_velocity,
    pool_image,
    resize_field,
    smooth,
    warp,
)

LABEL_CLASS_POWER = 0.3
"""The label term weighs each class by ``count ** -LABEL_CLASS_POWER``: ConvexAdam's choice."""


@dataclass
class Anatomy:
    """Segmentations of a pair as probability maps ``B x (K+1) x *coarse``, on the grid of the
    full-resolution images pooled by ``factor``: the moving image's (None where only the label term
    needs the fixed one), the fixed image's, and the moving image's own labels (class fractions per
    coarse voxel, :meth:`with_labels`) with their class weights ``B x (K+1)``, or None."""

    moving: torch.Tensor | None
    fixed: torch.Tensor
    factor: int
    moving_labels: torch.Tensor | None = None
    label_weights: torch.Tensor | None = None

    def with_labels(self, labels: torch.Tensor) -> Anatomy:
        """This anatomy with the moving image's label map ``B x 1 x *spatial`` (class indices, full
        resolution) for the label term: pooled to class fractions on the anatomy grid, weighted by
        :func:`label_class_weights`."""
        classes = self.fixed.shape[1]
        fractions = label_fractions(labels, classes, self.factor).to(self.fixed.device)
        weights = label_class_weights(labels, classes).to(self.fixed.device)
        return Anatomy(self.moving, self.fixed, self.factor, fractions, weights)

    def seen_through(self, field: torch.Tensor) -> Anatomy:
        """This anatomy with its moving side warped by ``field`` (``B x dims x *spatial``, full-resolution
        voxels): what a residual optimised after that deformation compares."""
        coarse = resize_field(field, tuple(self.fixed.shape[2:]))
        moving = None if self.moving is None else warp(self.moving, coarse)
        labels = None if self.moving_labels is None else warp(self.moving_labels, coarse)
        return Anatomy(moving, self.fixed, self.factor, labels, self.label_weights)


def label_class_weights(labels: torch.Tensor, classes: int, power: float = LABEL_CLASS_POWER) -> torch.Tensor:
    """``B x classes``: ``count ** -power`` per class of each label map ``B x 1 x *spatial``, normalised
    to mean 1 over the classes it holds (absent classes 0). ConvexAdam's weighting: a small structure
    counts more per voxel than the background or the white matter, so it is not traded away for them,
    yet less than in proportion to its size (power 1 would let a few voxels of a tiny class dominate)."""
    counts = torch.stack([torch.bincount(m.reshape(-1).long(), minlength=classes)[:classes] for m in labels])
    present = counts > 0
    weights = torch.where(present, counts.double().clamp_min(1).pow(-power), torch.zeros((), dtype=torch.float64))
    mean = (weights.sum(1, keepdim=True) / present.sum(1, keepdim=True).clamp_min(1)).clamp_min(1e-12)
    return (weights / mean).float()


def label_loss(warped: torch.Tensor, fixed: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ConvexAdam's label term: ``mean over voxels of sum_c w_c (warped_c - fixed_c) ** 2`` between the
    warped moving labels and the fixed probabilities (``B x classes x *coarse``), ``weights``
    ``B x classes`` (:func:`label_class_weights`). A squared difference, not a Dice: its gradient does
    not vanish where the fixed softmax is unsure, and it needs no smoothing constant for absent classes."""
    shape = tuple(weights.shape) + (1,) * (warped.ndim - 2)
    return ((warped - fixed).pow(2) * weights.view(shape)).sum(1).mean()


@dataclass
class Deformation:
    """A deformation on the fixed image's grid: ``field`` ``B x dims x *spatial`` in voxels (pull
    back, ``warped(x) = moving(x + field(x))``) and, in diffeomorphic mode, the stationary
    ``velocity`` (same shape or coarser) whose time-1 flow it is."""

    field: torch.Tensor
    velocity: torch.Tensor | None = None


class InstanceOptimizer:
    """Refines a :class:`Deformation` of one pair (or a batch of pairs) with the settings of
    ``config`` (:class:`deepatlas.config.RefineConfig`; defaults and their reasons are there)."""

    def __init__(self, config: RefineConfig, diffeomorphic: bool = False, integration_steps: int = 7) -> None:
        config.validate()
        self.config = config
        self.diffeomorphic = diffeomorphic
        self.integration_steps = integration_steps

    def __call__(
        self,
        moving: torch.Tensor,
        fixed: torch.Tensor,
        start: Deformation | None = None,
        anatomy: Anatomy | None = None,
    ) -> Deformation:
        """``moving``, ``fixed``: ``B x 1 x *spatial`` in [0, 1]; ``start``: the net's deformation or None
        (identity). Returns the refined deformation at full resolution."""
        if self.config.form != "add" and start is not None:
            return self._composed(moving, fixed, start.field.detach().float(), anatomy)
        dims = fixed.ndim - 2
        if start is None:
            zero = fixed.new_zeros((fixed.shape[0], dims) + tuple(fixed.shape[2:]))
            start = Deformation(zero, zero if self.diffeomorphic else None)
        if self.diffeomorphic and start.velocity is None:
            raise ValueError("diffeomorphic refinement needs the starting velocity field (the net's, or None)")
        state = (start.velocity if self.diffeomorphic else start.field).detach().float()
        for factor, iterations in zip(self.config.levels, self.config.iterations):
            state = self._level(moving.float(), fixed.float(), state, factor, iterations, anatomy)
        if not self.diffeomorphic:
            return Deformation(state)
        return Deformation(self._integrate(state, tuple(fixed.shape[2:])), state)

    def _composed(
        self, moving: torch.Tensor, fixed: torch.Tensor, net: torch.Tensor, anatomy: Anatomy | None
    ) -> Deformation:
        """``refine.form`` compose / flow: ``psi`` optimised from the identity between the moving image seen
        through ``net`` (the starting displacement) and the fixed one; returns ``phi_net o psi``."""
        inner = InstanceOptimizer(replace(self.config, form="add"), self.config.form == "flow", self.integration_steps)
        seen = warp(moving.float(), net)
        psi = inner(seen, fixed, None, None if anatomy is None else anatomy.seen_through(net))
        return Deformation(compose(psi.field, net))

    def _integrate(self, velocity: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Displacement on ``shape`` of a velocity given on any grid (integrated where it lives)."""
        return resize_field(integrate_velocity(velocity, self.integration_steps), shape)

    def _level(
        self,
        moving: torch.Tensor,
        fixed: torch.Tensor,
        state: torch.Tensor,
        factor: int,
        iterations: int,
        anatomy: Anatomy | None,
    ) -> torch.Tensor:
        """One pyramid level: optimise a smoothed residual of ``state``; return the new state."""
        cfg = self.config
        full_shape = tuple(fixed.shape[2:])
        level_moving, level_fixed = pool_image(moving, factor), pool_image(fixed, factor)
        level_shape = tuple(level_fixed.shape[2:])
        # in diffeomorphic mode the velocity lives and is integrated on a grid at least 2x coarser
        # than the image: scaling and squaring costs 7 warps per iteration, and the flow of a
        # smooth velocity needs no finer grid
        spacing = max(factor, cfg.control_spacing, 2 if self.diffeomorphic else 1)
        control_shape = coarse_shape(full_shape, spacing)
        base_shape = control_shape if self.diffeomorphic else level_shape
        base = resize_field(state, base_shape)
        similarity = self._similarity(level_fixed)
        source = similarity.to_warp(level_moving)
        residual = torch.zeros(
            (state.shape[0], state.shape[1]) + control_shape, device=state.device, requires_grad=True
        )
        optimizer = AdamSteps(residual, lr=cfg.lr)
        for iteration in range(iterations):
            field = self._level_field(base, residual, level_shape)
            loss = similarity(warp(source, field)) + cfg.regularizer_weight * diffusion_energy(field)
            if anatomy is not None:
                loss = self._anatomy_terms(loss, anatomy, field, full_shape)
            residual.grad = None
            loss.backward()
            if iteration == 0 and cfg.adam_eps > 0:  # the gradient's scale depends on grid and loss
                optimizer.eps = cfg.adam_eps * float(residual.grad.pow(2).mean().sqrt())
            optimizer.step()
        with torch.no_grad():
            update = resize_field(smooth(residual, cfg.smoothing), tuple(state.shape[2:]))
            return state + update

    def _similarity(self, fixed: torch.Tensor) -> torch.nn.Module:
        """The similarity to ``fixed`` (one level's image) that ``refine.similarity`` names."""
        if self.config.similarity == "mi":
            return MutualInformationToFixed(fixed)
        if self.config.similarity == "mind":
            return MINDToFixed(fixed)
        return LocalNCCToFixed(fixed, self.config.lncc_window)

    def _level_field(self, base: torch.Tensor, residual: torch.Tensor, level_shape: tuple[int, ...]) -> torch.Tensor:
        """The displacement at a level's resolution for the current residual."""
        update = smooth(residual, self.config.smoothing)
        if self.diffeomorphic:
            return self._integrate(base + resize_field(update, tuple(base.shape[2:])), level_shape)
        return base + resize_field(update, level_shape)

    def _anatomy_terms(
        self, loss: torch.Tensor, anatomy: Anatomy, field: torch.Tensor, full_shape: tuple[int, ...]
    ) -> torch.Tensor:
        """``loss`` plus, on the anatomy grid, the anatomy term (soft Dice of the moving segmentation
        warped by ``field`` against the fixed one) and the label term (:func:`label_loss` of the moving
        labels warped), each where its weight is > 0 and its moving side is there."""
        cfg = self.config
        use_anatomy = anatomy.moving is not None and cfg.anatomy_weight > 0
        use_labels = anatomy.moving_labels is not None and cfg.label_weight > 0
        if not (use_anatomy or use_labels):
            return loss
        coarse = resize_field(field, coarse_shape(full_shape, anatomy.factor))
        if use_anatomy:
            loss = loss + cfg.anatomy_weight * soft_dice_loss(warp(anatomy.moving, coarse), anatomy.fixed)
        if use_labels:
            warped = warp(anatomy.moving_labels, coarse)
            loss = loss + cfg.label_weight * label_loss(warped, anatomy.fixed, anatomy.label_weights)
        return loss
