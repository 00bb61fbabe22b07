"""Where does each method win? Per-structure test Dice of the protocol's methods, over seeds.

Usage:
    python -m benchmarks.per_structure [--out benchmarks/results/experiment-seeds] [--seeds 0 1 2]

Reads the committed evaluations of ``python -m benchmarks.experiment_seeds`` (``seed-S/eval/*/segmentation.csv``:
one row per test subject and structure), averages each structure's Dice over the test subjects and
then over the seeds that have that evaluation, and writes ``<out>/per_structure.{md,png}``: for each
N, every structure's Dice for the seg net alone, the joint seg net, reg-only + atlases, both joint nets
+ atlases, and the seg net on every training label (ceiling). No training, no registration: seconds.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.provenance import provenance, provenance_line
from deepatlas.files import atomic_write_text
from deepatlas.visualization.figures import pyplot

ROOT = Path(__file__).resolve().parents[1]

# column -> evaluation folder (N filled in), as benchmarks/experiment.py names them
METHODS = {
    "seg-only": "seg-only-n{n}",
    "DeepAtlas seg net": "suggested-n{n}",
    "reg-only + atlases": "reg-only-atlas-n{n}-weighted",
    "DeepAtlas seg net + reg net + atlases": "suggested-atlas-net-n{n}-weighted",
    "ceiling (all labels)": "ceiling",
}


def structure_dice(csv_path: Path) -> dict[str, float]:
    """Mean Dice over test subjects, per structure, of one evaluation's ``segmentation.csv``."""
    values = defaultdict(list)
    with csv_path.open() as handle:
        for row in csv.DictReader(handle):
            values[row["structure"]].append(float(row["dice"]))
    return {structure: float(np.mean(v)) for structure, v in values.items()}


def method_table(out: Path, seeds: list[int], n: int) -> dict[str, dict[str, float]]:
    """method -> structure -> Dice, the mean over the seeds that have the evaluation (the ceiling: seed 0's)."""
    table = {}
    for method, folder in METHODS.items():
        per_seed = [
            structure_dice(path)
            for s in seeds
            if (path := out / f"seed-{s}" / "eval" / folder.format(n=n) / "segmentation.csv").exists()
        ]
        if per_seed:
            table[method] = {k: float(np.mean([d[k] for d in per_seed])) for k in per_seed[0]}
    return table


def markdown(tables: dict[int, dict[str, dict[str, float]]], seeds: list[int]) -> str:
    lines = [f"# Test Dice per structure, mean over seeds {', '.join(map(str, seeds))} (ixi-2mm, 25 test subjects)", ""]
    lines += [provenance_line(provenance()), ""]  # the code that tabulated them
    for n, table in tables.items():
        methods = list(table)
        order = sorted(table["seg-only"], key=lambda k: table["DeepAtlas seg net"][k] - table["seg-only"][k])
        lines += [f"## N = {n}, sorted by the joint seg net's gain over seg-only", ""]
        lines += ["| structure | " + " | ".join(methods) + " | joint - seg-only | fused - reg-only |"]
        lines += ["| --- " * (len(methods) + 3) + "|"]
        for k in order:
            gain = 100 * (table["DeepAtlas seg net"][k] - table["seg-only"][k])
            fused = table.get("DeepAtlas seg net + reg net + atlases", {}).get(k)
            vote = f"{100 * (fused - table['reg-only + atlases'][k]):+.1f}" if fused is not None else "-"
            lines.append(f"| {k} | " + " | ".join(f"{table[m][k]:.3f}" for m in methods) + f" | {gain:+.1f} | {vote} |")
        lines.append("")
    return "\n".join(lines)


def figure(tables: dict[int, dict[str, dict[str, float]]], path: Path) -> None:
    """A dot per method and structure, a panel per N; structures sorted by the ceiling's Dice."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 8.5), sharey=True, squeeze=False)
    for ax, (n, table) in zip(axes[0], tables.items()):
        order = sorted(table["seg-only"], key=lambda k: table.get("ceiling (all labels)", table["seg-only"])[k])
        for j, (method, values) in enumerate(table.items()):
            ax.plot(
                [values[k] for k in order],
                range(len(order)),
                "o|"[method.startswith("ceiling")],
                label=method,
                color=f"C{j}",
                alpha=0.85,
                markersize=5 if j < 4 else 9,
            )
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels(order, fontsize=7)
        ax.set_xlabel("test Dice (mean over subjects and seeds)")
        ax.set_title(f"N = {n} labelled", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "experiment-seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labelled", type=int, nargs="+", default=[1, 5])
    args = parser.parse_args()
    # finished seeds only (results.json is written last): a seed in training has some evaluations only
    seeds = [s for s in args.seeds if (args.out / f"seed-{s}" / "results.json").exists()]
    tables = {n: method_table(args.out, seeds, n) for n in args.labelled}
    tables = {n: t for n, t in tables.items() if "seg-only" in t and "DeepAtlas seg net" in t}
    if not tables:
        print(f"{args.out}: no seg-only and DeepAtlas evaluations to compare", file=sys.stderr)
        return 2
    atomic_write_text(args.out / "per_structure.md", markdown(tables, seeds))
    figure(tables, args.out / "per_structure.png")
    print((args.out / "per_structure.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
