"""Choosing defaults on ixi-2mm's *validation* split (never the test split).

Usage:
    python -m benchmarks.tune_defaults SWEEP [--data $DEEPATLAS_DATA/ixi-2mm] [--out benchmarks/results/tuning]

Each sweep, ``benchmarks/sweeps/<sweep>.yaml``, is a list of named variants (a recipe and
config overrides: ``benchmarks/sweeps/common.yaml`` says how they combine) trained from the same
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

import yaml

from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line
from deepatlas.options import UNTIL_BUDGET
from deepatlas.recipes import recipe_overrides

ROOT = Path(__file__).resolve().parents[1]

SWEEP_DIR = ROOT / "benchmarks" / "sweeps"  # <sweep>.yaml: its variants; common.yaml: the lists they share
SHARED = "common"
VARIANT_KEYS = ("recipe", "use", "overrides")


def sweep_names() -> list[str]:
    """The sweeps: every ``benchmarks/sweeps/<sweep>.yaml`` but ``common.yaml``."""
    return sorted(path.stem for path in SWEEP_DIR.glob("*.yaml") if path.stem != SHARED)


def read_sweep_file(name: str) -> dict:
    content = yaml.safe_load((SWEEP_DIR / f"{name}.yaml").read_text())
    if not isinstance(content, dict):
        raise ValueError(f"{SWEEP_DIR / name}.yaml: give a mapping of names to variants (common.yaml: to lists)")
    return content


def until_budget(item: object) -> str:
    """``key=UNTIL_BUDGET`` (how a sweep file says "until the time budget ends the run") with the
    step count :data:`deepatlas.options.UNTIL_BUDGET`; any other override as written."""
    key, _, value = str(item).partition("=")
    return f"{key}={UNTIL_BUDGET}" if value == "UNTIL_BUDGET" else str(item)


def variant_overrides(name: str, variant: dict, shared: dict) -> list[str]:
    """One variant's overrides: its recipe's (``deepatlas.recipes``), then each ``use`` list of
    ``common.yaml`` in order, then its own ``overrides`` (later ones win)."""
    variant = variant or {}
    unknown = sorted(set(variant) - set(VARIANT_KEYS)) if isinstance(variant, dict) else [variant]
    if unknown:
        raise ValueError(f"variant {name!r}: {unknown} is not one of the keys {list(VARIANT_KEYS)}")
    missing = [use for use in variant.get("use", []) if use not in shared]
    if missing:
        raise ValueError(f"variant {name!r}: no list {missing} in {SHARED}.yaml (it has {sorted(shared)})")
    overrides = recipe_overrides(variant["recipe"]) if "recipe" in variant else []
    for use in variant.get("use", []):
        overrides += shared[use]
    return [until_budget(item) for item in overrides + variant.get("overrides", [])]


def sweep_variants(sweep: str) -> dict[str, list[str]]:
    """Variant name -> its overrides, in the file's order (each run after ``base_overrides()`` and
    the data flags)."""
    shared = read_sweep_file(SHARED)
    return {str(name): variant_overrides(name, variant, shared) for name, variant in read_sweep_file(sweep).items()}


def base_overrides() -> list[str]:
    """``common.yaml``'s ``base``: the settings every variant of every sweep starts from."""
    return [until_budget(item) for item in read_sweep_file(SHARED)["base"]]


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


def parse_args() -> tuple[argparse.Namespace, dict[str, list[str]]]:
    """The command line, checked before any training (a typo must not wait 45 minutes to show), and
    the variants to run: the sweep's, or those of ``--only``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", choices=sweep_names(), help="a file benchmarks/sweeps/<sweep>.yaml")
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
    for item in args.score:
        name, _, folder = item.partition("=")
        if not name or not (Path(folder) / "checkpoints" / "last.pt").is_file():
            parser.error(f"--score {item}: give NAME=RUN_DIR, a run folder with checkpoints/last.pt")
    try:
        variants = sweep_variants(args.sweep)
    except (ValueError, yaml.YAMLError) as err:
        parser.error(f"sweep {args.sweep}: {' '.join(str(err).split())}")
    unknown = [name for name in args.only if name not in variants]
    if unknown:
        parser.error(f"--only {unknown}: not variants of {args.sweep} ({list(variants)})")
    return args, {name: overrides for name, overrides in variants.items() if not args.only or name in args.only}


def main() -> int:
    # the sweep protocol read top to bottom (train, evaluate, append, tabulate)
    args, variants = parse_args()
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
    for name, overrides in variants.items():
        config = load_config(None, base_overrides() + data_flags + overrides)
        key = (config.data.num_labelled, config.data.seed, tuple(config.data.labelled_ids or []))
        if key not in cache:
            cache[key] = load_training_data(config.data, progress=False)
        run_dir = args.out / "runs" / args.sweep / name.replace("=", "-").replace(",", "_")
        start = time.time()
        train(config, run_dir, progress=False, data=cache[key], resume=(run_dir / "checkpoints/last.pt").exists())
        record = score(name, overrides, run_dir, cache[key].validation, time.time() - start)
        append(log, {**record, "labelled": cache[key].labelled_ids[:5]})
    if args.score and not cache:  # the validation split is the same whatever the labelled draw
        cache[None] = load_training_data(load_config(None, base_overrides() + data_flags).data, progress=False)
    for name, _, folder in (item.partition("=") for item in args.score):
        append(log, score(name, [f"run {folder}"], Path(folder), next(iter(cache.values())).validation))
    write_table(log, args.out / f"{args.sweep}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
