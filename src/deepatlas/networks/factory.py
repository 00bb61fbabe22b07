"""Building the two networks from a configuration."""

from __future__ import annotations

from deepatlas.config import Config
from deepatlas.networks.registration import RegistrationNet
from deepatlas.networks.segmentation import SegmentationNet


def build_networks(config: Config, spatial_dims: int, num_classes: int) -> tuple[RegistrationNet, SegmentationNet]:
    r, s = config.reg_net, config.seg_net
    reg_net = RegistrationNet(
        spatial_dims,
        r.channels,
        r.strides,
        r.num_res_units,
        r.dropout,
        r.norm,
        top_layer=r.top_layer,
        diffeomorphic=r.diffeomorphic,
        integration_steps=r.integration_steps,
    )
    seg_net = SegmentationNet(
        spatial_dims, num_classes, s.channels, s.strides, s.num_res_units, s.dropout, s.norm, s.top_layer
    )
    return reg_net, seg_net
