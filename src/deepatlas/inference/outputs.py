"""Writing the results of ``register``, ``segment`` and ``atlas-segment`` as NIfTI files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepatlas.data.io import save_volume
from deepatlas.inference.apply import Registration


class OutputExistsError(FileExistsError):
    pass


def check_free(paths: list[Path], overwrite: bool) -> None:
    """Refuse, before any work, to overwrite existing outputs unless asked to."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{existing[0]} exists"
            + (f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else "")
            + "; pass --overwrite to replace, or choose another output folder"
        )


def registration_paths(output: Path, moving_id: str, fixed_id: str, with_labels: bool) -> dict[str, Path]:
    stem = output / f"{moving_id}_to_{fixed_id}"
    paths = {
        "warped": Path(f"{stem}_warped.nii.gz"),
        "displacement": Path(f"{stem}_displacement.nii.gz"),
        "jacobian": Path(f"{stem}_jacdet.nii.gz"),
    }
    if with_labels:
        paths["labels"] = Path(f"{stem}_labels.nii.gz")
    return paths


def write_registration(result: Registration, paths: dict[str, Path]) -> None:
    """The warped image, the displacement field, the Jacobian determinant map and the warped labels.

    The displacement is a NIfTI vector image (``X x Y x Z x 1 x 3``, intent ``vector``)
    in millimetres along the NIfTI world (RAS+) axes, on the fixed image's grid:
    the moving point matching fixed voxel ``p`` is ``p + u(p)`` in world coordinates.
    """
    save_volume(result.warped.astype(np.float32), result.affine, paths["warped"])
    dims = result.displacement.shape[0]
    vector = np.moveaxis(result.displacement, 0, -1)
    vector = vector.reshape(vector.shape[:-1] + (1,) * (4 - dims) + (dims,))
    save_volume(
        vector.astype(np.float32),
        result.affine,
        paths["displacement"],
        intent="vector",
        description="deepatlas displacement mm RAS, moving = p + u(p)",
        compress=False,  # noisy floats: gzip saves ~7 % for a third of a second per pair
    )
    save_volume(result.jacobian.astype(np.float32), result.affine, paths["jacobian"], compress=False)
    if "labels" in paths and result.warped_labels is not None:
        save_volume(result.warped_labels.astype(label_dtype(result.warped_labels)), result.affine, paths["labels"])


def label_dtype(codes: np.ndarray) -> type:
    """The smallest of int16/int32 that holds the codes (NIfTI viewers read both)."""
    return np.int16 if codes.size == 0 or (codes.min() >= -32768 and codes.max() < 32768) else np.int32
