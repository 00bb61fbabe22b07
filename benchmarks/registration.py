"""Registration on ixi-2mm test pairs: accuracy against seconds per pair, every method scored alike.

Usage:
    python -m benchmarks.registration [--model models/brain-2mm] [--split test] [--pairs 24] [--ants quick]
        [--peers greedy fireants]

Pairs: each subject of the split to the next one (``--pairs`` of them, in split order).
Methods (each a registrar ``(moving, fixed, moving_labels) -> Registration`` scored by the
same code): identity; the net alone; net + refinement at several iteration budgets;
refinement from zero (the "plain 2-level" baseline of issue 9: levels 4x then 2x, 60 Adam
steps each, unknowns on the level's grid); ANTs SyNQuick / SyN when antspyx is installed
(``--ants quick syn``); PICSL greedy and FireANTs when installed (``--peers greedy fireants``,
benchmarks/peers.py, with torch's thread count); and the command line: one ``deepatlas register
MODEL --pairs`` call, process start included. Dice: mean over the 31 brain31 structures of the
warped moving labels (resampled by label interpolation, as ``register`` writes them; and, in
its own column, by nearest neighbour through the same field, as tables before 2026-12-06 did)
against the fixed labels, averaged over pairs; folds: share of the fixed
brain's voxels (labels > 0) with Jacobian determinant <= 0; SDlogJ inside the same mask.

Writes ``benchmarks/results/registration/{results.json,results.md,dice_vs_time.png}`` with
the CPU model, the commit and the command. Time it alone: anything else running on the
machine's cores changes every number.
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

import numpy as np

from benchmarks.label_interpolation import resampled
from benchmarks.paths import data_root
from benchmarks.provenance import command_line, provenance, provenance_line

ROOT = Path(__file__).resolve().parents[1]

# name -> refinement overrides (None: the net alone); "zero:" rows start from the identity
BUDGETS = {
    "net alone": None,
    "net + refine, 2x level only (20 steps)": ["levels=[2]", "iterations=[20]"],
    "net + refine (default: 2x 20 + full 5 steps)": [],
    "net + refine, 2x 20 + full 20 steps": ["iterations=[20,20]"],
    "net + refine, 2x 20 + full 20 steps, diffusion 1": ["iterations=[20,20]", "regularizer_weight=1"],
}
BASELINE = "refine from zero, 4x+2x (plain 2-level baseline)"
DIFFEO = "refine from zero, diffeomorphic (velocity field), 4x 60 + 2x 20 + full 5 steps"
DIFFEO_SETTINGS = ["levels=[4,2,1]", "iterations=[60,20,5]"]
# the external registrars of benchmarks/peers.py, by --peers choice and by --ants kind
PEER_NAMES = {
    "greedy": "PICSL greedy (NCC 2x2x2, 100x50x10, deformable only)",
    "fireants": "FireANTs greedy (CC 5, 200/100/50 at 4x/2x/1x, deformable only, CPU)",
}
ANTS_KINDS = {
    "quick": ("ANTs SyNQuick (antsRegistrationSyNQuick[so], deformable only)", "antsRegistrationSyNQuick[so]"),
    "syn": ("ANTs SyN (SyNOnly, Mattes MI)", "SyNOnly"),
}
BASELINE_SETTINGS = [
    "levels=[4,2]",
    "iterations=[60,60]",
    "control_spacing=1",
    "lncc_window=5",
    "regularizer_weight=1.0",
    "lr=0.5",
    "smoothing=2",
    "anatomy_weight=0",
]


def score(warped_labels: np.ndarray, jacobian: np.ndarray, fixed_classes: np.ndarray, scheme) -> dict:
    """Dice (mean over structures), folds and SDlogJ in the fixed brain of one registration."""
    import torch

    from deepatlas.evaluation.metrics import dice_per_class, finite_mean, sd_log_jacobian

    warped = scheme.encode(warped_labels, unknown="background")
    dice = finite_mean(dice_per_class(torch.from_numpy(warped), torch.from_numpy(fixed_classes), scheme.num_classes))
    brain = fixed_classes > 0
    return {
        "dice": dice,
        "folds_pct": float((jacobian[brain] <= 0).mean() * 100),
        "sdlogj": sd_log_jacobian(jacobian, brain),
    }


def run_method(registrar, pairs, volumes, classes, scheme) -> dict:
    rows = []
    for moving_id, fixed_id in pairs:
        (moving, moving_labels), (fixed, _) = volumes[moving_id], volumes[fixed_id]
        start = time.perf_counter()
        result = registrar(moving, fixed, moving_labels)
        seconds = time.perf_counter() - start
        scores = score(result.warped_labels, result.jacobian, classes[fixed_id], scheme)
        # the same field with the labels carried by nearest neighbour, as every row was before label
        # interpolation (benchmarks/label_interpolation.py): comparable with earlier tables
        nearest = resampled(result, moving_labels, fixed, linear=False)
        scores["dice_nearest"] = score(nearest, result.jacobian, classes[fixed_id], scheme)["dice"]
        rows.append({"moving": moving_id, "fixed": fixed_id, "seconds": seconds, **scores})
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    return {
        "dice": float(np.mean([r["dice"] for r in rows])),
        "dice_sd": float(np.std([r["dice"] for r in rows])),
        "dice_nearest": float(np.mean([r["dice_nearest"] for r in rows])) if "dice_nearest" in rows[0] else None,
        "folds_pct": float(np.mean([r["folds_pct"] for r in rows])),
        "sdlogj": float(np.mean([r["sdlogj"] for r in rows])),
        "seconds_per_pair": float(statistics.median(r["seconds"] for r in rows)),
        "pairs": rows,
    }


def run_cli(model: Path, pairs, volumes, classes, scheme, extra: list[str]) -> dict:
    """One ``deepatlas register --pairs`` call over all pairs; seconds per pair = wall time / pairs."""
    from deepatlas.data.io import load_image, load_label_codes

    with tempfile.TemporaryDirectory(prefix="deepatlas-bench-") as tmp:
        spec = [
            {
                "moving": str(volumes[m][0].path),
                "fixed": str(volumes[f][0].path),
                "moving_labels": str(volumes[m][1].path),
            }
            for m, f in pairs
        ]
        pairs_file = Path(tmp) / "pairs.json"
        pairs_file.write_text(json.dumps(spec))
        command = [
            sys.executable,
            "-m",
            "deepatlas.cli.main",
            "register",
            str(model),
            "--pairs",
            str(pairs_file),
            "-o",
            str(Path(tmp) / "out"),
            *extra,
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        rows = []
        for moving_id, fixed_id in pairs:
            labels = load_label_codes(Path(tmp) / "out" / f"{moving_id}_to_{fixed_id}_labels.nii.gz").array
            jac = load_image(Path(tmp) / "out" / f"{moving_id}_to_{fixed_id}_jacdet.nii.gz").array
            scores = score(labels, jac, classes[fixed_id], scheme)
            rows.append({"moving": moving_id, "fixed": fixed_id, "seconds": wall / len(pairs), **scores})
    out = summarize(rows)
    out["wall_seconds"] = wall
    return out


def pipeline_registrar(run, overrides: list[str] | None, use_net: bool = True, diffeomorphic: bool = False):
    """``register_volumes`` through a pipeline of the run's net (``use_net=False``: refinement from the
    identity) and the run's refinement settings with ``overrides`` (``None``: the net alone);
    ``diffeomorphic``: refine a stationary velocity field instead of a displacement."""
    import copy
    from functools import partial

    from deepatlas.inference.apply import register_volumes
    from deepatlas.registration import build_pipeline

    config = run.config
    if diffeomorphic:
        config = copy.deepcopy(config)
        config.reg_net.diffeomorphic = True
    refine = config.refine.with_overrides(["enabled=false"] if overrides is None else ["enabled=true", *overrides])
    pipeline = build_pipeline(config, run.reg_net if use_net else None, run.seg_net, refine)
    return partial(register_volumes, run, pipeline=pipeline)


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6.5))
    for name, row in results["methods"].items():
        if row.get("seconds_per_pair") is None:
            ax.axhline(row["dice"], color="grey", ls=":", lw=1)
            ax.text(0.05, row["dice"] + 0.002, name, fontsize=8, color="grey")
            continue
        marker = "s" if name.startswith(("ANTs", *PEER_NAMES.values())) else ("D" if "command line" in name else "o")
        ax.plot(row["seconds_per_pair"], row["dice"], marker, ms=7, label=f"{name} ({row['folds_pct']:.2f}% folds)")
    ax.set_xscale("log")
    ax.set_xlim(0.04, None)
    ax.set_xlabel(f"seconds per pair (log scale, {results['machine']['cpu']})")
    ax.set_ylabel("registration Dice (31 structures)")
    ax.set_title(f"ixi-2mm {results['split']} pairs ({results['num_pairs']}), {results['machine']['threads']} threads")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_tables(results: dict, out: Path) -> None:
    from deepatlas.files import atomic_write_text

    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    lines = [
        f"# Registration, ixi-2mm {results['split']} pairs ({results['num_pairs']} consecutive pairs)",
        "",
        f"{provenance_line(results['machine'])} Command: `{results['command']}`",
        "",
        "| method | Dice | sd | Dice, labels by nearest neighbour | folds % (brain) | SDlogJ | s / pair |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in results["methods"].items():
        seconds = "-" if row.get("seconds_per_pair") is None else f"{row['seconds_per_pair']:.2f}"
        nearest = "-" if row.get("dice_nearest") is None else f"{row['dice_nearest']:.3f}"
        lines.append(
            f"| {name} | {row['dice']:.3f} | {row['dice_sd']:.3f} | {nearest} | {row['folds_pct']:.3f} | "
            f"{row['sdlogj']:.3f} | {seconds} |"
        )
    baseline = results["methods"].get(BASELINE, {}).get("seconds_per_pair")
    if baseline:
        lines += [
            "",
            f"Time budget of issue 9: 1.2 x the plain 2-level baseline = {1.2 * baseline:.2f} s per pair "
            f"on this machine.",
        ]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "brain-2mm")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pairs", type=int, default=24, help="how many consecutive pairs (default 24)")
    parser.add_argument(
        "--ants",
        nargs="*",
        default=["quick"],
        choices=["quick", "syn"],
        help="ANTs references when antspyx is installed (default quick; syn: SyNOnly, ~4 s/pair)",
    )
    parser.add_argument(
        "--peers",
        nargs="*",
        default=[],
        choices=sorted(PEER_NAMES),
        help="external registrars measured on the same pairs (installed ones; see benchmarks/peers.py)",
    )
    parser.add_argument("--no-cli", action="store_true", help="leave out the command-line row")
    parser.add_argument("--resume", action="store_true", help="keep the methods an interrupted call measured")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "registration")
    return parser.parse_args()


def load_pairs(args: argparse.Namespace, scheme) -> tuple[list[tuple[str, str]], dict, dict]:
    """The consecutive pairs of the split, each subject's (image, label codes) and class indices."""
    from deepatlas.data import find_subjects
    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.data.splits import load_splits

    ids = load_splits(args.data / "splits.json")[args.split][: args.pairs + 1]
    by_id = {s.id: s for s in find_subjects(args.data)}
    volumes = {i: (load_image(by_id[i].image), load_label_codes(by_id[i].label)) for i in ids}
    classes = {i: scheme.encode(v[1].array, unknown="background") for i, v in volumes.items()}
    return list(zip(ids, ids[1:])), volumes, classes


