"""Registration network: (moving, fixed) -> dense displacement field."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.blocks import DVF2DDF
from monai.networks.layers import Conv
from monai.networks.nets import UNet
from torch import nn

from deepatlas.networks.padding import channels_last, crop_padding, pad_to_multiple
from deepatlas.networks.top_layer import UpsampleTop, set_top_layer


class RegistrationNet(nn.Module):
    """U-Net mapping a pair to a displacement field.

    Input: ``moving`` and ``fixed``, each ``Bx1xHxW[xD]``. Output: the displacement
    field ``u`` as float32 ``B x spatial_dims x HxW[xD]`` in **voxel units**, indexed in the
    order of the array axes, following MONAI's ``Warp``: the warped moving image is
    ``moving(x + u(x))``, sampled on the fixed image's grid.

    The final 1x1 convolution starts at zero, so training starts from the identity
    transform rather than from a random deformation that the regulariser must undo.

    Args:
        spatial_dims: 2 or 3.
        channels, strides, num_res_units, dropout, norm: the U-Net, as in MONAI's ``UNet``.
        top_layer: ``transposed`` (MONAI's full-resolution layer) or ``upsample`` (cheaper: the
            field is predicted at the first level's resolution and upsampled linearly).
        head_channels: features handed from the U-Net to the zero-initialised head.
        diffeomorphic: treat the output as a stationary velocity field and integrate
            it by scaling and squaring (``integration_steps``), which makes folds rare
            by construction at the cost of a few extra warps per step.
        integration_steps: scaling-and-squaring steps when ``diffeomorphic``.
    """

    # ten parameters on purpose: MONAI UNet's own keywords, each with a default, passed through
    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int] = (16, 32, 32, 32),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 0,
        dropout: float = 0.0,
        norm: str = "instance",
        top_layer: str = "transposed",
        head_channels: int = 8,
        diffeomorphic: bool = False,
        integration_steps: int = 7,
    ) -> None:
        super().__init__()
        if len(strides) != len(channels) - 1:
            raise ValueError(f"strides needs len(channels) - 1 = {len(channels) - 1} entries, got {len(strides)}")
        self.spatial_dims = spatial_dims
        self.size_multiple = math.prod(strides)
        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=2,
            out_channels=head_channels,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            dropout=dropout,
            norm=norm,
        )
        set_top_layer(self.unet, top_layer, spatial_dims, channels[0], strides[0])
        self.head = Conv[Conv.CONV, spatial_dims](head_channels, spatial_dims, kernel_size=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.integrate = DVF2DDF(num_steps=integration_steps) if diffeomorphic else None

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        field = self.raw_field(moving, fixed)
        if self.integrate is not None:
            field = self.integrate(field)
        return field

    def raw_field(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The head's output: the displacement, or in diffeomorphic mode the stationary velocity
        field (voxel units) whose scaling-and-squaring flow :meth:`forward` returns."""
        if moving.shape != fixed.shape:
            raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must have the same shape")
        pair, pads = pad_to_multiple(channels_last(torch.cat([moving, fixed], dim=1)), self.size_multiple)
        top = self.unet.model[-1]
        if isinstance(top, UpsampleTop):
            # the 1x1 head and the linear upsampling commute: the head at the first level's
            # resolution, then upsampling spatial_dims channels instead of head_channels
            # (the same field, ~40 ms less per step at 80x96x80 on 2 CPU cores)
            field = top.upsample(self.head(top.conv(self.unet.model[:-1](pair))))
        else:
            field = self.head(self.unet(pair))
        return crop_padding(field, pads).to(torch.float32, memory_format=torch.contiguous_format)
