"""The DeepAtlas experiment on ixi-2mm: does joint training beat each network alone?

Usage:
    python -m benchmarks.experiment [--data $DEEPATLAS_DATA/ixi-2mm] [--out benchmarks/results/experiment]
                                    [--budget-minutes 45] [--labelled 1 5] [--no-ants]
    python -m benchmarks.experiment --smoke      # the same pipeline in under 10 minutes

Protocol (every choice is written to ``<out>/results.json``):
- N labelled training subjects drawn with a fixed seed from the train split (the N=1
  subject is the first of the N=5 ones); the other train subjects are unlabelled.
- Every method trains the same two networks (the shipped defaults) for the same
  wall-clock budget (``schedule.time_budget_minutes``, validation included), keeps
  the checkpoint with the best validation score (validation split), and is scored on
  the test split with ``deepatlas evaluate``'s code:
  * ``seg-only``: the seg net on the N labelled images alone;
  * ``reg-only + atlas``: the reg net without labels (similarity + bending energy),
    then atlas segmentation with the N labelled images (majority vote);
  * ``DeepAtlas``: joint training (seg and reg pre-training, then cycles of reg and
    seg steps; two schedules, ``VARIANTS``), scored by its seg net, by its reg net
    as an atlas segmenter, and by both (the seg net votes with the atlases,
    ``atlas-segment --seg-net-weight``);
  * ``seg-only, every training label (ceiling)`` (``--ceiling``): the seg net on all 150
    training labels, the same budget: how far the few-label methods are from full supervision;
  * ``ANTs SyN + atlas`` (optional, ``pip install -e .[benchmark]``): no training;
    SyN registration of each atlas to each test subject, majority vote.
- Registration Dice: each test subject registered to the next (25 declared pairs);
  segmentation Dice: 31 structures of ``brain31.json``, mean over structures and subjects.

The experiment resumes where it stopped: finished trainings and evaluations are kept, and it
resumes from committed files alone once the run folders (``<out>/runs``, not committed) are gone:
each finished training leaves ``trainings/<name>.json`` (summary, model selection, validation
curve, CPUs), its evaluations ``eval/<key>/`` and its example panel ``example/``, and reg-only,
which every seed's atlas rows use, a slim copy in ``models/reg-only``; a training's evaluations
and panel are made right after it, so a sitting that stops loses at most the training under way.
Only a training with something left to evaluate is (re)trained. Each training records the CPU it ran on
(``machines.txt``, in the report): minutes compare only within one machine.
``python -m benchmarks.experiment_seeds`` runs it for several seeds and summarises them.
Writes ``results.json``, ``results.md``, ``dice_vs_n.png``, ``validation_curves.png``,
``example.png`` and one folder of per-case CSVs per evaluation under ``eval/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.experiment_report import CEILING, example_file, save_example, training_record
from benchmarks.paths import data_root
from benchmarks.provenance import command_line, cpu_model, provenance
from deepatlas.files import atomic_write_text
from deepatlas.options import UNTIL_BUDGET
from deepatlas.recipes import recipe_overrides, suggested_recipe
from deepatlas.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]

PRESETS = {
    "full": {
        "budget_minutes": 45.0,
        "labelled": [1, 5],
        "test_subjects": None,
        "seg_pretrain": 100,
        "reg_pretrain": 300,
        "val_every": 100,
    },
    # the whole pipeline, 5 test subjects, ~40 s per training: checks the machinery, not the method
    "smoke": {
        "budget_minutes": 0.6,
        "labelled": [1],
        "test_subjects": 5,
        "seg_pretrain": 10,
        "reg_pretrain": 20,
        "val_every": 20,
    },
}
# DeepAtlas schedules compared (on the validation split, which picks the shipped default):
# "deepatlas" is the schedule shipped before this experiment (with the preset's pre-training);
# "deepatlas-seg-heavy" gives the seg net the time: longer supervised pre-training, 10:10 cycles
VARIANTS = {
    "deepatlas": lambda preset, n: [
        f"schedule.seg_pretrain_steps={preset['seg_pretrain']}",
        f"schedule.reg_pretrain_steps={preset['reg_pretrain']}",
        "schedule.reg_steps_per_cycle=20",
        "schedule.seg_steps_per_cycle=5",
    ],
    # the shipped defaults as they are (schedule, teachers by `auto`): what a user gets
    "defaults": lambda preset, n: [],
    "deepatlas-seg-heavy": lambda preset, n: [
        f"schedule.seg_pretrain_steps={4 * preset['seg_pretrain']}",
        f"schedule.reg_pretrain_steps={preset['reg_pretrain'] // 2}",
        "schedule.reg_steps_per_cycle=10",
        "schedule.seg_steps_per_cycle=10",
    ],
    # `deepatlas train --recipe distil` (distilled multi-atlas teachers; the budget is the preset's)
    "distil": lambda preset, n: recipe_overrides("distil"),
    # what `deepatlas train` advises for N labelled images and many unlabelled ones
    # (recipes.suggested_recipe: the defaults at N = 1, `distil` from 3 on): what a user following it gets
    "suggested": lambda preset, n: recipe_overrides(suggested_recipe(n, unlabelled=1)),
}
LABELS = {
    "deepatlas": "DeepAtlas",
    "deepatlas-seg-heavy": "DeepAtlas seg-heavy",
    "defaults": "DeepAtlas defaults",
    "distil": "DeepAtlas distil",
    "suggested": "DeepAtlas suggested recipe",
}
REG_KEYS = ("reg_dice", "reg_dice_before", "folds", "sdlogj", "reg_seconds_per_pair", "reg_hd95_mm")


def method_overrides(method: str, preset: dict, n: int = 1) -> list[str]:
    """The settings of ``method`` (a baseline or a ``VARIANTS`` name) with ``n`` labelled images."""
    if method in ("seg-only", "ceiling", "reg-only"):  # the baselines' recipes; the protocol's budget and
        # augmentation come after them (seg_net_flags, train_method) and win
        return recipe_overrides("reg-only" if method == "reg-only" else "seg-only")
    return VARIANTS[method](preset, n) + [f"schedule.cycles={UNTIL_BUDGET}"]


def seg_net_flags(method: str, preset: dict) -> list[str]:
    """Settings of every training with a seg net under this protocol: augmentation on (``--augment``)
    or off, never the default's ``auto`` (which changes with N), so the protocol means one thing.
    It changes the seg net's supervised loss only: reg-only trains as it would without it."""
    if method == "reg-only":
        return []
    return [f"augment.enabled={'on' if preset.get('augment') else 'off'}"]


