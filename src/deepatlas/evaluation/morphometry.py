"""Morphometry: structure volumes and log-Jacobian maps of many subjects, and group differences.

For each subject image:

- **structure volumes** (mm^3): the voxels of each class of the run's label scheme in the
  subject's label map (seg net, or atlases registered to it and fused), times the volume of
  one voxel from the image's own affine (``|det|`` of its 3x3 part; mm^2 for 2D images);

  ``volumes.csv``, one row per subject and structure, columns:

  - ``subject``, ``structure`` (a class of the label scheme, or ``brain``: all its structures together,
    or ``foreground``: the image's filled foreground, the brain mask of a skull-stripped image, a proxy of
    intracranial volume as far as the mask keeps the CSF around the brain), ``code`` (the class's first
    label code), ``voxels`` (in the subject's label map; empty for ``foreground``);
  - ``mm3``: voxels x voxel volume **on the image's own grid**. Native (the head's real size) only when
    the input was not normalised: morphometry takes images pre-aligned as the model's training images
    were, and an image affinely aligned to MNI (as ixi-2mm's, or ``prepare``'s output) has had its head
    size scaled to the template's already;
  - ``template_mm3``: ``mm3`` divided by the subject's scale relative to the template, the mean Jacobian
    determinant of its registration to the template over the template's foreground (its brain volume
    over the template's): volumes with brain size removed, for comparisons where head size is a nuisance;
  - ``atlas_mm3``: only when atlases are given with the seg net (``--from seg --atlas ...``), which also
    writes ``<id>_atlas_seg.nii.gz``: the atlases' volume of the structure. Empty otherwise;
  - ``flag``: empty, or ``;``-joined reasons to check a volume by eye: ``disagree`` (with atlases) when
    |seg - atlas| / mean(seg, atlas) exceeds the structure's margin (:data:`FLAG_MARGINS`, the 95th
    percentile on validation brains with 5 atlases); ``above_training`` / ``below_training`` when ``mm3``
    lies outside the run's training volumes (:mod:`deepatlas.evaluation.volume_range`; runs trained with
    enough labelled images), where a seg net tends to saturate toward the range it learned;
    ``beside_large_ventricles`` on the structures around the lateral ventricles (corpus callosum, caudates,
    accumbens, putamina, pallida, third ventricle) of a scan whose lateral ventricle is ``above_training``:
    pushed aside by ventricles that large they read 5-19 % off
    (:data:`~deepatlas.evaluation.volume_range.BESIDE_VENTRICLES`); the sharpness flags (below) on every row.

  Limits: at 2 mm a voxel is 8 mm^3 and a hippocampus some 700 voxels, many of them on its boundary:
  small structures' volumes, and changes smaller than a voxel at a structure's surface, follow the truth
  far less than large ones' (``benchmarks/morphometry.py``: reference labels and synthetic atrophy);
- **log-Jacobian map** on the template grid: the subject (moving) is registered to the
  template (fixed), refined as ``refine.for_maps`` says; ``phi(p) = p + u(p)`` maps a template point to
  the matching subject point, and the map holds ``log det D phi`` (natural log of the dimensionless Jacobian determinant
  J). **Sign: log J > 0 where the subject is larger than the template** (a template voxel
  matches more than one voxel's volume of the subject), < 0 where it is smaller. Folded
  voxels (J <= 0) are set to ``log(JACOBIAN_FLOOR)`` so means stay finite.

The template (atlas space) is an image given by the user, or by default the voxel-wise mean
of the inputs (:func:`mean_template`): no subject or group is favoured, which a subject
template would be (its own group reads log J = 0 there).

With two groups, per structure: mean volume per group, difference (second - first group,
in the order they first appear in the groups file), Cohen's d (pooled sd) and the Welch
t-test p (uncorrected for the number of structures); and the difference of the groups'
mean log-Jacobian maps.

Every subject is measured by :func:`measure_subject` (one job, files in, files out, so
``--workers`` can spread them), then :func:`summarize` reads the files back into tables.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from deepatlas import options
from deepatlas.data.errors import DataError
from deepatlas.data.hemispheres import warn_crossed_atlases
from deepatlas.data.io import Volume, load_image, load_label_codes, normalize_intensity, save_volume
from deepatlas.data.labels import LabelScheme
from deepatlas.data.sharpness import sharpness
from deepatlas.data.subjects import subject_id
from deepatlas.evaluation.volume_range import (
    beside_large_ventricles,
    join_flags,
    range_flag,
    read_volume_range,
    sharpness_flag,
)
from deepatlas.files import atomic_write_csv
from deepatlas.inference.apply import atlas_segment_volume, read_atlases, register_volumes, segment_volume
from deepatlas.inference.geometry import resample
from deepatlas.inference.outputs import check_free, label_dtype
from deepatlas.inference.run import TrainedRun
from deepatlas.inference.strip import HEAD_MIN_ML, foreground_ml
from deepatlas.options import look_up_option
from deepatlas.registration.affine import foreground

JACOBIAN_FLOOR = 1e-3
"""Jacobian determinants below this (folds, J <= 0) count as this in the log-Jacobian maps."""

TOTAL = "brain"
"""The structure name of the row of all non-background voxels (every structure) in ``volumes.csv``."""

FOREGROUND = "foreground"
"""The structure name of the row of the image's filled foreground in ``volumes.csv`` (the brain mask of a
skull-stripped image: brain and the CSF its mask kept; :func:`~deepatlas.inference.strip.foreground_ml`)."""

SUMMARY_ROWS = (TOTAL, FOREGROUND)
"""The rows of ``volumes.csv`` that are not one structure of the label scheme."""

FLAG_MARGIN = 0.25
"""|seg - atlas| / mean(seg, atlas) above which a structure's volume is flagged, for a structure missing
from :data:`FLAG_MARGINS` (another label scheme than brain31, or the ``brain`` row): a quarter of the
volume, which large structures' margins stay well below and only the smallest structures' exceed."""

FLAG_MARGINS: dict[str, float] = {
    "Cortex-L": 0.112,
    "Cortex-R": 0.109,
    "CerebralWM-L": 0.107,
    "CerebralWM-R": 0.113,
    "CorpusCallosum": 0.240,
    "LateralVentricle-L": 0.224,
    "LateralVentricle-R": 0.183,
    "Thalamus-L": 0.155,
    "Thalamus-R": 0.148,
    "Caudate-L": 0.272,
    "Caudate-R": 0.257,
    "Putamen-L": 0.100,
    "Putamen-R": 0.141,
    "Pallidum-L": 0.221,
    "Pallidum-R": 0.269,
    "Hippocampus-L": 0.132,
    "Hippocampus-R": 0.077,
    "Amygdala-L": 0.174,
    "Amygdala-R": 0.212,
    "Accumbens-L": 0.226,
    "Accumbens-R": 0.290,
    "VentralDC-L": 0.111,
    "VentralDC-R": 0.061,
    "Cerebellum-L": 0.051,
    "Cerebellum-R": 0.034,
    "Vermis": 0.126,
    "Brainstem": 0.032,
    "3rdVentricle": 0.302,
    "4thVentricle": 0.252,
    "BasalForebrain-L": 0.411,
    "BasalForebrain-R": 0.343,
}
"""Per brain31 structure, the flag margin: the 95th percentile over ixi-2mm validation subjects of
|seg - atlas| / mean(seg, atlas) with the shipped model (mirrored inference, the quarter-voxel average) and 5
training atlases registered as ``morphometry`` registers (``refine.for_volumes``), on the 9 whose reference maps
have sound sides (``benchmarks/morphometry.py``, which measures it; ``benchmarks/results/morphometry/
amd-epyc-zen5-atlas-volumes``): a disagreement the two methods rarely reach on brains like the training set's."""


