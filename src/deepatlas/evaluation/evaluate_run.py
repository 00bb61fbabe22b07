"""``deepatlas evaluate``: segmentation and registration quality of a trained run on a labelled split.

Every image is evaluated on its own grid (through :mod:`deepatlas.inference.apply`),
with its own voxel spacing for distances. Pairs are declared, never random:
``next`` (each subject registered to the next, the last to the first), ``all``
(every ordered pair) or a JSON file ``[["moving_id", "fixed_id"], ...]``.

Writes ``segmentation.csv`` (subject, structure, Dice, HD95), ``registration.csv``
(moving, fixed, structure, Dice, Dice before registration, HD95), ``pairs.csv``
(moving, fixed, folds, SDlogJ, seconds) and ``summary.json``.

:func:`evaluate` runs the steps in order: :func:`collect_subjects` (and :func:`load_atlases`),
:func:`make_method` (what is scored: registrar, seg net or atlases), :func:`load_cases`,
:func:`segment_cases`, :func:`register_pairs`, :func:`score` and :func:`write_tables`.
:func:`evaluate_run` is the same with the options as keywords.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from deepatlas.data import DataError, find_subjects, load_splits
from deepatlas.data.hemispheres import warn_crossed
from deepatlas.data.io import Volume, load_labelled
from deepatlas.data.labels import LabelScheme
from deepatlas.data.loading import select_split
from deepatlas.data.subjects import Subject
from deepatlas.evaluation.metrics import (
    dice_per_class,
    finite_mean,
    folded_fraction,
    hausdorff95_per_class,
    sd_log_jacobian,
)
from deepatlas.files import atomic_write_csv, atomic_write_text
from deepatlas.inference.apply import (
    Registrar,
    atlas_segment_volume,
    check_seg_net_weight,
    register_volumes,
    segment_volume,
)
from deepatlas.inference.run import TrainedRun


def declared_pairs(ids: list[str], pairs: str) -> list[tuple[str, str]]:
    if pairs == "none":
        return []
    if pairs == "next":
        return [(ids[i], ids[(i + 1) % len(ids)]) for i in range(len(ids))] if len(ids) > 1 else []
    if pairs == "all":
        return [(a, b) for a in ids for b in ids if a != b]
    path = Path(pairs)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(
            f"{path}: cannot read pairs file (expected 'next', 'all', 'none' or a JSON file): {err}"
        ) from None
    unknown = sorted({i for pair in spec for i in pair} - set(ids))
    if unknown:
        raise DataError(f"{path}: pairs name subjects not in the evaluated split: {unknown[:10]}")
    return [(str(a), str(b)) for a, b in spec]


@dataclass(frozen=True)
class EvaluationOptions:
    """How :func:`evaluate_run` evaluates, beyond the run and the dataset.

    Attributes:
        split: the split of ``splits_file`` to evaluate (None: every labelled subject).
        splits_file: default ``<dataset>/splits.json`` when the dataset is a folder.
        pairs: ``next``, ``all``, ``none`` or a JSON file of ``[moving_id, fixed_id]`` pairs.
        unknown_labels: what a label code outside the scheme becomes (default: the run's setting).
        progress: show progress bars.
        atlases: subject ids of the dataset (any split) whose labels segment the evaluated
            subjects by registration and ``fusion`` (atlas segmentation) instead of the seg net.
        fusion: ``majority`` or ``weighted``, for ``atlases``.
        seg_net_weight: with ``atlases``, the run's seg net votes too, with this weight (0: not).
        registrar: a registration method replacing the run's registration net, for comparing
            methods with the same code; the run may then be None, given ``scheme`` and ``atlases``.
        scheme: the label classes (default: the run's).
    """

    split: str | None = "test"
    splits_file: str | Path | None = None
    pairs: str = "next"
    unknown_labels: str | None = None
    progress: bool = True
    atlases: list[str] | None = None
    fusion: str = "weighted"
    seg_net_weight: float = 0.0
    registrar: Registrar | None = None
    scheme: LabelScheme | None = None


@dataclass(frozen=True)
class Method:
    """What is scored: how a pair is registered, and how an image is segmented (by the seg net,
    or by registering atlases to it and fusing their labels)."""

    run: TrainedRun | None
    registrar: Registrar
    scheme: LabelScheme
    atlases: list[tuple[Volume, Volume]] | None = None
    fusion: str = "weighted"
    seg_net_weight: float = 0.0

    def segment(self, image: Volume) -> np.ndarray:
        """Class indices of ``image`` on its own grid."""
        codes = (
            atlas_segment_volume(
                self.run, self.atlases, image, self.fusion, registrar=self.registrar, seg_net_weight=self.seg_net_weight
            )
            if self.atlases is not None
            else segment_volume(self.run, image, align="off")  # a labelled split: on the training alignment
        )
        return self.scheme.encode(codes, unknown="background")


@dataclass(frozen=True)
class Cases:
    """The evaluated subjects, loaded: ``volumes[id] = (image, label codes)``, ``classes[id]`` the
    label map as class indices of the method's scheme."""

    volumes: dict[str, tuple[Volume, Volume]]
    classes: dict[str, np.ndarray]


@dataclass(frozen=True)
class Tables:
    """Per-case results: the rows of ``segmentation.csv``, the seconds each segmentation took,
    the rows of ``registration.csv`` and of ``pairs.csv``."""

    segmentation: list[dict]
    seg_seconds: list[float]
    registration: list[dict]
    pairs: list[dict]


def labelled_subjects(dataset: str | Path, split: str | None, splits_file: str | Path | None) -> list[Subject]:
    """The labelled subjects of ``split`` (named in ``splits_file``) of ``dataset``; all of them for split None."""
    subjects = find_subjects(dataset)
    if split is not None:
        subjects = select_split(subjects, load_splits(splits_file), split, str(splits_file))
    return [s for s in subjects if s.label is not None]


def collect_subjects(dataset: str | Path, options: EvaluationOptions) -> list[Subject]:
    """The subjects to evaluate: the labelled ones of the split asked; an error where there are none."""
    split, splits_file = options.split, options.splits_file
    if split is not None:
        splits_file = splits_file or (Path(dataset) / "splits.json" if Path(dataset).is_dir() else None)
        if splits_file is None or not Path(splits_file).exists():
            raise DataError(f"{dataset}: no splits file to take split {split!r} from; pass --splits or --split all")
    subjects = labelled_subjects(dataset, split, splits_file)
    if not subjects:
        raise DataError(f"{dataset}: no labelled subjects to evaluate in split {split!r}")
    return subjects


def load_atlases(dataset: str | Path, ids: list[str], evaluated: list[Subject]) -> list[tuple[Volume, Volume]]:
    """Images and label maps of the atlas subjects ``ids`` (any split), none of them an evaluated subject."""
    by_id = {s.id: s for s in find_subjects(dataset)}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"{dataset}: atlas subject(s) {missing[:10]} not found")
    unlabelled = [i for i in ids if by_id[i].label is None]
    if unlabelled:
        raise DataError(f"{dataset}: atlas subject(s) {unlabelled[:10]} have no label map")
    volumes = [load_labelled(by_id[i].image, by_id[i].label) for i in ids]
    overlap = sorted(set(ids) & {s.id for s in evaluated})
    if overlap:
        raise DataError(f"{dataset}: atlases {overlap} are also evaluated subjects; an atlas would segment itself")
    return volumes


def make_method(run: TrainedRun | None, options: EvaluationOptions, atlases: list | None) -> Method:
    """The method to score: ``options.registrar`` or the run's pipeline; the seg net or ``atlases``."""
    registrar = options.registrar or partial(register_volumes, run)
    check_seg_net_weight(options.seg_net_weight, run)
    if options.seg_net_weight > 0 and not atlases:
        raise ValueError("--seg-net-weight is the seg net's vote beside atlases: give --atlases too")
    if options.seg_net_weight > 0 and options.scheme not in (None, run.scheme):
        raise ValueError("--seg-net-weight: the seg net votes over its run's classes; another scheme cannot be scored")
    scheme = options.scheme or run.scheme
    return Method(run, registrar, scheme, atlases, options.fusion, options.seg_net_weight)


def load_cases(subjects: list[Subject], scheme: LabelScheme, unknown: str) -> Cases:
    """Load every subject's image and label map; label codes outside ``scheme`` are handled as ``unknown`` says."""
    volumes = {s.id: load_labelled(s.image, s.label) for s in subjects}
    classes = {
        sid: scheme.encode(lab.array, source=str(lab.path), unknown=unknown) for sid, (_, lab) in volumes.items()
    }
    for sid, (_, lab) in volumes.items():  # a reference with wrong sides scores a right answer as wrong
        warn_crossed(classes[sid], lab.affine, scheme, str(lab.path))
    return Cases(volumes, classes)


def _overlap(pred: np.ndarray, target: np.ndarray, k: int, spacing) -> tuple[list[float], list[float]]:
    """Per-structure Dice and HD95 (mm) of class maps ``pred`` against ``target``."""
    dice = dice_per_class(torch.from_numpy(pred), torch.from_numpy(target), k)
    return dice.tolist(), hausdorff95_per_class(pred, target, k, spacing)


def segment_cases(method: Method, cases: Cases, progress: bool) -> tuple[list[dict], list[float]]:
    """Segment every case and score it against its manual labels: the rows of ``segmentation.csv``
    and the seconds each segmentation took."""
    k, names = method.scheme.num_classes, method.scheme.names[1:]
    rows, seconds = [], []
    for sid, (image, _labels) in tqdm(cases.volumes.items(), desc="segment", disable=not progress, leave=False):
        start = time.perf_counter()
        pred = method.segment(image)
        seconds.append(time.perf_counter() - start)
        dice, hd = _overlap(pred, cases.classes[sid], k, image.spacing)
        rows += [{"subject": sid, "structure": n, "dice": float(d), "hd95_mm": h} for n, d, h in zip(names, dice, hd)]
    return rows, seconds


def register_pair(method: Method, cases: Cases, moving_id: str, fixed_id: str) -> tuple[list[dict], dict]:
    """Register one pair and score it: its rows of ``registration.csv`` (warped labels against the
    fixed ones, per structure) and its row of ``pairs.csv`` (the field)."""
    k, names = method.scheme.num_classes, method.scheme.names[1:]
    (moving, moving_labels), (fixed, fixed_labels) = cases.volumes[moving_id], cases.volumes[fixed_id]
    start = time.perf_counter()
    result = method.registrar(moving, fixed, moving_labels)
    seconds = time.perf_counter() - start
    target = cases.classes[fixed_id]
    after, hd = _overlap(method.scheme.encode(result.warped_labels, unknown="background"), target, k, fixed.spacing)
    before = (
        dice_per_class(torch.from_numpy(cases.classes[moving_id]), torch.from_numpy(target), k)
        if moving.array.shape == fixed.array.shape
        else torch.full((k - 1,), float("nan"))
    )
    pair = {"moving": moving_id, "fixed": fixed_id}
    rows = [
        {**pair, "structure": n, "dice": float(a), "dice_before": float(b), "hd95_mm": h}
        for n, a, b, h in zip(names, after, before.tolist(), hd)
    ]
    folds = folded_fraction(result.jacobian)
    sdlogj = sd_log_jacobian(result.jacobian, fixed_labels.array > 0)
    return rows, {**pair, "folds": folds, "sdlogj": sdlogj, "seconds": seconds}


def register_pairs(method: Method, cases: Cases, pairs: str, progress: bool) -> tuple[list[dict], list[dict]]:
    """Register and score every declared pair (see :func:`declared_pairs`): the rows of
    ``registration.csv`` and of ``pairs.csv``."""
    rows, pair_rows = [], []
    for moving_id, fixed_id in tqdm(
        declared_pairs(list(cases.volumes), pairs), desc="register", disable=not progress, leave=False
    ):
        structures, pair = register_pair(method, cases, moving_id, fixed_id)
        rows += structures
        pair_rows.append(pair)
    return rows, pair_rows


def describe(run: TrainedRun | None, dataset: str | Path, options: EvaluationOptions, subjects: int) -> dict:
    """The head of ``summary.json``: what was evaluated, on what."""
    atlases = options.atlases
    return {
        "run": str(run.path) if run is not None else None,
        "dataset": str(dataset),
        "split": options.split,
        "pairs": options.pairs,
        "segmentation": segmentation_name(options) if atlases else "seg net",
        "atlases": list(atlases or []),
        "subjects": subjects,
    }


def segmentation_name(options: EvaluationOptions) -> str:
    """How an atlas evaluation segmented: ``atlas (5, weighted)``, ``+ seg net x1`` when it votes."""
    name = f"atlas ({len(options.atlases)}, {options.fusion})"
    return name + (f" + seg net x{options.seg_net_weight:g}" if options.seg_net_weight > 0 else "")


def score(tables: Tables, names: list[str]) -> dict:
    """The numbers of ``summary.json``: means over cases (per structure too), folds, SDlogJ, times."""

    def per_structure(rows, key):
        return {n: finite_mean([r[key] for r in rows if r["structure"] == n]) for n in names}

    seg, reg, pairs = tables.segmentation, tables.registration, tables.pairs
    summary = {
        "pair_count": len(pairs),
        "seg_dice": finite_mean([r["dice"] for r in seg]),
        "seg_hd95_mm": finite_mean([r["hd95_mm"] for r in seg]),
        "seg_seconds_per_image": float(np.median(tables.seg_seconds)),
        "seg_dice_per_structure": per_structure(seg, "dice"),
        "seg_hd95_per_structure": per_structure(seg, "hd95_mm"),
        "missing_structures": sum(1 for r in seg + reg if r["hd95_mm"] == float("inf")),
    }
    if pairs:
        summary.update(
            {
                "reg_dice": finite_mean([r["dice"] for r in reg]),
                "reg_dice_before": finite_mean([r["dice_before"] for r in reg]),
                "reg_hd95_mm": finite_mean([r["hd95_mm"] for r in reg]),
                "folds": float(np.mean([r["folds"] for r in pairs])),
                "sdlogj": float(np.mean([r["sdlogj"] for r in pairs])),
                "reg_seconds_per_pair": float(np.median([r["seconds"] for r in pairs])),
                "reg_dice_per_structure": per_structure(reg, "dice"),
            }
        )
    return summary


EVALUATION_FILES = ("segmentation.csv", "registration.csv", "pairs.csv", "summary.json")
"""What :func:`write_tables` writes into its folder (``evaluate`` refuses to replace them without ``--overwrite``)."""


def write_tables(output: str | Path, tables: Tables, summary: dict) -> None:
    """Write the per-case CSV files and ``summary.json`` into ``output``."""
    output = Path(output)
    atomic_write_csv(output / "segmentation.csv", tables.segmentation)
    atomic_write_csv(output / "registration.csv", tables.registration)
    atomic_write_csv(output / "pairs.csv", tables.pairs)
    atomic_write_text(output / "summary.json", json.dumps(summary, indent=1))


def evaluate(
    run: TrainedRun | None, dataset: str | Path, options: EvaluationOptions, output: str | Path | None = None
) -> dict:
    """Evaluate ``run`` (or ``options.registrar``) on ``dataset`` as ``options`` say; returns the summary,
    also written with the per-case tables into ``output`` when given.

    For callers holding an :class:`EvaluationOptions`; with keywords, call :func:`evaluate_run`
    (the same). For the nets alone on an in-memory image set (training validation), call
    :func:`deepatlas.evaluation.evaluate.evaluate_image_set`."""
    if run is None and (options.registrar is None or options.scheme is None or not options.atlases):
        raise ValueError("evaluate_run without a trained run needs a registrar, a label scheme and atlases")
    subjects = collect_subjects(dataset, options)
    atlases = load_atlases(dataset, options.atlases, subjects) if options.atlases else None
    method = make_method(run, options, atlases)
    unknown = options.unknown_labels or (run.config.data.unknown_labels if run is not None else "error")
    cases = load_cases(subjects, method.scheme, unknown)
    tables = Tables(
        *segment_cases(method, cases, options.progress), *register_pairs(method, cases, options.pairs, options.progress)
    )
    summary = {**describe(run, dataset, options, len(cases.volumes)), **score(tables, method.scheme.names[1:])}
    if output is not None:
        write_tables(output, tables, summary)
    return summary


def evaluate_run(
    run: TrainedRun | None,
    dataset: str | Path,
    split: str | None = "test",
    splits_file: str | Path | None = None,
    pairs: str = "next",
    unknown_labels: str | None = None,
    output: str | Path | None = None,
    **options,
) -> dict:
    """Evaluate ``run`` on the labelled subjects of ``split`` of ``dataset``; returns the summary.

    The entry point for a trained run's scores (``deepatlas evaluate``, reports, benchmarks):
    :func:`evaluate` with the options as keywords. For the nets alone on an in-memory image set
    (training validation), call :func:`deepatlas.evaluation.evaluate.evaluate_image_set`.

    ``options`` are the other fields of :class:`EvaluationOptions` (``progress``, ``atlases``,
    ``fusion``, ``seg_net_weight``, ``registrar``, ``scheme``), as keywords; see :func:`evaluate`.
    """
    return evaluate(run, dataset, EvaluationOptions(split, splits_file, pairs, unknown_labels, **options), output)


def format_summary(summary: dict) -> str:
    """A short table for the terminal."""
    lines = [
        f"{summary['subjects']} subjects, {summary['pair_count']} pairs ({summary['pairs']})",
        f"{'structure':<24} {'seg Dice':>9} {'seg HD95':>9} {'reg Dice':>9}",
    ]
    reg = summary.get("reg_dice_per_structure", {})
    for name, dice in summary["seg_dice_per_structure"].items():
        lines.append(
            f"{name:<24} {dice:>9.3f} {summary['seg_hd95_per_structure'][name]:>9.2f} "
            f"{reg.get(name, float('nan')):>9.3f}"
        )
    lines.append(
        f"{'mean':<24} {summary['seg_dice']:>9.3f} {summary['seg_hd95_mm']:>9.2f} "
        f"{summary.get('reg_dice', float('nan')):>9.3f}"
    )
    if "folds" in summary:
        lines.append(
            f"registration: Dice {summary['reg_dice']:.3f} (before {summary['reg_dice_before']:.3f}), "
            f"folds {100 * summary['folds']:.3f}%, SDlogJ {summary['sdlogj']:.3f}, "
            f"{summary['reg_seconds_per_pair']:.2f} s/pair; segmentation "
            f"{summary['seg_seconds_per_image']:.2f} s/image"
        )
    return "\n".join(lines)