def identity_method(pairs, volumes, classes, scheme) -> dict:
    """No registration: the moving labels scored as they are."""
    rows = [
        {
            "moving": m,
            "fixed": f,
            "seconds": float("nan"),
            **score(volumes[m][1].array, np.ones(volumes[f][1].array.shape), classes[f], scheme),
        }
        for m, f in pairs
    ]
    return {**summarize(rows), "seconds_per_pair": None}


def make_registrars(run, ants: list[str], peer_names: list[str] = ()) -> dict:
    """Every method timed in process: the baseline, the refinement budgets, diffeomorphic, and the
    external peers asked for (ANTs, PICSL greedy, FireANTs) that are installed."""
    from benchmarks import peers

    registrars = {BASELINE: pipeline_registrar(run, BASELINE_SETTINGS, use_net=False)}
    registrars.update({name: pipeline_registrar(run, overrides) for name, overrides in BUDGETS.items()})
    registrars[DIFFEO] = pipeline_registrar(run, DIFFEO_SETTINGS, use_net=False, diffeomorphic=True)
    for peer in (["ants"] if ants else []) + list(peer_names):
        if not peers.available(peer):
            print(peers.missing_message(peer), file=sys.stderr)
        elif peer == "ants":
            registrars.update({ANTS_KINDS[k][0]: peers.syn_registrar(ANTS_KINDS[k][1]) for k in ants})
        else:
            registrars[PEER_NAMES[peer]] = peers.REGISTRARS[peer]()
    return registrars