def per_subject_dice(eval_dir: Path) -> dict[str, float]:
    rows = list(csv.DictReader((eval_dir / "segmentation.csv").open()))
    out: dict[str, list[float]] = {}
    for r in rows:
        value = float(r["dice"])
        if value == value:
            out.setdefault(r["subject"], []).append(value)
    return {k: float(np.mean(v)) for k, v in out.items()}


def train_method(name: str, overrides: list[str], load_data, out: Path, preset: dict, needed: bool = True) -> dict:
    """Train (or resume) one method's run and write its record (``<out>/trainings/<name>.json``);
    a finished run is only read. A training that nothing still ``needed`` (its evaluations and
    example panel are all written) is taken from its record: the experiment resumes from committed
    files after its run folders are gone. ``load_data()`` gives the data."""
    from deepatlas.config import load_config
    from deepatlas.training.run import train

    record = out / "trainings" / f"{name}.json"
    if record.exists() and not needed:
        return json.loads(record.read_text())
    run_dir = out / "runs" / name
    if (run_dir / PACKAGED_RECORD).exists():  # a packaged reg-only shared by another seed
        return json.loads((run_dir / PACKAGED_RECORD).read_text())
    summary_file = RunFolder(run_dir).summary
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    if not summary.get("finished"):
        config = load_config(
            None,
            overrides
            + [
                f"schedule.time_budget_minutes={preset['budget_minutes']}",
                f"schedule.val_every={preset['val_every']}",
                "schedule.checkpoint_every=50",
            ],
        )
        print(f"[{time.strftime('%H:%M:%S')}] training {name} for {preset['budget_minutes']} min", flush=True)
        record_machine(run_dir)
        resume = RunFolder(run_dir).checkpoint("last").exists()
        summary = train(config, run_dir, resume=resume, progress=False, data=load_data())
    result = training_record(summary, run_dir, machines(run_dir))
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps(result, indent=1))
    return result


SEG_NET_WEIGHT = 1.0
"""The seg net's vote beside the atlases' (chosen on validation: benchmarks/results/tuning/fusion_weight.md)."""

PACKAGED_RECORD = "training.json"  # a packaged run's training record (reg-only's, shared by seeds)