@dataclass(frozen=True)
class SubjectJob:
    """What :func:`measure_subject` reads and writes for one subject (picklable, for workers)."""

    image: Path
    template: Path
    labels_out: Path
    logjac_out: Path
    atlases: tuple[tuple[Path, Path], ...] | None = None
    fusion: str = "weighted"
    check_out: Path | None = None  # with seg net labels: the atlases' label map too, for the flag


@dataclass
class MorphometryPlan:
    """The subjects, their outputs, the template and the groups, all checked before any work.

    ``groups``: group name -> subject ids, in the order the groups first appear in the groups
    file (the difference is the second minus the first); ``None`` without a groups file.
    """

    output: Path
    images: list[Path]
    subjects: list[str]
    template: Path
    make_template: bool
    atlases: tuple[tuple[Path, Path], ...] | None = None
    fusion: str = "weighted"
    groups: dict[str, list[str]] | None = None
    cross_check: bool = False
    suffix: str = field(init=False)

    def __post_init__(self) -> None:
        self.suffix = "seg" if self.atlases is None or self.cross_check else "atlas_seg"

    def jobs(self) -> list[SubjectJob]:
        return [
            SubjectJob(
                image,
                self.template,
                self.labels_path(s),
                self.logjac_path(s),
                self.atlases,
                self.fusion,
                self.check_path(s) if self.cross_check else None,
            )
            for image, s in zip(self.images, self.subjects)
        ]

    def check_path(self, subject: str) -> Path:
        """The atlases' label map of a subject whose volumes come from the seg net (``cross_check``)."""
        return self.output / f"{subject}_atlas_seg.nii.gz"

    def labels_path(self, subject: str) -> Path:
        return self.output / f"{subject}_{self.suffix}.nii.gz"

    def logjac_path(self, subject: str) -> Path:
        return self.output / f"{subject}_logjac.nii.gz"

    def outputs(self) -> list[Path]:
        """Every file the morphometry writes (figures included), to refuse overwriting them."""
        names = ["volumes.csv", "morphometry.png"]
        names += ["template.nii.gz"] if self.make_template else []
        names += ["group_differences.csv", "logjac_difference.nii.gz", "logjac_difference.png"] if self.groups else []
        subjects = [p for s in self.subjects for p in (self.labels_path(s), self.logjac_path(s))]
        subjects += [self.check_path(s) for s in self.subjects] if self.cross_check else []
        return [self.output / n for n in names] + subjects


