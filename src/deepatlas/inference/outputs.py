"""Writing the results of ``register``, ``segment`` and ``atlas-segment`` as NIfTI files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deepatlas.data.io import save_volume
from deepatlas.files import atomic_write_text
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


def registration_paths(
    output: Path, moving_id: str, fixed_id: str, with_labels: bool, inverse: bool = False, summary: bool = False
) -> dict[str, Path]:
    """Where ``register`` writes one pair: ``<moving>_to_<fixed>_{warped,displacement,jacdet}.nii.gz``,
    ``_labels`` with a moving label map, ``_inverse_displacement`` with ``inverse``, and with
    ``summary`` (an affine stage that may run, or ``inverse``) the ``_registration.json`` summary."""
    stem = output / f"{moving_id}_to_{fixed_id}"
    paths = {
        "warped": Path(f"{stem}_warped.nii.gz"),
        "displacement": Path(f"{stem}_displacement.nii.gz"),
        "jacobian": Path(f"{stem}_jacdet.nii.gz"),
    }
    if with_labels:
        paths["labels"] = Path(f"{stem}_labels.nii.gz")
    if inverse:
        paths["inverse"] = Path(f"{stem}_inverse_displacement.nii.gz")
    if summary or inverse:
        paths["summary"] = Path(f"{stem}_registration.json")
    return paths


def write_registration(result: Registration, paths: dict[str, Path]) -> None:
    """The warped image, the displacement field, the Jacobian determinant map, the warped labels,
    the inverse displacement and the JSON summary, as far as ``paths`` and ``result`` hold them.

    The displacement is a NIfTI vector image (``X x Y x Z x 1 x 3``, intent ``vector``)
    in millimetres along the NIfTI world (RAS+) axes, on the fixed image's grid:
    the moving point matching fixed voxel ``p`` is ``p + u(p)`` in world coordinates. The inverse
    is the same on the moving image's grid: the fixed point matching moving voxel ``q`` is ``q + v(q)``.
    """
    save_volume(result.warped.astype(np.float32), result.affine, paths["warped"])
    _save_field(result.displacement, result.affine, paths["displacement"], "moving = p + u(p)")
    save_volume(result.jacobian.astype(np.float32), result.affine, paths["jacobian"], compress=False)
    if "labels" in paths and result.warped_labels is not None:
        save_volume(result.warped_labels.astype(label_dtype(result.warped_labels)), result.affine, paths["labels"])
    if "inverse" in paths and result.inverse is not None:
        _save_field(result.inverse, result.inverse_affine, paths["inverse"], "fixed = q + v(q)")
    if "summary" in paths:
        summary = registration_summary(result)
        if summary:
            atomic_write_text(paths["summary"], json.dumps(summary, indent=1))
        else:  # nothing to report (no affine stage, no inverse): no file, and none left from an earlier run
            paths["summary"].unlink(missing_ok=True)


def _save_field(field: np.ndarray, affine: np.ndarray, path: Path, meaning: str) -> None:
    """A ``dims x *shape`` field (mm) as a NIfTI vector image ``X x Y x Z x 1 x dims``."""
    dims = field.shape[0]
    vector = np.moveaxis(field, 0, -1)
    vector = vector.reshape(vector.shape[:-1] + (1,) * (4 - dims) + (dims,))
    save_volume(
        vector.astype(np.float32),
        affine,
        path,
        intent="vector",
        description=f"deepatlas displacement mm RAS, {meaning}",
        compress=False,  # noisy floats: gzip saves ~7 % for a third of a second per pair
    )


def registration_summary(result: Registration) -> dict:
    """What the ``_registration.json`` beside a pair's outputs records: the affine stage (ran, why,
    alignment NCC, the 4x4 world map fixed point -> moving point before the deformation), the fixed
    image's alignment to the model's template when ``--align`` did it, and,
    with an inverse, the inverse-consistency error in mm over the fixed image's foreground.
    Empty when the affine stage did not run and there is no inverse."""
    stage, space = result.affine_stage, result.model_space
    aligned = space is not None and space.aligned
    if (stage is None or not stage.ran) and result.inverse_consistency is None and not aligned:
        return {}
    summary: dict = {"affine_stage": None}
    if aligned:  # the fixed image was brought into the model's space (--align): how
        summary["model_space"] = space.as_dict()
    if stage is not None:
        matrix = None if stage.matrix is None else np.round(stage.matrix, 6).tolist()
        summary["affine_stage"] = {"ran": stage.ran, "why": stage.why, "ncc": stage.ncc, "matrix": matrix}
    if result.inverse_consistency is not None:
        summary["inverse_consistency_mm"] = result.inverse_consistency
    return summary


def label_dtype(codes: np.ndarray) -> type:
    """The smallest of int16/int32 that holds the codes (NIfTI viewers read both)."""
    return np.int16 if codes.size == 0 or (codes.min() >= -32768 and codes.max() < 32768) else np.int32
