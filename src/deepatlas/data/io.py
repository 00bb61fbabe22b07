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

MIN_EXTENT_MM = 60.0
"""A scan narrower than this along any axis is a slab or a localiser, not a brain (about 140 mm)."""
LABEL_GRID_POSITION = 0.1
"""How far (in voxels) a label map's origin may sit from its image's: headers are rewritten by many
tools (qform/sform in float32, quaternions), which moves them by far less; a shifted header moves by mm."""
LABEL_GRID_DIRECTION = 1e-3
"""How much a label map's voxel axes (direction x spacing, relative to the spacing) may differ from its
image's: float32 rounding is ~1e-7, a flipped, permuted or rescaled grid differs by 1 or more."""
LABEL_MAP_MAX_CODES = 300
"""At most this many distinct values in a label map (parcellations have tens to a few hundred codes);
a scan has thousands, except 8-bit scans (256), which the piecewise-constant test tells apart."""
LABEL_MAP_MIN_BACKGROUND = 0.25
"""At least this fraction of a label map is exactly 0 (outside the brain: 58 % on ixi-2mm's grid)."""
LABEL_MAP_MIN_FLAT = 0.5
"""At least this fraction of a label map's neighbouring voxel pairs (touching the foreground) are equal:
label maps are piecewise constant, scans noisy (ixi-2mm labels 0.71-0.74 at 2 mm, its scans as their
raw 8-bit values 0.04-0.13, and still 0.28 quantised to 32 grey levels)."""


@dataclass
class Volume:
    """An array with the geometry it came with."""

    array: np.ndarray
    affine: np.ndarray  # voxel index -> world (mm), 4x4
    path: Path

    @property
    def spacing(self) -> tuple[float, ...]:
        return grid_spacing(self.affine, self.array.ndim)


def grid_spacing(affine, dims: int) -> tuple[float, ...]:
    """Voxel sizes (mm) along the first ``dims`` array axes of a grid with world matrix ``affine``: the lengths
    of its columns (rotated or oblique grids included)."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :dims], axis=0))


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
    """Load an intensity image as float32, with slope/intercept applied; refuses NaN, inf, values
    beyond float32, constant images and label maps (:func:`label_map_evidence`)."""
    path = Path(path)
    img, affine = _load(path)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 are told apart below
            array = _squeeze_trailing(np.asarray(img.get_fdata(dtype=np.float32)))
    except Exception as err:
        raise DataError(f"{path}: cannot read image data ({type(err).__name__}: {err})") from None
    if array.ndim not in (2, 3):
        raise DataError(f"{path}: expected a 2D or 3D image, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(_not_finite(img, path))
    if float(array.max()) == float(array.min()):
        raise DataError(f"{path}: image is constant (all voxels {float(array.min())}); it carries no anatomy")
    evidence = label_map_evidence(array)
    if evidence is not None:
        raise DataError(
            f"{path}: looks like a label map, not an image ({evidence}); give the intensity scan here "
            f"(label maps go to --moving-labels, --atlas IMAGE LABELS or a dataset's labels/ folder)"
        )
    return Volume(array, np.asarray(affine, dtype=np.float64), path)


def _not_finite(img, path: Path) -> str:
    """Why an image read as float32 holds NaN or inf: in the file, or values too large for float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        raw = np.asanyarray(img.dataobj)
    if raw.dtype.kind == "f" and np.isfinite(raw).all():
        largest, limit = float(np.abs(raw).max()), float(np.finfo(np.float32).max)
        return (
            f"{path}: intensities up to {largest:.3g} are too large for float32 (at most {limit:.3g}); "
            f"rescale them (only their relative values matter) and save the image again"
        )
    return f"{path}: image contains NaN or infinite intensities; fix or mask them before training"