def model_dir(out: Path, training: str) -> Path:
    """Where a training's model is: its run folder, or for reg-only the packaged copy (committed,
    shared by every seed) once made."""
    packaged = out / "models" / training
    return packaged if training == "reg-only" and packaged.exists() else out / "runs" / training


def package_reg_only(out: Path, record: dict) -> None:
    """Keep reg-only's best checkpoint as a slim run folder under ``<out>/models`` (~3 MB, committed):
    every seed's atlas rows use it, and its training takes a whole budget to redo."""
    target = out / "models" / "reg-only"
    if (target / PACKAGED_RECORD).exists() or (out / "runs" / "reg-only" / PACKAGED_RECORD).exists():
        return
    packaging = [sys.executable, str(ROOT / "scripts" / "package_model.py"), str(out / "runs" / "reg-only")]
    subprocess.run([*packaging, str(target)], check=True, stdout=subprocess.DEVNULL)
    atomic_write_text(target / PACKAGED_RECORD, json.dumps(record, indent=1))


def record_machine(run_dir: Path) -> None:
    """Append this machine's CPU to ``<run>/machines.txt`` at every (re)start: a budget in minutes
    compares only within one machine, so a run resumed elsewhere must be visible."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "machines.txt").open("a") as handle:
        handle.write(cpu_model() + "\n")


def machines(run_dir: Path) -> list[str]:
    path = run_dir / "machines.txt"
    return sorted(set(path.read_text().split("\n")) - {""}) if path.exists() else []


def evaluate(row: str, out: Path, data_dir: Path, splits_file: Path, **kwargs) -> dict:
    from deepatlas.evaluation.evaluate_run import evaluate_run
    from deepatlas.inference import load_run

    eval_dir = out / "eval" / row
    if (eval_dir / "summary.json").exists():
        return json.loads((eval_dir / "summary.json").read_text())
    print(f"[{time.strftime('%H:%M:%S')}] evaluating {row}", flush=True)
    kwargs = dict(kwargs)  # the caller's options stay as they were
    run = kwargs.pop("run", None)  # a run folder, loaded only when its evaluation is still to do
    return evaluate_run(
        None if run is None else load_run(run, "best"),
        data_dir,
        "test",
        splits_file,
        output=eval_dir,
        progress=False,
        unknown_labels="background",
        **kwargs,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results/experiment[-smoke])")
    parser.add_argument("--smoke", action="store_true", help="a small variant of the whole pipeline, < 10 min")
    parser.add_argument("--budget-minutes", type=float, help="wall-clock training budget per method")
    parser.add_argument("--labelled", type=int, nargs="+", help="numbers of labelled subjects (default 1 5)")
    parser.add_argument("--no-ants", action="store_true", help="leave out the ANTs SyN reference")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(VARIANTS),
        help="DeepAtlas schedules to train (default: deepatlas deepatlas-seg-heavy; smoke: deepatlas)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed drawing the labelled subjects and training")
    parser.add_argument(
        "--fusion",
        choices=["majority", "weighted"],
        default="majority",
        help="label fusion of the atlas rows (weighted: by local NCC, atlas-segment's default)",
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="also train the seg net on every training label (same budget)"
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="augment.enabled=on in every training with a seg net (seg-only, DeepAtlas, ceiling): "
        "the augmented protocol, against a seg net alone that does not memorise its few labels",
    )
    parser.add_argument(
        "--reg-only-run",
        type=Path,
        help="a finished reg-only run to reuse (it sees no labels: one training serves every seed)",
    )
    return parser.parse_args()


def protocol(args: argparse.Namespace) -> tuple[dict, list[str], Path]:
    """The preset with the command line's changes, the DeepAtlas variants, the results folder."""
    preset = dict(PRESETS["smoke" if args.smoke else "full"])
    if args.budget_minutes:
        preset["budget_minutes"] = args.budget_minutes
    if args.labelled:
        preset["labelled"] = sorted(args.labelled)
    # the two schedules of the 15-minute experiment (docs/results.md); `defaults` on request
    variants = args.variants or (["deepatlas"] if args.smoke else ["deepatlas", "deepatlas-seg-heavy"])
    default = ("experiment-smoke" if args.smoke else "experiment") + ("-augment" if args.augment else "")
    out = args.out or ROOT / "benchmarks" / "results" / default
    preset["augment"] = args.augment  # written into results.json's protocol with the rest
    return preset, variants, out


