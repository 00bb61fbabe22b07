"""How a label map is carried through a registration: nearest neighbour against label interpolation.

Usage:
    python -m benchmarks.label_interpolation [--split validation] [--model models/brain-2mm] [--out DIR]
        [--limit N] [--atlases 5]

Every registration here is ``deepatlas register``'s default (the shipped net + refinement), computed
once; only the resampling of the moving labels through it differs, so the rows measure the resampling
alone:

- pairs: each subject of the split to the next, the moving labels resampled by nearest neighbour
  (the behaviour before label interpolation) or by each label's indicator interpolated linearly,
  the largest winning (:func:`deepatlas.inference.geometry.sample_labels`, what commands do now);
  Dice over brain31 against the fixed labels, and the relative change of each structure's volume
  (interpolated against nearest neighbour: what the resampling itself adds or removes);
- atlas segmentation: the first ``--atlases`` (5) training subjects registered to every subject of the split and
  fused by local-NCC-weighted votes, as ``atlas-segment`` does: hard votes of nearest-neighbour
  labels (before), hard votes of interpolated labels, and the soft votes of
  :func:`deepatlas.inference.apply.atlas_votes` (now: each target voxel votes for the atlas labels
  around its point in proportion to their interpolation weights). Seconds: the registrations of a
  target, and each fusion on top of them.

Writes ``<out>/label_interpolation_<split>.{json,md}`` with the machine. Validation chooses; the test
split is run once, at the end, to report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.paths import data_root
from benchmarks.provenance import command_line, provenance, provenance_line
from benchmarks.records import write_results

ROOT = Path(__file__).resolve().parents[1]
ATLASES = 5
FUSIONS = ("nearest, hard votes (before)", "interpolated, hard votes", "soft votes (atlas-segment now)")


def resampled(result, labels, fixed, linear: bool) -> np.ndarray:
    """The moving ``labels`` through ``result``'s displacement onto ``fixed``'s grid."""
    import torch

    from deepatlas.inference.geometry import sample_labels, world_coordinates

    points = world_coordinates(tuple(fixed.array.shape), fixed.affine) + torch.from_numpy(result.displacement)
    codes = torch.from_numpy(labels.array.astype(np.int32))
    return sample_labels(codes, labels.affine, points, linear=linear).numpy()


def measure_pairs(run, subjects: dict, ids: list[str], scheme) -> list[dict]:
    """Consecutive pairs of ``ids``: Dice with nearest-neighbour and interpolated labels, same field."""
    from deepatlas.evaluation.metrics import dice_per_class, finite_mean
    from deepatlas.inference.apply import register_volumes

    rows = []
    for moving_id, fixed_id in zip(ids, ids[1:]):
        (moving, labels), (fixed, fixed_labels) = subjects[moving_id], subjects[fixed_id]
        result = register_volumes(run, moving, fixed, labels)
        truth = _classes(scheme, fixed_labels.array)
        row = {"moving": moving_id, "fixed": fixed_id}
        for key, linear in (("nearest", False), ("interpolated", True)):
            classes = _classes(scheme, resampled(result, labels, fixed, linear))
            row[key] = finite_mean(dice_per_class(classes, truth, scheme.num_classes))
            row[f"{key}_volumes"] = [int((classes == k).sum()) for k in range(1, scheme.num_classes)]
        rows.append(row)
        print(f"{moving_id} -> {fixed_id}: {row['nearest']:.4f} {row['interpolated']:.4f}", flush=True)
    return rows


def _classes(scheme, codes: np.ndarray):
    import torch

    return torch.from_numpy(scheme.encode(np.asarray(codes), unknown="background").astype(np.int64))


def measure_fusion(run, atlases: list, subjects: dict, ids: list[str], scheme) -> list[dict]:
    """Each target of ``ids`` segmented by the atlases, fused three ways from the same registrations."""
    from deepatlas.evaluation.metrics import dice_per_class, finite_mean
    from deepatlas.inference.apply import atlas_votes, register_volumes

    rows = []
    for target_id in ids:
        target, target_labels = subjects[target_id]
        start = time.perf_counter()
        results = [register_volumes(run, image, target, labels) for image, labels in atlases]
        row = {"target": target_id, "registration_seconds": time.perf_counter() - start}
        truth = _classes(scheme, target_labels.array)
        for name, fuse in _fusions(atlases, results, target, scheme, atlas_votes).items():
            start = time.perf_counter()
            fused = fuse()
            row[f"{name} seconds"] = time.perf_counter() - start
            row[name] = finite_mean(dice_per_class(fused, truth, scheme.num_classes))
        rows.append(row)
        print(f"{target_id}: " + " ".join(f"{row[name]:.4f}" for name in FUSIONS), flush=True)
    return rows


def _fusions(atlases, results, target, scheme, atlas_votes) -> dict:
    """The three fusions of FUSIONS, each a function returning the target's class map."""
    import torch

    from deepatlas.data.io import normalize_intensity
    from deepatlas.registration.fusion import LabelVotes, similarity_weight

    reference = torch.from_numpy(normalize_intensity(target.array))[None, None]

    def hard(linear: bool):
        votes = LabelVotes(scheme.num_classes, target.array.shape, dtype=torch.float64)
        for (_, labels), result in zip(atlases, results):
            warped = torch.from_numpy(normalize_intensity(result.warped))[None, None]
            votes.add(_classes(scheme, resampled(result, labels, target, linear)), similarity_weight(warped, reference))
        return votes.winner()

    def soft():
        remaining = iter(results)
        votes = atlas_votes(atlases, target, lambda *_: next(remaining), "weighted", scheme, unknown="background")
        return votes.winner()

    return dict(zip(FUSIONS, (lambda: hard(False), lambda: hard(True), soft)))


