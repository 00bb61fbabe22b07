"""``refine.method=greedy`` against today's default refinement on ixi-2mm's *validation* pairs (never test).

Usage:
    python -m benchmarks.greedy_mode [--model models/brain-2mm] [--pairs 9] [--out DIR]

Pairs: each validation subject to the next (9 pairs), from the shipped net's field, scored as
``benchmarks.registration`` scores (Dice over brain31, folds and SDlogJ in the fixed brain).
One thread (``torch.set_num_threads(1)``): the machine is shared, so seconds are reported as the
ratio to today's default, measured on the same pair right before (every pair runs every variant in
turn, so load that comes and goes hits them alike); the median seconds are printed as measured.
Writes ``<out>/greedy_mode.json`` and ``<out>/greedy_mode.md`` with the CPU model and commit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line

ROOT = Path(__file__).resolve().parents[1]

GREEDY = ["method=greedy"]
THREE = ["greedy_levels=[4,2,1]", "greedy_residual=false"]  # greedy's own levels and form
VARIANTS = {
    "net alone": None,
    "default (adam: 2x 20 + full 5 steps)": [],
    "greedy's form (whole field smoothed), 4x 40 + 2x 20 + full 5": [*GREEDY, *THREE, "greedy_iterations=[40,20,5]"],
    "greedy residual (psi after the net), 4x 40 + 2x 20 + full 5": [
        *GREEDY,
        "greedy_levels=[4,2,1]",
        "greedy_iterations=[40,20,5]",
    ],
    "greedy residual, 2x 20 + full 10 (the mode's defaults)": GREEDY,
    "greedy residual, 2x 10 + full 10": [*GREEDY, "greedy_iterations=[10,10]"],
    "greedy residual, 2x 20 + full 6": [*GREEDY, "greedy_iterations=[20,6]"],
    "greedy residual, 2x 20 + full 10, step's 99th percentile at eps": [*GREEDY, "greedy_step_quantile=0.99"],
    "greedy residual, 2x 20 + full 10, sigma_field 0.5": [*GREEDY, "greedy_sigma_field=0.5"],
    "greedy residual, 2x 20 + full 10, eps 0.5": [*GREEDY, "greedy_epsilon=0.5"],
    "from the identity: greedy's form and schedule, 4x 100 + 2x 50 + full 10": [
        *GREEDY,
        *THREE,
        "greedy_iterations=[100,50,10]",
    ],
}
FROM_ZERO = "from the identity"  # variants named so start without the net
DEFAULT = "default (adam: 2x 20 + full 5 steps)"


def measure(args: argparse.Namespace) -> dict:
    import torch

    from benchmarks import registration as bench
    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.data.labels import LabelScheme
    from deepatlas.data.splits import load_splits
    from deepatlas.inference import load_run

    torch.set_num_threads(1)
    scheme = LabelScheme.from_file(args.data / "brain31.json")
    ids = load_splits(args.data / "splits.json")["validation"]
    pairs = list(zip(ids[:-1], ids[1:]))[: args.pairs]
    volumes = {
        i: (load_image(args.data / "images" / f"{i}.nii.gz"), load_label_codes(args.data / "labels" / f"{i}.nii.gz"))
        for i in ids
    }
    classes = {i: scheme.encode(volumes[i][1].array, unknown="background") for i in ids}
    run = load_run(args.model)
    registrars = {
        name: bench.pipeline_registrar(run, overrides, use_net=not name.startswith(FROM_ZERO))
        for name, overrides in VARIANTS.items()
    }
    for registrar in registrars.values():  # warm-up
        bench.run_method(registrar, pairs[:1], volumes, classes, scheme)
    rows: dict[str, list] = {name: [] for name in VARIANTS}
    for pair in pairs:
        for name, registrar in registrars.items():
            start = time.perf_counter()
            result = bench.run_method(registrar, [pair], volumes, classes, scheme)
            print(f"{pair} {name}: {result['dice']:.4f} {time.perf_counter() - start:.2f} s", flush=True)
            rows[name] += result["pairs"]
    return {
        "split": "validation",
        "num_pairs": len(pairs),
        "machine": provenance(),  # torch's threads: 1
        "methods": {name: summarize(rows[name], rows[DEFAULT], VARIANTS[name]) for name in VARIANTS},
    }


def summarize(rows: list[dict], default: list[dict], overrides: list[str] | None) -> dict:
    ratios = [r["seconds"] / d["seconds"] for r, d in zip(rows, default)]
    return {
        "overrides": overrides,
        "dice": statistics.mean(r["dice"] for r in rows),
        "folds_pct": statistics.mean(r["folds_pct"] for r in rows),
        "sdlogj": statistics.mean(r["sdlogj"] for r in rows),
        "seconds_per_pair": statistics.median(r["seconds"] for r in rows),
        "time_ratio_to_default": statistics.median(ratios),
        "dice_gain_pairs": sum(r["dice"] > d["dice"] for r, d in zip(rows, default)),
        "pairs": rows,
    }


def write_table(results: dict, path: Path) -> None:
    lines = [
        f"# refine.method=greedy vs the default refinement, ixi-2mm validation pairs ({results['num_pairs']})",
        "",
        f"{provenance_line(results['machine'])} Shared with other work: seconds are relative (median over pairs "
        "of the ratio to the default on the same pair, run right before it); the measured median seconds are "
        "only for orientation. From the shipped net (models/brain-2mm). `python -m benchmarks.greedy_mode`.",
        "",
        "| variant | Dice | pairs above default | folds % | SDlogJ | time / default | s / pair (measured) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["methods"].items():
        lines.append(
            f"| {name} | {r['dice']:.4f} | {r['dice_gain_pairs']}/{results['num_pairs']} | {r['folds_pct']:.4f} | "
            f"{r['sdlogj']:.3f} | {r['time_ratio_to_default']:.2f} | {r['seconds_per_pair']:.2f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "brain-2mm")
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "registration")
    args = parser.parse_args()
    results = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "greedy_mode.json").write_text(json.dumps(results, indent=1) + "\n")
    write_table(results, args.out / "greedy_mode.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
