"""Where a seg net's measured ventricle enlargement lies: by the reference label of the voxels it claims.

Usage:
    python -m benchmarks.ventricle_split --runs NAME=RUN_DIR [NAME=RUN_DIR ...] [--level 3]
        [--data $DEEPATLAS_DATA/ixi-2mm] [--out benchmarks/results/atrophy_validation/ventricle_split]

Why: on synthetic atrophy every seg net recovers less of the right lateral ventricle's enlargement than of
the left's (``benchmarks.atrophy_validation``), and mirroring the brains moves the deficit with the anatomy,
not the array's side. Here each of ixi-2mm's 10 *validation* brains is enlarged at one level of
:data:`benchmarks.morphometry.STRENGTHS`; per lateral ventricle, the true growth (its reference mask warped
linearly, minus the original mask: partial volumes) and the measured growth (voxels the seg net labels as
that ventricle in the enlarged brain and not in the original, minus the reverse) are summed per *reference*
label of the voxel where they happen (the structure the ventricle grew into). A measured growth inside the
other hemisphere's white matter, where the truth has almost none, is the net giving one ventricle's new
CSF to the other: the two enlarged ventricles meet at the midline, where a 2 mm image barely shows the
septum between them. (So session 28 read it; the next session found that growth was one brain's, whose
reference map names a third of its left hemisphere as right structures: such references are now left
out, :mod:`benchmarks.references`.)

One thread. Writes ``<out>/results.{json,md}`` with the CPU model and commit.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.atrophy_validation import load_runs
from benchmarks.morphometry import STRENGTHS, atrophy_at
from benchmarks.paths import data_root, parse_ixi_args
from benchmarks.provenance import command_line, provenance, provenance_line
from benchmarks.records import write_results
from benchmarks.references import sound_sides
from deepatlas.data.io import Volume, load_labelled
from deepatlas.data.labels import LabelScheme
from deepatlas.inference import TrainedRun
from deepatlas.inference.apply import segment_volume
from deepatlas.registration.fields import warp

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "atrophy_validation" / "ventricle_split"
SIDES = ("LateralVentricle-L", "LateralVentricle-R")


def growth_by_region(
    scheme: LabelScheme, reference: np.ndarray, field: torch.Tensor, before: np.ndarray, after: np.ndarray
) -> dict[str, dict[str, list[float]]]:
    """Per lateral ventricle, per reference structure (class names of ``reference``, class indices): [true,
    measured] growth in voxels. ``field``: the atrophy's displacement (``dims x *shape``); ``before`` /
    ``after``: the seg net's class indices of the original and the enlarged brain."""
    out = {}
    for side in SIDES:
        k = scheme.names.index(side)
        mask = torch.from_numpy((reference == k).astype(np.float32))[None, None]
        true = np.clip(warp(mask, field[None])[0, 0].numpy() - (reference == k), 0, None)
        measured = ((after == k) & (before != k)).astype(np.float64) - ((before == k) & (after != k))
        out[side] = {
            scheme.names[j]: [float(true[reference == j].sum()), float(measured[reference == j].sum())]
            for j in np.unique(reference)
        }
    return out


def measure_run(run: TrainedRun, data: Path, subjects: list[str], level: int) -> dict:
    """The growth of :func:`growth_by_region` summed over ``subjects``."""
    scheme, total = run.scheme, {}
    for subject in subjects:
        image, labels = load_labelled(data / "images" / f"{subject}.nii.gz", data / "labels" / f"{subject}.nii.gz")
        reference = scheme.encode(labels.array, unknown="background")
        synth = atrophy_at(image, labels, scheme, level)
        enlarged = Volume(synth.image, image.affine, Path(f"{subject}-atrophy{level}.nii.gz"))
        before = scheme.encode(segment_volume(run, image, align="off"), unknown="background")
        after = scheme.encode(segment_volume(run, enlarged, align="off"), unknown="background")
        field = torch.from_numpy(synth.displacement)
        for side, regions in growth_by_region(scheme, reference, field, before, after).items():
            for name, (true, measured) in regions.items():
                cell = total.setdefault(side, {}).setdefault(name, [0.0, 0.0])
                cell[0], cell[1] = cell[0] + true, cell[1] + measured
    return total


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "# Where the measured ventricle enlargement lies (`python -m benchmarks.ventricle_split`)",
        "",
        f"{provenance_line(result['machine'])} {result['minutes']:.1f} min.",
        f"Command: `{result['command']}`.",
        "",
        f"{len(result['subjects'])} ixi-2mm validation brains"
        + "".join(f" ({s} left out: its reference's sides)" for s in result.get("left_out", {}))
        + ", ventricles enlarged by "
        f"{100 * STRENGTHS[result['level']][SIDES[0]]:+.0f} % (hippocampi shrunk alike). Voxels (2 mm) of true "
        "and measured growth of each lateral ventricle, summed over the brains, by the reference label of the "
        "voxel; the 'other side' column is the measured growth inside the other hemisphere's white matter.",
        "",
        "| run | ventricle | true growth | measured | recovered | into the other side's WM: true / measured |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, total in result["runs"].items():
        for side in SIDES:
            regions = total[side]
            true, measured = (sum(v[i] for v in regions.values()) for i in (0, 1))
            other = "CerebralWM-" + ("R" if side.endswith("-L") else "L")
            cross = regions.get(other, [0.0, 0.0])
            lines.append(
                f"| {name} | {side} | {true:.0f} | {measured:.0f} | {measured / true:.2f} | "
                f"{cross[0]:.0f} / {cross[1]:.0f} |"
            )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=RUN_DIR", help="run folders or models")
    parser.add_argument("--data", default=str(data_root() / "ixi-2mm"))
    parser.add_argument("--level", type=int, default=len(STRENGTHS) - 1, choices=range(len(STRENGTHS)))
    parser.add_argument("--out", default=str(OUT))
    args = parse_ixi_args(parser)
    started = time.perf_counter()
    runs = load_runs(parser, args.runs)
    validation = json.loads((Path(args.data) / "splits.json").read_text())["validation"]
    subjects, left_out = sound_sides(Path(args.data), validation, next(iter(runs.values())).scheme)
    result = {"machine": provenance(), "command": command_line(), "subjects": subjects, "level": args.level}
    result["left_out"] = left_out
    result["runs"] = {name: measure_run(run, Path(args.data), subjects, args.level) for name, run in runs.items()}
    result["minutes"] = (time.perf_counter() - started) / 60
    write_results(result, Path(args.out), write_markdown)


if __name__ == "__main__":
    main()