def train_all(
    n: int, first: bool, plan: dict, out: Path, preset: dict, todo: set[str], after: Callable[[str], None]
) -> dict[str, dict]:
    """Train (or find trained) every method of the N-labelled arm; data loaded once, only if needed.
    Trainings not in ``todo`` (nothing left to evaluate) come from their records. ``after(name)``
    runs once each training is done (its evaluations), so a sitting's work is in committed files."""
    from deepatlas.config import load_config
    from deepatlas.data import load_training_data

    flags = plan["data_flags"] + [f"data.labelled_ids={json.dumps(plan['labelled'][n])}"]
    cache: dict = {}

    def load_data():  # ~160 volumes: once per N, only if something still trains
        if "data" not in cache:
            cache["data"] = load_training_data(load_config(None, flags).data, progress=False)
        return cache["data"]

    names = [f"seg-only-n{n}"] + [f"{v}-n{n}" for v in plan["variants"]] + (["reg-only"] if first else [])
    trainings = {}
    for name in names:
        method = name.rsplit("-n", 1)[0] if name != "reg-only" else "reg-only"
        overrides = flags + method_overrides(method, preset, n) + seg_net_flags(method, preset)
        trainings[name] = train_method(name, overrides, load_data, out, preset, name in todo)
        if name == "reg-only":
            package_reg_only(out, trainings[name])
        after(name)
    if first and plan["ceiling"]:  # every training subject labelled: its own data
        ceiling = plan["data_flags"] + method_overrides("ceiling", preset) + seg_net_flags("ceiling", preset)
        load_all = lambda: load_training_data(load_config(None, ceiling).data, progress=False)  # noqa: E731
        trainings["ceiling"] = train_method("ceiling", ceiling, load_all, out, preset, "ceiling" in todo)
        after("ceiling")
    return trainings


def evaluations(n: int, first: bool, plan: dict, out: Path) -> list[tuple]:
    """``(method label, training, evaluation key, evaluate() options)`` of the N-labelled arm
    (runs as folders, loaded only by an evaluation still to do).

    Registration metrics do not depend on N for reg-only and ANTs: measured with the first N only.
    """
    atlases = plan["labelled"][n]
    fused = "" if plan["fusion"] == "majority" else f"-{plan['fusion']}"  # evaluations are kept by name
    first_pairs = "next" if first else "none"
    reg_only = model_dir(out, "reg-only")
    evals = [
        ("seg-only", f"seg-only-n{n}", f"seg-only-n{n}", dict(run=model_dir(out, f"seg-only-n{n}"), pairs="none")),
        (
            "reg-only + atlas",
            "reg-only",
            f"reg-only-atlas-n{n}{fused}",
            dict(run=reg_only, atlases=atlases, fusion=plan["fusion"], pairs=first_pairs),
        ),
    ]
    for v in plan["variants"]:
        run = model_dir(out, f"{v}-n{n}")
        evals.append((f"{LABELS[v]} (seg net)", f"{v}-n{n}", f"{v}-n{n}", dict(run=run, pairs="next")))
        evals.append(
            (
                f"{LABELS[v]} (reg net + atlas)",
                f"{v}-n{n}",
                f"{v}-atlas-n{n}{fused}",
                dict(run=run, atlases=atlases, fusion=plan["fusion"], pairs="none"),
            )
        )
        # both of the joint training's nets: the seg net votes with the atlases (atlas-segment --seg-net-weight)
        # (weighted fusion whatever --fusion: the weight was tuned on it, and beside one majority vote
        # of 1 a seg net vote of at most 1 would only break ties)
        key = f"{v}-atlas-net-n{n}-weighted"
        if scorable(out, f"{v}-n{n}", key):
            kwargs = dict(run=run, atlases=atlases, fusion="weighted", seg_net_weight=SEG_NET_WEIGHT, pairs="none")
            evals.append((f"{LABELS[v]} (seg net + reg net + atlas)", f"{v}-n{n}", key, kwargs))
    if first and plan["ceiling"]:
        evals.append((CEILING, "ceiling", "ceiling", dict(run=model_dir(out, "ceiling"), pairs="none")))
    if plan["ants"] is not None:
        ants = dict(
            registrar=plan["ants"], scheme=plan["scheme"], atlases=atlases, fusion=plan["fusion"], pairs=first_pairs
        )
        evals.append(("ANTs SyN + atlas", None, f"ants-atlas-n{n}{fused}", ants))
    return evals


