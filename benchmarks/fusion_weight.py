"""How much should the seg net's vote weigh beside the atlases'? (``atlas-segment --seg-net-weight``)

Usage:
    python -m benchmarks.fusion_weight RUN [RUN ...] [--data $DEEPATLAS_DATA/ixi-2mm] [--split validation]

For each run folder (its ``best`` checkpoint, else ``last``), its labelled training images are the
atlases: each is registered to every labelled subject of ``--split`` by the run's pipeline (net +
refinement) and votes with its local-NCC weight (``weighted`` fusion, as ``atlas-segment``), then
the seg net's class probabilities are added times each weight of ``--weights`` (0: the atlases
alone; ``inf``: the seg net alone). Registrations are made once per subject and every weight is
scored on them. Dice over the run's classes (31 structures for ixi-2mm). Writes
``<out>/fusion_weight.{json,md}`` with the CPU model and commit. Choose the weight on validation, never test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line

ROOT = Path(__file__).resolve().parents[1]

WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0, math.inf]


def score_run(
    run_dir: Path,
    data: Path,
    split: str,
    weights: list[float],
    per_structure: bool = False,
    atlas_ids: list[str] | None = None,
) -> dict:
    """Mean Dice over the split's subjects (those whose reference maps have sound sides) for every weight,
    and per subject; with ``per_structure``, also one weight per structure chosen on the other subjects
    (``leave_one_out``). ``atlas_ids``: the atlases (default: the run's labelled training images)."""
    from benchmarks.references import sound_sides
    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.evaluation.evaluate_run import labelled_subjects, load_atlases
    from deepatlas.evaluation.metrics import dice_per_class, finite_mean
    from deepatlas.inference import load_run
    from deepatlas.inference.apply import atlas_votes, register_volumes, segment_probabilities

    run = load_run(run_dir)
    labelled = atlas_ids or json.loads((run.folder.root / "data.json").read_text())["labelled"]
    subjects = labelled_subjects(data, split, data / "splits.json")
    sound, _ = sound_sides(data, [s.id for s in subjects], run.scheme)
    subjects = [s for s in subjects if s.id in sound]
    atlases = load_atlases(data, labelled, subjects)
    registrar, unknown = partial(register_volumes, run), run.config.data.unknown_labels
    per_subject, per_class, kept = {}, {}, {}
    for subject in subjects:
        sid, target, truth = subject.id, load_image(subject.image), load_label_codes(subject.label)
        votes = atlas_votes(atlases, target, registrar, "weighted", run.scheme, unknown=unknown)
        probs = segment_probabilities(run, target, align="off").double()
        truth_classes = torch.from_numpy(run.scheme.encode(truth.array, unknown="background").astype(np.int64))
        scores, per_class[sid] = {}, {}
        for w in weights:
            fused = probs if math.isinf(w) else votes.votes + w * probs
            dice = dice_per_class(fused.argmax(0), truth_classes, run.scheme.num_classes)
            scores[str(w)], per_class[sid][str(w)] = finite_mean(dice), dice.tolist()
        per_subject[sid] = scores
        if per_structure:  # float32: 10 subjects x 32 classes x 80x96x80 x 2 maps ~ 1.6 GB
            kept[sid] = (votes.votes.float(), probs.float(), truth_classes)
        print(run_dir.name, sid, {k: round(v, 3) for k, v in scores.items()}, flush=True)
    mean = {str(w): float(np.mean([s[str(w)] for s in per_subject.values()])) for w in weights}
    out = {"atlases": labelled, "mean": mean, "per_subject": per_subject, "per_class": per_class}
    if per_structure:
        out["leave_one_out"] = leave_one_out(kept, per_class, weights, run.scheme.num_classes)
        out["structure_weights"] = dict(zip(run.scheme.names[1:], structure_weights(per_class, weights, list(kept))))
    return out


def structure_weights(per_class: dict, weights: list[float], subjects: list[str]) -> list[float]:
    """For each structure, the weight whose fusion (one weight for all) gave it the best mean Dice
    over ``subjects``: ``K`` weights."""
    table = np.array([[per_class[s][str(w)] for w in weights] for s in subjects])  # S x W x K
    with warnings.catch_warnings():  # a structure absent from every subject: NaN column
        warnings.simplefilter("ignore")
        means = np.nan_to_num(np.nanmean(table, axis=0), nan=-1.0)
    return [weights[i] for i in means.argmax(0)]


def leave_one_out(kept: dict, per_class: dict, weights: list[float], num_classes: int) -> dict:
    """Each subject scored with weights chosen on the others: one weight for all structures (the
    best mean Dice), and one per structure (``structure_weights``; background keeps weight 1).
    The seg net alone (``inf``) enters a per-structure vector as a weight of 1000."""
    from deepatlas.evaluation.metrics import dice_per_class, finite_mean

    result = {"one weight": {}, "per structure": {}}
    for sid, (votes, probs, truth) in kept.items():
        others = [s for s in kept if s != sid]
        means = {w: np.mean([finite_mean(per_class[s][str(w)]) for s in others]) for w in weights}
        best = max(means, key=means.get)
        result["one weight"][sid] = per_class[sid][str(best)]
        chosen = [1.0] + [min(w, 1000.0) for w in structure_weights(per_class, weights, others)]
        vector = torch.tensor(chosen, dtype=votes.dtype).view(-1, *[1] * (votes.ndim - 1))
        fused = votes + vector * probs
        result["per structure"][sid] = dice_per_class(fused.argmax(0), truth, num_classes).tolist()
    summary = {}
    for kind, per_subject in result.items():
        mean = float(np.mean([finite_mean(v) for v in per_subject.values()]))
        summary[kind] = {"mean": mean, "per_subject": per_subject}
    return summary


def table(results: dict, weights: list[float]) -> list[str]:
    head = " | ".join("seg net alone" if math.isinf(w) else ("atlases alone" if w == 0 else f"{w:g}") for w in weights)
    lines = [f"| run (atlases) | {head} |", "|" + " --- |" * (len(weights) + 1)]
    for name, r in results.items():
        best = max(r["mean"].values())
        cells = [f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in r["mean"].values()]
        lines.append(f"| {name} ({len(r['atlases'])}) | " + " | ".join(cells) + " |")
    return lines


def loo_table(results: dict) -> list[str]:
    """Leave-one-subject-out: weight 1, the best single weight, a weight per structure."""
    lines = [
        "Each subject scored with weights chosen on the other subjects (leave one out):",
        "",
        "| run | atlases alone | weight 1 | one weight, chosen | a weight per structure, chosen |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        loo, fixed = r["leave_one_out"], [r["mean"].get(w) for w in ("0.0", "1.0")]  # when swept
        cells = [f"{v:.4f}" if v is not None else "-" for v in fixed]
        cells += [f"{loo['one weight']['mean']:.4f}", f"{loo['per structure']['mean']:.4f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, r in results.items():
        weights = ", ".join(f"{k} {v:g}" for k, v in r["structure_weights"].items())
        lines += ["", f"Per-structure weights on every subject, {name}: {weights}"]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--weights", type=float, nargs="+", default=WEIGHTS)
    parser.add_argument("--atlases", nargs="+", metavar="ID", help="atlas subjects (default: each run's labelled ones)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tuning")
    parser.add_argument(
        "--per-structure",
        action="store_true",
        help="also a weight per structure, chosen on the other subjects (leave one out); keeps every "
        "subject's votes in memory (~1.6 GB for 10 subjects at 80x96x80)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from deepatlas.files import atomic_write_text

    results = {
        str(run): score_run(run, args.data, args.split, args.weights, args.per_structure, args.atlases)
        for run in args.runs
    }
    machine = provenance()
    lines = [
        f"# Seg net weight in atlas fusion (ixi-2mm {args.split} split, weighted fusion, net + refinement)",
        "",
        f"{provenance_line(machine)} Mean Dice over "
        "the run's classes; columns: the seg net's vote weight (`atlas-segment --seg-net-weight`).",
        "",
        *table(results, args.weights),
    ]
    if args.per_structure:
        lines += ["", *loo_table(results)]
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"machine": machine, "split": args.split, "runs": results}
    atomic_write_text(args.out / "fusion_weight.json", json.dumps(record, indent=1))
    atomic_write_text(args.out / "fusion_weight.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
