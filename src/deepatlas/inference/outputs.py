"""Writing the results of ``register``, ``segment`` and ``atlas-segment`` as NIfTI files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from deepatlas.data.errors import DataError
from deepatlas.data.io import save_volume
from deepatlas.data.subjects import subject_id
from deepatlas.files import atomic_write_text
from deepatlas.inference.apply import Registration
from deepatlas.inference.itk import FORWARD, INVERSE, field_description, flip_ras_lps, itk_affine_text


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


def unique_names(paths: list[Path]) -> list[str]:
    """One output name per input: its subject id (the file name without extension), unless two
    different files share that id; then each of them keeps as many of its parent folders' names
    as tell them apart, outermost first (``atlas_1/t1.nii.gz``, ``atlas_2/t1.nii.gz`` -> ``atlas_1_t1``,
    ``atlas_2_t1``; ``x/a/t1``, ``y/a/t1`` -> ``x_a_t1``, ``y_a_t1``). Deterministic: the names depend on
    the paths alone, not on their order. The same file given twice keeps one name (and
    :func:`check_outputs` refuses the collision)."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    files = [p.resolve() for p in paths]
    names = [subject_id(p) for p in paths]
    for sid in set(names):
        members = [i for i, name in enumerate(names) if name == sid]
        if len({files[i] for i in members}) < 2:
            continue
        for depth in range(1, max(len(absolute[i].parts) for i in members)):
            named = {i: "_".join(absolute[i].parts[-1 - depth : -1] + (sid,)) for i in members}
            if len({named[i] for i in members}) == len({files[i] for i in members}):
                break
        for i in members:
            names[i] = named[i]
    return names


def check_outputs(
    planned: list[tuple[str, list[Path]]], inputs: dict[Path, str], hint: str = "rename one of them"
) -> None:
    """Before any work: refuse two inputs that would write one file, and any output that would
    replace one of the command's inputs (with or without ``--overwrite``: an input is the user's data).

    ``planned``: per job, what it reads (as the user named it) and the files it writes; ``inputs``:
    every file read (images, label maps beside them, atlases, pairs file ...) -> what it is.
    """
    protected = {_identity(p): (p, kind) for p, kind in inputs.items()}
    writer: dict[Path, tuple[int, str]] = {}
    for job, (source, paths) in enumerate(planned):
        for path in paths:
            key = Path(os.path.abspath(path)).resolve()
            if writer.setdefault(key, (job, source))[0] != job:
                raise DataError(f"{writer[key][1]} and {source} would both write {path}; {hint}")
            found = protected.get(_identity(path))
            if found:
                raise DataError(
                    f"{path}: would replace an input of this command ({found[1]} {found[0]}); outputs never "
                    "replace inputs, even with --overwrite: choose another output folder"
                )


def _identity(path: Path):
    """A file's (device, inode) when it exists (links and other spellings of one file agree), else its real path."""
    try:
        stat = os.stat(path)
    except OSError:
        return Path(os.path.abspath(path)).resolve()
    return (stat.st_dev, stat.st_ino)


def registration_paths(
    output: Path,
    moving_id: str,
    fixed_id: str,
    with_labels: bool,
    inverse: bool = False,
    summary: bool = False,
    name: str | None = None,
) -> dict[str, Path]:
    """Where ``register`` writes one pair: ``<moving>_to_<fixed>_{warped,displacement,jacdet}.nii.gz``
    (or ``<name>_...`` when the pair is given a name), ``_labels`` with a moving label map,
    ``_inverse_displacement`` with ``inverse``, and with ``summary`` (an affine stage that may run,
    or ``inverse``) the ``_registration.json`` summary. Beside ours, the ITK/ANTs copies
    (:mod:`deepatlas.inference.itk`): ``_Warp`` of the displacement, ``_InverseWarp`` with ``inverse``,
    and ``_Affine.txt`` (the affine stage alone) where the summary may be written."""
    stem = output / (name or f"{moving_id}_to_{fixed_id}")
    paths = {
        "warped": Path(f"{stem}_warped.nii.gz"),
        "displacement": Path(f"{stem}_displacement.nii.gz"),
        "itk_warp": Path(f"{stem}_Warp.nii.gz"),
        "jacobian": Path(f"{stem}_jacdet.nii.gz"),
    }
    if with_labels:
        paths["labels"] = Path(f"{stem}_labels.nii.gz")
    if inverse:
        paths["inverse"] = Path(f"{stem}_inverse_displacement.nii.gz")
        paths["itk_inverse"] = Path(f"{stem}_InverseWarp.nii.gz")
    if summary or inverse:
        paths["summary"] = Path(f"{stem}_registration.json")
        paths["itk_affine"] = Path(f"{stem}_Affine.txt")
    return paths


