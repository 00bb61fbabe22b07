"""The label term of refinement (``refine.label_weight``) on ixi-2mm's *validation* subjects (never test).

Usage:
    python -m benchmarks.label_term [--model models/brain-2mm] [--fixed 10] [--out DIR]

Atlas-segment-style pairs: moving = each of the first 5 training subjects with its labels (the atlases),
fixed = each validation subject. Per pair: Dice (brain31) of the warped atlas labels against the fixed
labels, folds and SDlogJ in the fixed brain, as ``benchmarks.registration`` scores; per fixed subject:
the Dice of ``atlas_segment_volume``'s weighted fusion of the 5 warped atlases. Every variant registers
with the moving labels handed to the refinement (``RegistrationOptions(label_term=True)``); the default
row has ``label_weight=0``, which is today's refinement (the term off). One thread
(``torch.set_num_threads(1)``): the machine is shared, so seconds are the median over pairs of the ratio
to the default on the same pair, run right before. Results are written after every fixed subject
(``<out>/label_term.json`` and ``.md``, with the CPU model and commit), so a stopped run keeps its pairs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line

ROOT = Path(__file__).resolve().parents[1]

ATLASES = 5
DEFAULT = "default (no label term)"
VARIANTS = {
    DEFAULT: ["label_weight=0"],
    "label term, weight 5, anatomy grid 2x": ["label_weight=5"],
    "label term, weight 5, grid 4x": ["label_weight=5", "anatomy_downsample=4"],
    "label term, weight 10, grid 4x": ["label_weight=10", "anatomy_downsample=4"],
}


def measure(args: argparse.Namespace, write) -> dict:
    import torch

    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.data.labels import LabelScheme
    from deepatlas.data.splits import load_splits
    from deepatlas.inference import load_run
    from deepatlas.inference.apply import RegistrationOptions, register_volumes
    from deepatlas.registration import build_pipeline

    torch.set_num_threads(1)
    scheme = LabelScheme.from_file(args.data / "brain31.json")
    splits = load_splits(args.data / "splits.json")
    atlas_ids, fixed_ids = splits["train"][:ATLASES], splits["validation"][: args.fixed]

    def read(i):
        return load_image(args.data / "images" / f"{i}.nii.gz"), load_label_codes(args.data / "labels" / f"{i}.nii.gz")

    atlases = {i: read(i) for i in atlas_ids}
    run = load_run(args.model)
    options = RegistrationOptions(label_term=True)
    registrars = {}
    for name, overrides in VARIANTS.items():
        pipeline = build_pipeline(run.config, run.reg_net, run.seg_net, run.config.refine.with_overrides(overrides))
        registrars[name] = partial(register_volumes, run, pipeline=pipeline, options=options)
    first = atlases[atlas_ids[0]]
    for registrar in registrars.values():  # warm-up
        registrar(first[0], atlases[atlas_ids[1]][0], first[1])
    results = {
        "split": "validation",
        "atlases": atlas_ids,
        "machine": provenance(),  # torch's threads: 1
        "variants": VARIANTS,
        "pairs": {name: [] for name in VARIANTS},
        "fused": {name: [] for name in VARIANTS},
    }
    for fixed_id in fixed_ids:
        fixed, fixed_codes = read(fixed_id)
        classes = scheme.encode(fixed_codes.array, unknown="background")
        for name, registrar in registrars.items():
            rows, dice = atlas_segment_scored(
                run, [atlases[i] for i in atlas_ids], (fixed_id, fixed, classes), registrar
            )
            results["pairs"][name] += rows
            results["fused"][name].append({"fixed": fixed_id, "dice": dice})
            mean = statistics.mean(r["dice"] for r in rows)
            print(f"{fixed_id} {name}: pairs {mean:.4f} fused {dice:.4f} {sum(r['seconds'] for r in rows):.1f} s")
        results["num_fixed"] = len(results["fused"][DEFAULT])
        results["summary"] = {name: summarize(results, name) for name in VARIANTS}
        write(results)
    return results


def atlas_segment_scored(run, atlases: list, target: tuple, registrar) -> tuple[list[dict], float]:
    """``atlas-segment`` of one validation brain (``target``: its id, image and class indices) with
    ``registrar``: each atlas pair's seconds and scores (``benchmarks.registration.score``), and the fused
    label map's mean Dice."""
    import numpy as np
    import torch

    from benchmarks import registration as bench
    from deepatlas.evaluation.metrics import dice_per_class, finite_mean
    from deepatlas.inference.apply import atlas_segment_volume

    fixed_id, fixed, classes = target
    scheme, rows = run.scheme, []

    def scored(moving, target, labels):
        start = time.perf_counter()
        result = registrar(moving, target, labels)
        rows.append({"moving": str(moving.path.name), "fixed": fixed_id, "seconds": time.perf_counter() - start})
        rows[-1] |= bench.score(result.warped_labels, result.jacobian, classes, scheme)
        return result

    codes = atlas_segment_volume(run, atlases, fixed, "weighted", registrar=scored)
    fused = scheme.encode(np.asarray(codes), unknown="background")
    return rows, finite_mean(dice_per_class(torch.from_numpy(fused), torch.from_numpy(classes), scheme.num_classes))


def summarize(results: dict, name: str) -> dict:
    rows, default = results["pairs"][name], results["pairs"][DEFAULT]
    fused, fused_default = results["fused"][name], results["fused"][DEFAULT]
    return {
        "pair_dice": statistics.mean(r["dice"] for r in rows),
        "pairs_above_default": sum(r["dice"] > d["dice"] for r, d in zip(rows, default)),
        "fused_dice": statistics.mean(r["dice"] for r in fused),
        "fused_above_default": sum(r["dice"] > d["dice"] for r, d in zip(fused, fused_default)),
        "folds_pct": statistics.mean(r["folds_pct"] for r in rows),
        "sdlogj": statistics.mean(r["sdlogj"] for r in rows),
        "seconds_per_pair": statistics.median(r["seconds"] for r in rows),
        "time_ratio_to_default": statistics.median(r["seconds"] / d["seconds"] for r, d in zip(rows, default)),
    }


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_term.json").write_text(json.dumps(results, indent=1) + "\n")
    n, pairs = results["num_fixed"], len(results["pairs"][DEFAULT])
    lines = [
        f"# Label term in refinement: {ATLASES} training atlases -> {n} ixi-2mm validation subjects ({pairs} pairs)",
        "",
        f"{provenance_line(results['machine'])} Shared with other work: time is the median over pairs of the "
        "ratio to the default on the same pair, run right before it; the measured median seconds are only for "
        f"orientation. Shipped net (models/brain-2mm), default refinement settings otherwise; atlases "
        f"{', '.join(results['atlases'])}. Fused: `atlas_segment_volume`, weighted fusion of the {ATLASES} "
        "warped atlases. `python -m benchmarks.label_term`.",
        "",
        "| variant | pair Dice | pairs above default | fused Dice | fused above default | folds % | SDlogJ "
        "| time / default | s / pair (measured) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["summary"].items():
        lines.append(
            f"| {name} | {r['pair_dice']:.4f} | {r['pairs_above_default']}/{pairs} | {r['fused_dice']:.4f} | "
            f"{r['fused_above_default']}/{n} | {r['folds_pct']:.4f} | {r['sdlogj']:.3f} | "
            f"{r['time_ratio_to_default']:.2f} | {r['seconds_per_pair']:.2f} |"
        )
    (out / "label_term.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "brain-2mm")
    parser.add_argument("--fixed", type=int, default=10, help="validation subjects used as fixed images")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "registration")
    args = parser.parse_args()
    measure(args, partial(write, out=args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
