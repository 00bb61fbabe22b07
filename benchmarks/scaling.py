"""How step time and memory grow with the volume and the batch (shipped defaults).

Usage:
    python -m benchmarks.scaling [--data $DEEPATLAS_DATA/ixi-2mm] [--repeats 3]

Each configuration runs in a fresh process (so its peak memory is its own) on 8
ixi-2mm subjects (3 labelled) resampled to the size under test (trilinear images,
nearest-neighbour labels): one warm-up, then the median of ``--repeats`` registration
steps and segmentation steps (pair groups drawn as in training), and the median
time of inference (one pair registered, one image segmented, no gradients).
Writes ``benchmarks/results/scaling.{json,md}`` with the CPU model and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(40, 48, 40), (80, 96, 80), (160, 192, 160)]
BATCHES = [1, 2, 4]


def run_single(shape: tuple[int, ...], batch: int, data: Path, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    from deepatlas.config import Config
    from deepatlas.data import find_subjects, load_training_data
    from deepatlas.data.dataset import ImageSet
    from deepatlas.inference.predict import register_with_net, segment_with_net
    from deepatlas.training import Trainer

    warnings.filterwarnings("ignore")
    subjects = find_subjects(data)[:8]
    manifest = Path(f"/tmp/deepatlas-scaling-{os.getpid()}.json")
    manifest.write_text(
        json.dumps({"subjects": [{"id": s.id, "image": str(s.image), "label": str(s.label)} for s in subjects]})
    )
    config = Config()
    config.data.dataset, config.data.label_map = str(manifest), str(data / "brain31.json")
    config.data.unknown_labels, config.data.num_labelled = "background", 3
    config.schedule.batch_size = batch
    base = load_training_data(config.data, progress=False).train
    images = F.interpolate(base.images, size=shape, mode="trilinear", align_corners=False)
    labels = F.interpolate(base.labels.float(), size=shape, mode="nearest").to(base.labels.dtype)
    train = ImageSet(base.ids, images.contiguous(), labels.contiguous(), base.has_label, base.affines, base.scheme)
    trainer = Trainer(config, train, progress=False)
    result: dict = {
        "shape": list(shape),
        "batch": batch,
        "voxels": int(torch.tensor(shape).prod()),
        "threads": torch.get_num_threads(),
        "amp": str(trainer.amp),
    }
    timed = {
        "reg_step_s": trainer.reg_step,
        "seg_step_s": trainer.seg_step,
        "register_s": lambda: register_with_net(trainer.reg_net, images[:1], images[1:2], amp=trainer.amp),
        "segment_s": lambda: segment_with_net(trainer.seg_net, images[:1], amp=trainer.amp),
    }
    for name, fn in timed.items():
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        result[name] = statistics.median(times)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    manifest.unlink()
    return result


def time_plan(plan: list[tuple], data: Path, repeats: int) -> list[dict]:
    """Each (shape, batch) timed in a fresh process (``--single``); one that fails (memory) is kept as
    its error's last line."""
    results = []
    for shape, batch in plan:
        print(f"timing {shape} batch {batch} ...", flush=True)
        single = ["--single", json.dumps([shape, batch]), "--data", str(data), "--repeats", str(repeats)]
        proc = subprocess.run([sys.executable, "-m", "benchmarks.scaling", *single], capture_output=True, text=True)
        if proc.returncode != 0:
            results.append({"shape": list(shape), "batch": batch, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def table_lines(results: list[dict], ref: dict) -> list[str]:
    """Times and memory per configuration, and their ratios to ``ref`` (80x96x80, batch 2)."""
    lines = [
        "| volume | batch (pairs) | voxels vs ref | reg step s | seg step s | reg time vs ref | seg time vs ref "
        "| register s | segment s | peak RSS GiB |",
        "| --- |" * 1 + " --- |" * 9,
    ]
    for r in results:
        name = "x".join(map(str, r["shape"]))
        if "error" in r:
            lines.append(f"| {name} | {r['batch']} | failed: {r['error']} |" + " |" * 7)
            continue
        work = r["voxels"] * r["batch"] / (ref["voxels"] * ref["batch"])
        lines.append(
            f"| {name} | {r['batch']} | {work:g}x | {r['reg_step_s']:.2f} | {r['seg_step_s']:.2f} | "
            f"{r['reg_step_s'] / ref['reg_step_s']:.2f}x | {r['seg_step_s'] / ref['seg_step_s']:.2f}x | "
            f"{r['register_s']:.3f} | {r['segment_s']:.3f} | {r['peak_rss_gib']:.1f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        shape, batch = json.loads(args.single)
        print(json.dumps(run_single(tuple(shape), batch, args.data, args.repeats)))
        return 0
    if not (args.data / "brain31.json").exists():
        print(f"ixi-2mm not found at {args.data}; pass --data", file=sys.stderr)
        return 1
    plan = [(s, 2) for s in SHAPES] + [(SHAPES[1], b) for b in BATCHES if b != 2]
    results = time_plan(plan, args.data, args.repeats)
    ref = next(r for r in results if r["shape"] == list(SHAPES[1]) and r["batch"] == 2)
    report = {
        "machine": {**provenance(), "cpu_count": os.cpu_count()},
        "repeats": args.repeats,
        "reference": "80x96x80, batch 2",
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps(report, indent=1))
    table = "\n".join(table_lines(results, ref))
    (args.out / "scaling.md").write_text(
        f"# Scaling: step time and memory against volume and batch (median of {args.repeats}, "
        f"{os.cpu_count()} CPU cores)\n\n'voxels vs ref' is the work (voxels x pairs) relative to 80x96x80 "
        f"with 2 pairs; linear growth means the time ratios equal it.\n\n{provenance_line(report['machine'])}\n\n"
        f"{table}\n"
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