def measure_all(registrars: dict, data: tuple, out: Path, resume: bool) -> dict:
    """Run every registrar over the pairs; methods an interrupted call measured are kept (--resume)."""
    from deepatlas.files import atomic_write_text

    partial_file = out / "partial.json"
    done = json.loads(partial_file.read_text()) if resume and partial_file.exists() else {}
    out.mkdir(parents=True, exist_ok=True)
    methods = {}
    for name, registrar in registrars.items():
        if name in done:
            methods[name] = done[name]
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
        methods[name] = done[name] = run_method(registrar, *data)
        atomic_write_text(partial_file, json.dumps(done))
        m = methods[name]
        print(f"    Dice {m['dice']:.3f}  folds {m['folds_pct']:.3f}%  {m['seconds_per_pair']:.2f} s/pair", flush=True)
    return methods


def main() -> int:
    args = parse_args()
    warnings.filterwarnings("ignore")
    import torch

    from deepatlas.inference import load_run

    torch.manual_seed(0)
    run = load_run(args.model)
    pairs, volumes, classes = load_pairs(args, run.scheme)
    started = time.time()
    methods = {"identity": identity_method(pairs, volumes, classes, run.scheme)}
    data = (pairs, volumes, classes, run.scheme)
    methods.update(measure_all(make_registrars(run, args.ants, args.peers), data, args.out, args.resume))
    if not args.no_cli:
        print(f"[{time.strftime('%H:%M:%S')}] command line", flush=True)
        methods["deepatlas register (command line, default)"] = run_cli(args.model, *data, [])
    results = {
        "command": command_line(),
        "split": args.split,
        "num_pairs": len(pairs),
        "model": str(args.model),
        "refine_defaults": run.config.refine.__dict__,
        "machine": provenance(),
        "wall_minutes": round((time.time() - started) / 60, 1),
        "methods": methods,
    }
    write_tables(results, args.out)
    figure(results, args.out / "dice_vs_time.png")
    (args.out / "partial.json").unlink(missing_ok=True)  # complete: nothing left to resume
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
