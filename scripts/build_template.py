"""Build the template that ships with deepatlas: the voxel-wise mean of ixi-2mm's training images.

    python scripts/build_template.py ../shared/data/ixi-2mm

writes ``src/deepatlas/templates/t1_2mm.nii.gz`` (80 x 96 x 80, 2 mm, the MNI-aligned grid of
ixi-2mm and of the shipped model; uint8 with scl_slope 1/255, so readers get 0..1). The mean of
150 healthy adults (20-86 years) rather than one subject: no single anatomy is favoured, and
its blur is what an affine alignment should match (gross shape, not folds). Intensities are
normalised as training normalises them (0.5-99.5 percentiles of the nonzero voxels) before
averaging. Validation and test images are not used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from deepatlas.data.io import load_image, normalize_intensity
from deepatlas.data.splits import load_splits
from deepatlas.data.template import TEMPLATE_PATH
from deepatlas.files import atomic_path


def mean_image(dataset: Path) -> tuple[np.ndarray, np.ndarray]:
    """The mean normalised training image and the grid's affine; refuses images on other grids."""
    ids = load_splits(dataset / "splits.json")["train"]
    total, affine = None, None
    for subject in ids:
        volume = load_image(dataset / "images" / f"{subject}.nii.gz")
        if affine is None:
            total, affine = np.zeros(volume.array.shape, np.float64), volume.affine
        if volume.array.shape != total.shape or not np.allclose(volume.affine, affine, atol=1e-4):
            raise SystemExit(f"{volume.path}: not on the grid of the first training image")
        total += normalize_intensity(volume.array)
    return (total / len(ids)).astype(np.float32), affine


def save_uint8(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """0..1 intensities as uint8 with scl_slope 1/255 (a quarter of float32's size, same as ixi-2mm)."""
    image = nib.Nifti1Image(np.rint(np.clip(array, 0, 1) * 255).astype(np.uint8), affine)
    image.header.set_slope_inter(1 / 255, 0)
    image.header["descrip"] = b"deepatlas T1 template: mean of ixi-2mm train"
    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(image, str(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, help="the ixi-2mm folder (images/, splits.json)")
    parser.add_argument("-o", "--output", type=Path, default=TEMPLATE_PATH)
    args = parser.parse_args()
    array, affine = mean_image(args.dataset)
    save_uint8(array, affine, args.output)
    print(f"{args.output}: mean of the training images, {array.shape}, {args.output.stat().st_size} bytes")


if __name__ == "__main__":
    main()
