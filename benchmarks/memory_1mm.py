"""Peak memory of ``segment``, ``segment --volumes`` and ``register`` on a 256^3 1 mm image, through the
command line.

Usage:
    python -m benchmarks.memory_1mm [--model models/brain-2mm] [--label after] [--repeats 3] [--verbs ...] [--keep DIR]

Builds two 256x256x256 1 mm images (and the first one's label map) from the first two ixi-2mm
validation subjects: each resampled by world coordinates onto a 1 mm grid of 256^3 voxels
centred on the scan (trilinear for the image, nearest for the labels; zeros outside the 2 mm
field of view), written to a temporary folder, never into the repository. Then runs
``deepatlas segment MODEL image`` (with and without ``--volumes``, which reads as ``morphometry`` does: 8
quarter-voxel-shifted passes) and ``deepatlas register MODEL --moving --fixed --moving-labels``
as a user would, ``--repeats`` times each, and records the peak resident set size of each child
process (``os.wait4``'s ``ru_maxrss``: that process alone) and its wall time; medians are reported.

Peak memory hardly depends on what else runs on the machine; wall time does, so on a shared
machine it is indicative only. ``--label`` names this measurement (e.g. ``before`` / ``after`` a
change): ``benchmarks/results/memory_1mm.{json,md}`` keep every label measured, one row each.
The code measured is the ``deepatlas`` the children import (``PYTHONPATH=/tmp/export/src`` measures
an export of another commit; say which with ``--commit``). ``--keep DIR`` copies the inputs and the
last run's outputs there (outside the repository); ``--inputs DIR`` runs on inputs kept so, to
compare two versions' results voxel by voxel.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.paths import data_root
from benchmarks.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]

SHAPE = (256, 256, 256)
SPACING = 1.0


def one_mm(volume, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` on a ``SHAPE`` grid of ``SPACING`` mm voxels, same axes, centred on the volume's centre."""
    import torch

    from deepatlas.inference.geometry import resample

    dims = volume.array.ndim
    matrix = volume.affine[:dims, :dims]
    centre = matrix @ ((np.array(volume.array.shape) - 1) / 2) + volume.affine[:dims, 3]
    new_matrix = matrix / np.linalg.norm(matrix, axis=0) * SPACING
    affine = np.eye(4)
    affine[:dims, :dims] = new_matrix
    affine[:dims, 3] = centre - new_matrix @ ((np.array(SHAPE) - 1) / 2)
    source = torch.from_numpy(volume.array.astype(np.float32 if mode == "bilinear" else np.int32))[None]
    return resample(source, volume.affine, SHAPE, affine, mode=mode)[0].numpy(), affine


def build_inputs(data: Path, folder: Path) -> dict[str, Path]:
    """Two 1 mm validation images and the first one's labels, written into ``folder``."""
    from deepatlas.data.io import load_image, load_label_codes, save_volume

    ids = json.loads((data / "splits.json").read_text())["validation"][:2]
    paths = {}
    for name, subject in zip(("moving", "fixed"), ids):
        image, affine = one_mm(load_image(data / "images" / f"{subject}.nii.gz"), "bilinear")
        paths[name] = save_volume(image.astype(np.float32), affine, folder / f"{subject}_1mm.nii.gz")
    labels, affine = one_mm(load_label_codes(data / "labels" / f"{ids[0]}.nii.gz"), "nearest")
    paths["labels"] = save_volume(labels.astype(np.int16), affine, folder / f"{ids[0]}_1mm_labels.nii.gz")
    return paths


def kept_inputs(kept: Path, folder: Path) -> dict[str, Path]:
    """The inputs an earlier call kept (``--keep``), copied into ``folder``: two versions compared
    voxel by voxel must see the same bits."""
    labels = next(kept.glob("*_1mm_labels.nii.gz"))
    moving = kept / labels.name.replace("_labels", "")  # the labels are the moving image's
    fixed = next(p for p in kept.glob("*_1mm.nii.gz") if p != moving)
    paths = {"moving": moving, "fixed": fixed, "labels": labels}
    return {name: Path(shutil.copy(path, folder)) for name, path in paths.items()}