def summarize(pairs: list[dict], fusion: list[dict]) -> dict:
    nearest = np.array([r["nearest_volumes"] for r in pairs], dtype=float)
    change = np.array([r["interpolated_volumes"] for r in pairs], dtype=float) / np.maximum(nearest, 1) - 1
    mean_change = change.mean(0)
    out = {
        "pair_dice": {key: statistics.mean(r[key] for r in pairs) for key in ("nearest", "interpolated")},
        "pairs_better": sum(r["interpolated"] > r["nearest"] for r in pairs),
        "volume_change_median": float(np.median(change)),
        "volume_change_structure_extremes": [float(mean_change.min()), float(mean_change.max())],
        "fused_dice": {name: statistics.mean(r[name] for r in fusion) for name in FUSIONS},
        "targets_better_soft": sum(r[FUSIONS[2]] > r[FUSIONS[0]] for r in fusion),
        "registration_seconds_per_target": statistics.median(r["registration_seconds"] for r in fusion),
        "fusion_seconds": {name: statistics.median(r[f"{name} seconds"] for r in fusion) for name in FUSIONS},
    }
    return out


def write_markdown(result: dict, path: Path) -> None:
    s, n_pairs, n_targets = result["summary"], len(result["pairs"]), len(result["fusion"])
    lines = [
        f"# Label interpolation, ixi-2mm {result['split']} ({n_pairs} pairs, {n_targets} atlas-segmented targets)",
        "",
        f"{provenance_line(result['machine'])} Command: `{result['command']}`. Registrations: `deepatlas "
        f"register`'s default (models/brain-2mm), each computed once; atlases: {', '.join(result['atlases'])}.",
        "",
        "| resampling of the moving labels | pair Dice |",
        "| --- | --- |",
        f"| nearest neighbour (before) | {s['pair_dice']['nearest']:.4f} |",
        f"| label interpolation (now) | {s['pair_dice']['interpolated']:.4f} ({s['pairs_better']}/{n_pairs} pairs "
        "better) |",
        "",
        f"Structure volumes, interpolated against nearest neighbour: median change {s['volume_change_median']:+.2%}"
        f", per-structure means from {s['volume_change_structure_extremes'][0]:+.2%} to "
        f"{s['volume_change_structure_extremes'][1]:+.2%}.",
        "",
        f"| {len(result['atlases'])}-atlas fusion (weighted) | fused Dice | s / target on top of the registrations |",
        "| --- | --- | --- |",
    ]
    for name in FUSIONS:
        lines.append(f"| {name} | {s['fused_dice'][name]:.4f} | {s['fusion_seconds'][name]:.2f} |")
    lines += [
        "",
        f"Soft votes above the nearest-neighbour hard votes on {s['targets_better_soft']}/{n_targets} targets; "
        f"the {len(result['atlases'])} registrations of a target take "
        f"{s['registration_seconds_per_target']:.1f} s (median).",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "brain-2mm")
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/registration")
    parser.add_argument("--limit", type=int, default=0, help="first N subjects of the split (>= 2; 0: all)")
    parser.add_argument("--atlases", type=int, default=ATLASES, help="training subjects that vote (a smoke run: 1)")
    args = parser.parse_args()
    if args.limit == 1 or args.limit < 0 or args.atlases < 1:
        parser.error("--limit must be 0 (all) or >= 2 (one pair needs two subjects), --atlases >= 1")
    if args.out is None and (args.limit or args.atlases != ATLASES):
        parser.error(
            "--limit or --atlases make a partial run: give --out, so it does not replace the published results"
        )
    args.out = args.out or ROOT / "benchmarks" / "results" / "registration"
    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.data.labels import LabelScheme
    from deepatlas.data.splits import load_splits
    from deepatlas.inference import load_run

    scheme = LabelScheme.from_file(args.data / "brain31.json")
    splits = load_splits(args.data / "splits.json")
    ids, atlas_ids = splits[args.split][: args.limit or None], splits["train"][: args.atlases]
    subjects = {
        i: (load_image(args.data / "images" / f"{i}.nii.gz"), load_label_codes(args.data / "labels" / f"{i}.nii.gz"))
        for i in [*ids, *atlas_ids]
    }
    run = load_run(args.model)
    pairs = measure_pairs(run, subjects, ids, scheme)
    fusion = measure_fusion(run, [subjects[i] for i in atlas_ids], subjects, ids, scheme)
    result = {
        "command": command_line(),
        "split": args.split,
        "atlases": atlas_ids,
        "machine": provenance(),
        "summary": summarize(pairs, fusion),
        "pairs": pairs,
        "fusion": fusion,
    }
    write_results(result, args.out, write_markdown, f"label_interpolation_{args.split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
