"""The DeepAtlas experiment on ixi-2mm: does joint training beat each network alone?

Usage:
    python benchmarks/experiment.py [--data ../shared/data/ixi-2mm] [--out benchmarks/results/experiment]
                                    [--budget-minutes 45] [--labelled 1 5] [--no-ants]
    python benchmarks/experiment.py --smoke      # the same pipeline in under 10 minutes

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
    seg steps; two schedules, ``VARIANTS``), scored by its seg net, and by its reg net
    as an atlas segmenter;
  * ``seg-only, every training label (ceiling)`` (``--ceiling``): the seg net on all 150
    training labels, the same budget: how far the few-label methods are from full supervision;
  * ``ANTs SyN + atlas`` (optional, ``pip install -e .[benchmark]``): no training;
    SyN registration of each atlas to each test subject, majority vote.
- Registration Dice: each test subject registered to the next (25 declared pairs);
  segmentation Dice: 31 structures of ``brain31.json``, mean over structures and subjects.

The experiment resumes where it stopped (finished trainings and evaluations are kept); each
training records the CPU it ran on (``machines.txt``, in the report): minutes compare only within
one machine. ``benchmarks/experiment_seeds.py`` runs it for several seeds and summarises them.
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
from pathlib import Path

import numpy as np

from deepatlas.recipes import recipe_overrides
from deepatlas.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiment_report import CEILING  # noqa: E402

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
MANY = 10**7  # a schedule longer than any budget: the clock ends it
# DeepAtlas schedules compared (on the validation split, which picks the shipped default):
# "deepatlas" is the schedule shipped before this experiment (with the preset's pre-training);
# "deepatlas-seg-heavy" gives the seg net the time: longer supervised pre-training, 10:10 cycles
VARIANTS = {
    "deepatlas": lambda preset: [
        f"schedule.seg_pretrain_steps={preset['seg_pretrain']}",
        f"schedule.reg_pretrain_steps={preset['reg_pretrain']}",
        "schedule.reg_steps_per_cycle=20",
        "schedule.seg_steps_per_cycle=5",
    ],
    # the shipped defaults as they are (schedule, teachers by `auto`): what a user gets
    "defaults": lambda preset: [],
    "deepatlas-seg-heavy": lambda preset: [
        f"schedule.seg_pretrain_steps={4 * preset['seg_pretrain']}",
        f"schedule.reg_pretrain_steps={preset['reg_pretrain'] // 2}",
        "schedule.reg_steps_per_cycle=10",
        "schedule.seg_steps_per_cycle=10",
    ],
    # `deepatlas train --recipe distil` (distilled multi-atlas teachers; the budget is the preset's)
    "distil": lambda preset: recipe_overrides("distil"),
}
LABELS = {
    "deepatlas": "DeepAtlas",
    "deepatlas-seg-heavy": "DeepAtlas seg-heavy",
    "defaults": "DeepAtlas defaults",
    "distil": "DeepAtlas distil",
}
REG_KEYS = ("reg_dice", "reg_dice_before", "folds", "sdlogj", "reg_seconds_per_pair", "reg_hd95_mm")


def method_overrides(method: str, preset: dict) -> list[str]:
    if method in ("seg-only", "ceiling"):
        return [f"schedule.seg_pretrain_steps={MANY}", "schedule.reg_pretrain_steps=0", "schedule.cycles=0"]
    if method == "reg-only":
        return ["schedule.seg_pretrain_steps=0", f"schedule.reg_pretrain_steps={MANY}", "schedule.cycles=0"]
    return VARIANTS[method](preset) + [f"schedule.cycles={MANY}"]


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return commit + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def per_subject_dice(eval_dir: Path) -> dict[str, float]:
    rows = list(csv.DictReader((eval_dir / "segmentation.csv").open()))
    out: dict[str, list[float]] = {}
    for r in rows:
        value = float(r["dice"])
        if value == value:
            out.setdefault(r["subject"], []).append(value)
    return {k: float(np.mean(v)) for k, v in out.items()}


def train_method(name: str, overrides: list[str], load_data, out: Path, preset: dict) -> dict:
    """Train (or resume) one method's run; a finished run is only read. ``load_data()`` gives the data."""
    from deepatlas.config import load_config
    from deepatlas.training.run import train

    run_dir = out / "runs" / name
    summary_file = RunFolder(run_dir).summary
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        if summary.get("finished"):
            return summary
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
    return train(
        config, run_dir, resume=RunFolder(run_dir).checkpoint("last").exists(), progress=False, data=load_data()
    )


def record_machine(run_dir: Path) -> None:
    """Append this machine's CPU to ``<run>/machines.txt`` at every (re)start: a budget in minutes
    compares only within one machine, so a run resumed elsewhere must be visible."""
    from registration import cpu_model

    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "machines.txt").open("a") as handle:
        handle.write(cpu_model() + "\n")


def machines(run_dir: Path) -> list[str]:
    path = run_dir / "machines.txt"
    return sorted(set(path.read_text().split("\n")) - {""}) if path.exists() else []


