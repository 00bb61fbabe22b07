"""The DeepAtlas experiment over several seeds (labelled draws): issue 10's protocol.

Usage:
    python -m benchmarks.experiment_seeds [--seeds 0 1 2] [--budget-minutes 45] [--labelled 1 5]
                                          [--variant suggested|defaults|distil]
                                          [--out benchmarks/results/experiment-seeds] [--no-ants]
                                          [--augment] [--no-ceiling] [--reg-only-run RUN]
    python -m benchmarks.experiment_seeds --smoke --seeds 0 1     # the machinery, ~15 minutes

Runs ``python -m benchmarks.experiment`` once per seed into ``<out>/seed-<s>/``: the recipe that
``deepatlas train`` suggests for N labelled images (``DeepAtlas suggested recipe``: the defaults at
N = 1, ``distil`` at N = 5; ``--variant defaults`` or ``distil``: that one at every N) against seg-only, reg-only +
atlas and ANTs SyN + atlas (multi-atlas segmentation with the N labelled images, refined
registration, weighted fusion as ``atlas-segment`` does), every training for the same wall-clock
budget. Reg-only sees no labels, so the first seed's training serves every seed (each seed still segments with its own
atlases); the first seed also trains the fully supervised ceiling. Then ``<out>/summary.md``
and ``summary.json``: per method and N, the mean test seg Dice over seeds and its spread, each
seed's difference to seg-only, paired per-subject wins over all seeds, and the DeepAtlas reg
net against reg-only. Every step resumes (each seed's experiment does), so the whole can run
across several sittings, on one machine model, from committed files alone (each finished
training leaves a record, its evaluations and its example panel; reg-only a packaged copy).
The summary names the CPUs the trainings ran on and warns when they differ. ``--augment``: the
same protocol with every seg net trained with augmentation (into ``experiment-seeds-augment``), so
the joint seg net is measured against a seg net alone that does not memorise its few labels;
``--reg-only-run`` reuses another protocol's reg-only (augmentation never reaches it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.experiment_report import seeds_figure
from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line
from deepatlas.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

JOINT = {
    "defaults": "DeepAtlas defaults (seg net)",
    "distil": "DeepAtlas distil (seg net)",
    "suggested": "DeepAtlas suggested recipe (seg net)",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="default benchmarks/results/experiment-seeds[-smoke]")
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--budget-minutes", type=float, help="per training (default: experiment.py's, 45)")
    parser.add_argument("--labelled", type=int, nargs="+", help="numbers of labelled subjects (default 1 5)")
    parser.add_argument(
        "--variant",
        choices=sorted(JOINT),
        default="suggested",
        help="the joint training: the recipe suggested for N labelled images, the shipped defaults, "
        "or `--recipe distil` (distilled teachers) at every N",
    )
    parser.add_argument("--no-ants", action="store_true", help="leave out the ANTs SyN reference")
    parser.add_argument(
        "--augment", action="store_true", help="experiment.py --augment: every seg net trained with augmentation"
    )
    parser.add_argument("--no-ceiling", action="store_true", help="leave out the all-labels ceiling")
    parser.add_argument(
        "--reg-only-run",
        type=Path,
        help="a finished reg-only run for every seed (default: the first seed trains it); reg-only sees "
        "no labels and no augmentation, so another protocol's serves, e.g. "
        "benchmarks/results/experiment-seeds/seed-0/models/reg-only",
    )
    parser.add_argument("--smoke", action="store_true", help="experiment.py's smoke preset per seed")
    return parser.parse_args()


def seed_command(args: argparse.Namespace, seed: int, out: Path) -> list[str]:
    """The experiment.py call of one seed; the first seed trains reg-only and the ceiling."""
    command = [sys.executable, "-m", "benchmarks.experiment", "--data", str(args.data)]
    command += ["--seed", str(seed), "--out", str(out / f"seed-{seed}"), "--variants", args.variant]
    command += ["--fusion", "weighted"]  # atlas-segment's default
    if seed == args.seeds[0] and not args.no_ceiling:
        command.append("--ceiling")
    if args.reg_only_run:
        command += ["--reg-only-run", str(args.reg_only_run)]
    elif seed != args.seeds[0]:
        # the first seed's reg-only, packaged into its (committed) models folder
        command += ["--reg-only-run", str(out / f"seed-{args.seeds[0]}" / "models" / "reg-only")]
    if args.budget_minutes:
        command += ["--budget-minutes", str(args.budget_minutes)]
    if args.labelled:
        command += ["--labelled", *map(str, args.labelled)]
    return command + ["--no-ants"] * args.no_ants + ["--smoke"] * args.smoke + ["--augment"] * args.augment


def _row(results: dict, method: str, n: int) -> dict | None:
    return next((r for r in results["rows"] if r["method"] == method and r["n"] == n), None)


def _per_seed(values: dict[int, float]) -> str:
    """``{0: 0.631, 1: 0.622}`` as "s0 0.631, s1 0.622": which seed each value is, also when one is missing."""
    return ", ".join(f"s{seed} {v:.3f}" for seed, v in values.items())


def _spread(values: list[float]) -> str:
    # sample sd over seeds; with one seed there is none
    return f"{np.std(values, ddof=1):.3f}" if len(values) > 1 else "one seed"


def seg_table(per_seed: dict[int, dict]) -> list[str]:
    """Mean (sd over seeds) test seg Dice per method and N, with each seed's value; every method
    any seed has (one scored on some seeds only shows which)."""
    lines = [
        "| method | N | seg Dice: mean (sd over seeds) | per seed | reg Dice: mean |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method, n in dict.fromkeys((r["method"], r["n"]) for res in per_seed.values() for r in res["rows"]):
        rows = {s: row for s, res in per_seed.items() if (row := _row(res, method, n)) is not None}
        seg = {s: r["seg_dice"] for s, r in rows.items()}
        reg = [r["reg_dice"] for r in rows.values() if r["reg_dice"] is not None]
        lines.append(
            f"| {method} | {n} | {np.mean(list(seg.values())):.3f} ({_spread(list(seg.values()))}) | "
            f"{_per_seed(seg)} | {f'{np.mean(reg):.3f}' if reg else '-'} |"
        )
    return lines


def paired(per_seed: dict[int, dict], method: str, baseline: str, key: str = "seg_dice") -> dict | None:
    """``method`` minus ``baseline`` per seed (with the seeds' ids: a seed lacking either row is
    left out) and per test subject, pooled over those seeds, at every N."""
    out = {}
    for n in sorted({r["n"] for res in per_seed.values() for r in res["rows"] if r["method"] == method}):
        seeds, diffs, subjects = [], [], []
        for seed, res in per_seed.items():
            a, b = _row(res, method, n), _row(res, baseline, n)
            if a is None or b is None or a.get(key) is None or b.get(key) is None:
                continue
            seeds.append(seed)
            diffs.append(a[key] - b[key])
            if key == "seg_dice":
                ours, theirs = a["seg_dice_per_subject"], b["seg_dice_per_subject"]
                subjects += [ours[s] - theirs[s] for s in ours if s in theirs]
        if seeds:
            out[n] = {"seeds": seeds, "per_seed": diffs, "mean": float(np.mean(diffs)), "subjects": subjects}
    return out or None


def draws(labelled: dict[str, list[str]]) -> str:
    """``{"1": [a], "5": [a, b, ...]}`` as "N=1 a, N=5 a b ..." for the summary's header."""
    return ", ".join(f"N={n} {' '.join(ids)}" for n, ids in labelled.items())


