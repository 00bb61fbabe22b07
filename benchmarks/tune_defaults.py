"""Choosing defaults on ixi-2mm's *validation* split (never the test split).

Usage:
    python -m benchmarks.tune_defaults SWEEP [--data $DEEPATLAS_DATA/ixi-2mm] [--out benchmarks/results/tuning]

Each sweep is a list of named variants (config overrides) trained from the same
seed on the train split and evaluated on the validation split: segmentation Dice
(31 structures), registration Dice (each validation subject to the next), folds.
Results are appended to ``<out>/<sweep>.jsonl`` as each variant finishes and
summarised in ``<out>/<sweep>.md``, each with the CPU model and commit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line
from deepatlas.options import UNTIL_BUDGET
from deepatlas.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]

BASE = ["data.unknown_labels=background", "schedule.val_every=0", "schedule.checkpoint_every=100000"]
# every sweep was measured without augmentation unless a variant turns it on (the default became
# `auto`, on at N <= 2, after them): a rerun of any of them means what its committed table means
BASE += ["augment.enabled=off"]

# unsupervised registration (similarity + bending energy): how much smoothing, which learning rate
REG = ["schedule.seg_pretrain_steps=0", "schedule.reg_pretrain_steps=400", "schedule.cycles=0"]
# equal steps, robust to a busy machine; seconds per step come from benchmarks/step_time.py run
# alone: a variant that is no worse per step and faster per step is better at equal time
SEG_STEPS = ["data.num_labelled=5", "schedule.seg_pretrain_steps=200", "schedule.reg_pretrain_steps=0"]
SEG_STEPS += ["schedule.cycles=0"]
REG_STEPS = ["schedule.seg_pretrain_steps=0", "schedule.reg_pretrain_steps=300", "schedule.cycles=0"]
# distilled multi-atlas teachers from the first step: no pre-training, a little reg training
# (2 of 12 steps), each teacher the vote of 3 atlases registered with the from-zero schedule
# (the reg net is new), made once, taught as manual labels in the pair step (4 images a step;
# "-step": supervised steps on one labelled and one taught image); teachers may take 35 % (25 %)
# cycles=100000 (not UNTIL_BUDGET) is what the committed distil sweeps ran with: the clock ends it too
DISTIL = ["schedule.seg_pretrain_steps=0", "schedule.reg_pretrain_steps=0", "schedule.cycles=100000"]
DISTIL += ["schedule.reg_steps_per_cycle=2", "schedule.seg_steps_per_cycle=10", "teachers.enabled=on"]
DISTIL += ["teachers.atlases=3", "teachers.max_share=0.35", f"teachers.refresh_steps={UNTIL_BUDGET}"]  # never refresh
DISTIL += ["teachers.loss=supervised", "refine.levels=[4,2,1]", "refine.iterations=[60,20,5]"]
DISTIL_STEP = ["teachers.loss=distil", "teachers.max_share=0.25"]
EVEN = ["schedule.reg_steps_per_cycle=10", "schedule.seg_steps_per_cycle=10"]
REG2X = ["schedule.reg_steps_per_cycle=20", "schedule.seg_steps_per_cycle=10", "loss.anatomy_weight_reg=2"]
# n5-45min's distil-guide-even, the set-up the recipe `distil` was measured with (guided 10 : 10 cycles
# on distilled 3-atlas teachers; it sets refine.* where the recipe sets teachers.refine_*)
GUIDED = DISTIL + DISTIL_STEP + ["teachers.guide_registration=true", *EVEN]
# the seg net alone for the whole budget: supervised steps on the labelled images only
SEG_ONLY = [f"schedule.seg_pretrain_steps={UNTIL_BUDGET}", "schedule.reg_pretrain_steps=0", "schedule.cycles=0"]
# the reg net alone for the whole budget, unsupervised (similarity + regulariser)
REG_ONLY = ["schedule.seg_pretrain_steps=0", f"schedule.reg_pretrain_steps={UNTIL_BUDGET}", "schedule.cycles=0"]
# the reg net alone with its anatomy loss from the first step (all of it registration steps)
REG_CEILING = ["schedule.seg_pretrain_steps=0", "schedule.reg_pretrain_steps=0", f"schedule.cycles={UNTIL_BUDGET}"]
REG_CEILING += ["schedule.reg_steps_per_cycle=1", "schedule.seg_steps_per_cycle=0"]
# learned-transformation augmentation (issue 36): distilled steps whose taught places are synthesised
# labelled images, one atlas each, teachers made once from zero with the recipe's refinement
SYNTHESIS = [*RECIPES["distil"], f"schedule.cycles={UNTIL_BUDGET}", "schedule.reg_steps_per_cycle=2"]
SYNTHESIS += ["teachers.atlases=1", "teachers.synthesis=1"]
# benchmarks/experiment.py's seed-0 settings at N=1: its labelled draw, validation and checkpoints
PROTOCOL_N1 = ['data.labelled_ids=["IXI067-HH-1356"]', "seed=0", "schedule.time_budget_minutes=45"]
PROTOCOL_N1 += ["schedule.val_every=100", "schedule.checkpoint_every=50"]
# ... and at N=5: seed 0's five (choose_labelled(train, 5, seed=0), the N=1 subject first)
SEED0_N5 = ["IXI067-HH-1356", "IXI276-HH-1840", "IXI451-HH-2212", "IXI511-HH-2238", "IXI599-HH-2659"]
PROTOCOL_N5 = [f"data.labelled_ids={json.dumps(SEED0_N5)}", *PROTOCOL_N1[1:]]
# what `deepatlas train` suggests at N=5 (the distil recipe), its cycles unbounded as experiment.py sets them
SUGGESTED_N5 = [*RECIPES["distil"], f"schedule.cycles={UNTIL_BUDGET}"]
SWEEPS = {
    "regularizer": {
        "bending=0.5": REG + ["loss.regularizer_weight=0.5"],
        "bending=2": REG + ["loss.regularizer_weight=2"],
        "bending=8": REG + ["loss.regularizer_weight=8"],
        "bending=2,lr=3e-3": REG + ["loss.regularizer_weight=2", "schedule.reg_lr=3e-3"],
        "bending=0.5,lr=3e-3": REG + ["loss.regularizer_weight=0.5", "schedule.reg_lr=3e-3"],
    },
    # the U-Net's last layer (issue "joint training that pays off": cheaper steps), each net
    # trained alone for the same number of steps
    "top-layer": {
        f"{task},top={top}": spec + [f"seg_net.top_layer={top}", f"reg_net.top_layer={top}"]
        for top in ("transposed", "upsample")
        for task, spec in (
            ("seg-only-n5", SEG_STEPS),
            ("reg-only", REG_STEPS),
        )
    },
    # better teachers (issue "joint training that pays off"): one labelled image, equal 15-minute
    # budgets on one machine; the refined teachers against the reg net's own warp, and seg-only
    "teachers-n1": {
        name: ["data.num_labelled=1", "schedule.time_budget_minutes=15", *spec]
        for name, spec in (
            ("deepatlas+teachers", ["schedule.cycles=100000", "teachers.enabled=true"]),
            ("deepatlas", ["schedule.cycles=100000", "teachers.enabled=off"]),
            ("seg-only", SEG_ONLY),
        )
    },
    # teachers-n1's DeepAtlas pair again with other seeds: another labelled subject, another
    # initialisation and batch order (the one-seed gain could be that subject's luck)
    "teachers-n1-seeds": {
        f"{name},seed={seed}": [
            "data.num_labelled=1",
            "schedule.time_budget_minutes=15",
            "schedule.cycles=100000",
            f"seed={seed}",
            f"data.seed={seed}",
            *spec,
        ]
        for seed in (1, 2)
        for name, spec in (
            ("deepatlas+teachers", ["teachers.enabled=true"]),
            ("deepatlas", ["teachers.enabled=off"]),
            ("seg-only", SEG_ONLY),
        )
    },
    # this version's defaults at one labelled image (teachers on by `auto`, one seg-net pass per
    # distinct image) against teachers-n1-seeds' "deepatlas+teachers,seed=1" (previous code)
    "n1-defaults": {
        "deepatlas defaults,seed=1": [
            "data.num_labelled=1",
            "schedule.time_budget_minutes=15",
            "schedule.cycles=100000",
            "seed=1",
            "data.seed=1",
        ]
    },
    # the same with five labelled images (teachers warp a randomly drawn one of them)
    "teachers-n5": {
        name: ["data.num_labelled=5", "schedule.time_budget_minutes=15", "schedule.cycles=100000", *spec]
        for name, spec in (("deepatlas+teachers", ["teachers.enabled=true"]), ("deepatlas", ["teachers.enabled=off"]))
    },
    # five labelled images, three seeds (draws): the seg net alone, DeepAtlas with this version's
    # defaults (teachers off by `auto`), and teachers fused from every labelled image
    # (`teachers.atlases`): five refined warps voted teach better than the seg net (0.82 Dice
    # against 0.73, teacher_quality.md) but cost 4.8 s each; uncapped, or capped at a quarter of the time
    "n5-seeds": {
        f"{name},seed={seed}": [
            "data.num_labelled=5",
            "schedule.time_budget_minutes=15",
            f"seed={seed}",
            f"data.seed={seed}",
            *spec,
        ]
        for seed in (0, 1, 2)
        for name, spec in (
            ("seg-only", SEG_ONLY),
            (
                "deepatlas+fused-teachers",
                ["schedule.cycles=100000", "teachers.enabled=on", "teachers.atlases=5", "teachers.max_share=1"],
            ),
            (
                "deepatlas+fused-teachers-capped",
                ["schedule.cycles=100000", "teachers.enabled=on", "teachers.atlases=5", "teachers.max_share=0.25"],
            ),
            # the seg net, not the reg net, is what the teachers teach: less pre-training, seg-heavy cycles
            (
                "deepatlas+fused-teachers-seg-cycles",
                ["schedule.cycles=100000", "teachers.enabled=on", "teachers.atlases=5", "teachers.max_share=0.25"]
                + [
                    "schedule.seg_pretrain_steps=200",
                    "schedule.reg_steps_per_cycle=2",
                    "schedule.seg_steps_per_cycle=10",
                ],
            ),
            ("deepatlas", ["schedule.cycles=100000"]),
        )
    },
    # how much do more labels buy a seg net in 15 minutes? The seg net alone on every training
    # label (the ceiling of any weak supervision at this budget), then distilled multi-atlas
    # teachers at five labelled images (issue "joint training that pays off")
    "n5-distil": {
        "ceiling,seed=0": [
            "data.num_labelled=null",
            "schedule.time_budget_minutes=15",
            *SEG_ONLY,
        ],
        **{
            f"distil{suffix},seed={seed}": [
                "data.num_labelled=5",
                "schedule.time_budget_minutes=15",
                f"seed={seed}",
                f"data.seed={seed}",
                *DISTIL,
                *extra,
            ]
            for seed in (0, 1, 2)
            for suffix, extra in (("", []), ("-step", DISTIL_STEP))
        },
    },
    # the same two at issue 10's 45-minute budget, where teachers are a smaller share of the time
    # and five labelled images are seen three times as often
    "n5-45min": {
        f"{name},seed={seed}": ["data.num_labelled=5", "schedule.time_budget_minutes=45", f"seed={seed}"]
        + [f"data.seed={seed}", *spec]
        for seed in (0, 1, 2)
        for name, spec in (
            ("seg-only", SEG_ONLY),
            ("distil-step", DISTIL + DISTIL_STEP),
            # the reg net's anatomy loss reads the teachers too (issue 10: reg net >= reg-only + 2)
            ("distil-guide", DISTIL + DISTIL_STEP + ["teachers.guide_registration=true"]),
            # the same with as many reg steps as seg steps: the reg net got 1 step in 6 above and
            # ended 3 points under reg-only; guided reg steps skip the seg net's pass (cheaper)
            ("distil-guide-even", DISTIL + DISTIL_STEP + ["teachers.guide_registration=true", *EVEN]),
            # seed 0 of "even" kept the seg net (0.800 against 0.803) and lifted the reg net 5 points
            # (0.723, reg-only 0.713): twice the reg steps again, and the teachers' pull doubled
            ("distil-guide-reg2x-anat2", DISTIL + DISTIL_STEP + ["teachers.guide_registration=true", *REG2X]),
        )
    }
    # the reg net alone, unsupervised, for the same 45 minutes: the bar of the joint reg nets above
    # (it sees no labels, so one seed serves every labelled draw)
    | {"reg-only,seed=0": ["data.num_labelled=5", "schedule.time_budget_minutes=45", *REG_ONLY]},
    # issue 10's reg bar (joint reg net >= reg-only + 2) after the faster steps of ce63d64, where
    # the guided net had plateaued (anatomy loss flat over its last 40 % at 0.718, reg-only 0.713):
    # both again at 45 minutes; then the guided net's anatomy loss at full resolution (the teachers
    # are full-resolution labels, the 2x coarser grid blurs small structures), less smoothed (the
    # anatomy loss may pull where the bending energy holds it back); then each with its learning
    # rates decaying over the last 20 % (what a budget allows: the end is known)
    "reg-bar": {
        name: ["data.num_labelled=5", "schedule.time_budget_minutes=45", "seed=0", "data.seed=0", *spec]
        for name, spec in (
            ("reg-only", REG_ONLY),
            ("guided", GUIDED),
            ("guided,anatomy-full", GUIDED + ["loss.anatomy_downsample=1"]),
            ("guided,bending=1", GUIDED + ["loss.regularizer_weight=1"]),
            ("reg-only,decay=0.2", REG_ONLY + ["schedule.lr_decay=0.2"]),
            ("guided,decay=0.2", GUIDED + ["schedule.lr_decay=0.2"]),
            # better teachers, if they cap the guided net: 5-atlas votes (validation teacher Dice 0.821
            # against 0.800 with 3, at ~1.6x the cost: the 25 % cap may leave some images untaught)
            ("guided,atlases=5", GUIDED + ["teachers.atlases=5"]),
            # how far anatomy supervision can take the reg net in 45 minutes: every training image
            # labelled, every step a registration step with the anatomy loss on manual labels (the
            # joint net's teachers are at best this good); bounds what the reg bar can expect
            ("reg-ceiling", ["data.num_labelled=150", *REG_CEILING]),
        )
    },
    # augmentation against memorising one labelled image (the protocol's seg-only N=1 run drove its
    # loss to 0.001 while its validation Dice fell from 0.55 to 0.34): the seg net alone and the
    # defaults (what `deepatlas train` suggests at N=1), each with and without, 45 minutes; scored,
    # as every sweep here, at the last state (no model selection: what memorising costs shows).
    # And the N=1 reg net: in the protocol (seed 0) the defaults' reg net alone reached 0.686 on
    # validation against reg-only's 0.716, its anatomy loss reading a one-shot seg net; with
    # `teachers.guide_registration` it reads the refined one-atlas teachers instead (as the
    # distil recipe's guided reg steps do at N=5, where the joint net reached reg-only)
    "n1-45min": {
        name: ["data.num_labelled=1", "schedule.time_budget_minutes=45", "seed=0", "data.seed=0", *spec]
        for name, spec in (
            ("seg-only", SEG_ONLY),
            ("seg-only,augment", SEG_ONLY + ["augment.enabled=true"]),
            ("defaults", ["schedule.cycles=100000"]),
            ("defaults,augment", ["schedule.cycles=100000", "augment.enabled=true"]),
            ("defaults,guided", ["schedule.cycles=100000", "teachers.guide_registration=true"]),
        )
    },
    # is the joint seg net's +10 at N=1 (the test-split protocol) only its baseline memorising one
    # image it never sees changed? The protocol's seed-0 draw and settings (validation every 100
    # steps, the best checkpoint kept), with augmentation; `--score` the protocol's own seed-0 runs
    # (seg-only-n1, suggested-n1) to compare. Scored at the last state and the best checkpoint
    # (the protocol's model selection)
    "n1-augment": {
        name: PROTOCOL_N1 + spec
        for name, spec in (
            ("seg-only,augment", SEG_ONLY + ["augment.enabled=true"]),
            ("suggested,augment", ["schedule.cycles=10000000", "augment.enabled=true"]),
        )
    },
    # the same question at N=5, where the protocol's seg-only peaked early (validation 0.740 at step
    # 1000 of 3102, seed 0) and the suggested recipe (distil) reached 0.803: does augmentation close
    # that gap, and does the recipe gain from it too? The recipe's settings as experiment.py sets them
    "n5-augment": {
        name: PROTOCOL_N5 + spec
        for name, spec in (
            ("seg-only,augment", SEG_ONLY + ["augment.enabled=true"]),
            ("suggested,augment", SUGGESTED_N5 + ["augment.enabled=true"]),
            # the recipe unaugmented on the same machine (the protocol's 0.803 is another CPU's)
            ("suggested", SUGGESTED_N5),
            # a seg net distilled from teachers is capped near their Dice (3 atlases: 0.800 on
            # validation, teacher_quality.md), which the augmented seg net alone reaches by itself:
            # 5 atlases (0.821, ~1.6x the time per teacher, so a larger share of the budget for them)
            (
                "suggested,augment,atlases=5",
                SUGGESTED_N5 + ["augment.enabled=true", "teachers.atlases=5", "teachers.max_share=0.4"],
            ),
        )
    },
    # issue 36: the registration as the seg net's augmenter (Zhao et al. 2019): each distilled step's
    # taught place goes to a labelled image and its labels warped together onto an unlabelled subject
    # by the teacher's refined registration, its appearance matched to that subject
    # (`teachers.synthesis=1`; one atlas per pair; reg : seg steps 2 : 10, since the synthesised pairs,
    # made once, read the reg net only as refinement's start), against the augmented seg net alone.
    # The two of one N run at once, one thread each, on one machine (`--only` per process): equal
    # shares of the same 2 cores for the protocol's 45 minutes, whatever else runs beside them
    "synthesis": {
        f"{name},n={n}": protocol + ["threads=1", *spec, "schedule.time_budget_minutes=45"]
        for n, protocol in ((1, PROTOCOL_N1), (5, PROTOCOL_N5))
        for name, spec in (
            ("seg-only,augment", SEG_ONLY + ["augment.enabled=true"]),
            ("synthesis,augment", SYNTHESIS + ["augment.enabled=true"]),
        )
    },
    # issue 38 item 2: does structure resizing (`augment.resize`) teach the seg net sizes beyond the
    # training set's? The shipped model fine-tuned on its own 150 training labels for 30 minutes,
    # augmented, with and without resizing (both run at once, one thread each); scored by
    # `benchmarks.atrophy_validation` (validation brains, synthetic atrophy: never the test split)
    "resize": {
        name: ["init_from=brain-2mm", "threads=1", *SEG_ONLY, "augment.enabled=true", *spec]
        + ["schedule.time_budget_minutes=30", "schedule.val_every=100", "schedule.checkpoint_every=100"]
        for name, spec in (("finetune,augment", []), ("finetune,augment,resize=1", ["augment.resize=1.0"]))
    },
    # the claim of DeepAtlas with 3 labelled images, same number of seg-net updates
    "joint-n3": {
        "seg-only": [
            "data.num_labelled=3",
            "schedule.seg_pretrain_steps=300",
            "schedule.reg_pretrain_steps=0",
            "schedule.cycles=0",
        ],
        "deepatlas": [
            "data.num_labelled=3",
            "schedule.seg_pretrain_steps=100",
            "schedule.reg_pretrain_steps=300",
            "schedule.cycles=40",
            "schedule.reg_steps_per_cycle=20",
            "schedule.seg_steps_per_cycle=5",
        ],
    },
}


def score(name: str, overrides: list[str], run_dir: Path, validation, seconds: float | None = None) -> dict:
    """The record of one variant: its run's *last* state on the validation split; ``seconds``: the
    wall time of its training here (None: the training seconds its ``summary.json`` counted)."""
    from deepatlas.evaluation.evaluate import evaluate_image_set
    from deepatlas.inference import load_run
    from deepatlas.run_folder import RunFolder

    run = load_run(run_dir, "last")
    metrics = evaluate_image_set(validation, run.seg_net, run.reg_net)
    summary = json.loads((run_dir / "summary.json").read_text())
    record = {
        "variant": name,
        "overrides": overrides,
        "train_seconds": round(summary["training_seconds"] if seconds is None else seconds, 1),
        "steps": summary["steps_done"],
        **{k: v for k, v in metrics.items() if not isinstance(v, list)},
    }
    folder = RunFolder(run_dir)
    if folder.checkpoint("best").exists():  # validated while training: the model it selected too
        chosen = load_run(run_dir, "best")
        record["best_seg_dice"] = evaluate_image_set(validation, chosen.seg_net)["seg_dice"]
        record["best_step"] = json.loads(folder.best_validation.read_text())["step"]
    return record


def write_table(log: Path, out: Path) -> None:
    """``<sweep>.md``: every record of ``log`` (``<sweep>.jsonl``) as one table row."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    lines = [
        "| variant | seg Dice | reg Dice | reg Dice before | folds (%) | train s | steps |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    best = any("best_seg_dice" in r for r in records)  # runs validated while training: their selection
    if best:
        lines = [lines[0] + " seg Dice, best checkpoint (step) |", lines[1] + " --- |"]
    for r in records:
        lines.append(
            f"| {r['variant']} | {r.get('seg_dice', float('nan')):.3f} | {r.get('reg_dice', float('nan')):.3f} | "
            f"{r.get('reg_dice_before', float('nan')):.3f} | {100 * r.get('folds', float('nan')):.3f} | "
            f"{r['train_seconds']} | {r.get('steps', '')} |"
        )
        if best:
            lines[-1] += f" {r['best_seg_dice']:.3f} ({r['best_step']}) |" if "best_seg_dice" in r else " - |"
    out.write_text(
        f"# Sweep {log.stem} (ixi-2mm validation split)\n\n{provenance_line(provenance())}\n\n"
        + "\n".join(lines)
        + "\n"
    )


