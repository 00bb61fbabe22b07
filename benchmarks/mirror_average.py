"""Mirrored inference (``seg_net.mirror_average``): the seg net's Dice and time with and without it.

Usage:
    python -m benchmarks.mirror_average [--model brain-2mm] [--splits validation test]
        [--data $DEEPATLAS_DATA/ixi-2mm] [--out benchmarks/results/mirror_average]

Why: every seg net here measured the hippocampus on the array's right side with less of a synthetic change
than the same hippocampus mirrored to the left (docs/results.md, "Reference label maps with wrong sides"): a
net is not mirror-symmetric even when trained on mirrored images. Averaging its probabilities with those of
the mirrored image (each class read from its twin's row, ``deepatlas.inference.apply.seg_probabilities``)
makes it so, as nnU-Net's default mirroring does, at twice the seg net's time. Chosen on the validation
split; the test split is reported once, after.

Per split (subjects whose reference label maps have sound sides, :mod:`benchmarks.references`), per brain:
the mean Dice over 31 structures of ``segment_volume`` (pre-aligned brains, ``align="off"``) against the
reference, off and on, and the median seconds per brain of each. Two threads; time it alone. Writes
``<out>/results.{json,md}`` with the CPU model and commit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.paths import data_root, parse_ixi_args
from benchmarks.provenance import command_line, provenance, provenance_line
from benchmarks.records import write_results
from benchmarks.references import sound_sides
from deepatlas.data.io import load_labelled
from deepatlas.evaluation.metrics import dice_per_class, finite_mean
from deepatlas.inference import TrainedRun, load_run
from deepatlas.inference.apply import segment_volume

ROOT = Path(__file__).resolve().parents[1]
MODES = ("off", "on")


def score(run: TrainedRun, data: Path, subject: str) -> dict:
    """One brain's Dice and seconds with mirrored inference off and on."""
    image, labels = load_labelled(data / "images" / f"{subject}.nii.gz", data / "labels" / f"{subject}.nii.gz")
    reference = torch.from_numpy(run.scheme.encode(labels.array, unknown="background")).long()
    row = {"subject": subject}
    for mode in MODES:
        run.config.seg_net.mirror_average = mode
        started = time.perf_counter()
        codes = segment_volume(run, image, align="off")
        seconds = time.perf_counter() - started
        pred = torch.from_numpy(run.scheme.encode(codes, unknown="background")).long()
        row[mode] = {"dice": finite_mean(dice_per_class(pred, reference, run.scheme.num_classes)), "seconds": seconds}
    return row


def summarize(rows: list[dict]) -> dict:
    gain = np.array([r["on"]["dice"] - r["off"]["dice"] for r in rows])
    out = {mode: {"dice": float(np.mean([r[mode]["dice"] for r in rows]))} for mode in MODES}
    for mode in MODES:
        out[mode]["seconds"] = statistics.median(r[mode]["seconds"] for r in rows)
    return out | {"gain": float(gain.mean()), "wins": int((gain > 0).sum()), "n": len(rows)}


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "# Mirrored inference: the seg net's Dice with and without it (`python -m benchmarks.mirror_average`)",
        "",
        f"{provenance_line(result['machine'])} {result['minutes']:.1f} min.",
        f"Command: `{result['command']}`. Model: `{result['model']}`.",
        "",
        "Mean Dice over 31 structures of `segment_volume` (pre-aligned brains) against the reference label maps "
        "(those with sound sides); seconds: median per brain, the seg net's pass(es), resampling and label "
        "decoding included.",
        "",
        "| split | brains | Dice, off | Dice, mirrored | gain | gaining | s / brain, off | s / brain, mirrored |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for split, s in result["splits"].items():
        lines.append(
            f"| {split} | {s['n']} | {s['off']['dice']:.4f} | {s['on']['dice']:.4f} | {s['gain']:+.4f} | "
            f"{s['wins']} / {s['n']} | {s['off']['seconds']:.2f} | {s['on']['seconds']:.2f} |"
        )
    left_out = [f"{split}: {', '.join(ids)}" for split, ids in result["left_out"].items() if ids]
    if left_out:
        lines += ["", f"Left out, their references' sides: {'; '.join(left_out)}."]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(data_root() / "ixi-2mm"))
    parser.add_argument("--model", default="brain-2mm")
    parser.add_argument("--splits", nargs="+", default=["validation", "test"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mirror_average"))
    args = parse_ixi_args(parser)
    torch.set_num_threads(2)  # the seconds are a user's, who has the machine's cores: time it alone
    started, data = time.perf_counter(), Path(args.data)
    run = load_run(args.model)
    splits = json.loads((data / "splits.json").read_text())
    result = {"machine": provenance(), "command": command_line(), "model": args.model, "splits": {}, "left_out": {}}
    result["rows"] = {}
    for split in args.splits:
        kept, left_out = sound_sides(data, splits[split], run.scheme)
        result["left_out"][split] = sorted(left_out)
        result["rows"][split] = [score(run, data, subject) for subject in kept]
        result["splits"][split] = summarize(result["rows"][split])
    result["minutes"] = (time.perf_counter() - started) / 60
    write_results(result, Path(args.out), write_markdown)


if __name__ == "__main__":
    main()