def evaluate(row: str, out: Path, data_dir: Path, splits_file: Path, **kwargs) -> dict:
    from deepatlas.evaluation.evaluate_run import evaluate_run

    eval_dir = out / "eval" / row
    if (eval_dir / "summary.json").exists():
        return json.loads((eval_dir / "summary.json").read_text())
    print(f"[{time.strftime('%H:%M:%S')}] evaluating {row}", flush=True)
    return evaluate_run(
        kwargs.pop("run", None),
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
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ixi-2mm")
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
    out = args.out or ROOT / "benchmarks" / "results" / ("experiment-smoke" if args.smoke else "experiment")
    return preset, variants, out


def train_all(n: int, first: bool, plan: dict, out: Path, preset: dict) -> dict[str, dict]:
    """Train (or find trained) every method of the N-labelled arm; data loaded once, only if needed."""
    from deepatlas.config import load_config
    from deepatlas.data import prepare_data

    flags = plan["data_flags"] + [f"data.labelled_ids={json.dumps(plan['labelled'][n])}"]
    cache: dict = {}

    def load_data():  # ~160 volumes: once per N, only if something still trains
        if "data" not in cache:
            cache["data"] = prepare_data(load_config(None, flags).data, progress=False)
        return cache["data"]

    names = [f"seg-only-n{n}"] + [f"{v}-n{n}" for v in plan["variants"]] + (["reg-only"] if first else [])
    trainings = {}
    for name in names:
        method = name.rsplit("-n", 1)[0] if name != "reg-only" else "reg-only"
        trainings[name] = train_method(name, flags + method_overrides(method, preset), load_data, out, preset)
    if first and plan["ceiling"]:  # every training subject labelled: its own data
        ceiling = plan["data_flags"] + method_overrides("ceiling", preset)
        load_all = lambda: prepare_data(load_config(None, ceiling).data, progress=False)  # noqa: E731
        trainings["ceiling"] = train_method("ceiling", ceiling, load_all, out, preset)
    for name in trainings:
        trainings[name]["machines"] = machines(out / "runs" / name)
    return trainings


def evaluations(n: int, first: bool, plan: dict, out: Path) -> list[tuple]:
    """``(method label, training, evaluation key, evaluate() options)`` of the N-labelled arm.

    Registration metrics do not depend on N for reg-only and ANTs: measured with the first N only.
    """
    from deepatlas.inference import load_run

    atlases = plan["labelled"][n]
    fused = "" if plan["fusion"] == "majority" else f"-{plan['fusion']}"  # evaluations are kept by name
    first_pairs = "next" if first else "none"
    reg_only = load_run(out / "runs" / "reg-only", "best")
    evals = [
        (
            "seg-only",
            f"seg-only-n{n}",
            f"seg-only-n{n}",
            dict(run=load_run(out / "runs" / f"seg-only-n{n}", "best"), pairs="none"),
        ),
        (
            "reg-only + atlas",
            "reg-only",
            f"reg-only-atlas-n{n}{fused}",
            dict(run=reg_only, atlases=atlases, fusion=plan["fusion"], pairs=first_pairs),
        ),
    ]
    for v in plan["variants"]:
        run = load_run(out / "runs" / f"{v}-n{n}", "best")
        evals.append((f"{LABELS[v]} (seg net)", f"{v}-n{n}", f"{v}-n{n}", dict(run=run, pairs="next")))
        evals.append(
            (
                f"{LABELS[v]} (reg net + atlas)",
                f"{v}-n{n}",
                f"{v}-atlas-n{n}{fused}",
                dict(run=run, atlases=atlases, fusion=plan["fusion"], pairs="none"),
            )
        )
    if first and plan["ceiling"]:
        ceiling = dict(run=load_run(out / "runs" / "ceiling", "best"), pairs="none")
        evals.append((CEILING, "ceiling", "ceiling", ceiling))
    if plan["ants"] is not None:
        ants = dict(
            registrar=plan["ants"], scheme=plan["scheme"], atlases=atlases, fusion=plan["fusion"], pairs=first_pairs
        )
        evals.append(("ANTs SyN + atlas", None, f"ants-atlas-n{n}{fused}", ants))
    return evals


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
    import ants_syn

    from deepatlas.data.labels import LabelScheme
    from deepatlas.data.splits import choose_labelled, load_splits

    splits = load_splits(args.data / "splits.json")
    test_ids = splits["test"][: preset["test_subjects"]] if preset["test_subjects"] else splits["test"]
    splits_file = out / "splits.json"  # the evaluated test subjects, written down
    splits_file.write_text(json.dumps({**splits, "test": test_ids}, indent=1))
    # one draw of the largest N; smaller N take its first subjects, so the labelled sets are nested
    drawn = choose_labelled(splits["train"], max(preset["labelled"]), seed=args.seed)
    use_ants = not args.no_ants and ants_syn.available()
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
        "ants": ants_syn.syn_registrar() if use_ants else None,
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
    for i, n in enumerate(preset["labelled"]):
        trainings.update(train_all(n, i == 0, plan, out, preset))
        for method, training, key, kwargs in evaluations(n, i == 0, plan, out):
            summary = evaluate(key, out, args.data, plan["splits_file"], **kwargs)
            row_n = plan["train_count"] if method == CEILING else n  # every training subject labelled
            rows.append(score_row(method, row_n, training, key, summary, out))
    share_registration_metrics(rows)

    from experiment_report import example_figure, write_report
    from registration import cpu_model

    n0 = preset["labelled"][0]
    labels = {v: LABELS[v] for v in variants}
    example_figure(out, args.data, plan["test_ids"][0], plan["labelled"][n0], n0, plan["scheme"], plan["ants"], labels)
    results = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "preset": "smoke" if args.smoke else "full",
        "protocol": {**preset, "fusion": args.fusion},
        "seed": args.seed,
        "labelled": plan["labelled"],
        "test_subjects": plan["test_ids"],
        "machine": {
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "trainings": trainings,
        "rows": rows,
        "wall_minutes_this_call": round((time.time() - started) / 60, 1),
    }
    write_report(results, out)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
