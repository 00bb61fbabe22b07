"""The volume kinds of ``benchmarks.atrophy_validation`` (no data needed)."""

from pathlib import Path

import pytest


def test_csf_partial_volumes_count_a_half_dark_layer_outside_the_mask_as_half():
    """The exploratory volume kind of ``benchmarks.atrophy_validation``: a ventricle's mask grown by one voxel
    and read as CSF fractions of the intensities; a layer half CSF outside the mask adds half its volume."""
    import numpy as np

    from benchmarks.atrophy_validation import csf_partial_volumes
    from deepatlas.data.io import Volume
    from deepatlas.data.labels import LabelScheme

    scheme = LabelScheme(names=["background", "WM", "LateralVentricle-L"], codes=[[0], [1], [2]])
    codes = np.zeros((20, 20, 20), int)
    codes[2:18, 2:18, 2:18], codes[7:13, 7:13, 7:13] = 1, 2
    image = np.where(codes == 2, 0.1, np.where(codes == 1, 0.9, 0.0)).astype(np.float32)
    image[13, 7:13, 7:13] = 0.5  # 36 voxels half CSF beside the mask
    volumes = csf_partial_volumes(Volume(image, np.diag([2.0, 2.0, 2.0, 1.0]), Path("x.nii.gz")), codes, scheme, 1)
    assert volumes["LateralVentricle-L"] == pytest.approx((216 + 18) * 8.0)
    assert volumes["WM"] == float((codes == 1).sum() * 8.0)  # other structures: their label counts
