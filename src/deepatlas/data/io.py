"""Reading images and label maps with their geometry, and refusing bad ones early.

Any format nibabel reads works (NIfTI ``.nii``/``.nii.gz``, Analyze ``.img``/``.hdr``,
MGH). Trailing singleton axes are dropped, so an OASIS Analyze volume stored as
``176x208x176x1`` is 3D and a NIfTI ``HxWx1`` is a 2D image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import nibabel.openers
import numpy as np

from deepatlas.data.errors import DataError
from deepatlas.files import atomic_path


@dataclass
class Volume:
    """An array with the geometry it came with."""

    array: np.ndarray
    affine: np.ndarray  # voxel index -> world (mm), 4x4
    path: Path

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, : self.array.ndim], axis=0))


def _squeeze_trailing(array: np.ndarray) -> np.ndarray:
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def _load(path: Path):
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        return img, img.affine
    except Exception as err:  # nibabel raises many types for unreadable files
        raise DataError(f"{path}: cannot read as an image ({type(err).__name__}: {err})") from None


def load_image(path: str | Path) -> Volume:
    """Load an intensity image as float32, with slope/intercept applied; refuses NaN, inf and constant images."""
    path = Path(path)
    img, affine = _load(path)
    try:
        array = _squeeze_trailing(np.asarray(img.get_fdata(dtype=np.float32)))
    except Exception as err:
        raise DataError(f"{path}: cannot read image data ({type(err).__name__}: {err})") from None
    if array.ndim not in (2, 3):
        raise DataError(f"{path}: expected a 2D or 3D image, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: image contains NaN or infinite intensities; fix or mask them before training")
    if float(array.max()) == float(array.min()):
        raise DataError(f"{path}: image is constant (all voxels {float(array.min())}); it carries no anatomy")
    return Volume(array, np.asarray(affine, dtype=np.float64), path)


def load_label_codes(path: str | Path) -> Volume:
    """Load a label map as integer codes (no scaling); refuses non-integer values."""
    path = Path(path)
    img, affine = _load(path)
    try:
        # asanyarray applies any scl_slope/inter, which turns the codes into floats
        raw = _squeeze_trailing(np.asanyarray(img.dataobj))
    except Exception as err:
        raise DataError(f"{path}: cannot read label data ({type(err).__name__}: {err})") from None
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise DataError(f"{path}: label map contains NaN or infinite values")
        rounded = np.rint(raw)
        if np.abs(raw - rounded).max() > 1e-3:
            raise DataError(f"{path}: label map has non-integer values; is this an intensity image?")
        raw = rounded
    return Volume(raw.astype(np.int64), np.asarray(affine, dtype=np.float64), path)


def normalize_intensity(array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Map the ``lower``..``upper`` percentiles of the nonzero voxels to 0..1 and clip.

    Percentiles, not min/max, so a few hot voxels cannot squash the contrast;
    nonzero voxels, so the size of the background does not matter.
    """
    values = array[array != 0]
    if values.size == 0:
        values = array.ravel()
    lo, hi = np.percentile(values, [lower, upper])
    lo = min(float(lo), 0.0) if array.min() >= 0 else float(lo)
    if hi <= lo:
        hi = float(values.max())
    return np.clip((array - lo) / max(hi - lo, 1e-8), 0.0, 1.0).astype(np.float32)


def save_volume(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    intent: str | None = None,
    description: str | None = None,
    compress: bool = True,
) -> Path:
    """Write a NIfTI file atomically (temp file in the same folder, then rename).

    ``compress=False`` still writes a valid ``.nii.gz`` (gzip's stored blocks): for float maps
    such as a refined displacement field, which gzip shrinks by ~7 % at a third of a second per
    pair, most of the time of writing a registration.
    """
    path = Path(path)
    image = nib.Nifti1Image(array, affine)
    if intent is not None:
        image.header.set_intent(intent)
    if description is not None:
        image.header["descrip"] = description[:79].encode()
    with atomic_path(path, ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix) as tmp:
        if compress:
            nib.save(image, str(tmp))
        else:
            with nib.openers.Opener(str(tmp), "wb", compresslevel=0) as handle:
                image.to_stream(handle)
    return path
