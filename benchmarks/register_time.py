"""Where a registration's seconds go: ``register_volumes``'s stages timed one by one, in process.

Usage:
    python -m benchmarks.register_time [--model models/brain-2mm] [--split validation] [--repeats 2]
        [--data $DEEPATLAS_DATA/ixi-2mm] [--out benchmarks/results/registration]

Issue 35 asks ``register`` for greedy's Dice at a quarter of its seconds per pair. This says which stage
would have to shrink: per consecutive pair of the split (moving labels given, as the registration
benchmark's command-line row), the median over pairs of: reading the three files, putting the pair on the
network grid and the affine stage's check (``--affine auto``, which stays off for pre-aligned brains), the
registration net, each refinement level, the outputs on the fixed grid (warped image and labels,
displacement), the Jacobian map, and writing the files. The first ``repeats - 1`` passes warm up. All
threads torch has (time it alone on the machine). Writes ``<out>/register_time.{json,md}`` with the CPU model
and commit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.paths import data_root
from benchmarks.provenance import command_line, provenance, provenance_line
from benchmarks.records import write_results
from deepatlas.data.io import load_image, load_label_codes
from deepatlas.inference import apply as stages
from deepatlas.inference import load_run
from deepatlas.inference.outputs import registration_paths, write_registration

ROOT = Path(__file__).resolve().parents[1]


def _grid(run, moving, fixed) -> tuple:
    fixed_t, shape, affine, _ = stages._to_network_grid(run, fixed, "off")
    moving_t = stages._on_grid(run, moving, shape, affine)
    stages._affine_stage(run, moving, (moving_t, fixed_t), (shape, affine), stages.RegistrationOptions())
    return moving_t[None], fixed_t[None], affine


def time_pair(run, files: tuple[Path, Path, Path]) -> dict[str, float]:
    """Seconds of each stage of one registration, in order."""
    clock, seconds = time.perf_counter(), {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name], clock = now - clock, now

    moving, fixed, labels = load_image(files[0]), load_image(files[1]), load_label_codes(files[2])
    lap("read")
    moving_t, fixed_t, affine = _grid(run, moving, fixed)
    lap("grid and affine check")
    net, refine = run.pipeline.stages[0], run.pipeline.stages[1].optimizer
    state = net(moving_t, fixed_t).field.float()
    lap("registration net")
    with torch.enable_grad():
        for factor, steps in zip(refine.config.levels, refine.config.iterations):
            state = refine._level(moving_t.float(), fixed_t.float(), state, factor, steps, None)
            lap(f"refinement {factor}x, {steps} steps")
    world = stages.field_to_world(state[0].detach().double(), affine)
    out = stages._fixed_grid_outputs(moving, labels, fixed, (world, affine), None, None)
    lap("outputs on the fixed grid")
    jacobian = stages.jacobian_determinant_world(torch.from_numpy(out.displacement), fixed.affine)
    lap("Jacobian map")
    result = stages.Registration(out.warped, out.displacement, jacobian.numpy(), out.labels, fixed.affine, None, None)
    with tempfile.TemporaryDirectory(prefix="deepatlas-time-") as tmp:
        write_registration(result, registration_paths(Path(tmp), "moving", "fixed", True))
        lap("writing the files")
    return seconds


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "# Where a registration's seconds go (`python -m benchmarks.register_time`)",
        "",
        f"{provenance_line(result['machine'])}",
        f"Command: `{result['command']}`. Model `{result['model']}`, {result['pairs']} consecutive "
        f"{result['split']} pairs, median over pairs of the last of {result['repeats']} passes; in process "
        "(a command adds its start, about 4 s once per call).",
        "",
        "| stage | s / pair | share |",
        "| --- | --- | --- |",
    ]
    total = sum(result["seconds"].values())
    for name, value in result["seconds"].items():
        lines.append(f"| {name} | {value:.3f} | {value / total:.0%} |")
    lines.append(f"| total | {total:.3f} | |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(data_root() / "ixi-2mm"))
    parser.add_argument("--model", default="brain-2mm")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "registration"))
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "splits.json").is_file() or args.repeats < 1:
        parser.error(f"--data {data}: give the ixi-2mm folder (with splits.json); --repeats >= 1")
    run, ids = load_run(args.model), json.loads((data / "splits.json").read_text())[args.split]
    files = [
        (data / "images" / f"{m}.nii.gz", data / "images" / f"{f}.nii.gz", data / "labels" / f"{m}.nii.gz")
        for m, f in zip(ids, ids[1:])
    ]
    for _ in range(args.repeats):
        laps = [time_pair(run, pair) for pair in files]
    seconds = {name: statistics.median(lap[name] for lap in laps) for name in laps[0]}
    result = {"machine": provenance(), "command": command_line(), "model": args.model, "split": args.split}
    result |= {"pairs": len(files), "repeats": args.repeats, "seconds": seconds}
    write_results(result, Path(args.out), write_markdown, name="register_time")


if __name__ == "__main__":
    main()
