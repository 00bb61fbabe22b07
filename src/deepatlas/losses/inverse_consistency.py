"""Inverse consistency of a pair of displacement fields (ICON, GradICON).

``forward`` registers A to B and ``backward`` B to A, both pull-back fields in voxels
(``B x dims x *spatial``): point ``x`` of B corresponds to ``y = x + forward(x)`` in A, and
``y`` back to ``y + backward(y)`` in B. A consistent pair returns every point where it
started, so the residual ``forward(x) + backward(x + forward(x))`` is zero:

- ``icon``: mean squared residual (Greer et al., ICCV 2021);
- ``gradicon``: mean squared finite-difference derivative of the residual, i.e. of the
  composed map's Jacobian minus the identity (Tian et al., CVPR 2023): it leaves a global
  offset alone and regularises less of what similarity needs.
"""

from __future__ import annotations

import torch

from deepatlas.networks.warp import warp_image
from deepatlas.options import INVERSE_CONSISTENCY, look_up_option


def consistency_residual(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """``forward(x) + backward(x + forward(x))``: zero where the two maps invert each other."""
    return forward + warp_image(backward, forward)


def inverse_consistency_loss(forward: torch.Tensor, backward: torch.Tensor, kind: str = "icon") -> torch.Tensor:
    """The ``icon`` or ``gradicon`` penalty of a pair of fields (see the module docstring)."""
    kind = look_up_option(kind, INVERSE_CONSISTENCY, "inverse-consistency loss")
    residual = consistency_residual(forward, backward)
    if kind == "icon":
        return residual.pow(2).mean()
    return sum(torch.diff(residual, dim=axis).pow(2).mean() for axis in range(2, residual.ndim))


def inverse_consistency_error(forward: torch.Tensor, backward: torch.Tensor) -> float:
    """Root mean squared residual in voxels: how far a point lands from where it started."""
    return float(consistency_residual(forward, backward).pow(2).sum(1).mean().sqrt())
