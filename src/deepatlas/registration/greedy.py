"""Greedy-class per-pair refinement (``refine.method=greedy``): compositive, Gaussian-smoothed steps.

The default refinement (:mod:`deepatlas.registration.refine`) adds Adam steps to a displacement
and keeps it smooth with a diffusion penalty; docs/results.md found that form capped near 0.76
validation Dice whatever the step count, while greedy (PICSL) reaches more with another form of
the same problem, which FireANTs generalises. This is that form, written for this project:

- the step is the similarity's gradient with respect to a displacement applied *before* the
  current deformation, smoothed by a Gaussian of ``sigma_grad`` voxels (the regulariser of the
  update: a fluid-like prior, instead of a penalty on the total field that fights the net's field);
- it is scaled so its largest displacement is ``epsilon`` voxels of the level (greedy's ``-e``):
  a step of known size whatever the loss's scale, so no learning rate to tune per grid;
- it is composed, ``phi <- phi o (id + step)`` (a displacement ``u(x) = step(x) + u(x + step(x))``),
  which follows large deformations where additive updates lag, and the composed field is smoothed
  by a Gaussian of ``sigma_field`` voxels (the elastic-like prior that keeps it from folding);
- coarse to fine over image pyramids (greedy: 4x, 2x, full), starting from the net's field.

From the net's field, greedy's form (smoothing the whole composed field) smooths the net's detail
away; by default (``greedy_residual``) the net's deformation is kept and a residual ``psi`` is
optimised after it, ``phi = phi_net o psi``, with the moving image seen through the net's field:
only ``psi`` is smoothed, as greedy smooths its own field.

The gradient is ``dL/dW * grad W`` with ``W`` the warped moving image (central differences), the
derivative of the similarity along a displacement applied before the deformation: no autograd
through the warp, so a step costs two warps, one LNCC and its closed-form gradient, and the
smoothing, which runs as separable 1-D sums of shifted views (several times faster on CPU than a
depthwise 3-D convolution).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from deepatlas.config import RefineConfig
from deepatlas.losses.similarity import LocalNCCToFixed, MINDToFixed, MutualInformationToFixed
from deepatlas.registration.fields import pool_image, resize_field, warp
from deepatlas.registration.refine import Anatomy, Deformation


def gaussian_kernel(sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``sigma`` voxels, truncated at 3 sigma (at least 3 taps)."""
    radius = max(1, math.ceil(3.0 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_smooth(x: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """Separable Gaussian smoothing of ``B x C x *spatial``: ``sigma`` voxels along every spatial axis, or
    one sigma per axis (0: that axis unsmoothed).

    Edges repeat (replicate padding), so a constant field (a translation) stays what it is. Each
    axis is a weighted sum of shifted views of the padded tensor, symmetric taps paired.
    """
    sigmas = [float(s) for s in sigma] if isinstance(sigma, Sequence) else [float(sigma)] * (x.ndim - 2)
    if len(sigmas) != x.ndim - 2:
        raise ValueError(f"gaussian_smooth: {len(sigmas)} sigmas for {x.ndim - 2} spatial axes")
    for axis, s in zip(range(2, x.ndim), sigmas):
        n = x.shape[axis]
        if n == 1 or s <= 0:
            continue
        kernel = gaussian_kernel(s).tolist()
        radius = len(kernel) // 2
        pad = [0] * (2 * (x.ndim - 2))
        pad[2 * (x.ndim - 1 - axis)] = pad[2 * (x.ndim - 1 - axis) + 1] = radius
        padded = F.pad(x, pad, mode="replicate")
        out = padded.narrow(axis, radius, n) * kernel[radius]
        for offset in range(1, radius + 1):
            pair = padded.narrow(axis, radius - offset, n) + padded.narrow(axis, radius + offset, n)
            out.add_(pair, alpha=kernel[radius + offset])
        x = out
    return x


def compose_step(field: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """The displacement of ``phi o (id + step)`` for ``phi = id + field`` (both in voxels, pull back):
    ``step(x) + field(x + step(x))``, the step applied first, then the deformation so far."""
    return step + warp(field, step)


def image_gradient(image: torch.Tensor) -> torch.Tensor:
    """Central differences (one-sided at the edges) of ``B x 1 x *spatial`` along each axis,
    ``B x dims x *spatial``, component ``i`` along array axis ``i`` (the fields' convention)."""
    dims = tuple(range(2, image.ndim))
    return torch.cat(torch.gradient(image, dim=dims), dim=1)


def step_length(step: torch.Tensor, quantile: float) -> float:
    """The ``quantile`` of a step's voxel displacement lengths (1: the largest, greedy's choice; below
    1, of every second voxel per axis, which is as good an estimate at an eighth of the cost)."""
    lengths = step.pow(2).sum(1)
    if quantile >= 1:
        return float(lengths.amax().sqrt())
    sample = lengths[(slice(None),) + (slice(None, None, 2),) * (step.ndim - 2)].flatten()
    k = max(1, min(sample.numel(), round(quantile * sample.numel())))
    return float(sample.kthvalue(k).values.sqrt())


class GreedyOptimizer:
    """Refines a :class:`Deformation` of one pair (or a batch) the greedy way (module docstring),
    with ``refine.greedy_*`` settings of ``config`` (:class:`deepatlas.config.RefineConfig`).

    Works on the displacement field whatever the net integrates (a net's velocity is not kept:
    the result is a displacement, whose folds the field smoothing keeps rare). ``losses`` holds
    the similarity at each iteration of the last call (coarse levels first; with ``greedy_residual``,
    of the moving image seen through the net's field), for inspection.
    """

    def __init__(self, config: RefineConfig) -> None:
        config.validate()
        self.config = config
        self.losses: list[float] = []

    def __call__(
        self,
        moving: torch.Tensor,
        fixed: torch.Tensor,
        start: Deformation | None = None,
        anatomy: Anatomy | None = None,
    ) -> Deformation:
        """``moving``, ``fixed``: ``B x 1 x *spatial`` in [0, 1]; ``start``: the net's deformation or
        None (identity). Returns the refined displacement at full resolution."""
        dims, shape = fixed.ndim - 2, tuple(fixed.shape[2:])
        moving, fixed = moving.float(), fixed.float()
        zero = fixed.new_zeros((fixed.shape[0], dims) + shape)
        net = zero if start is None else start.field.detach().float()
        residual = self.config.greedy_residual and start is not None
        self.losses = []
        with torch.no_grad():
            if residual:  # optimise psi in phi = phi_net o psi: the moving image seen through the net
                moving = warp(moving, net)
            field = zero if residual else net
            for factor, iterations in zip(self.config.greedy_levels, self.config.greedy_iterations):
                level_fixed = pool_image(fixed, factor)
                field = resize_field(field, tuple(level_fixed.shape[2:]))
                field = self._level(pool_image(moving, factor), level_fixed, field, iterations)
            field = resize_field(field, shape)
            return Deformation(compose_step(net, field) if residual else field)

    def _level(self, moving: torch.Tensor, fixed: torch.Tensor, field: torch.Tensor, iterations: int) -> torch.Tensor:
        """``iterations`` greedy steps on one level's images, from ``field`` (on that level's grid)."""
        cfg = self.config
        similarity = self._similarity(fixed)
        source = similarity.to_warp(moving)
        for _ in range(iterations):
            warped = warp(source, field)
            gradient = self._gradient(similarity, warped)
            step = gaussian_smooth(gradient, cfg.greedy_sigma_grad)
            largest = step_length(step, cfg.greedy_step_quantile)
            if largest <= 0:  # a flat similarity (identical images): nothing left to gain
                break
            field = compose_step(field, step * (-cfg.greedy_epsilon / largest))
            field = gaussian_smooth(field, cfg.greedy_sigma_field)
        return field

    def _gradient(self, similarity: torch.nn.Module, warped: torch.Tensor) -> torch.Tensor:
        """d similarity / d step at step 0, ``B x dims x *spatial``: the loss's derivative with
        respect to the warped image times that image's spatial gradient (summed over channels)."""
        with torch.enable_grad():
            warped = warped.detach().requires_grad_(True)
            loss = similarity(warped)
            (d_warped,) = torch.autograd.grad(loss, warped)
        self.losses.append(float(loss))
        channels = [image_gradient(warped[:, c : c + 1]) * d_warped[:, c : c + 1] for c in range(warped.shape[1])]
        return torch.stack(channels).sum(0)

    def _similarity(self, fixed: torch.Tensor) -> torch.nn.Module:
        """The similarity to ``fixed`` (one level's image) that ``refine.similarity`` names."""
        if self.config.similarity == "mi":
            return MutualInformationToFixed(fixed)
        if self.config.similarity == "mind":
            return MINDToFixed(fixed)
        return LocalNCCToFixed(fixed, self.config.lncc_window)
