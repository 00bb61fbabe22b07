"""Validation curves of training runs, side by side: seg Dice against training minutes and against steps.

Usage:
    python -m benchmarks.curves NAME=RUN_DIR [NAME=RUN_DIR ...] -o FIGURE.png [--title TEXT]

Reads each run's ``metrics.jsonl``: its validation records (``kind: validation``) and the seconds of
every training step before them (summed: training time without validation, the clock of equal-time
comparisons, which the runs' own time budget also counts validation in). Two panels: seg Dice against
those minutes, and against the step count (what each step taught, whatever it cost). The figure's
title records the machine's CPU and the commit (:func:`benchmarks.provenance.provenance`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.provenance import provenance
from deepatlas.visualization.figures import pyplot


def validation_curve(run_dir: Path) -> list[dict]:
    """``[{step, minutes, seg_dice}]`` for every validation record of ``run_dir/metrics.jsonl``, with the
    minutes of training steps logged before it."""
    seconds, points = 0.0, []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "validation":
            if "seg_dice" in record:
                points.append({"step": record["step"], "minutes": seconds / 60, "seg_dice": record["seg_dice"]})
        else:
            seconds += float(record.get("seconds", 0.0))
    return points


def plot_curves(curves: dict[str, list[dict]], path: Path, title: str) -> Path:
    """Seg Dice against training minutes (left) and steps (right), one line per run."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for name, points in curves.items():
        for ax, key in zip(axes, ("minutes", "step")):
            ax.plot([p[key] for p in points], [p["seg_dice"] for p in points], marker=".", label=name)
    for ax, label in zip(axes, ("training minutes (validation excluded)", "steps (segmentation and registration)")):
        ax.set_xlabel(label)
        ax.set_ylabel("validation seg Dice")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    machine = provenance()
    fig.suptitle(f"{title}\n{machine['cpu']}, commit {machine['commit']}", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--title", default="validation curves")
    args = parser.parse_args()
    curves = {}
    for item in args.runs:
        name, _, folder = item.partition("=")
        if not name or not (Path(folder) / "metrics.jsonl").is_file():
            parser.error(f"{item}: give NAME=RUN_DIR, a run folder with metrics.jsonl")
        curves[name] = validation_curve(Path(folder))
    print(plot_curves(curves, args.output, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
