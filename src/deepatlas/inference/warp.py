"""Applying a saved registration to more images: what ``deepatlas warp`` does.

A field written by ``register`` (:func:`~deepatlas.inference.outputs.write_registration`) maps
each voxel ``p`` of its grid to the point ``p + u(p)`` where the other image is read: the forward
``_displacement`` brings moving-space images onto the fixed grid, the ``_inverse_displacement``
brings fixed-space images onto the moving grid. An input may be on any grid (it is sampled
through world coordinates); its output is on the field's grid. Images are interpolated linearly
and label maps by label interpolation (:func:`~deepatlas.inference.geometry.sample_labels`), as
``register`` warps them; which an input is, is said by the
caller (``--labels``), not guessed from the data type: T1 images are often stored as integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from deepatlas.data.errors import DataError
from deepatlas.data.io import Volume, load_image, load_label_codes, save_volume
from deepatlas.data.subjects import subject_id
from deepatlas.inference.geometry import sample, sample_labels, world_coordinates
from deepatlas.inference.itk import FORWARD, flip_ras_lps, parse_description
from deepatlas.inference.outputs import check_free, check_outputs, label_dtype

ACCEPTED = (
    "give a <moving>_to_<fixed>_displacement.nii.gz or _inverse_displacement.nii.gz (or its _Warp / _InverseWarp "
    "copy) written by deepatlas register"
)


@dataclass
class SavedField:
    """A field as ``register`` wrote it: ``displacement`` ``dims x *shape`` (mm, RAS axes, float64)
    on the grid ``affine``; ``meaning``: :data:`~deepatlas.inference.itk.FORWARD` or ``INVERSE``."""

    displacement: torch.Tensor
    affine: np.ndarray
    meaning: str
    path: Path

    @property
    def forward(self) -> bool:
        return self.meaning == FORWARD


def read_field(path: str | Path) -> SavedField:
    """A displacement field written by ``register`` (ours in RAS, or its ITK/ANTs ``_Warp`` copy in
    LPS, brought back to RAS); anything else is refused, named by what its header holds."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for unreadable files
        raise DataError(f"{path}: cannot read as a NIfTI displacement field ({type(err).__name__}: {err})") from None
    description = _description(image)
    parsed = parse_description(description)
    if parsed is None:
        raise DataError(
            f"{path}: not a displacement field of deepatlas (header description {description!r}); {ACCEPTED}"
        )
    shape = image.shape
    dims = shape[-1] if len(shape) == 5 else 0
    if dims not in (2, 3) or shape[3] != 1 or (dims == 2 and shape[2] != 1):
        raise DataError(f"{path}: shape {shape}, not X x Y x Z x 1 x 3 (or X x Y x 1 x 1 x 2); {ACCEPTED}")
    vectors = np.asarray(image.dataobj, dtype=np.float64).reshape(shape[:dims] + (dims,))
    if not np.isfinite(vectors).all():
        raise DataError(f"{path}: the displacement holds NaN or infinite values")
    field = np.moveaxis(vectors, -1, 0)
    convention, meaning = parsed
    if convention == "LPS":
        field = flip_ras_lps(field)
    return SavedField(
        torch.from_numpy(np.ascontiguousarray(field)), np.asarray(image.affine, np.float64), meaning, path
    )


def _description(image) -> str:
    """The NIfTI header's ``descrip`` as text ('' for formats without one)."""
    try:
        value = np.asarray(image.header["descrip"]).item()
    except (KeyError, TypeError, ValueError):
        return ""
    return value.decode("latin-1").rstrip("\x00") if isinstance(value, bytes) else str(value)


def check_volume(field: SavedField, volume: Volume, points: torch.Tensor | None = None) -> None:
    """Refuse an input the field cannot be applied to: another number of dimensions, or a grid
    that no point of the field reads from (an image of the other space, or of another subject).
    ``points``: the field's :func:`field_points`, if computed already."""
    dims = field.displacement.shape[0]
    if volume.array.ndim != dims:
        raise DataError(f"{volume.path}: a {volume.array.ndim}D image, but {field.path} is a {dims}D field")
    if not _inside(field_points(field) if points is None else points, volume).any():
        side = "moving" if field.forward else "fixed"
        raise DataError(
            f"{volume.path}: no point of the field's grid maps into this image; is it in the {side} image's "
            f"space ({field.path.name} brings {side}-space images onto its grid)?"
        )


def field_points(field: SavedField) -> torch.Tensor:
    """``p + u(p)`` for every voxel ``p`` of the field's grid (world mm, ``dims x *shape``)."""
    return world_coordinates(tuple(field.displacement.shape[1:]), field.affine) + field.displacement


def warp_volume(
    field: SavedField, volume: Volume, labels: bool = False, points: torch.Tensor | None = None
) -> np.ndarray:
    """``volume`` (any grid) on the field's grid, read at ``p + u(p)``: linear and float32 for an image,
    its own codes for a label map (``labels``: :func:`~deepatlas.inference.geometry.sample_labels`).
    Zero where the points leave it.
    ``points``: the field's :func:`field_points`, if computed already."""
    points = field_points(field) if points is None else points
    check_volume(field, volume, points)
    if labels:
        codes = torch.from_numpy(volume.array.astype(np.int32))
        return sample_labels(codes, volume.affine, points).numpy()
    values = torch.from_numpy(volume.array.astype(np.float32))[None]
    return sample(values, volume.affine, points)[0].numpy()


def _inside(points: torch.Tensor, volume: Volume) -> torch.Tensor:
    """Which world points (``dims x *shape``) fall within the volume's voxel grid."""
    dims = points.shape[0]
    matrix = torch.from_numpy(np.linalg.inv(volume.affine[:dims, :dims]))
    offset = torch.from_numpy(volume.affine[:dims, 3]).view((dims,) + (1,) * dims)
    voxels = torch.einsum("ij,j...->i...", matrix, points - offset)
    sizes = torch.tensor(volume.array.shape, dtype=voxels.dtype).view((dims,) + (1,) * dims)
    return ((voxels > -0.5) & (voxels < sizes - 0.5)).all(0)


def warp_outputs(field_path: Path, inputs: list[Path], output: Path, overwrite: bool) -> list[Path]:
    """``<output>/<input id>_warped.nii.gz`` per input, after refusing (before any work) two inputs
    with one name, an output that would replace an input or the field, and existing files without
    ``overwrite``."""
    targets = [output / f"{subject_id(path)}_warped.nii.gz" for path in inputs]
    protected = {Path(field_path): "the displacement field", **{Path(p): "input" for p in inputs}}
    check_outputs([(str(p), [t]) for p, t in zip(inputs, targets)], protected, "give them different file names")
    check_free(targets, overwrite)
    return targets


def warp_files(field_path: Path, inputs: list[Path], output: Path, labels: bool, overwrite: bool) -> SavedField:
    """``deepatlas warp``: every input (images, or label maps with ``labels``) through the field,
    written on its grid as ``<input id>_warped.nii.gz``. The field and every output name are checked
    before any work; the inputs are read one at a time (a folder of 1 mm scans would not fit in
    memory at once), so a bad one stops the command with the files before it written."""
    field = read_field(field_path)
    targets = warp_outputs(Path(field_path), inputs, output, overwrite)
    points = field_points(field)
    for path, target in zip(inputs, targets):
        volume = load_label_codes(path) if labels else load_image(path)
        warped = warp_volume(field, volume, labels, points)
        save_volume(warped.astype(label_dtype(warped) if labels else np.float32), field.affine, target)
    return field