def label_map_evidence(array: np.ndarray) -> str | None:
    """Why ``array`` looks like a label map rather than a scan, or None: integer values, at most
    :data:`LABEL_MAP_MAX_CODES` of them, :data:`LABEL_MAP_MIN_BACKGROUND` exactly 0 and piecewise
    constant (:data:`LABEL_MAP_MIN_FLAT`). A label map read as an image is segmented or registered
    as if it were anatomy, without error; 8-bit scans (256 integer values, zero background) are
    told apart by their noise. Cheap tests first: a float scan leaves at the first."""
    step = max(1, array.size // 100_000)
    sample = array.ravel()[::step]
    if not np.array_equal(sample, np.rint(sample)) or np.unique(sample).size > LABEL_MAP_MAX_CODES:
        return None
    if not np.array_equal(array, np.rint(array)):
        return None
    background = float((array == 0).mean())
    codes = np.unique(array).size
    if background < LABEL_MAP_MIN_BACKGROUND or codes > LABEL_MAP_MAX_CODES:
        return None
    flat = _flat_fraction(array)
    if flat < LABEL_MAP_MIN_FLAT:
        return None
    return f"{codes} distinct integer values, {background:.0%} exactly 0, {flat:.0%} of neighbours equal"


def _flat_fraction(array: np.ndarray) -> float:
    """The fraction of neighbouring voxel pairs (along every axis, at least one of them nonzero) that
    hold the same value."""
    equal = pairs = 0
    for axis in range(array.ndim):
        first, second = np.moveaxis(array, axis, 0)[:-1], np.moveaxis(array, axis, 0)[1:]
        touching = (first != 0) | (second != 0)
        equal += int((touching & (first == second)).sum())
        pairs += int(touching.sum())
    return equal / max(pairs, 1)


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
        if raw.size and float(np.abs(raw).max()) >= 2**31:
            raise DataError(
                f"{path}: label values up to {float(np.abs(raw).max()):.3g}, beyond any label code (< 2^31); "
                f"is this an intensity image?"
            )
        rounded = np.rint(raw)
        if np.abs(raw - rounded).max() > 1e-3:
            raise DataError(f"{path}: label map has non-integer values; is this an intensity image?")
        raw = rounded
    return Volume(raw.astype(np.int64), np.asarray(affine, dtype=np.float64), path)


def read_grid(path: str | Path) -> Volume:
    """A file's voxel grid from its header alone: shape (trailing singleton axes dropped) and affine;
    ``array`` is a placeholder of that shape taking no memory. To check geometry before any work."""
    path = Path(path)
    img, affine = _load(path)
    shape = tuple(img.shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return Volume(np.broadcast_to(np.float32(0), shape), np.asarray(affine, dtype=np.float64), path)


def load_labelled(image: str | Path, labels: str | Path) -> tuple[Volume, Volume]:
    """An image and its label map, checked to share one voxel grid (:func:`check_label_grid`)."""
    pair = load_image(image), load_label_codes(labels)
    check_label_grid(*pair)
    return pair


def check_label_grid(image: Volume, labels: Volume) -> None:
    """Refuse a label map not on its image's voxel grid: another shape, or a header that places it
    elsewhere (origin more than :data:`LABEL_GRID_POSITION` voxels away, voxel axes differing by more
    than :data:`LABEL_GRID_DIRECTION`). Labels are looked up by world coordinates, so a label map with
    a header 20 mm off would be used 20 mm off: a silently wrong answer. The one check of every place
    that pairs a label map with an image (training, evaluation, prepare, register, atlases)."""
    if labels.array.shape != image.array.shape:
        raise DataError(
            f"{labels.path}: label map shape {labels.array.shape} does not match its image {image.path} "
            f"{image.array.shape}"
        )
    dims, spacing = image.array.ndim, np.asarray(image.spacing)
    axes = float((np.abs(labels.affine[:3, :dims] - image.affine[:3, :dims]) / spacing).max())
    shift = float(np.linalg.norm(labels.affine[:3, 3] - image.affine[:3, 3]))
    if axes <= LABEL_GRID_DIRECTION and shift <= LABEL_GRID_POSITION * spacing.min():
        return
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in image.array.shape], indexing="ij")).reshape(dims, -1)
    moved = (labels.affine[:3, :dims] - image.affine[:3, :dims]) @ corners + (labels.affine - image.affine)[:3, 3:]
    raise DataError(
        f"{labels.path}: its header places the label map up to {np.linalg.norm(moved, axis=0).max():.1f} mm away "
        f"from its image {image.path}; a label map must share its image's voxel grid (affine): copy the image's "
        f"header into it if the labels were drawn on this image, else resample them onto it"
    )


def extent_mm(volume: Volume) -> tuple[float, ...]:
    """How far ``volume`` reaches along each of its voxel axes: voxels x spacing, in mm."""
    return tuple(n * s for n, s in zip(volume.array.shape, volume.spacing))


def check_extent(volume: Volume, minimum_mm: float, why: str) -> None:
    """Refuse a volume narrower than ``minimum_mm`` along any of its axes (a slab, a localiser, a
    crop): the one rule of ``prepare`` (:data:`MIN_EXTENT_MM`) and of the commands applying a run to
    an image. ``why`` ends the message."""
    extent = extent_mm(volume)
    if min(extent) < minimum_mm:
        size = " x ".join(f"{e:.0f}" for e in extent)
        raise DataError(f"{volume.path}: covers only {size} mm; {why}")


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