def scorable(out: Path, training: str, key: str) -> bool:
    """Whether evaluation ``key`` (added after the protocol's first trainings) can be had without
    retraining: it is written, or its training is still to come, or that training's model is on disk.
    A finished training whose run folder is gone is not trained again for it."""
    written = (out / "eval" / key / "summary.json").exists()
    trained = (out / "trainings" / f"{training}.json").exists()
    return written or not trained or RunFolder(model_dir(out, training)).checkpoint("best").exists()


def example_panels(plan: dict, n: int) -> list[tuple[str, str | None]]:
    """The example figure's panels (first test subject, the N-labelled arm) and the training each needs."""
    panels = [("reference (DLMUSE)", None), (f"seg-only N={n}", f"seg-only-n{n}"), ("reg-only + atlas", "reg-only")]
    panels += [(f"{LABELS[v]} N={n}", f"{v}-n{n}") for v in plan["variants"]]
    return panels + ([("ANTs SyN + atlas", None)] if plan["ants"] is not None else [])


def make_examples(out: Path, data: Path, plan: dict, n: int, training: str | None = None) -> None:
    """Segment the first test subject for each example panel not saved yet, while the models are on disk;
    with ``training``, only its panel (and those needing no training): another run folder may hold
    a training under way, whose ``best`` checkpoint is not its last word."""
    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.inference import load_run
    from deepatlas.inference.apply import atlas_segment_volume, segment_volume

    missing = [(p, t) for p, t in example_panels(plan, n) if not example_file(out, p).exists()]
    if training is not None:
        missing = [(p, t) for p, t in missing if t in (None, training)]
    # a panel whose model is gone (an older experiment's deleted run folder) stays missing
    missing = [(p, t) for p, t in missing if t is None or RunFolder(model_dir(out, t)).checkpoint("best").exists()]
    if not missing:
        return
    subject = plan["test_ids"][0]
    image = load_image(data / "images" / f"{subject}.nii.gz")
    atlases = [
        (load_image(data / "images" / f"{a}.nii.gz"), load_label_codes(data / "labels" / f"{a}.nii.gz"))
        for a in plan["labelled"][n]
    ]
    for panel, training in missing:
        if training is None and panel.startswith("reference"):
            codes = load_label_codes(data / "labels" / f"{subject}.nii.gz").array
        elif training is None:  # ANTs: no model
            codes = atlas_segment_volume(None, atlases, image, fusion=plan["fusion"], registrar=plan["ants"])
        elif training == "reg-only":
            run = load_run(model_dir(out, training), "best")  # fused as the scored rows are
            codes = atlas_segment_volume(run, atlases, image, fusion=plan["fusion"])
        else:
            codes = segment_volume(load_run(model_dir(out, training), "best"), image, align="off")
        save_example(out, panel, codes)


def still_to_do(plan: dict, out: Path, arms: list[tuple[int, bool]]) -> set[str]:
    """The trainings whose models something still needs: an evaluation or an example panel not written."""
    todo = {
        training
        for n, first in arms
        for _, training, key, _ in evaluations(n, first, plan, out)
        if not (out / "eval" / key / "summary.json").exists()
    }
    if (out / "example.png").exists():  # drawn before panels were kept: no retraining for a picture
        return todo
    return todo | {t for p, t in example_panels(plan, arms[0][0]) if not example_file(out, p).exists()}


def score_row(method: str, n: int, training: str | None, key: str, summary: dict, out: Path) -> dict:
    subject_dice = per_subject_dice(out / "eval" / key)
    return {
        "method": method,
        "n": n,
        "eval": key,
        "training": training,
        "seg_dice": summary["seg_dice"],
        "seg_dice_sd": float(np.std(list(subject_dice.values()))),
        "seg_dice_per_subject": subject_dice,
        "seg_hd95_mm": summary["seg_hd95_mm"],
        "seg_seconds_per_image": summary["seg_seconds_per_image"],
        **{k: summary.get(k) for k in REG_KEYS},
    }


def share_registration_metrics(rows: list[dict]) -> None:
    """Registration metrics measured once per method apply to every N."""
    for row in rows:
        if row["reg_dice"] is None:
            source = next((r for r in rows if r["method"] == row["method"] and r["reg_dice"] is not None), None)
            if source is not None:
                row.update({k: source[k] for k in REG_KEYS})


def share_reg_only(source: Path, out: Path) -> bool:
    """Link a finished reg-only run into ``out/runs/reg-only``; False (with the reason) if it is not one."""
    summary = RunFolder(source).summary
    if not (summary.exists() and json.loads(summary.read_text()).get("finished")):
        print(
            f"--reg-only-run {source}: not a finished training run (its summary.json must say finished)",
            file=sys.stderr,
        )
        return False
    link = out / "runs" / "reg-only"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source.resolve())
    return True


