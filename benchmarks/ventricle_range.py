"""Ventricles beyond the training range: does a seg net follow an enlargement to elderly sizes, and does
``morphometry`` flag the volumes it reads there?

Usage:
    python -m benchmarks.ventricle_range [--models brain-2mm=brain-2mm OTHER=RUN ...]
        [--changes 0 0.5 1 2 3] [--split validation] [--data $DEEPATLAS_DATA/ixi-2mm]
        [--out benchmarks/results/ventricle_range]

Why: issue 38 found a seg net that *saturates*: on an elderly cohort (not in the repository) lateral
ventricles of 43-84 cm^3 were measured as 24-37, inside the training range, so ``morphometry``'s
``above_training`` flag did not fire. The synthetic-atrophy benchmarks stop at +100 %; the elderly
ventricles are two to six times a young adult's. Here both lateral ventricles of each brain are enlarged by
``--changes`` (relative: 3 = four times the volume) with :func:`deepatlas.evaluation.atrophy.synthesize_atrophy`
(the same smooth flow, image and labels together; the truth: the reference volume times the achieved change
of its partial-volume mask), and each model's seg net reads them as ``morphometry --from seg`` does
(``segment_volume``, pre-aligned brains, the model's mirrored inference and, since 2026-12-07, its
quarter-voxel average for volumes).

Per model and change: the mean true and measured volume, measured / true (mean and worst brain), the share of
the true change recovered, and the share of volumes flagged ``above_training`` (its ``volume_range.json``),
split by whether the truth lay above the training range's 99th percentile; and how the other 29 structures
read as the ventricles grow around them (:func:`neighbours`: an elderly brain's caudate, thalamus or white
matter pushed aside should still read as what it is). Validation brains whose reference
maps have sound sides (:mod:`benchmarks.references`), never test: this is for choosing. One thread; volumes
only, no timing. Writes ``<out>/results.{json,md,png}`` with the CPU model and commit.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.morphometry import atrophy_of, class_volumes, labelled
from benchmarks.paths import data_root, named_runs, parse_ixi_args
from benchmarks.provenance import command_line, provenance, provenance_line
from benchmarks.records import write_results
from benchmarks.references import sound_sides
from deepatlas.data.io import Volume
from deepatlas.evaluation.volume_range import range_flag, read_volume_range
from deepatlas.inference import TrainedRun
from deepatlas.inference.apply import segment_volume

ROOT = Path(__file__).resolve().parents[1]
VENTRICLES = ("LateralVentricle-L", "LateralVentricle-R")
CHANGES = (0.0, 0.5, 1.0, 2.0, 3.0)
"""Default enlargements: the original brain, then +50 % to +300 % (four times the volume: elderly
ventricles of 40-90 cm^3 from ixi-2mm's young and middle-aged 5-30)."""


def enlarged(image: Volume, labels: Volume, scheme, change: float) -> tuple[Volume, dict[str, float]]:
    """``image`` with both lateral ventricles enlarged by ``change`` (0: the original), and the true volumes
    (mm^3) of every structure: the ventricles', the reference's times the achieved change of the partial-volume
    mask; the others', the reference label map deformed with the image (nearest neighbour)."""
    reference = class_volumes(scheme, labels.array, labels.affine)
    if change == 0:
        return image, reference
    atrophy = atrophy_of(image, labels, scheme, dict.fromkeys(VENTRICLES, change))
    warped = Volume(atrophy.image, image.affine, image.path)
    truth = class_volumes(scheme, atrophy.labels, image.affine)
    return warped, truth | {n: reference[n] * (1 + atrophy.changes[n]) for n in VENTRICLES}


def read(run: TrainedRun, ranges: dict | None, image: Volume) -> dict[str, dict]:
    """The seg net's volume of each lateral ventricle (mm^3) and ``morphometry``'s range flag on it; under
    ``others``, every other structure's volume (mm^3)."""
    volumes = class_volumes(run.scheme, segment_volume(run, image, align="off", for_volumes=True), image.affine)
    ventricles = {n: {"mm3": volumes[n], "flag": range_flag(n, volumes[n], ranges)} for n in VENTRICLES}
    return ventricles | {"others": {n: v for n, v in volumes.items() if n not in VENTRICLES}}


def neighbours(rows: list[dict], name: str) -> dict[str, dict]:
    """How the other structures read as the ventricles grow, per change: each structure's ``drift``, its mean
    measured / true volume over the brains at that change over the same at no change, minus 1 (0: read as well
    as in the original brains); the median |drift| over the structures and the three largest."""
    structures = [n for n in rows[0][name].get("others", {})]
    if not structures:
        return {}

    def ratio(change: float, structure: str) -> float:
        at = [r for r in rows if r["change"] == change]
        return float(np.mean([r[name]["others"][structure] / max(r["true"][structure], 1e-9) for r in at]))

    out = {}
    for change in sorted({r["change"] for r in rows} - {0.0}):
        drift = {n: ratio(change, n) / ratio(0.0, n) - 1 for n in structures}
        worst = sorted(drift, key=lambda n: -abs(drift[n]))[:3]
        out[str(change)] = {
            "median_abs_drift": float(np.median(np.abs(list(drift.values())))),
            "worst": {n: drift[n] for n in worst},
            "drift": drift,
        }
    return out


def training_ranges(models: dict[str, TrainedRun]) -> dict[str, dict | None]:
    """Each model's training volumes (``volume_range.json``; None where it has none)."""
    return {name: read_volume_range(run.folder.volume_range) for name, run in models.items()}


def measure(models: dict[str, TrainedRun], data: Path, subjects: list[str], changes: list[float]) -> list[dict]:
    """One row per brain and change: the true volumes and every model's readings."""
    ranges = training_ranges(models)
    scheme = next(iter(models.values())).scheme
    rows = []
    for subject in subjects:
        image, labels = labelled(data, subject)
        for change in changes:
            warped, truth = enlarged(image, labels, scheme, change)
            row = {"subject": subject, "change": change, "true": truth}
            row |= {name: read(run, ranges[name], warped) for name, run in models.items()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summarize(rows: list[dict], ranges: dict[str, dict | None]) -> dict:
    """Per model (its training volumes in ``ranges``: :func:`read_volume_range`'s dict, or None), side and
    change: mean true and measured volume, measured / true, recovered, flags."""
    out: dict = {}
    for name, bounds in ranges.items():
        for side in VENTRICLES:
            high = (bounds or {}).get("structures", {}).get(side, {}).get("high_mm3", float("inf"))
            base = [r for r in rows if r["change"] == 0]
            true0 = np.mean([r["true"][side] for r in base]) if base else float("nan")
            seen0 = np.mean([r[name][side]["mm3"] for r in base]) if base else float("nan")
            for change in sorted({r["change"] for r in rows}):
                at = [r for r in rows if r["change"] == change]
                true = np.array([r["true"][side] for r in at])
                seen = np.array([r[name][side]["mm3"] for r in at])
                flagged = np.array([r[name][side]["flag"] == "above_training" for r in at])
                beyond = true > high
                recovered = (seen.mean() - seen0) / (true.mean() - true0) if change else float("nan")
                out.setdefault(name, {}).setdefault(side, {})[str(change)] = {
                    "n": len(at),
                    "true_cm3": float(true.mean() / 1000),
                    "measured_cm3": float(seen.mean() / 1000),
                    "ratio": float((seen / true).mean()),
                    "worst_ratio": float((seen / true)[np.argmax(abs(seen / true - 1))]),
                    "recovered": float(recovered),
                    "beyond_range": int(beyond.sum()),
                    "flagged_beyond": int((flagged & beyond).sum()),
                    "flagged_within": int((flagged & ~beyond).sum()),
                    "training_p99_cm3": float(high / 1000),
                }
    return out


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "# Ventricles beyond the training range (`python -m benchmarks.ventricle_range`)",
        "",
        f"{provenance_line(result['machine'])} {result['minutes']:.1f} min.",
        f"Command: `{result['command']}`. Models: "
        + ", ".join(f"{n} = `{p}`" for n, p in result["models"].items())
        + f". {result['split']} brains with sound references: {len(result['subjects'])}"
        + (f" (left out: {', '.join(result['left_out'])})" if result["left_out"] else "")
        + ".",
        "",
        "Both lateral ventricles of each brain enlarged together (`synthesize_atrophy`, image and labels; true "
        "volume: the reference's times the achieved change of its partial-volume mask), read by each model's "
        "seg net as `morphometry --from seg` does. Ratio: measured / true (mean; worst brain). Recovered: mean "
        "measured change / mean true change from the original brains. Flagged: volumes `morphometry` marks "
        "`above_training` (its `volume_range.json`, 99th percentile of the training maps), among the brains "
        "whose true volume lies beyond that percentile and among the others.",
        "",
        "| model | structure | change | true cm^3 | measured cm^3 | ratio (worst) | recovered | "
        "flagged: beyond range | flagged: within |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, sides in result["summary"].items():
        for side, levels in sides.items():
            for change, s in levels.items():
                recovered = "-" if float(change) == 0 else f"{s['recovered']:.2f}"
                within = s["n"] - s["beyond_range"]
                lines.append(
                    f"| {name} | {side} | {float(change):+.0%} | {s['true_cm3']:.1f} | {s['measured_cm3']:.1f} | "
                    f"{s['ratio']:.2f} ({s['worst_ratio']:.2f}) | {recovered} | "
                    f"{s['flagged_beyond']} / {s['beyond_range']} | {s['flagged_within']} / {within} |"
                )
    lines += ["", "Training range's 99th percentile (the flag's bound), cm^3: " + _bounds(result), ""]
    lines += _neighbour_lines(result)
    lines += ["![measured against true volume](results.png)"]
    path.write_text("\n".join(lines) + "\n")
    figure(result, path.with_suffix(".png"))


def _neighbour_lines(result: dict) -> list[str]:
    """The table of :func:`neighbours`, where the rows carry the other structures."""
    found = {name: neighbours(result["rows"], name) for name in result["models"]}
    if not any(found.values()):
        return []
    lines = [
        "The other structures while the ventricles grow: drift, a structure's mean measured / true volume at that "
        "change over the same in the original brains, minus 1 (true: the reference label map deformed with the "
        "image, nearest neighbour). Median |drift| over the other structures, and the three largest.",
        "",
        "| model | change | median \\|drift\\| | largest drifts |",
        "| --- | --- | --- | --- |",
    ]
    for name, levels in found.items():
        for change, d in levels.items():
            worst = ", ".join(f"{n} {100 * v:+.1f} %" for n, v in d["worst"].items())
            lines.append(f"| {name} | {float(change):+.0%} | {100 * d['median_abs_drift']:.1f} % | {worst} |")
    return lines + [""]


def _bounds(result: dict) -> str:
    return "; ".join(
        f"{name} "
        + ", ".join(f"{side} {next(iter(levels.values()))['training_p99_cm3']:.1f}" for side, levels in sides.items())
        for name, sides in result["summary"].items()
    )


def figure(result: dict, path: Path) -> None:
    """Measured against true volume per brain, one panel per side, one colour per model; the dotted
    line of each colour is that model's flag bound (volumes above it are flagged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(VENTRICLES), figsize=(5 * len(VENTRICLES), 4.6))
    top = max(r["true"][s] for r in result["rows"] for s in VENTRICLES) / 1000 * 1.05
    for ax, side in zip(axes, VENTRICLES):
        ax.plot([0, top], [0, top], color="0.6", lw=1, label="measured = true")
        for k, name in enumerate(result["models"]):
            colour = f"C{k}"
            true = [r["true"][side] / 1000 for r in result["rows"]]
            seen = [r[name][side]["mm3"] / 1000 for r in result["rows"]]
            ax.scatter(true, seen, s=12, color=colour, label=name)
            bound = next(iter(result["summary"][name][side].values()))["training_p99_cm3"]
            ax.axhline(bound, color=colour, ls=":", lw=1)
        ax.set(title=side, xlabel="true volume (cm^3)", ylabel="seg net's volume (cm^3)", xlim=(0, top), ylim=(0, top))
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Enlarged ventricles (validation brains): dotted, each model's above_training bound", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(data_root() / "ixi-2mm"))
    parser.add_argument("--models", nargs="+", default=["brain-2mm=brain-2mm"], metavar="NAME=RUN")
    parser.add_argument("--changes", nargs="+", type=float, default=list(CHANGES))
    parser.add_argument("--split", default="validation")
    parser.add_argument("--limit", type=int, default=0, help="the split's first N brains (0: all)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ventricle_range"))
    args = parse_ixi_args(parser)
    started, data = time.perf_counter(), Path(args.data)
    paths, models = named_runs(parser, args.models, "--models", ("subject", "change", "true"))
    ids = json.loads((data / "splits.json").read_text())[args.split]
    subjects, left_out = sound_sides(data, ids[: args.limit or None], next(iter(models.values())).scheme)
    rows = measure(models, data, subjects, sorted(set(args.changes) | {0.0}))
    result = {"machine": provenance(), "command": command_line(), "models": paths, "split": args.split}
    result |= {"subjects": subjects, "left_out": sorted(left_out), "rows": rows}
    result |= {"summary": summarize(rows, training_ranges(models)), "minutes": (time.perf_counter() - started) / 60}
    write_results(result, Path(args.out), write_markdown)


if __name__ == "__main__":
    main()
