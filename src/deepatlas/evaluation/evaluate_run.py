"""``deepatlas evaluate``: segmentation and registration quality of a trained run on a labelled split.

Every image is evaluated on its own grid (through :mod:`deepatlas.inference.apply`),
with its own voxel spacing for distances. Pairs are declared, never random:
``next`` (each subject registered to the next, the last to the first), ``all``
(every ordered pair) or a JSON file ``[["moving_id", "fixed_id"], ...]``.

Writes ``segmentation.csv`` (subject, structure, Dice, HD95), ``registration.csv``
(moving, fixed, structure, Dice, Dice before registration, HD95), ``pairs.csv``
(moving, fixed, folds, SDlogJ, seconds) and ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from deepatlas.checkpoint import atomic_write_text
from deepatlas.data import DataError, find_subjects, load_splits
from deepatlas.data.io import load_image, load_label_codes
from deepatlas.data.labels import LabelScheme
from deepatlas.data.prepare import select_split
from deepatlas.evaluation.metrics import (
    dice_per_class,
    finite_mean,
    hausdorff95_per_class,
    sd_log_jacobian,
)
from deepatlas.inference.apply import Registrar, atlas_segment_volume, register_volumes, segment_volume
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


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def _load_atlases(subjects, ids: list[str], dataset) -> list[tuple]:
    by_id = {s.id: s for s in subjects}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"{dataset}: atlas subject(s) {missing[:10]} not found")
    unlabelled = [i for i in ids if by_id[i].label is None]
    if unlabelled:
        raise DataError(f"{dataset}: atlas subject(s) {unlabelled[:10]} have no label map")
    return [(load_image(by_id[i].image), load_label_codes(by_id[i].label)) for i in ids]


def evaluate_run(
    run: TrainedRun | None,
    dataset: str | Path,
    split: str | None = "test",
    splits_file: str | Path | None = None,
    pairs: str = "next",
    unknown_labels: str | None = None,
    output: str | Path | None = None,
    progress: bool = True,
    atlases: list[str] | None = None,
    fusion: str = "majority",
    registrar: Registrar | None = None,
    scheme: LabelScheme | None = None,
) -> dict:
    """Evaluate ``run`` on the labelled subjects of ``split`` of ``dataset``; returns the summary.

    Args:
        pairs: ``next``, ``all``, ``none`` or a JSON file of ``[moving_id, fixed_id]`` pairs.
        atlases: subject ids of ``dataset`` (any split) whose labels segment the evaluated
            subjects by registration and ``fusion`` (atlas segmentation) instead of the seg net.
        registrar: a registration method replacing the run's registration net, for
            comparing methods with the same code; ``run`` may then be None, given ``scheme``
            (the label classes) and ``atlases``.
    """
    if run is None and (registrar is None or scheme is None or not atlases):
        raise ValueError("evaluate_run without a trained run needs a registrar, a label scheme and atlases")
    registrar = registrar or partial(register_volumes, run)
    all_subjects = find_subjects(dataset)
    subjects = all_subjects
    if split is not None:
        splits_file = splits_file or (Path(dataset) / "splits.json" if Path(dataset).is_dir() else None)
        if splits_file is None or not Path(splits_file).exists():
            raise DataError(f"{dataset}: no splits file to take split {split!r} from; pass --splits or --split all")
        subjects = select_split(subjects, load_splits(splits_file), split, str(splits_file))
    subjects = [s for s in subjects if s.label is not None]
    if not subjects:
        raise DataError(f"{dataset}: no labelled subjects to evaluate in split {split!r}")
    atlas_volumes = _load_atlases(all_subjects, atlases, dataset) if atlases else None
    if atlas_volumes is not None:
        overlap = sorted(set(atlases) & {s.id for s in subjects})
        if overlap:
            raise DataError(f"{dataset}: atlases {overlap} are also evaluated subjects; an atlas would segment itself")
    unknown = unknown_labels or (run.config.data.unknown_labels if run is not None else "error")
    scheme = scheme or run.scheme
    k = scheme.num_classes
    names = scheme.names[1:]
    volumes = {s.id: (load_image(s.image), load_label_codes(s.label)) for s in subjects}
    classes = {
        sid: scheme.encode(lab.array, source=str(lab.path), unknown=unknown) for sid, (_, lab) in volumes.items()
    }

    seg_rows, seg_seconds = [], []
    for sid, (image, _labels) in tqdm(volumes.items(), desc="segment", disable=not progress, leave=False):
        start = time.perf_counter()
        codes = (
            atlas_segment_volume(run, atlas_volumes, image, fusion=fusion, registrar=registrar)
            if atlas_volumes is not None
            else segment_volume(run, image)
        )
        pred = scheme.encode(codes, unknown="background")
        seg_seconds.append(time.perf_counter() - start)
        dice = dice_per_class(torch.from_numpy(pred), torch.from_numpy(classes[sid]), k)
        hd = hausdorff95_per_class(pred, classes[sid], k, image.spacing)
        seg_rows += [
            {"subject": sid, "structure": n, "dice": float(d), "hd95_mm": h}
            for n, d, h in zip(names, dice.tolist(), hd)
        ]

    reg_rows, pair_rows = [], []
    for moving_id, fixed_id in tqdm(
        declared_pairs(list(volumes), pairs), desc="register", disable=not progress, leave=False
    ):
        (moving, moving_labels), (fixed, fixed_labels) = volumes[moving_id], volumes[fixed_id]
        start = time.perf_counter()
        result = registrar(moving, fixed, moving_labels)
        seconds = time.perf_counter() - start
        warped = scheme.encode(result.warped_labels, unknown="background")
        target = classes[fixed_id]
        after = dice_per_class(torch.from_numpy(warped), torch.from_numpy(target), k)
        before = (
            dice_per_class(torch.from_numpy(classes[moving_id]), torch.from_numpy(target), k)
            if moving.array.shape == fixed.array.shape
            else torch.full((k - 1,), float("nan"))
        )
        hd = hausdorff95_per_class(warped, target, k, fixed.spacing)
        reg_rows += [
            {
                "moving": moving_id,
                "fixed": fixed_id,
                "structure": n,
                "dice": float(a),
                "dice_before": float(b),
                "hd95_mm": h,
            }
            for n, a, b, h in zip(names, after.tolist(), before.tolist(), hd)
        ]
        pair_rows.append(
            {
                "moving": moving_id,
                "fixed": fixed_id,
                "folds": float((result.jacobian <= 0).mean()),
                "sdlogj": sd_log_jacobian(result.jacobian, fixed_labels.array > 0),
                "seconds": seconds,
            }
        )

    def per_structure(rows, key):
        return {n: finite_mean([r[key] for r in rows if r["structure"] == n]) for n in names}

    summary = {
        "run": str(run.path) if run is not None else None,
        "dataset": str(dataset),
        "split": split,
        "pairs": pairs,
        "segmentation": f"atlas ({len(atlases)}, {fusion})" if atlases else "seg net",
        "atlases": list(atlases or []),
        "subjects": len(volumes),
        "pair_count": len(pair_rows),
        "seg_dice": finite_mean([r["dice"] for r in seg_rows]),
        "seg_hd95_mm": finite_mean([r["hd95_mm"] for r in seg_rows]),
        "seg_seconds_per_image": float(np.median(seg_seconds)),
        "seg_dice_per_structure": per_structure(seg_rows, "dice"),
        "seg_hd95_per_structure": per_structure(seg_rows, "hd95_mm"),
        "missing_structures": sum(1 for r in seg_rows + reg_rows if r["hd95_mm"] == float("inf")),
    }
    if pair_rows:
        summary.update(
            {
                "reg_dice": finite_mean([r["dice"] for r in reg_rows]),
                "reg_dice_before": finite_mean([r["dice_before"] for r in reg_rows]),
                "reg_hd95_mm": finite_mean([r["hd95_mm"] for r in reg_rows]),
                "folds": float(np.mean([r["folds"] for r in pair_rows])),
                "sdlogj": float(np.mean([r["sdlogj"] for r in pair_rows])),
                "reg_seconds_per_pair": float(np.median([r["seconds"] for r in pair_rows])),
                "reg_dice_per_structure": per_structure(reg_rows, "dice"),
            }
        )
    if output is not None:
        output = Path(output)
        atomic_write_text(output / "segmentation.csv", _csv(seg_rows))
        atomic_write_text(output / "registration.csv", _csv(reg_rows))
        atomic_write_text(output / "pairs.csv", _csv(pair_rows))
        atomic_write_text(output / "summary.json", json.dumps(summary, indent=1))
    return summary


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