def write_registration(result: Registration, paths: dict[str, Path]) -> None:
    """The warped image, the displacement field, the Jacobian determinant map, the warped labels,
    the inverse displacement, their ITK/ANTs copies and the JSON summary, as far as ``paths`` and
    ``result`` hold them.

    The displacement is a NIfTI vector image (``X x Y x Z x 1 x 3``, intent ``vector``)
    in millimetres along the NIfTI world (RAS+) axes, on the fixed image's grid:
    the moving point matching fixed voxel ``p`` is ``p + u(p)`` in world coordinates. The inverse
    is the same on the moving image's grid: the fixed point matching moving voxel ``q`` is ``q + v(q)``.
    ``_Warp`` / ``_InverseWarp`` are the same fields along LPS axes and ``_Affine.txt`` the affine
    stage alone, for ITK, ANTs, SimpleITK and Slicer (:mod:`deepatlas.inference.itk`).
    """
    save_volume(result.warped.astype(np.float32, copy=False), result.affine, paths["warped"])
    _save_fields(result.displacement, result.affine, paths, ("displacement", "itk_warp"), FORWARD)
    save_volume(result.jacobian.astype(np.float32, copy=False), result.affine, paths["jacobian"], compress=False)
    if "labels" in paths and result.warped_labels is not None:
        save_volume(result.warped_labels.astype(label_dtype(result.warped_labels)), result.affine, paths["labels"])
    if "inverse" in paths and result.inverse is not None:
        _save_fields(result.inverse, result.inverse_affine, paths, ("inverse", "itk_inverse"), INVERSE)
    if "itk_affine" in paths:
        _write_itk_affine(result, paths["itk_affine"])
    if "summary" in paths:
        summary = registration_summary(result)
        if summary:
            atomic_write_text(paths["summary"], json.dumps(summary, indent=1))
        else:  # nothing to report (no affine stage, no inverse): no file, and none left from an earlier run
            paths["summary"].unlink(missing_ok=True)


def _save_fields(field: np.ndarray, affine: np.ndarray, paths: dict[str, Path], keys: tuple[str, str], meaning: str):
    """A field (mm, RAS) at ``paths[keys[0]]`` and, if planned, its ITK/ANTs copy (mm, LPS) at ``paths[keys[1]]``."""
    _save_field(field, affine, paths[keys[0]], field_description("RAS", meaning))
    if keys[1] in paths:
        _save_field(flip_ras_lps(field), affine, paths[keys[1]], field_description("LPS", meaning))


def _write_itk_affine(result: Registration, path: Path) -> None:
    """The affine stage's world map as an ITK text transform, or no file when the stage did not run
    (and none left from an earlier run, which would be taken for this one's)."""
    stage = result.affine_stage
    if stage is None or stage.matrix is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write_text(path, itk_affine_text(stage.matrix, result.displacement.shape[0]))


def _save_field(field: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    """A ``dims x *shape`` field (mm) as a NIfTI vector image ``X x Y x Z x 1 x dims``: the 5D layout
    (components along the fifth axis, intent ``vector``) that ITK also reads as a vector image."""
    dims = field.shape[0]
    vector = np.moveaxis(field, 0, -1)
    vector = vector.reshape(vector.shape[:-1] + (1,) * (4 - dims) + (dims,))
    save_volume(
        vector.astype(np.float32, copy=False),  # a view of the field: no copy of a 1 mm field (200 MB)
        affine,
        path,
        intent="vector",
        description=description,
        compress=False,  # noisy floats: gzip saves ~7 % for a third of a second per pair
    )


def registration_summary(result: Registration) -> dict:
    """What the ``_registration.json`` beside a pair's outputs records: the affine stage (ran, why,
    alignment NCC, the 4x4 world map fixed point -> moving point before the deformation), the fixed
    image's alignment to the model's template and its alignment score when ``--align`` was asked, and,
    with an inverse, the inverse-consistency error in mm over the fixed image's foreground.
    Empty when the affine stage did not run and there is no inverse."""
    stage, space = result.affine_stage, result.model_space
    scored = space is not None and (space.aligned or space.score is not None)
    if (stage is None or not stage.ran) and result.inverse_consistency is None and not scored:
        return {}
    summary: dict = {"affine_stage": None}
    if scored:  # --align brought the fixed image into the model's space, or checked it was there: how, its score
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
