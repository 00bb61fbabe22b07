"""Finding the subjects of a dataset: a folder, a JSON manifest, or the OASIS-1 layout.

- **Folder**: ``images/<name>`` with optional ``labels/<name>`` (same file name).
- **Manifest** (``.json``): ``{"subjects": [{"id": "s1", "image": "a.nii.gz", "label": "a_seg.nii.gz"}, ...]}``
  (a bare list works too); ``label`` is optional; relative paths are relative to the manifest.
- **OASIS-1 cross-sectional** release: ``<root>/OAS1_xxxx_MR1/PROCESSED/MPRAGE/T88_111/*_t88_masked_gfc.img``
  with ``<root>/OAS1_xxxx_MR1/FSL_SEG/*_t88_masked_gfc_fseg.img`` (Analyze), as in the MONAI DeepAtlas tutorial.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from deepatlas.data.errors import DataError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".img", ".mgz", ".mgh")
LABEL_SUFFIXES = ("_seg", "_labels", "_label", "_parc", "_aseg")
"""In a flat folder, ``<id><suffix>.nii.gz`` is the label map of ``<id>.nii.gz`` (:func:`label_map_owners`)."""


@dataclass(frozen=True)
class Subject:
    """One image, and the path of its label map when it has one."""

    id: str
    image: Path
    label: Path | None = None


def subject_id(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def label_map_owners(ids: list[str]) -> dict[str, str]:
    """Which of ``ids`` name label maps, and of which id: ``<id>_seg`` (or another of
    :data:`LABEL_SUFFIXES`) -> ``<id>``, whether ``<id>`` is among ``ids`` or not. The one rule by
    which ``prepare`` pairs a flat folder's label maps with their images and ``segment``/``register``
    leave a folder's label maps out of its images."""
    return {sid: sid[: -len(s)] for sid in ids for s in LABEL_SUFFIXES if sid.endswith(s) and len(sid) > len(s)}


def find_subjects(source: str | Path) -> list[Subject]:
    """List the subjects of a dataset folder, manifest or OASIS-1 tree, sorted by id."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: dataset not found")
    if source.is_file():
        subjects = _from_manifest(source)
    elif (source / "images").is_dir():
        subjects = _from_folder(source)
    elif any(source.glob("*/PROCESSED/MPRAGE/T88_111/*_t88_masked_gfc.img")):
        subjects = _from_oasis(source)
    else:
        raise DataError(
            f"{source}: not a dataset: expected an images/ folder (with optional labels/), "
            f"a JSON manifest, or the OASIS-1 layout */PROCESSED/MPRAGE/T88_111/"
        )
    ids = [s.id for s in subjects]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(f"{source}: subject ids appear more than once: {duplicates[:10]}")
    if not subjects:
        raise DataError(f"{source}: no images found")
    return sorted(subjects, key=lambda s: s.id)


def _from_folder(root: Path) -> list[Subject]:
    labels_dir = root / "labels"
    subjects = []
    for image in sorted((root / "images").iterdir()):
        if not image.name.endswith(IMAGE_SUFFIXES) or image.name.startswith("."):
            continue
        label = labels_dir / image.name
        subjects.append(Subject(subject_id(image), image, label if label.exists() else None))
    if labels_dir.is_dir():
        known = {s.image.name for s in subjects}
        orphans = [p.name for p in labels_dir.iterdir() if p.name.endswith(IMAGE_SUFFIXES) and p.name not in known]
        if orphans:
            raise DataError(f"{labels_dir}: label maps without a matching image in images/: {sorted(orphans)[:10]}")
    return subjects


def _from_manifest(path: Path) -> list[Subject]:
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read manifest: {err}") from None
    entries = spec.get("subjects") if isinstance(spec, dict) else spec
    if not isinstance(entries, list):
        raise DataError(f"{path}: manifest must be a list of subjects or {{'subjects': [...]}}")
    subjects = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{path}: subject #{n} needs an 'image' path")
        image = (path.parent / entry["image"]).resolve()
        label = (path.parent / entry["label"]).resolve() if entry.get("label") else None
        subjects.append(Subject(str(entry.get("id", subject_id(image))), image, label))
    return subjects


def _from_oasis(root: Path) -> list[Subject]:
    subjects = []
    for image in sorted(root.glob("*/PROCESSED/MPRAGE/T88_111/*_t88_masked_gfc.img")):
        subject_dir = image.parents[3]
        label = subject_dir / "FSL_SEG" / image.name.replace("_t88_masked_gfc.img", "_t88_masked_gfc_fseg.img")
        subjects.append(Subject(subject_dir.name, image, label if label.exists() else None))
    return subjects