@dataclass
class MorphometryResult:
    """The tables and the group maps (on the template grid, log of dimensionless J)."""

    volumes: list[dict]
    groups: dict[str, list[str]]
    mean_logjac: dict[str, np.ndarray]
    template: Volume
    differences: list[dict] | None = None
    difference: np.ndarray | None = None


def plan_morphometry(
    images: list[Path],
    output: str | Path,
    template: str | Path | None = None,
    groups_file: str | Path | None = None,
    atlases: list[tuple[Path, Path]] | None = None,
    fusion: str = "weighted",
    cross_check: bool = False,
) -> MorphometryPlan:
    """Check the subjects, the groups file and the atlases' settings; say what will be written.
    ``cross_check``: the volumes come from the seg net and the ``atlases`` only check them (the flag)."""
    look_up_option(fusion, options.FUSION, "fusion")
    images = [Path(p) for p in images]
    if not images:
        raise DataError("morphometry needs at least one image")
    subjects = [subject_id(p) for p in images]
    seen: dict[str, Path] = {}
    for subject, path in zip(subjects, images):
        if subject in seen:
            raise DataError(f"{path}: subject id {subject!r} also names {seen[subject]}; rename one of them")
        seen[subject] = path
    output = Path(output)
    if template is not None and not Path(template).exists():
        raise DataError(f"{template}: template image not found")
    groups = read_groups(Path(groups_file), subjects) if groups_file else None
    return MorphometryPlan(
        output,
        images,
        subjects,
        Path(template) if template else output / "template.nii.gz",
        template is None,
        tuple((Path(i), Path(lab)) for i, lab in atlases) if atlases else None,
        fusion,
        groups,
        cross_check and bool(atlases),
    )


