"""Is a small change under-recovered by the seg net, or by the resampling that makes it? Both signs of a change.

Usage:
    python -m benchmarks.atrophy_signs [--models brain-2mm=brain-2mm OTHER=RUN ...] [--change 0.10]
        [--split validation] [--data $DEEPATLAS_DATA/ixi-2mm] [--out benchmarks/results/atrophy_signs]

Why: the synthetic-atrophy benchmarks compare each atrophied brain, resampled through its deformation (a
cubic B-spline), with the original brain, not resampled at all. Whatever a seg net reads differently in any
resampled brain (the sampling control of ``benchmarks.atrophy_validation``: -0.8 % of a ventricle for a
half-voxel cubic shift of the shipped net) lands in the measured change, and at +10 % it is a sizeable share of
it. Here each brain is deformed both ways: the lateral ventricles by ``+change`` and ``-change``, the
hippocampi by ``-change / 2`` and ``+change / 2`` (the benchmarks' first level and its mirror image), and the
seg net's volumes are read as ``morphometry --from seg`` does. Per structure: the share recovered of the
change of each sign against the original (as the benchmarks report it), and of the difference between the
two deformed brains, both resampled alike (a reading common to every resampled brain cancels there).

A bias common to resampled brains shows as one sign recovered less and the other more, the two-sided figure
between them; a seg net that follows a change only in part recovers less on both sides. Validation brains
with sound reference maps, never test. One thread; volumes only. Writes ``<out>/results.{json,md}`` with the
CPU model and commit.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.morphometry import atrophy_of, class_volumes, labelled
from benchmarks.paths import data_root, parse_ixi_args
from benchmarks.provenance import command_line, provenance, provenance_line
from benchmarks.records import write_results
from benchmarks.references import sound_sides
from deepatlas.data.io import Volume
from deepatlas.inference import load_run
from deepatlas.inference.apply import segment_volume

ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = {"LateralVentricle-L": 1.0, "LateralVentricle-R": 1.0, "Hippocampus-L": -0.5, "Hippocampus-R": -0.5}
"""Each structure's change relative to ``--change`` at the ``+`` sign: ventricles enlarge, hippocampi shrink by
half as much (the benchmarks' +10 % / -5 % level)."""


def deformed(image: Volume, labels: Volume, scheme, change: float) -> tuple[Volume, dict[str, float]]:
    """``image`` with every structure of :data:`STRUCTURES` changed by ``change`` times its factor, and the true
    change of each (mm^3: the reference volume times the achieved change of its partial-volume mask)."""
    reference = class_volumes(scheme, labels.array, labels.affine)
    atrophy = atrophy_of(image, labels, scheme, {n: change * f for n, f in STRUCTURES.items()})
    return Volume(atrophy.image, image.affine, image.path), {n: reference[n] * atrophy.changes[n] for n in STRUCTURES}


def measure(models: dict, data: Path, subjects: list[str], change: float) -> list[dict]:
    """Per brain: the true changes at each sign, and each model's volumes of the original and both deformed."""
    scheme = next(iter(models.values())).scheme
    rows = []
    for subject in subjects:
        image, labels = labelled(data, subject)
        brains = {"0": (image, None)} | {
            s: deformed(image, labels, scheme, k * change) for s, k in (("+", 1), ("-", -1))
        }
        row = {"subject": subject, "true": {s: truth for s, (_, truth) in brains.items() if truth}}
        for name, run in models.items():
            row[name] = {
                s: {
                    n: v
                    for n, v in class_volumes(scheme, segment_volume(run, b, align="off"), b.affine).items()
                    if n in STRUCTURES
                }
                for s, (b, _) in brains.items()
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def summarize(rows: list[dict], names: list[str]) -> dict:
    """Per model and structure: recovered at ``+`` and at ``-`` (mean measured / mean true change against the
    original) and two-sided (the ``+`` brain against the ``-`` one)."""
    out: dict = {}
    for name in names:
        for n in STRUCTURES:
            seen = {s: np.mean([r[name][s][n] for r in rows]) for s in ("0", "+", "-")}
            true = {s: np.mean([r["true"][s][n] for r in rows]) for s in ("+", "-")}
            out.setdefault(name, {})[n] = {
                "plus": float((seen["+"] - seen["0"]) / true["+"]),
                "minus": float((seen["-"] - seen["0"]) / true["-"]),
                "two_sided": float((seen["+"] - seen["-"]) / (true["+"] - true["-"])),
                "true_plus_mm3": float(true["+"]),
            }
    return out


def write_markdown(result: dict, path: Path) -> None:
    change = result["change"]
    lines = [
        "# A small change, both ways (`python -m benchmarks.atrophy_signs`)",
        "",
        f"{provenance_line(result['machine'])} {result['minutes']:.1f} min.",
        f"Command: `{result['command']}`. {result['split']} brains with sound references: {len(result['subjects'])}"
        + (f" (left out: {', '.join(result['left_out'])})" if result["left_out"] else "")
        + ".",
        "",
        f"`+`: lateral ventricles {change:+.0%}, hippocampi {-change / 2:+.0%}; `-`: the opposite. Recovered: mean "
        "measured change / mean true change (partial-volume truth), against the original brain (not resampled) "
        "for each sign, and between the `+` and `-` brains (both resampled alike) for the two-sided figure.",
        "",
        "| model | structure | recovered `+` | recovered `-` | two-sided | true change at `+` (cm^3) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, structures in result["summary"].items():
        for n, s in structures.items():
            lines.append(
                f"| {name} | {n} | {s['plus']:.2f} | {s['minus']:.2f} | {s['two_sided']:.2f} | "
                f"{s['true_plus_mm3'] / 1000:+.2f} |"
            )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(data_root() / "ixi-2mm"))
    parser.add_argument("--models", nargs="+", default=["brain-2mm=brain-2mm"], metavar="NAME=RUN")
    parser.add_argument("--change", type=float, default=0.10, help="the ventricles' relative change (default 0.10)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "atrophy_signs"))
    args = parse_ixi_args(parser)
    if any("=" not in m for m in args.models) or not 0 < args.change < 0.5:
        parser.error("--models: give NAME=RUN for each; --change: between 0 and 0.5")
    started, data = time.perf_counter(), Path(args.data)
    paths = dict(m.split("=", 1) for m in args.models)
    models = {name: load_run(path) for name, path in paths.items()}
    ids = json.loads((data / "splits.json").read_text())[args.split]
    subjects, left_out = sound_sides(data, ids, next(iter(models.values())).scheme)
    rows = measure(models, data, subjects, args.change)
    result = {"machine": provenance(), "command": command_line(), "models": paths, "split": args.split}
    result |= {"change": args.change, "subjects": subjects, "left_out": sorted(left_out), "rows": rows}
    result |= {"summary": summarize(rows, list(models)), "minutes": (time.perf_counter() - started) / 60}
    write_results(result, Path(args.out), write_markdown)


if __name__ == "__main__":
    main()
