"""``deepatlas prepare``: a folder of raw scans -> a dataset ``train`` reads, on the template's grid.

Every scan is read (NIfTI, Analyze, MGH; any orientation, spacing, field of view), aligned
affinely to the template (:func:`~deepatlas.inference.alignment.align_to_template`), resampled
once onto its grid with intensities normalised to 0..1, and its label map (if any) carried along
by label interpolation. Each subject ends in exactly one of three states, recorded with the reason
in ``records/<id>.json`` and in ``manifest.json``:

- ``ok``: alignment score >= ``min_score``; written to ``images/`` (and ``labels/``), so the
  folder (or its ``manifest.json``) is a dataset ``train --dataset`` reads directly;
- ``poor``: aligned, but the score is below ``min_score`` (not a brain, not skull-stripped, another
  contrast, a failed alignment); written to ``rejected/`` for inspection, not used for training;
- ``failed``: could not be read or is not a 3D scan; nothing written but the reason.

A subject's record is written last (atomically), so a killed run redoes only unfinished
subjects, and a re-run skips subjects whose source files and settings have not changed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deepatlas import options
from deepatlas.data.errors import DataError
from deepatlas.data.io import (
    MIN_EXTENT_MM,
    Volume,
    check_extent,
    check_label_grid,
    load_image,
    load_label_codes,
    save_volume,
)
from deepatlas.data.subjects import IMAGE_SUFFIXES, Subject, find_subjects, label_map_owners, subject_id
from deepatlas.data.template import TEMPLATE_PATH
from deepatlas.files import atomic_write_text
from deepatlas.inference.alignment import align_to_template, labels_to_template
from deepatlas.inference.strip import strip
from deepatlas.options import look_up_option

STATES = ("ok", "poor", "failed")


@dataclass(frozen=True)
class PrepareSettings:
    """``template``: the image to align to (None: the shipped one, ``deepatlas/templates/t1_2mm``);
    ``min_score``: the alignment score (:func:`~deepatlas.inference.alignment.alignment_score`) below which a subject
    is rejected; ``strip``: brain extraction of whole heads first (:func:`~deepatlas.inference.strip.strip`)."""

    template: str | None = None
    min_score: float = options.PREPARE_MIN_SCORE
    strip: str = "auto"

    def validate(self) -> None:
        look_up_option(self.strip, options.STRIP, "--strip")
        if not 0 < self.min_score < 1:
            raise ValueError(f"--min-score must be between 0 and 1 (a correlation), got {self.min_score}")
        if self.template is not None and not Path(self.template).exists():
            raise FileNotFoundError(f"{self.template}: template not found")


class PreparedDataset:
    """Where everything of a prepared dataset lives (one place owns the layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = self.root / "manifest.json"
        self.qc_page = self.root / "qc" / "index.html"

    def folder(self, state: str) -> Path:
        return self.root if state == "ok" else self.root / "rejected"

    def image(self, state: str, sid: str) -> Path:
        return self.folder(state) / "images" / f"{sid}.nii.gz"

    def label(self, state: str, sid: str) -> Path:
        return self.folder(state) / "labels" / f"{sid}.nii.gz"

    def mask(self, state: str, sid: str) -> Path:
        """The brain mask of a stripped scan, on the template grid (only for scans that were stripped)."""
        return self.folder(state) / "masks" / f"{sid}.nii.gz"

    def record(self, sid: str) -> Path:
        return self.root / "records" / f"{sid}.json"

    def qc_image(self, sid: str) -> Path:
        return self.root / "qc" / f"{sid}.png"


@dataclass(frozen=True)
class PrepareJob:
    """One subject to prepare (picklable, for worker processes)."""

    subject: Subject
    output: str
    settings: PrepareSettings


def find_raw_subjects(raw: str | Path) -> list[Subject]:
    """The scans of ``raw``: a dataset (``images/`` + ``labels/``, a JSON manifest, OASIS-1) as
    ``train`` reads it, or a flat folder (searched recursively) of images with label maps beside
    them named ``<id>_seg`` (or ``_labels``, ``_label``, ``_parc``, ``_aseg``)."""
    raw = Path(raw)
    if not raw.exists():
        raise DataError(f"{raw}: not found")
    if raw.is_file() or (raw / "images").is_dir():
        return find_subjects(raw)
    files = sorted(p for p in raw.rglob("*") if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))
    by_id: dict[str, Path] = {}
    for path in files:
        if path.name.startswith("."):
            continue
        sid = subject_id(path)
        if sid in by_id:
            raise DataError(f"{raw}: two files give the subject id {sid!r}: {by_id[sid]} and {path}; rename one")
        by_id[sid] = path
    labels = {owner: by_id[sid] for sid, owner in label_map_owners(list(by_id)).items()}
    subjects = [Subject(sid, path, labels.get(sid)) for sid, path in by_id.items() if path not in labels.values()]
    orphans = sorted(str(path) for sid, path in labels.items() if sid not in by_id)
    if orphans:
        raise DataError(f"{raw}: label maps without an image of the same name: {orphans[:5]}")
    if not subjects:
        raise DataError(f"{raw}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(subjects, key=lambda s: s.id)


def _stamp(subject: Subject) -> list:
    """What identifies a subject's sources: their paths, sizes and modification times."""
    out = []
    for path in (subject.image, subject.label):
        if path is not None:
            stat = Path(path).stat() if Path(path).exists() else None
            out.append([str(path), stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    return out


def read_record(dataset: PreparedDataset, sid: str) -> dict | None:
    try:
        return json.loads(dataset.record(sid).read_text())
    except (OSError, json.JSONDecodeError):
        return None  # absent, or cut by a kill before the rename: redo


def is_done(job: PrepareJob) -> bool:
    """The subject was prepared from these very files with these settings."""
    record = read_record(PreparedDataset(job.output), job.subject.id)
    return (
        record is not None
        and record.get("stamp") == _stamp(job.subject)
        and record.get("settings") == asdict(job.settings)
    )


def _check_scan(volume: Volume) -> None:
    """Refuse what cannot be a brain scan, with the reason."""
    if volume.array.ndim != 3:
        raise DataError(f"{volume.path}: a {volume.array.ndim}D image {volume.array.shape}; prepare needs 3D scans")
    check_extent(volume, MIN_EXTENT_MM, "a brain scan covers about 140 mm along each axis")


def prepare_subject(template: Volume, job: PrepareJob) -> dict:
    """Prepare one subject (see module doc) and return its record; ``template``: loaded once per worker."""
    dataset, subject, started = PreparedDataset(job.output), job.subject, time.perf_counter()
    record = {"id": subject.id, "source": str(subject.image), "source_label": subject.label and str(subject.label)}
    record |= {"stamp": _stamp(subject), "settings": asdict(job.settings)}
    try:
        volume = load_image(subject.image)
        _check_scan(volume)
        labels = load_label_codes(subject.label) if subject.label else None
        if labels is not None:
            check_label_grid(volume, labels)
        volume, stripped = strip(volume, job.settings.strip)
        alignment = align_to_template(volume, template)
    except Exception as err:  # any reason a scan cannot be prepared is reported, and the others go on
        reason = str(err) if isinstance(err, DataError) else f"{subject.image}: {type(err).__name__}: {err}"
        return _finish(dataset, record | {"status": "failed", "reason": reason}, started)
    state = "ok" if alignment.score >= job.settings.min_score else "poor"
    reason = "" if state == "ok" else f"alignment score {alignment.score:.3f} < {job.settings.min_score}"
    outputs = {"image": dataset.image(state, subject.id), "label": labels and dataset.label(state, subject.id)}
    save_volume(alignment.image, template.affine, outputs["image"])
    if labels is not None:
        codes = labels_to_template(labels, alignment, template)
        dtype = np.int16 if np.abs(codes).max() < 2**15 else np.int32
        save_volume(codes.astype(dtype), template.affine, outputs["label"])
    if stripped.stripped:
        outputs["mask"] = dataset.mask(state, subject.id)
        mask_volume = Volume(stripped.mask.astype(np.int16), volume.affine, volume.path)
        mask = labels_to_template(mask_volume, alignment, template)
        save_volume(mask.astype(np.uint8), template.affine, outputs["mask"])
    record |= {"strip": stripped.as_dict()}
    record |= {"status": state, "reason": reason, "score": round(alignment.score, 4)}
    record |= {"start_score": round(alignment.start_score, 4), "matrix": np.round(alignment.matrix, 6).tolist()}
    record |= {k: str(v.relative_to(dataset.root)) if v else None for k, v in outputs.items()}
    return _finish(dataset, record, started)


def _finish(dataset: PreparedDataset, record: dict, started: float) -> dict:
    """Remove the subject's outputs of an earlier state, then write its record (last, atomically)."""
    for state in STATES[:2]:
        if state != record["status"]:
            outputs = (dataset.image(state, record["id"]), dataset.label(state, record["id"]))
            for path in outputs + (dataset.mask(state, record["id"]),):
                path.unlink(missing_ok=True)
    record["seconds"] = round(time.perf_counter() - started, 2)
    atomic_write_text(dataset.record(record["id"]), json.dumps(record, indent=1))
    return record


def write_manifest(dataset: PreparedDataset, subjects: list[Subject], settings: PrepareSettings) -> dict[str, list]:
    """``manifest.json`` from the records of ``subjects``: ``subjects`` (the ``ok`` ones, a manifest
    ``train`` reads), ``rejected`` and ``failed`` with their reasons; returns the three lists."""
    groups: dict[str, list] = {"ok": [], "poor": [], "failed": []}
    for subject in subjects:
        record = read_record(dataset, subject.id)
        if record is None:
            raise RuntimeError(f"{dataset.record(subject.id)}: missing after preparation")
        groups[record["status"]].append(record)
    template = settings.template or str(TEMPLATE_PATH)
    manifest = {"template": template, "min_score": settings.min_score}
    manifest |= {"subjects": groups["ok"], "rejected": groups["poor"], "failed": groups["failed"]}
    atomic_write_text(dataset.manifest, json.dumps(manifest, indent=1))
    return groups
