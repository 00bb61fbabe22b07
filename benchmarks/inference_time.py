"""Inference time of ``register`` and ``segment`` on ixi-2mm (80x96x80), default networks.

Usage:
    python -m benchmarks.inference_time [--data $DEEPATLAS_DATA/ixi-2mm] [--run RUN] [--repeats 5]

Without ``--run``, a run with the default configuration is made by training 2
steps on 4 subjects (the weights do not change the time). Measures the median
seconds per pair (``register``: warped image, displacement, Jacobian, warped labels)
and per image (``segment``) inside one process, and the same through the command
line with process start, imports and model loading included. Writes
``benchmarks/results/inference_time.{json,md}`` with the CPU model and commit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line

ROOT = Path(__file__).resolve().parents[1]


def make_run(data: Path, folder: Path) -> Path:
    from deepatlas.config import Config
    from deepatlas.data import find_subjects
    from deepatlas.training.run import train

    subjects = find_subjects(data)[:4]
    manifest = folder / "four.json"
    manifest.write_text(
        json.dumps({"subjects": [{"id": s.id, "image": str(s.image), "label": str(s.label)} for s in subjects]})
    )
    config = Config()
    config.data.dataset, config.data.label_map = str(manifest), str(data / "brain31.json")
    config.data.unknown_labels = "background"
    s = config.schedule
    s.seg_pretrain_steps, s.reg_pretrain_steps, s.cycles = 1, 1, 0
    train(config, folder / "run", progress=False)
    return folder / "run"


def time_in_process(run, subjects: list, repeats: int) -> tuple[list[float], list[float], list[float]]:
    """Seconds per ``register_volumes`` (consecutive pairs, moving labels given), per ``segment_volume``
    (a label map) and per ``segment_volume(for_volumes=True)`` (``morphometry``'s reading: the quarter-voxel
    average of ``seg_net.subvoxel_average: auto``), after one warm-up registration."""
    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.inference.apply import register_volumes, segment_volume

    volumes = [(load_image(s.image), load_label_codes(s.label)) for s in subjects]
    register_volumes(run, volumes[0][0], volumes[1][0], volumes[0][1])  # warm-up
    reg, seg, volumes_seg = [], [], []
    for i in range(repeats):
        start = time.perf_counter()
        register_volumes(run, volumes[i][0], volumes[i + 1][0], volumes[i][1])
        reg.append(time.perf_counter() - start)
        start = time.perf_counter()
        segment_volume(run, volumes[i][0], align="off")
        seg.append(time.perf_counter() - start)
        start = time.perf_counter()
        segment_volume(run, volumes[i][0], align="off", for_volumes=True)
        volumes_seg.append(time.perf_counter() - start)
    return reg, seg, volumes_seg


def time_commands(run_dir: Path, subjects: list, repeats: int, tmp: Path) -> tuple[list[float], list[float]]:
    """Seconds per ``deepatlas register`` (with ``--moving-labels``) and ``deepatlas segment`` command,
    process start included (at most 3 of each)."""
    exe = [sys.executable, "-m", "deepatlas.cli.main"]
    cli_reg, cli_seg = [], []
    for i in range(min(3, repeats)):
        m, f, lab = subjects[i].image, subjects[i + 1].image, subjects[i].label
        register = ["register", str(run_dir), "--moving", str(m), "--fixed", str(f), "--moving-labels", str(lab)]
        start = time.perf_counter()
        subprocess.run(exe + register + ["-o", str(tmp / f"r{i}")], check=True, capture_output=True)
        cli_reg.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(
            exe + ["segment", str(run_dir), str(m), "-o", str(tmp / f"s{i}")], check=True, capture_output=True
        )
        cli_seg.append(time.perf_counter() - start)
    return cli_reg, cli_seg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--run", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from deepatlas.data import find_subjects
    from deepatlas.inference import load_run

    tmp = Path(tempfile.mkdtemp(prefix="deepatlas-bench-"))
    run_dir = args.run or make_run(args.data, tmp)
    test = find_subjects(args.data)[-(args.repeats + 2) :]
    reg, seg, volumes_seg = time_in_process(load_run(run_dir), test, args.repeats)
    cli_reg, cli_seg = time_commands(run_dir, test, args.repeats, tmp)
    report = {
        "machine": provenance(),
        "shape": [80, 96, 80],
        "repeats": args.repeats,
        "register_s_per_pair": statistics.median(reg),
        "segment_s_per_image": statistics.median(seg),
        "segment_for_volumes_s_per_image": statistics.median(volumes_seg),
        "register_cli_s": statistics.median(cli_reg),
        "segment_cli_s": statistics.median(cli_seg),
        "all": {
            "register": reg,
            "segment": seg,
            "segment_for_volumes": volumes_seg,
            "register_cli": cli_reg,
            "segment_cli": cli_seg,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inference_time.json").write_text(json.dumps(report, indent=1))
    table = (
        "| | in process (median s) | command line, process start included (median s) |\n| --- | --- | --- |\n"
        f"| register (per pair, with labels) | {report['register_s_per_pair']:.2f} | {report['register_cli_s']:.2f} |\n"
        f"| segment (per image) | {report['segment_s_per_image']:.2f} | {report['segment_cli_s']:.2f} |\n"
        f"| segment for volumes (per image; morphometry's quarter-voxel average) | "
        f"{report['segment_for_volumes_s_per_image']:.2f} | |\n"
    )
    (args.out / "inference_time.md").write_text(
        f"# Inference time, ixi-2mm 80x96x80\n\n{provenance_line(report['machine'])}\n\n{table}"
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
