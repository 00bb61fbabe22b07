"""The top (last, full-resolution) layer of a U-Net, and a cheaper one.

MONAI's ``UNet`` ends with a transposed convolution from the first level's features (at the
first stride's resolution: half resolution here) to the output at full resolution. For a
seg net with 32 classes at 80x96x80 that one layer is most of the step: its 3x3x3 kernel runs
at full resolution on 2 x first-level channels in and K + 1 out (measured: ~55 % of the seg
net's forward and backward on 2 CPU cores). ``upsample`` replaces it by a 1x1x1 convolution at
the first level's resolution and a (bi/tri)linear upsampling of its output: both are linear,
so this equals a 1x1x1 convolution of the upsampled features, at 1/8 of the voxels and 1/27
of the kernel.
"""

from __future__ import annotations

import torch
from monai.networks.nets import UNet
from torch import nn

from deepatlas import options


class UpsampleTop(nn.Module):
    """``B x C_in x (S/f)`` -> ``B x C_out x S``: 1x1 convolution, then linear upsampling by ``factor``."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, factor: int) -> None:
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.conv = conv(in_channels, out_channels, kernel_size=1)
        self.factor = factor
        self.mode = "trilinear" if spatial_dims == 3 else "bilinear"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.conv(features))

    def upsample(self, maps: torch.Tensor) -> torch.Tensor:
        """``B x C x (S/f)`` -> ``B x C x S`` by linear interpolation (any channel count: a linear
        map applied per voxel before or after it gives the same result)."""
        if self.factor == 1:
            return maps
        return nn.functional.interpolate(maps, scale_factor=self.factor, mode=self.mode, align_corners=False)


def set_top_layer(unet: UNet, kind: str, spatial_dims: int, first_channels: int, first_stride: int) -> None:
    """Replace ``unet``'s top layer as ``kind`` (:data:`deepatlas.options.TOP_LAYER`) says, in place."""
    options.look_up_option(kind, options.TOP_LAYER, "top_layer")
    if kind == "transposed":
        return
    # MONAI's UNet is Sequential(down, SkipConnection(...), up); the top "up" sees the skip
    # concatenation: 2 x the first level's channels, or first + second with only two levels.
    # Read it from the layer being replaced rather than re-deriving MONAI's rule.
    convs = [m for m in unet.model[-1].modules() if isinstance(m, nn.modules.conv._ConvNd)]
    in_channels = convs[0].in_channels if convs else 2 * first_channels
    unet.model[-1] = UpsampleTop(spatial_dims, in_channels, unet.out_channels, first_stride)
