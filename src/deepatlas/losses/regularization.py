"""Smoothness regularisers on displacement fields (MONAI's finite-difference losses).

Both take a field ``B x spatial_dims x HxW[xD]`` in voxel units and average over
batch, components and voxels:

- ``bending``: sum of squared second derivatives (``u_xx^2 + ... + 2 u_xy^2 + ...``),
  central differences on interior voxels. Penalises curvature, not translation or
  any affine part, so it does not fight the global alignment.
- ``diffusion``: sum of squared first derivatives (``u_x^2 + ...``), central
  differences. Penalises any spatial change of the field.
"""

from __future__ import annotations

from monai.losses import BendingEnergyLoss, DiffusionLoss
from torch import nn

from deepatlas.options import REGULARIZER, look_up_option


def make_regularizer(name: str) -> nn.Module:
    name = look_up_option(name, REGULARIZER, "regularizer")
    return BendingEnergyLoss() if name == "bending" else DiffusionLoss()