def append(log: Path, record: dict) -> None:
    record = {**record, "machine": provenance()}
    with log.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def main() -> int:
    # the sweep protocol read top to bottom (train, evaluate, append, tabulate)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", choices=sorted(SWEEPS))
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tuning")
    parser.add_argument("--only", nargs="+", default=[], help="run only these variants")
    parser.add_argument(
        "--score",
        nargs="+",
        default=[],
        metavar="NAME=RUN_DIR",
        help="also score these finished run folders (e.g. the protocol's) at their last state, no training",
    )
    args = parser.parse_args()
    for item in args.score:  # before any training: a typo must not wait 45 minutes to show
        name, _, folder = item.partition("=")
        if not name or not (Path(folder) / "checkpoints" / "last.pt").is_file():
            parser.error(f"--score {item}: give NAME=RUN_DIR, a run folder with checkpoints/last.pt")
    warnings.filterwarnings("ignore")

    from deepatlas.config import load_config
    from deepatlas.data import load_training_data
    from deepatlas.training.run import train

    data_flags = [
        f"data.dataset={args.data}",
        f"data.label_map={args.data / 'brain31.json'}",
        f"data.splits={args.data / 'splits.json'}",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / f"{args.sweep}.jsonl"
    cache: dict = {}
    for name, overrides in SWEEPS[args.sweep].items():
        if args.only and name not in args.only:
            continue
        config = load_config(None, BASE + data_flags + overrides)
        key = (config.data.num_labelled, config.data.seed, tuple(config.data.labelled_ids or []))
        if key not in cache:
            cache[key] = load_training_data(config.data, progress=False)
        run_dir = args.out / "runs" / args.sweep / name.replace("=", "-").replace(",", "_")
        start = time.time()
        train(config, run_dir, progress=False, data=cache[key], resume=(run_dir / "checkpoints/last.pt").exists())
        record = score(name, overrides, run_dir, cache[key].validation, time.time() - start)
        append(log, {**record, "labelled": cache[key].labelled_ids[:5]})
    if args.score and not cache:  # the validation split is the same whatever the labelled draw
        cache[None] = load_training_data(load_config(None, BASE + data_flags).data, progress=False)
    for name, _, folder in (item.partition("=") for item in args.score):
        append(log, score(name, [f"run {folder}"], Path(folder), next(iter(cache.values())).validation))
    write_table(log, args.out / f"{args.sweep}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
