"""The training set's structure volumes: a measured volume outside them is flagged.

A seg net saturates beyond the anatomy it was trained on: on elderly brains the shipped model
measured left lateral ventricles of 43-84 cm3 as 24-37 cm3 (issue 38, docs/results.md). It cannot
say so itself, but the run can keep the range of the volumes it learned from: each training run
writes ``volume_range.json`` (:func:`volume_range`, from its labelled training images), and
``morphometry`` flags a structure whose measured volume lies outside it (:func:`range_flag`):
``above_training`` or ``below_training``, a volume to read with care, which may be under- or
over-estimated toward the training range. Volumes are compared on the images' own grids, as
both are (training images and morphometry's inputs are aligned to the same space).

The same file keeps the training images' sharpness (:func:`sharpness_range`, under ``sharpness``), and
``morphometry`` flags every volume of a scan softer or sharper than them (:func:`sharpness_flag`): a seg
net's volumes also follow how sharp a scan is (a ventricle read 8-9 % small in a brain blurred by one voxel).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

RANGE_PERCENTILES = (1.0, 99.0)
"""The training volumes' percentiles that bound the range: the extreme 2 % of the training subjects
(one per 50 healthy brains and structure) would be flagged too, rather than an outlier of the
training set (a 110 cm3 ventricle in ixi-2mm's) widening the range for everyone."""

RANGE_MIN_SUBJECTS = 20
"""Fewer labelled training images than this give no range (none is written): the percentiles of a
handful of volumes would flag most brains."""

BRAIN = "brain"
"""The row of all structures together (``volumes.csv``'s ``brain``), ranged like a structure."""


def volume_range(labels: np.ndarray, voxel_mm3: float, names: list[str]) -> dict | None:
    """Per structure (class names ``names``, class 0 the background) and for the whole ``brain``,
    the :data:`RANGE_PERCENTILES` of the volumes (mm3) in ``labels`` (``N x *spatial`` class indices
    of the labelled training images, ``voxel_mm3`` each voxel's volume), with the median and the
    count; ``None`` with fewer than :data:`RANGE_MIN_SUBJECTS` images."""
    labels = np.asarray(labels)
    if len(labels) < RANGE_MIN_SUBJECTS:
        return None
    counts = np.stack([np.bincount(m.ravel().astype(np.int64), minlength=len(names)) for m in labels])
    volumes = counts[:, : len(names)] * float(voxel_mm3)
    columns = {name: volumes[:, k] for k, name in enumerate(names) if k > 0}
    columns[BRAIN] = volumes[:, 1:].sum(axis=1)
    low, high = RANGE_PERCENTILES
    structures = {}
    for name, values in columns.items():
        lo, mid, hi = np.percentile(values, [low, 50.0, high])
        structures[name] = {
            "low_mm3": round(float(lo), 1),
            "median_mm3": round(float(mid), 1),
            "high_mm3": round(float(hi), 1),
        }
    return {"percentiles": list(RANGE_PERCENTILES), "subjects": len(labels), "structures": structures}


def range_flag(structure: str, mm3: float, ranges: dict | None) -> str:
    """``above_training`` / ``below_training`` when ``mm3`` lies outside the structure's range in
    ``ranges`` (:func:`volume_range`'s dict), else empty (also without a range for it)."""
    bounds = (ranges or {}).get("structures", {}).get(structure)
    if bounds is None:
        return ""
    if mm3 > bounds["high_mm3"]:
        return "above_training"
    if mm3 < bounds["low_mm3"]:
        return "below_training"
    return ""


def sharpness_range(values: Sequence[float]) -> dict | None:
    """The :data:`RANGE_PERCENTILES` and median of the training images' sharpness
    (:func:`deepatlas.data.sharpness.sharpness`, 1/mm), or ``None`` with fewer than
    :data:`RANGE_MIN_SUBJECTS` measurable images. Kept in ``volume_range.json`` beside the volumes:
    the training set's ranges that ``morphometry`` flags against."""
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if len(values) < RANGE_MIN_SUBJECTS:
        return None
    lo, mid, hi = np.percentile(values, [RANGE_PERCENTILES[0], 50.0, RANGE_PERCENTILES[1]])
    return {
        "low_per_mm": round(float(lo), 4),
        "median_per_mm": round(float(mid), 4),
        "high_per_mm": round(float(hi), 4),
    }


def sharpness_flag(value: float, ranges: dict | None) -> str:
    """``softer_than_training`` / ``sharper_than_training`` when an image's sharpness ``value`` lies outside the
    training images' (``ranges["sharpness"]``, :func:`sharpness_range`), else empty (also without a range):
    its volumes may be biased by its sharpness, not its anatomy (docs/results.md, "Volumes that do not depend
    on the scan's sharpness")."""
    bounds = (ranges or {}).get("sharpness")
    if not isinstance(bounds, dict) or not np.isfinite(value):
        return ""
    if value < bounds["low_per_mm"]:
        return "softer_than_training"
    if value > bounds["high_per_mm"]:
        return "sharper_than_training"
    return ""


LATERAL_VENTRICLES = ("LateralVentricle-L", "LateralVentricle-R")
"""brain31's lateral ventricles (another label scheme has no :data:`BESIDE_VENTRICLES` flag)."""

BESIDE_VENTRICLES = (
    "CorpusCallosum",
    "Caudate-L",
    "Caudate-R",
    "Accumbens-L",
    "Accumbens-R",
    "Putamen-L",
    "Putamen-R",
    "Pallidum-L",
    "Pallidum-R",
    "3rdVentricle",
)
"""brain31's structures around the lateral ventricles that brain-2mm's seg net reads 5-19 % further from their
truth when the ventricles are three to four times a young adult's, as in elderly brains (the corpus callosum
larger, the accumbens, putamina, pallida and third ventricle smaller; both caudates, whose sides differ by chance;
validation brains, docs/results.md "The structures around enlarged ventricles")."""


def beside_large_ventricles(volumes: dict[str, float], ranges: dict | None) -> frozenset[str]:
    """The structures of :data:`BESIDE_VENTRICLES` to flag ``beside_large_ventricles`` in one scan (``volumes``:
    structure -> mm^3): all of them where a lateral ventricle reads above the training range (:func:`range_flag`),
    else none."""
    large = any(range_flag(n, volumes[n], ranges) == "above_training" for n in LATERAL_VENTRICLES if n in volumes)
    return frozenset(n for n in BESIDE_VENTRICLES if n in volumes) if large else frozenset()


def join_flags(*flags: str) -> str:
    """Non-empty flags joined by ``;`` (``volumes.csv``'s ``flag`` column may hold several)."""
    return ";".join(f for f in flags if f)


def read_volume_range(path: Path) -> dict | None:
    """A run's ``volume_range.json`` (``RunFolder.volume_range``), or None where the run has none (few
    training images, or trained before ranges existed) or it does not read as one. It may hold the structure
    volumes (``structures``), the sharpness (``sharpness``) or both: a run with fewer than
    :data:`RANGE_MIN_SUBJECTS` labelled images but enough unlabelled ones keeps only the sharpness."""
    try:
        ranges = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(ranges, dict):
        return None
    return ranges if any(isinstance(ranges.get(key), dict) for key in ("structures", "sharpness")) else None
