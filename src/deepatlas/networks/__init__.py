"""Networks of DeepAtlas: the registration net, the segmentation net and warping."""

from deepatlas.networks.registration import RegistrationNet
from deepatlas.networks.segmentation import SegmentationNet
from deepatlas.networks.warp import warp_image, warp_labels, warp_probabilities

__all__ = ["RegistrationNet", "SegmentationNet", "warp_image", "warp_labels", "warp_probabilities"]