def cpu_models(per_seed: dict[int, dict]) -> list[str]:
    """Every CPU model that any training of any seed ran on (a table should hold one)."""
    return sorted({m for res in per_seed.values() for t in res["trainings"].values() for m in t.get("machines", [])})


def comparisons(joint: str) -> list[tuple[str, str]]:
    """(method, baseline) pairs the summary reports: the joint seg net against the seg net alone,
    and the joint run's atlas rows (its reg net, then both nets voting) against reg-only + atlas."""
    run = joint.removesuffix(" (seg net)")
    return [
        (joint, "seg-only"),
        (f"{run} (reg net + atlas)", "reg-only + atlas"),
        (f"{run} (seg net + reg net + atlas)", "reg-only + atlas"),
    ]


def paired_lines(method: str, baseline: str, diffs: dict | None) -> list[str]:
    """One table of ``paired(per_seed, method, baseline)``: per N, per seed and per test subject."""
    if not diffs:
        return []
    lines = [
        f"## {method} against {baseline}",
        "",
        "| N | mean difference (points) | per seed | seeds better | subject-seed pairs better |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n, d in diffs.items():
        values = ", ".join(f"s{seed} {100 * v:+.1f}" for seed, v in zip(d["seeds"], d["per_seed"]))
        lines.append(
            f"| {n} | {100 * d['mean']:+.1f} | {values} | "
            f"{sum(v > 0 for v in d['per_seed'])} / {len(d['per_seed'])} | "
            f"{sum(v > 0 for v in d['subjects'])} / {len(d['subjects'])} |"
        )
    return lines + [""]


def summarise(out: Path, seeds: list[int], variant: str = "suggested") -> dict:
    """``summary.md``, ``summary.json`` and ``summary.png`` over the seeds' ``results.json``."""
    joint = JOINT[variant]
    per_seed = {s: json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in seeds}
    # registration Dice of the joint reg net against the unsupervised one (the reg-only row carries it)
    joint_vs_reg = paired(per_seed, joint, "reg-only + atlas", key="reg_dice")
    cpus = cpu_models(per_seed)
    augmented = per_seed[seeds[0]]["protocol"].get("augment", False)
    machine = provenance()  # of the summary; each seed's results.json has its own
    lines = [
        f"# DeepAtlas experiment over seeds {', '.join(map(str, seeds))} (ixi-2mm test split)",
        "",
        f"- budget per training: {per_seed[seeds[0]]['protocol']['budget_minutes']:g} min; "
        "labelled draws: " + "; ".join(f"seed {s}: {draws(r['labelled'])}" for s, r in per_seed.items()),
        *(["- every seg net trained with augmentation (`augment.enabled=on`)"] if augmented else []),
        f"- trainings ran on: {'; '.join(cpus) or 'unknown'}"
        + ("  **(more than one CPU model: minutes are not comparable)**" if len(cpus) > 1 else ""),
        f"- summarised on: {provenance_line(machine)}",
        "",
        *seg_table(per_seed),
        "",
        "![test seg Dice over seeds](summary.png)",
        "",
    ]
    # each comparison computed once, for the tables and for summary.json
    pairs = {(m, b): paired(per_seed, m, b) for m, b in comparisons(joint)}
    for (method, baseline), diffs in pairs.items():
        lines += paired_lines(method, baseline, diffs)
    if joint_vs_reg:
        lines.append("Registration Dice after refinement, DeepAtlas reg net minus reg-only (points): ")
        for n, d in joint_vs_reg.items():
            values = ", ".join(f"s{seed} {100 * v:+.1f}" for seed, v in zip(d["seeds"], d["per_seed"]))
            lines[-1] += f"N={n}: {100 * d['mean']:+.1f} ({values}); "
    summary = {
        "seeds": seeds,
        "machines": cpus,
        "machine": machine,
        "joint_vs_seg_only": pairs[(joint, "seg-only")],
        "joint_vs_reg_only": joint_vs_reg,
        "paired": {f"{m} - {b}": diffs for (m, b), diffs in pairs.items()},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    seeds_figure(per_seed, joint, out / "summary.png")
    return summary


def main() -> int:
    args = parse_args()
    default = ("experiment-seeds-smoke" if args.smoke else "experiment-seeds") + ("-augment" if args.augment else "")
    out = args.out or ROOT / "benchmarks" / "results" / default
    for seed in args.seeds:
        print(f"== seed {seed}", flush=True)
        code = subprocess.call(seed_command(args, seed, out))
        if code:
            print(f"experiment.py failed for seed {seed} (exit {code}); rerun to resume", file=sys.stderr)
            return code
    summarise(out, args.seeds, args.variant)
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
