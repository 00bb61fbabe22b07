"""deepatlas: joint registration and segmentation (DeepAtlas) on PyTorch and MONAI."""

__version__ = "0.1.0"
