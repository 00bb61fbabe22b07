"""The template that ships with the package: where prepared datasets and the shipped model live.

``t1_2mm.nii.gz``: the voxel-wise mean of the 150 ixi-2mm training images (skull-stripped T1,
affinely aligned to MNI ICBM 2009a, 2 mm, 80 x 96 x 80; built by ``scripts/build_template.py``).
``deepatlas prepare`` aligns raw scans to it, so a prepared dataset is on the grid, in the space
and at the intensity scale of ixi-2mm and of ``models/brain-2mm``.
"""

from __future__ import annotations

from pathlib import Path

from deepatlas.data.io import Volume, load_image

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "templates" / "t1_2mm.nii.gz"


def load_template(path: str | Path | None = None) -> Volume:
    """The shipped template, or the image at ``path`` (a user's own template, any grid)."""
    return load_image(TEMPLATE_PATH if path is None else path)