def read_groups(path: Path, subjects: list[str]) -> dict[str, list[str]]:
    """``subject,group`` rows -> group -> subjects; exactly two groups of at least two subjects each."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read groups file: {err}") from None
    if not rows or not {"subject", "group"} <= set(rows[0]):
        raise DataError(f"{path}: a groups file needs the columns subject,group (one row per subject)")
    groups: dict[str, list[str]] = {}
    known, assigned = set(subjects), {}
    for row in rows:
        subject, group = (row["subject"] or "").strip(), (row["group"] or "").strip()
        if subject not in known:
            raise DataError(
                f"{path}: subject {subject!r} is not among the images (ids are file names without extension)"
            )
        if assigned.setdefault(subject, group) != group:
            raise DataError(f"{path}: subject {subject!r} is in two groups ({assigned[subject]!r} and {group!r})")
        if subject not in groups.get(group, []):
            groups.setdefault(group, []).append(subject)
    if len(groups) != 2:
        raise DataError(f"{path}: the group difference needs exactly two groups, found {len(groups)}: {list(groups)}")
    small = [g for g, members in groups.items() if len(members) < 2]
    if small:
        raise DataError(f"{path}: group {small[0]!r} has fewer than 2 subjects; Cohen's d and the t-test need 2")
    return groups


def brain_image(path: Path) -> Volume:
    """The image at ``path``, refused (one line, with what to do) when it is a whole-head scan: morphometry
    compares brains aligned as the model's training images were, which ``prepare`` makes of heads
    (brain extraction and alignment to the template); stripping alone would leave them unaligned."""
    volume = load_image(path)
    if volume.array.ndim == 3 and (size := foreground_ml(volume)) > HEAD_MIN_ML:
        raise DataError(
            f"{path}: a whole-head scan (foreground {size:.0f} mL > {HEAD_MIN_ML:.0f}); morphometry needs brains "
            "aligned as the model's training images: run `deepatlas prepare` on the scans (it strips and aligns "
            "them), then morphometry on its images/ folder"
        )
    return volume


def mean_template(paths: list[Path], path: Path) -> Volume:
    """The voxel-wise mean of the images, intensities normalised to 0..1 (percentiles), on the
    first image's grid (linear resampling in world coordinates: the images must be pre-aligned,
    as the model's training images were)."""
    first = brain_image(paths[0])
    total = torch.from_numpy(normalize_intensity(first.array)).double()
    for other in paths[1:]:
        volume = brain_image(other)
        if volume.array.ndim != first.array.ndim:
            raise DataError(f"{other}: a {volume.array.ndim}D image among {first.array.ndim}D images")
        array = torch.from_numpy(normalize_intensity(volume.array))[None]
        total += resample(array, volume.affine, first.array.shape, first.affine)[0].double()
    return Volume((total / len(paths)).float().numpy(), first.affine, path)


