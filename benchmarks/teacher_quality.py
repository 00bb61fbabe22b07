"""How good and how dear are teachers? Dice of teacher label maps against true labels, and seconds each.

Usage:
    python -m benchmarks.teacher_quality RUN [--data $DEEPATLAS_DATA/ixi-2mm] [--labelled 5] [--targets 10]

A teacher is a labelled training image's labels warped onto an unlabelled image by the reg net
of ``RUN`` (a run folder: its ``last`` checkpoint, e.g. a DeepAtlas run stopped after its reg
pre-training) and the refinement; with ``teachers.atlases`` > 1 several warps are fused by a
weighted vote (``training/teachers.py``). Each recipe here teaches the validation subjects
(their labels are known, so the teacher's Dice can be measured) from the ``--labelled`` atlases
that training with ``data.seed=0`` draws. Writes
``benchmarks/results/tuning/teacher_quality.{json,md}`` with the CPU model and commit; run it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line

ROOT = Path(__file__).resolve().parents[1]

# name -> (atlases per teacher, refine overrides)
RECIPES = {
    "1 atlas, net + refinement": (1, []),
    "3 atlases, net + refinement": (3, []),
    "5 atlases, net + refinement": (5, []),
    "5 atlases, net + coarse refinement": (5, ["refine.levels=[2]", "refine.iterations=[20]"]),
    "5 atlases, net alone": (5, ["refine.enabled=false"]),
}


def teach(run, data, recipe: tuple[int, list[str]], targets: list[int]) -> dict:
    """Dice (31 structures) of each target's teacher and the seconds per teacher."""
    from deepatlas.config import load_config
    from deepatlas.evaluation.metrics import dice_per_class, finite_mean
    from deepatlas.registration import build_pipeline
    from deepatlas.training.teachers import TeacherCache

    atlases, overrides = recipe
    config = load_config(None, overrides)
    train, val = data.train, data.validation
    labelled = train.labelled_indices()
    images = torch.cat([train.images[labelled], val.images[targets]])
    labels = torch.cat([train.labels[labelled], val.labels[targets]])
    cache = TeacherCache(
        images, labels, list(range(len(labelled))), lambda: build_pipeline(config, run.reg_net), 10**9, atlases=atlases
    )
    dice = []
    for k in range(len(targets)):
        position = len(labelled) + k
        teacher = cache.labels_for([position], step=0)[0]
        dice.append(finite_mean(dice_per_class(teacher, labels[position], train.scheme.num_classes)))
    return {"dice": float(np.mean(dice)), "seconds_per_teacher": cache.seconds / len(targets)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--labelled", type=int, default=5)
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tuning")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from deepatlas.config import load_config
    from deepatlas.data import load_training_data
    from deepatlas.inference import load_run

    flags = [f"data.dataset={args.data}", f"data.label_map={args.data / 'brain31.json'}"]
    flags += [f"data.splits={args.data / 'splits.json'}", "data.unknown_labels=background"]
    flags += [f"data.num_labelled={args.labelled}", "data.seed=0"]
    data = load_training_data(load_config(None, flags).data, progress=False)
    run = load_run(args.run, "last")
    targets = data.validation.labelled_indices()[: args.targets]
    results = {}
    for name, recipe in RECIPES.items():
        results[name] = teach(run, data, recipe, targets)
        print(name, results[name], flush=True)
    shown = args.run.resolve().relative_to(ROOT) if args.run.resolve().is_relative_to(ROOT) else args.run
    machine = provenance()
    lines = [
        f"# Teacher quality (ixi-2mm validation subjects as unlabelled images, {args.labelled} atlases)",
        "",
        f"{provenance_line(machine)} Reg net: `{shown}` (last); {len(targets)} targets.",
        "",
        "| recipe | teacher Dice | s / teacher |",
        "| --- | --- | --- |",
        *(f"| {k} | {v['dice']:.3f} | {v['seconds_per_teacher']:.2f} |" for k, v in results.items()),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"run": str(shown), "machine": machine, **results}
    (args.out / "teacher_quality.json").write_text(json.dumps(record, indent=1))
    (args.out / "teacher_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
