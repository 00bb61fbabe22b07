"""Training step time and peak memory: this project's defaults vs the MONAI tutorial's networks.

Usage:
    python -m benchmarks.step_time [--data $DEEPATLAS_DATA/ixi-2mm] [--repeats 5]

Times one registration step per pair group and one segmentation step per group
(2 pairs each, 80x96x80 ixi-2mm volumes, 31 structures + background), median of
``--repeats`` after one warm-up step, for each configuration in a fresh process
(so peak memory is its own), and writes ``benchmarks/results/step_time.{json,md}``.

Configurations:
- ``deepatlas``: the shipped defaults (``deepatlas.config.Config()``).
- ``deepatlas+teachers``: the defaults with ``teachers.enabled``: the seg step reads the
  unlabelled image's cached teacher instead of running the reg net; every teacher is made
  before the timing (their cost, one refined registration each, is reported apart).
- ``deepatlas+distil``: teachers as in ``deepatlas+teachers`` (3 atlases fused) taken as labels
  (``teachers.loss=distil``): the seg step is a supervised step on one labelled and one taught
  image, one seg-net pass per image, instead of DeepAtlas' pair step on four.
- ``deepatlas+distil+guide``: the same with ``teachers.guide_registration``: the reg step's
  anatomy loss reads the unlabelled images' teachers instead of running the seg net on them.
- ``deepatlas-upsample-top``: the defaults with ``top_layer: upsample`` in both nets (a 1x1x1
  convolution at half resolution and linear upsampling instead of the full-resolution
  transposed convolution).
- ``tutorial``: the MONAI DeepAtlas tutorial's networks (seg UNet channels
  (8,16,16,32,32,64,64) strides (1,2,1,2,1,2), reg UNet (16,32,32,32,32) strides
  (1,2,2,2), dropout 0.2, batch norm), float32, anatomy loss at full resolution,
  as the tutorial computes it.
- ``tutorial-nets+our-pipeline``: those networks with this project's loss
  pipeline and precision, to separate the effect of the networks from the rest.
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

CONFIGS = (
    "deepatlas",
    "deepatlas+teachers",
    "deepatlas+distil",
    "deepatlas+distil+guide",
    "deepatlas-upsample-top",
    "tutorial",
    "tutorial-nets+our-pipeline",
)
REG_GROUPS = ("neither", "moving", "fixed", "both")
SEG_GROUPS = ("moving", "fixed")


def make_config(name: str, data: Path, manifest: Path):
    from deepatlas.config import Config

    config = Config()
    config.data.dataset = str(manifest)
    config.data.label_map = str(data / "brain31.json")
    config.data.unknown_labels = "background"
    config.data.num_labelled = 3
    config.teachers.enabled = "on" if name.startswith(("deepatlas+teachers", "deepatlas+distil")) else "off"
    if name.startswith("deepatlas+distil"):
        config.teachers.loss, config.teachers.atlases = "distil", 3
    config.teachers.guide_registration = name == "deepatlas+distil+guide"
    if name == "deepatlas-upsample-top":
        config.seg_net.top_layer = config.reg_net.top_layer = "upsample"
    if name.startswith("tutorial"):
        config.seg_net.channels, config.seg_net.strides = [8, 16, 16, 32, 32, 64, 64], [1, 2, 1, 2, 1, 2]
        config.reg_net.channels, config.reg_net.strides = [16, 32, 32, 32, 32], [1, 2, 2, 2]
        for net in (config.seg_net, config.reg_net):
            net.dropout, net.norm, net.num_res_units = 0.2, "batch", 0
    if name == "tutorial":
        config.amp = "off"
        config.loss.anatomy_downsample = 1
    return config


def run_single(name: str, data: Path, repeats: int) -> dict:
    import torch

    from deepatlas.data import find_subjects, load_training_data
    from deepatlas.training import Trainer

    warnings.filterwarnings("ignore")
    subjects = find_subjects(data)[:8]
    manifest = Path(f"/tmp/deepatlas-bench-{name}.json")
    manifest.write_text(
        json.dumps({"subjects": [{"id": s.id, "image": str(s.image), "label": str(s.label)} for s in subjects]})
    )
    config = make_config(name, data, manifest)
    train = load_training_data(config.data, progress=False).train
    trainer = Trainer(config, train, progress=False)
    result: dict = {"config": name, "threads": torch.get_num_threads(), "amp": str(trainer.amp), "reg": {}, "seg": {}}
    if trainer.teachers is not None:
        unlabelled = [i for i in range(len(train.ids)) if i not in trainer.labelled]
        trainer.teachers.labels_for(unlabelled, trainer.step)
        result["teacher_s"] = trainer.teachers.seconds / len(unlabelled)
    for phase, groups, step in (("reg", REG_GROUPS, trainer.reg_step), ("seg", SEG_GROUPS, trainer.seg_step)):
        for group in groups:
            step(group=group)  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                step(group=group)
                times.append(time.perf_counter() - start)
            result[phase][group] = {"median_s": statistics.median(times), "all_s": times}
    # the pair groups are drawn with equal weight by default, so the mean over groups is the expected step
    for phase in ("reg", "seg"):
        result[f"{phase}_step_s"] = statistics.mean(v["median_s"] for v in result[phase].values())
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def time_configs(configs: list[str], data: Path, repeats: int) -> list[dict]:
    """Each configuration timed in a fresh process (``--single``): no warm caches shared between them."""
    results = []
    for name in configs:
        print(f"timing {name} ...", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.step_time", "--single", name, "--data", str(data)]
            + ["--repeats", str(repeats)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def table_lines(results: list[dict]) -> list[str]:
    """Step times and speed-ups against the tutorial configuration (the first one if it was not timed),
    then per pair group, then the teachers' cost."""
    base = next((r for r in results if r["config"] == "tutorial"), results[0])
    lines = [
        "| configuration | reg step (s) | seg step (s) | reg speed-up | seg speed-up | peak RSS (GiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['config']} | {r['reg_step_s']:.2f} | {r['seg_step_s']:.2f} | "
            f"{base['reg_step_s'] / r['reg_step_s']:.1f}x | {base['seg_step_s'] / r['seg_step_s']:.1f}x | "
            f"{r['peak_rss_gib']:.1f} |"
        )
    groups = [f"reg {g}" for g in REG_GROUPS] + [f"seg {g}" for g in SEG_GROUPS]
    lines += ["", "Per pair group (median s):", "", "| configuration | " + " | ".join(groups) + " |"]
    lines.append("| --- |" + " --- |" * len(groups))
    for r in results:
        cells = [f"{r['reg'][g]['median_s']:.2f}" for g in REG_GROUPS]
        cells += [f"{r['seg'][g]['median_s']:.2f}" for g in SEG_GROUPS]
        lines.append(f"| {r['config']} | " + " | ".join(cells) + " |")
    teachers = [
        f"{r['config']}: {r['teacher_s']:.2f} s per teacher (net + refinement), made once per "
        "unlabelled image and remade every `teachers.refresh_steps` steps."
        for r in results
        if "teacher_s" in r
    ]
    return lines + ["", *teachers]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--single", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(run_single(args.single, args.data, args.repeats)))
        return 0
    if not (args.data / "brain31.json").exists():
        print(f"ixi-2mm not found at {args.data}; pass --data", file=sys.stderr)
        return 1
    results = time_configs(args.configs, args.data, args.repeats)
    report = {
        "machine": {**provenance(), "cpu_count": os.cpu_count()},
        "shape": [80, 96, 80],
        "pairs_per_step": 2,
        "repeats": args.repeats,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_time.json").write_text(json.dumps(report, indent=1))
    table = "\n".join(table_lines(results))
    (args.out / "step_time.md").write_text(
        f"# Training step time, ixi-2mm 80x96x80, 2 pairs per step, median of {args.repeats}\n\n"
        f"{provenance_line(report['machine'])} bf16 autocast where the CPU has native bf16.\n\n{table}\n"
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