def make_plan(args: argparse.Namespace, preset: dict, variants: list[str], out: Path) -> dict:
    """What is trained and evaluated: test subjects, nested labelled draws, data flags, ANTs or not."""
    from benchmarks import peers
    from deepatlas.data.labels import LabelScheme
    from deepatlas.data.splits import choose_labelled, load_splits

    splits = load_splits(args.data / "splits.json")
    test_ids = splits["test"][: preset["test_subjects"]] if preset["test_subjects"] else splits["test"]
    splits_file = out / "splits.json"  # the evaluated test subjects, written down
    splits_file.write_text(json.dumps({**splits, "test": test_ids}, indent=1))
    # one draw of the largest N; smaller N take its first subjects, so the labelled sets are nested
    drawn = choose_labelled(splits["train"], max(preset["labelled"]), seed=args.seed)
    use_ants = not args.no_ants and peers.available("ants")
    if not args.no_ants and not use_ants:
        print("antspyx not installed: ANTs SyN left out (pip install -e .[benchmark])", file=sys.stderr)
    return {
        "test_ids": test_ids,
        "splits_file": splits_file,
        "labelled": {n: drawn[:n] for n in preset["labelled"]},
        "variants": variants,
        "ceiling": args.ceiling,
        "train_count": len(splits["train"]),
        "fusion": args.fusion,
        "scheme": LabelScheme.from_file(args.data / "brain31.json"),
        "ants": peers.syn_registrar() if use_ants else None,
        "data_flags": [
            f"data.dataset={args.data}",
            f"data.label_map={args.data / 'brain31.json'}",
            f"data.splits={args.data / 'splits.json'}",
            "data.unknown_labels=background",
            f"seed={args.seed}",
        ],
    }


def main() -> int:
    args = parse_args()
    warnings.filterwarnings("ignore")
    preset, variants, out = protocol(args)
    if not (args.data / "brain31.json").exists():
        print(f"ixi-2mm not found at {args.data}; pass --data", file=sys.stderr)
        return 1
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(args, preset, variants, out)
    if args.reg_only_run and not share_reg_only(args.reg_only_run, out):
        return 1
    trainings: dict[str, dict] = {}
    rows: list[dict] = []
    arms = [(n, i == 0) for i, n in enumerate(preset["labelled"])]
    todo = still_to_do(plan, out, arms)
    for n, first in arms:
        evals = evaluations(n, first, plan, out)

        def finish(training: str, n: int = n, first: bool = first, evals: list = evals) -> None:
            """A training's evaluations and example panel, right after it: a sitting that stops
            later loses at most the training under way, even once its run folder is gone."""
            for _, name, key, kwargs in evals:
                if name == training:
                    evaluate(key, out, args.data, plan["splits_file"], **kwargs)
            if first:
                make_examples(out, args.data, plan, n, training)

        trainings.update(train_all(n, first, plan, out, preset, todo, after=finish))
        for method, training, key, kwargs in evals:
            summary = evaluate(key, out, args.data, plan["splits_file"], **kwargs)  # done: read back
            row_n = plan["train_count"] if method == CEILING else n  # every training subject labelled
            rows.append(score_row(method, row_n, training, key, summary, out))
        if first:
            make_examples(out, args.data, plan, n)
    share_registration_metrics(rows)

    from benchmarks.experiment_report import example_figure, write_report
    from deepatlas.data.io import load_image

    panels = [p for p, _ in example_panels(plan, arms[0][0])]
    # an older experiment's figure, drawn before panels were kept, stays rather than lose panels
    if all(example_file(out, p).exists() for p in panels) or not (out / "example.png").exists():
        example = load_image(args.data / "images" / f"{plan['test_ids'][0]}.nii.gz")
        example_figure(out, example, panels, plan["scheme"])
    results = {
        "command": command_line(),
        "preset": "smoke" if args.smoke else "full",
        "protocol": {**preset, "fusion": args.fusion},
        "seed": args.seed,
        "labelled": plan["labelled"],
        "test_subjects": plan["test_ids"],
        "machine": {**provenance(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "trainings": trainings,
        "rows": rows,
        "wall_minutes_this_call": round((time.time() - started) / 60, 1),
    }
    write_report(results, out)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
