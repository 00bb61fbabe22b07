"""Segmentation network: a MONAI U-Net giving ``K + 1`` class logits."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.nets import UNet
from torch import nn

from deepatlas.networks.padding import channels_last, crop_padding, pad_to_multiple
from deepatlas.networks.top_layer import set_top_layer


class SegmentationNet(nn.Module):
    """U-Net mapping an image ``Bx1xHxW[xD]`` to float32 logits ``Bx(K+1)xHxW[xD]`` (channel 0 is background).

    Any spatial size is accepted: the input is zero-padded to the network's size
    multiple (``prod(strides)``) and the logits are cropped back.

    Args:
        spatial_dims: 2 or 3.
        num_classes: number of classes including background (``K + 1``).
        channels: feature channels per level.
        strides: stride of each down-sampling level (``len(channels) - 1`` entries).
            A first stride of 2 keeps every hidden feature map at half resolution
            or lower, which is what makes a CPU step affordable.
        num_res_units: residual units per block (0 = plain conv blocks).
        dropout: dropout probability.
        norm: ``"instance"`` or ``"batch"``.
        top_layer: ``transposed`` (MONAI's full-resolution layer) or ``upsample`` (cheaper,
            :mod:`deepatlas.networks.top_layer`).
    """

    def __init__(
        self,
        spatial_dims: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 0,
        dropout: float = 0.0,
        norm: str = "instance",
        top_layer: str = "transposed",
    ) -> None:
        super().__init__()
        if len(strides) != len(channels) - 1:
            raise ValueError(f"strides needs len(channels) - 1 = {len(channels) - 1} entries, got {len(strides)}")
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.size_multiple = math.prod(strides)
        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=1,
            out_channels=num_classes,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            dropout=dropout,
            norm=norm,
        )
        set_top_layer(self.unet, top_layer, spatial_dims, channels[0], strides[0])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        padded, pads = pad_to_multiple(channels_last(image), self.size_multiple)
        # float32 in the standard layout, in one copy: the losses need float32, and a
        # softmax over channels is 4x slower on a channels-last tensor
        return crop_padding(self.unet(padded), pads).to(torch.float32, memory_format=torch.contiguous_format)


def mirrored_softmax(seg_net: nn.Module, x: torch.Tensor, axis: int, twins: Sequence[int]) -> torch.Tensor:
    """The softmax ``B x classes x *spatial`` (float32) of ``seg_net`` on ``x`` mirrored along the spatial
    ``axis``, flipped back, each class read from its twin's row (``twins``:
    :meth:`~deepatlas.data.labels.LabelScheme.mirrored`): what the seg net says of ``x`` seen in a mirror.
    Mirrored inference averages it with the plain pass (``seg_net.mirror_average``), as nnU-Net does."""
    flipped = torch.softmax(seg_net(x.flip(2 + axis)).float(), 1).flip(2 + axis)
    return flipped[:, torch.tensor(list(twins), device=flipped.device)]