def voxel_volume(affine: np.ndarray, dims: int = 3) -> float:
    """Volume of one voxel in mm^3 (area in mm^2 for ``dims == 2``): ``|det|`` of the affine's linear part."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:dims, :dims])))


def structure_volumes(subject: str, labels: Volume, scheme: LabelScheme, unknown: str = "error") -> list[dict]:
    """Rows of ``volumes.csv`` for one label map (codes, on its own grid): per class of
    ``scheme``, its voxel count and volume in mm^3, then the ``total`` of all non-background voxels.
    ``unknown``: a code outside ``scheme`` is an error, or background (counted in no structure)."""
    classes = scheme.encode(labels.array, source=str(labels.path), unknown=unknown)
    counts = np.bincount(classes.ravel().astype(np.int64), minlength=scheme.num_classes)
    unit = voxel_volume(labels.affine, labels.array.ndim)
    rows = [
        {"subject": subject, "structure": scheme.names[k], "code": scheme.codes[k][0], "voxels": int(counts[k])}
        for k in range(1, scheme.num_classes)
    ]
    rows.append({"subject": subject, "structure": TOTAL, "code": "", "voxels": int(counts[1:].sum())})
    for row in rows:
        row["mm3"] = round(row["voxels"] * unit, 3)
    return rows


def log_jacobian(jacobian: np.ndarray) -> np.ndarray:
    """Natural log of the Jacobian determinant (dimensionless), folds (J <= 0) set to ``log(JACOBIAN_FLOOR)``."""
    return np.log(np.maximum(jacobian, JACOBIAN_FLOOR)).astype(np.float32)


def check_atlases(run: TrainedRun, atlases: tuple[tuple[Path, Path], ...]) -> None:
    """Read every atlas (each label map on its image's grid); refuse, naming the file, label codes the
    run's label scheme does not know, unless the run's ``data.unknown_labels`` (``--unknown-labels``)
    makes them background; warn of an atlas whose left and right labels look swapped in part."""
    warn_crossed_atlases(read_atlases(atlases), run.scheme, run.config.data.unknown_labels)


def measure_subject(run: TrainedRun, job: SubjectJob) -> None:
    """Segment one subject (label map on its own grid, original codes) and write its
    log-Jacobian map on the template grid (subject registered to the template)."""
    image = brain_image(job.image)
    if job.atlases is None or job.check_out is not None:
        codes = segment_volume(run, image, align="off", for_volumes=True)  # pre-aligned inputs (brain_image's rule)
    else:  # atlases whose warped labels are counted: registered as refine.for_volumes says
        codes = atlas_segment_volume(run.for_volumes(), read_atlases(job.atlases), image, fusion=job.fusion)
    save_volume(codes.astype(label_dtype(codes)), image.affine, job.labels_out)
    if job.check_out is not None:
        atlas = atlas_segment_volume(run.for_volumes(), read_atlases(job.atlases), image, fusion=job.fusion)
        save_volume(atlas.astype(label_dtype(atlas)), image.affine, job.check_out)
    template = load_image(job.template)
    result = register_volumes(run.for_maps(), image, template)  # registered as refine.for_maps says
    save_volume(
        log_jacobian(result.jacobian),
        template.affine,
        job.logjac_out,
        description="deepatlas log det J, subject to template; >0: subject larger",
    )


def _read_map(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """``(mean(b) - mean(a)) / pooled sd`` (sample variances, n - 1); NaN when both groups are constant."""
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    return float((b.mean() - a.mean()) / np.sqrt(pooled)) if pooled > 0 else float("nan")


def group_differences(volumes: list[dict], groups: dict[str, list[str]]) -> list[dict]:
    """Rows of ``group_differences.csv``: per structure, the mean volume (mm^3) of each group,
    the difference (second - first), Cohen's d and the Welch t-test p (uncorrected)."""
    from scipy import stats

    (name_a, members_a), (name_b, members_b) = groups.items()
    rows = []
    for structure in dict.fromkeys(r["structure"] for r in volumes):
        per = {r["subject"]: r for r in volumes if r["structure"] == structure}
        a = np.array([per[s]["mm3"] for s in members_a], dtype=np.float64)
        b = np.array([per[s]["mm3"] for s in members_b], dtype=np.float64)
        with np.errstate(all="ignore"):
            p = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
        rows.append(
            {
                "structure": structure,
                "code": per[members_a[0]]["code"],
                "group_a": name_a,
                "group_b": name_b,
                "mean_a_mm3": round(float(a.mean()), 3),
                "mean_b_mm3": round(float(b.mean()), 3),
                "difference_mm3": round(float(b.mean() - a.mean()), 3),
                "cohens_d": round(cohens_d(a, b), 4),
                "p_welch": float(f"{p:.4g}"),
            }
        )
    return rows


def summarize(
    plan: MorphometryPlan, scheme: LabelScheme, unknown: str = "error", ranges: dict | None = None
) -> MorphometryResult:
    """Read the subjects' label maps and log-Jacobian maps back; write ``volumes.csv`` and, with
    groups, ``group_differences.csv`` and ``logjac_difference.nii.gz`` (second - first group).
    ``unknown``: as :func:`structure_volumes` (atlas codes outside ``scheme`` that were let through);
    ``ranges``: the run's training volumes (:func:`deepatlas.evaluation.volume_range.read_volume_range`),
    which flag volumes outside them."""
    template = load_image(plan.template)
    mask = foreground(torch.from_numpy(normalize_intensity(template.array))[None, None])[0, 0].numpy()
    volumes = [r for s in plan.subjects for r in subject_rows(plan, s, scheme, unknown, mask, ranges)]
    atomic_write_csv(plan.output / "volumes.csv", volumes)
    groups = plan.groups or {"all": list(plan.subjects)}
    means = {g: sum(_read_map(plan.logjac_path(s)) for s in members) / len(members) for g, members in groups.items()}
    result = MorphometryResult(volumes, groups, means, template)
    if plan.groups:
        first, second = means.values()
        result.difference = second - first
        save_volume(result.difference.astype(np.float32), template.affine, plan.output / "logjac_difference.nii.gz")
        result.differences = group_differences(volumes, plan.groups)
        atomic_write_csv(plan.output / "group_differences.csv", result.differences)
    return result


def subject_rows(
    plan: MorphometryPlan, subject: str, scheme: LabelScheme, unknown: str, mask: np.ndarray, ranges: dict | None
) -> list:
    """One subject's rows of ``volumes.csv`` (the columns: the module doc): its structures, ``brain`` and
    ``foreground``; ``template_mm3`` divides by the subject's scale, the mean Jacobian determinant of its map
    over the template's foreground ``mask``; with ``plan.cross_check``, the atlases' volumes; the flags (a scan
    softer or sharper than the training images flags every row:
    :func:`~deepatlas.evaluation.volume_range.sharpness_flag`)."""
    rows = structure_volumes(subject, load_label_codes(plan.labels_path(subject)), scheme, unknown)
    # heads were refused by measure_subject already: brain_image's check would label the image twice
    image = load_image(plan.images[plan.subjects.index(subject)])
    size = foreground_ml(image) * 1000
    soft = sharpness_flag(sharpness(image.array, image.spacing), ranges)  # the whole scan: every row
    rows.append({"subject": subject, "structure": FOREGROUND, "code": "", "voxels": "", "mm3": round(size, 3)})
    jacobian = np.exp(_read_map(plan.logjac_path(subject)))
    scale = float(jacobian[mask].mean()) if mask.shape == jacobian.shape and mask.any() else float(jacobian.mean())
    atlas = None
    if plan.cross_check:
        atlas = structure_volumes(subject, load_label_codes(plan.check_path(subject)), scheme, unknown)
        atlas = {r["structure"]: r["mm3"] for r in atlas}
    crowded = beside_large_ventricles({r["structure"]: r["mm3"] for r in rows}, ranges)
    for row in rows:
        row["template_mm3"] = round(row["mm3"] / scale, 3)
        row["atlas_mm3"], disagree = "", ""
        if atlas is not None and row["structure"] in atlas:
            row["atlas_mm3"] = atlas[row["structure"]]
            disagree = disagreement_flag(row["structure"], row["mm3"], atlas[row["structure"]])
        beside = "beside_large_ventricles" if row["structure"] in crowded else ""
        row["flag"] = join_flags(disagree, range_flag(row["structure"], row["mm3"], ranges), beside, soft)
    return rows


def disagreement_flag(structure: str, seg_mm3: float, atlas_mm3: float) -> str:
    """``disagree`` when |seg - atlas| / mean(seg, atlas) exceeds the structure's margin
    (:data:`FLAG_MARGINS`, else :data:`FLAG_MARGIN`), else empty."""
    mean = (seg_mm3 + atlas_mm3) / 2
    if mean <= 0:
        return ""
    return "disagree" if abs(seg_mm3 - atlas_mm3) / mean > FLAG_MARGINS.get(structure, FLAG_MARGIN) else ""


def start_outputs(plan: MorphometryPlan, overwrite: bool = False) -> None:
    """Refuse existing outputs (unless ``overwrite``), then write the mean template if the plan makes one."""
    check_free(plan.outputs(), overwrite)
    if plan.make_template:
        template = mean_template(plan.images, plan.template)
        save_volume(template.array, template.affine, plan.template)


def morphometry(run: TrainedRun, plan: MorphometryPlan, overwrite: bool = False) -> MorphometryResult:
    """Measure every subject of ``plan`` in this process and summarise (the Python API; the
    command line spreads :func:`measure_subject` over ``--workers``)."""
    if plan.atlases is not None:
        check_atlases(run, plan.atlases)
    start_outputs(plan, overwrite)
    for job in plan.jobs():
        measure_subject(run, job)
    ranges = read_volume_range(run.folder.volume_range)
    return summarize(plan, run.scheme, run.config.data.unknown_labels, ranges)
