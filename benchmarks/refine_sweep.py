"""Refinement settings on ixi-2mm's *validation* pairs (never test), from the shipped net's field.

Usage:
    python -m benchmarks.refine_sweep [--model models/brain-2mm] [--variants default,full10,...] [--out DIR]

Pairs: each validation subject to the next (9 pairs). Each variant is a list of ``--refine``
overrides scored as ``benchmarks.registration`` scores (Dice over brain31, folds and SDlogJ
in the fixed brain, median seconds per pair in process after one warm-up pair). Rows are
appended to ``<out>/refine_sweep.jsonl`` as they finish (a variant already there is skipped:
the sweep resumes) and summarised in ``<out>/refine_sweep.md`` with the CPU model and commit. Time it
alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.paths import data_root
from benchmarks.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "default (2x 20 + full 5 steps)": [],
    "2x 20 + full 10 steps": ["iterations=[20,10]"],
    "2x 40 + full 5 steps": ["iterations=[40,5]"],
    "4x 20 + 2x 20 + full 5 steps": ["levels=[4,2,1]", "iterations=[20,20,5]"],
    "default, lr 0.5": ["lr=0.5"],
    "default + anatomy term 0.1 (seg net)": ["anatomy_weight=0.1"],
    "default + anatomy term 0.3": ["anatomy_weight=0.3"],
    "default + anatomy term 1": ["anatomy_weight=1"],
    "default + anatomy term 3": ["anatomy_weight=3"],
    # with the cheaper full-resolution step (closed-form LNCC and diffusion gradients, fused Adam):
    # what more full-resolution steps buy, and with which step size and smoothness
    "2x 20 + full 15 steps": ["iterations=[20,15]"],
    "2x 20 + full 20 steps": ["iterations=[20,20]"],
    "2x 20 + full 30 steps": ["iterations=[20,30]"],
    "2x 20 + full 15 steps, lr 0.5": ["iterations=[20,15]", "lr=0.5"],
    "2x 20 + full 15 steps, diffusion 1": ["iterations=[20,15]", "regularizer_weight=1"],
    "2x 20 + full 20 steps, diffusion 1": ["iterations=[20,20]", "regularizer_weight=1"],
    "2x 10 + full 15 steps": ["iterations=[10,15]"],
    "2x 40 + full 40 steps, lr 0.5, diffusion 1": ["iterations=[40,40]", "lr=0.5", "regularizer_weight=1"],
    "2x 20 + full 10 steps, diffusion 1": ["iterations=[20,10]", "regularizer_weight=1"],
    # Adam's epsilon floor (refine.adam_eps, relative to the first gradient's RMS) against folds
    "default, Adam eps 0.1": ["adam_eps=0.1"],
    "2x 20 + full 10 steps, diffusion 1, Adam eps 0.1": ["iterations=[20,10]", "regularizer_weight=1", "adam_eps=0.1"],
    "2x 20 + full 10 steps, diffusion 1, Adam eps 0.3": ["iterations=[20,10]", "regularizer_weight=1", "adam_eps=0.3"],
    "2x 20 + full 10 steps, diffusion 0.5, Adam eps 0.3": [
        "iterations=[20,10]",
        "regularizer_weight=0.5",
        "adam_eps=0.3",
    ],
    # issue 9's full-resolution recipe (3 levels, 40 steps each, lr 0.5, diffusion 1) from the identity
    "from zero: 4x 40 + 2x 40 + full 40 steps, lr 0.5, diffusion 1": [
        "levels=[4,2,1]",
        "iterations=[40,40,40]",
        "lr=0.5",
        "regularizer_weight=1",
    ],
    # MIND-SSC descriptors (squared difference) instead of local NCC: a structure descriptor, made
    # once per image and level; its squared difference is ~20x smaller than LNCC, so is the weight
    "MIND-SSC, diffusion 0.1": ["similarity=mind", "regularizer_weight=0.1"],
    "MIND-SSC, diffusion 0.03": ["similarity=mind", "regularizer_weight=0.03"],
    "MIND-SSC, diffusion 0.3": ["similarity=mind", "regularizer_weight=0.3"],
    # another contrast (moving brain intensities inverted: dark white matter, bright CSF as in T2;
    # or remapped non-monotonically: no local linear relation, which squared LNCC would absorb),
    # registered from the identity (the net has only seen T1 pairs) with one schedule; only the
    # similarity differs. The T1 rows are the same schedule on the unchanged contrast.
    **{
        f"from zero, {contrast}: {similarity}": ["levels=[4,2,1]", "iterations=[60,60,5]", *spec]
        for contrast in ("inverted contrast", "remapped contrast", "T1")
        for similarity, spec in (
            ("LNCC", []),
            ("MI", ["similarity=mi"]),
            ("MIND-SSC, diffusion 0.1", ["similarity=mind", "regularizer_weight=0.1"]),
        )
        if not (contrast == "T1" and similarity == "MI")
    },
    # issue 35's speed bar (session 31): fewer steps from the net's field, the coarse ones cheapest
    "2x 10 + full 5 steps": ["iterations=[10,5]"],
    "2x 5 + full 5 steps": ["iterations=[5,5]"],
    "full 5 steps only": ["levels=[1]", "iterations=[5]"],
    "full 8 steps only": ["levels=[1]", "iterations=[8]"],
    "2x 20 + full 3 steps": ["iterations=[20,3]"],
    "2x 10 + full 3 steps": ["iterations=[10,3]"],
    "4x 10 + 2x 5 + full 5 steps": ["levels=[4,2,1]", "iterations=[10,5,5]"],
    "2x 10 + full 4 steps (lr 0.35)": ["iterations=[10,4]", "lr=0.35"],
}
FROM_ZERO = "from zero"  # variants named so start from the identity, without the net
CONTRASTS = ("inverted contrast", "remapped contrast")  # variants named so change the moving contrast


def change_contrast(registrar, kind: str):
    """``registrar`` fed a moving image whose brain intensities (background stays 0) are inverted
    (``inverted contrast``) or mapped through ``sin(3 pi x)`` (``remapped contrast``, x in [0, 1])."""
    import dataclasses

    import numpy as np

    def changed(moving, fixed, labels):
        x = moving.array / moving.array.max()
        mapped = 1.05 - x if kind == "inverted contrast" else 0.5 + 0.45 * np.sin(3 * np.pi * x)
        array = np.where(moving.array > 0, mapped, 0).astype(moving.array.dtype)
        return registrar(dataclasses.replace(moving, array=array), fixed, labels)

    return changed


def measure(args: argparse.Namespace, names: list[str], rows_file: Path) -> None:
    from benchmarks import registration as bench
    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.data.labels import LabelScheme
    from deepatlas.data.splits import load_splits
    from deepatlas.inference import load_run

    scheme = LabelScheme.from_file(args.data / "brain31.json")
    ids = load_splits(args.data / "splits.json")["validation"]
    pairs = list(zip(ids[:-1], ids[1:]))
    volumes = {
        i: (load_image(args.data / "images" / f"{i}.nii.gz"), load_label_codes(args.data / "labels" / f"{i}.nii.gz"))
        for i in ids
    }
    classes = {i: scheme.encode(volumes[i][1].array, unknown="background") for i in ids}
    run = load_run(args.model)
    for name in names:
        registrar = bench.pipeline_registrar(run, VARIANTS[name], use_net=not name.startswith(FROM_ZERO))
        for kind in CONTRASTS:
            if kind in name:
                registrar = change_contrast(registrar, kind)
        bench.run_method(registrar, pairs[:1], volumes, classes, scheme)  # warm-up
        result = bench.run_method(registrar, pairs, volumes, classes, scheme)
        row = {"name": name, "overrides": VARIANTS[name], "machine": provenance()}
        row |= {k: result[k] for k in ("dice", "dice_sd", "folds_pct", "sdlogj", "seconds_per_pair")}
        with rows_file.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def recorded(row: dict, key: str) -> str:
    """A row's CPU or commit: its ``machine`` record, or the flat keys of rows written before it."""
    value = row["machine"][key] if "machine" in row else row.get(key, "unknown")
    return value[:12] if key == "commit" and len(value) >= 40 else value  # older rows: the full hash


def write_table(rows_file: Path, path: Path) -> None:
    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    lines = [
        "# Refinement settings, ixi-2mm validation pairs (9), from the shipped net",
        "",
        f"Machine: {', '.join(sorted({recorded(r, 'cpu') for r in rows}))}, 2 threads. "
        f"`python -m benchmarks.refine_sweep`. Commit {', '.join(sorted({recorded(r, 'commit') for r in rows}))}.",
        "",
        "| variant | Dice | folds % | SDlogJ | s / pair |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['name']} | {r['dice']:.4f} | {r['folds_pct']:.4f} | {r['sdlogj']:.3f} | {r['seconds_per_pair']:.2f} |"
        for r in rows
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "brain-2mm")
    parser.add_argument("--variants", help="comma-separated names (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "registration")
    args = parser.parse_args()
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows_file = args.out / "refine_sweep.jsonl"
    done = set()
    if rows_file.exists():
        done = {json.loads(line)["name"] for line in rows_file.read_text().splitlines() if line.strip()}
    measure(args, [n for n in names if n not in done], rows_file)
    write_table(rows_file, args.out / "refine_sweep.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