def measure(command: list[str]) -> tuple[float, float]:
    """Peak RSS (MiB) and wall seconds of one child process running ``command``."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own resource usage, not all children's
    seconds = time.perf_counter() - start
    output = child.stdout.read().decode(errors="replace")
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}):\n{output}")
    return usage.ru_maxrss / 1024, seconds  # Linux: kilobytes


def commands(model: Path, inputs: dict[str, Path], out: Path) -> dict[str, list[str]]:
    exe = shutil.which("deepatlas", path=str(Path(sys.executable).parent)) or "deepatlas"
    return {
        "segment": [exe, "segment", str(model), str(inputs["fixed"]), "-o", str(out / "seg"), "--overwrite"],
        # --volumes reads as morphometry does: the quarter-voxel average (seg_net.subvoxel_average: auto)
        "segment --volumes": [
            exe,
            "segment",
            str(model),
            str(inputs["fixed"]),
            "-o",
            str(out / "volumes"),
            "--volumes",
            "--overwrite",
        ],
        "register": [
            exe,
            "register",
            str(model),
            "--moving",
            str(inputs["moving"]),
            "--fixed",
            str(inputs["fixed"]),
            "--moving-labels",
            str(inputs["labels"]),
            "-o",
            str(out / "reg"),
            "--overwrite",
        ],
    }


def short_sha(text: str) -> str:
    """``text`` with each full commit hash cut to 12 characters."""
    return re.sub("([0-9a-f]{12})[0-9a-f]{28}", r"\1", text)


def write_results(results: dict, out: Path) -> None:
    """``memory_1mm.json`` (every label measured) and ``memory_1mm.md`` (one row per label and verb)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory_1mm.json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Peak memory of `segment`, `segment --volumes` and `register` on a 256^3 1 mm image (command line)",
        "",
        "Inputs: the first two ixi-2mm validation subjects resampled to 1 mm and padded to 256x256x256 "
        "(`python -m benchmarks.memory_1mm`); `segment --volumes` reads as `morphometry` does (the quarter-voxel "
        "average, 8 passes); `register` with the moving image's label map. Peak RSS: the child "
        "process's `ru_maxrss` (median of the repeats), the headline figure: it does not depend on other load. "
        "Wall time is indicative only: measured on a machine whose cores were shared with other work.",
        "",
        "| measurement | command | peak RSS (MiB, median) | wall s (median, indicative) | repeats | commit | date |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, entry in results["measurements"].items():
        for verb, row in entry["commands"].items():
            lines.append(
                f"| {label} | {verb} | {row['peak_rss_mib']:.0f} | {row['wall_s']:.1f} | {len(row['all_rss_mib'])} "
                f"| {short_sha(entry['commit'])} | {entry['date']} |"
            )
    lines += ["", "Machines:"]
    for label, entry in results["measurements"].items():
        m = entry["machine"]
        lines.append(f"- {label}: {m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']}, {m['platform']}")
    (out / "memory_1mm.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "brain-2mm")
    parser.add_argument("--label", default="current")
    parser.add_argument("--repeats", type=int, default=3)
    verbs = ("segment", "segment --volumes", "register")
    parser.add_argument("--verbs", nargs="+", choices=verbs, default=list(verbs), help="what to measure (default: all)")
    parser.add_argument("--keep", type=Path, help="copy the inputs and the last run's outputs into this folder")
    parser.add_argument("--inputs", type=Path, help="a --keep folder of an earlier call: its inputs, not new ones")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--commit", help="the code measured, if not this checkout's (an export on PYTHONPATH)")
    args = parser.parse_args()
    import deepatlas

    with tempfile.TemporaryDirectory(prefix="deepatlas-memory-") as tmp:
        folder = Path(tmp)
        inputs = build_inputs(args.data, folder) if args.inputs is None else kept_inputs(args.inputs, folder)
        rows = {}
        for verb, command in commands(args.model, inputs, folder).items():
            if verb not in args.verbs:
                continue
            runs = [measure(command) for _ in range(args.repeats)]
            rss, wall = [r[0] for r in runs], [r[1] for r in runs]
            rows[verb] = {"peak_rss_mib": statistics.median(rss), "wall_s": statistics.median(wall)}
            rows[verb] |= {"all_rss_mib": rss, "all_wall_s": wall, "command": " ".join(command[1:])}
            print(f"{verb}: peak RSS {rows[verb]['peak_rss_mib']:.0f} MiB, {rows[verb]['wall_s']:.1f} s", flush=True)
        if args.keep:
            shutil.copytree(folder, args.keep, dirs_exist_ok=True)
    results_file = args.out / "memory_1mm.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {"measurements": {}}
    machine = {**provenance(), "cpu_count": os.cpu_count()}  # its commit: this checkout's
    results["measurements"][args.label] = {
        "commands": rows,
        "shape": list(SHAPE),
        "commit": args.commit or machine["commit"],
        "package": str(Path(deepatlas.__file__).parent),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine,
    }
    write_results(results, args.out)
    print((args.out / "memory_1mm.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
