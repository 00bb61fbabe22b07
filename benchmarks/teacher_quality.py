"""How good and how dear are teachers? Dice of teacher label maps against true labels, and seconds each.

Usage:
    python -m benchmarks.teacher_quality RUN [--data $DEEPATLAS_DATA/ixi-2mm] [--labelled 5] [--targets 10]
    python -m benchmarks.teacher_quality --from-zero --labelled-ids IXI067-HH-1356 --out $OUT_FOLDER

A teacher is a labelled training image's labels warped onto an unlabelled image by the reg net
of ``RUN`` (a run folder: its ``last`` checkpoint, e.g. a DeepAtlas run stopped after its reg
pre-training) and the refinement; with ``teachers.atlases`` > 1 several warps are fused by a
weighted vote (``training/teachers.py``). Each recipe here teaches the validation subjects
(their labels are known, so the teacher's Dice can be measured) from the ``--labelled`` atlases
that training with ``data.seed=0`` draws. Writes
``benchmarks/results/tuning/teacher_quality.{json,md}`` with the CPU model and commit; run it alone.

``--from-zero``: no reg net, registration from the identity by the refinement settings of
:data:`FROM_ZERO` (one atlas each): the pairs of the ``synthesis`` recipe, whose teacher Dice is how
closely a synthesised labelled image takes its subject's anatomy (issue 36 found coarser pairs
teach less); writes ``teacher_quality_from_zero.{json,md}``.

``--from-zero --guide SEG_RUN``: the same registrations from the identity with refinement's label term
(the atlas's labels warped against ``SEG_RUN``'s seg net's softmax of the target, ``refine.label_weight`` of
:data:`GUIDE_WEIGHTS`), and that seg net's own Dice on the targets: can a seg net trained with one labelled
image guide better pairs than the images alone (issue 36, session 35)? Writes ``teacher_quality_guided.{json,md}``.
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

# --from-zero: name -> (atlases, refine overrides), registration from the identity
FROM_ZERO = {
    "Adam 4x/2x, 40/20 (coarse pairs)": (1, ["refine.levels=[4,2]", "refine.iterations=[40,20]"]),
    "Adam 4x/2x/1x, 60/20/5 (the synthesis recipe)": (1, ["refine.levels=[4,2,1]", "refine.iterations=[60,20,5]"]),
    "Adam 4x/2x/1x, 100/50/20": (1, ["refine.levels=[4,2,1]", "refine.iterations=[100,50,20]"]),
    "greedy mode 4x/2x/1x, 50/25/5": (
        1,
        ["refine.method=greedy", "refine.greedy_levels=[4,2,1]", "refine.greedy_iterations=[50,25,5]"],
    ),
    "greedy mode 4x/2x/1x, 100/50/10 (greedy's own schedule)": (
        1,
        ["refine.method=greedy", "refine.greedy_levels=[4,2,1]", "refine.greedy_iterations=[100,50,10]"],
    ),
}


GUIDE_WEIGHTS = (0, 5, 20)
"""``--guide``: label-term weights of the registrations from zero (0: the synthesis recipe's pairs; 5: the
``register --label-term`` default)."""


def guided(seg_run, data, targets: list[int]) -> dict:
    """Per :data:`GUIDE_WEIGHTS`, the Dice of the first atlas's labels warped onto each target by registration
    from zero (the synthesis recipe's 4x/2x/1x, 60/20/5) guided by ``seg_run``'s seg net, and the seconds
    per pair; and that seg net's own Dice on the targets (its argmax, one pass)."""
    import time

    from deepatlas.config import load_config
    from deepatlas.evaluation.metrics import dice_per_class, finite_mean
    from deepatlas.networks.warp import warp_labels
    from deepatlas.registration import build_pipeline

    train, val, classes = data.train, data.validation, data.train.scheme.num_classes
    atlas = train.labelled_indices()[0]
    moving, labels = train.images[atlas : atlas + 1].float(), train.labels[atlas : atlas + 1]
    schedule = ["refine.levels=[4,2,1]", "refine.iterations=[60,20,5]"]
    results = {}
    for weight in GUIDE_WEIGHTS:
        pipeline = build_pipeline(
            load_config(None, [*schedule, f"refine.label_weight={weight}"]), None, seg_run.seg_net
        )
        dice, seconds = [], 0.0
        for t in targets:
            started = time.perf_counter()
            field = pipeline(moving, val.images[t : t + 1].float(), labels).field
            seconds += time.perf_counter() - started
            warped = warp_labels(labels, field, linear=True)[0]
            dice.append(finite_mean(dice_per_class(warped, val.labels[t], classes)))
        name = f"Adam 4x/2x/1x, 60/20/5, label term {weight}" if weight else "Adam 4x/2x/1x, 60/20/5 (no label term)"
        results[name] = {"dice": float(np.mean(dice)), "seconds_per_teacher": seconds / len(targets)}
    with torch.no_grad():
        own = [seg_run.seg_net(val.images[t : t + 1].float()).argmax(1) for t in targets]
    own_dice = [finite_mean(dice_per_class(p, val.labels[t], classes)) for p, t in zip(own, targets)]
    results["the guiding seg net itself (no registration)"] = {
        "dice": float(np.mean(own_dice)),
        "seconds_per_teacher": 0.0,
    }
    return results


def teach(run, data, recipe: tuple[int, list[str]], targets: list[int]) -> dict:
    """Dice (31 structures) of each target's teacher and the seconds per teacher (``run`` None:
    registration from the identity)."""
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
    net = run.reg_net if run is not None else None
    cache = TeacherCache(
        images, labels, list(range(len(labelled))), lambda: build_pipeline(config, net), 10**9, atlases=atlases
    )
    dice = []
    for k in range(len(targets)):
        position = len(labelled) + k
        teacher = cache.labels_for([position], step=0)[0]
        dice.append(finite_mean(dice_per_class(teacher, labels[position], train.scheme.num_classes)))
    return {"dice": float(np.mean(dice)), "seconds_per_teacher": cache.seconds / len(targets)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, nargs="?", help="a run folder (not with --from-zero)")
    parser.add_argument("--from-zero", action="store_true", help="no reg net: the synthesis recipe's pairs")
    parser.add_argument("--guide", type=Path, help="with --from-zero: a run whose seg net guides the label term")
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--labelled", type=int, default=5)
    parser.add_argument("--labelled-ids", nargs="+", default=None, help="these atlases (default: --labelled drawn)")
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tuning")
    args = parser.parse_args()
    if (args.run is None) != args.from_zero:
        parser.error("give a RUN folder, or --from-zero without one")
    if args.guide is not None and not args.from_zero:
        parser.error("--guide goes with --from-zero")
    warnings.filterwarnings("ignore")

    from deepatlas.config import load_config
    from deepatlas.data import load_training_data
    from deepatlas.inference import load_run

    flags = [f"data.dataset={args.data}", f"data.label_map={args.data / 'brain31.json'}"]
    flags += [f"data.splits={args.data / 'splits.json'}", "data.unknown_labels=background"]
    flags += [f"data.num_labelled={args.labelled}", "data.seed=0"]
    if args.labelled_ids:
        flags += [f"data.labelled_ids={json.dumps(args.labelled_ids)}"]
    data = load_training_data(load_config(None, flags).data, progress=False)
    run = None if args.from_zero else load_run(args.run, "last")
    targets = data.validation.labelled_indices()[: args.targets]
    if args.guide is not None:
        results = guided(load_run(args.guide, "best"), data, targets)
    else:
        results = {}
        for name, recipe in (FROM_ZERO if args.from_zero else RECIPES).items():
            results[name] = teach(run, data, recipe, targets)
            print(name, results[name], flush=True)
    atlases = [data.train.ids[i] for i in data.train.labelled_indices()]
    write_results(args, results, atlases, len(targets))
    return 0


def write_results(args: argparse.Namespace, results: dict, atlases: list[str], targets: int) -> None:
    """``teacher_quality[_from_zero].{json,md}`` in ``args.out``, with the machine and the reg net."""
    if args.guide is not None:
        shown, stem = f"none (from the identity), guided by `{args.guide}`'s seg net (best)", "teacher_quality_guided"
    elif args.from_zero:
        shown, stem = "none (registration from the identity)", "teacher_quality_from_zero"
    else:
        shown = args.run.resolve().relative_to(ROOT) if args.run.resolve().is_relative_to(ROOT) else args.run
        shown, stem = f"`{shown}` (last)", "teacher_quality"
    machine = provenance()
    lines = [
        f"# Teacher quality (ixi-2mm validation subjects as unlabelled images, {args.labelled} atlases)",
        "",
        f"{provenance_line(machine)} Reg net: {shown}; atlases {', '.join(atlases)}; {targets} targets.",
        "",
        "| recipe | teacher Dice | s / teacher |",
        "| --- | --- | --- |",
        *(f"| {k} | {v['dice']:.3f} | {v['seconds_per_teacher']:.2f} |" for k, v in results.items()),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"run": str(shown), "atlases": atlases, "machine": machine, **results}
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
