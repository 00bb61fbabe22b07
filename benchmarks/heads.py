"""Whole-head scans: how ``--strip auto`` tells a head from a brain, and what stripping buys.

Usage:
    python -m benchmarks.heads [--data $DEEPATLAS_DATA] [--model models/brain-2mm]

Measured:

- the auto criterion (:func:`deepatlas.inference.strip.foreground_ml`, filled foreground in mL) on
  every ixi-2mm brain (skull-stripped, MNI space) and every ixi-heads head, against
  :data:`~deepatlas.inference.strip.HEAD_MIN_ML`;
- deepbet's brain mask of each head that has a label map, Dice against the label map's brain
  (labels > 0), and the seconds it took (model loading excluded);
- the shipped model's segmentation Dice (brain31) of such a head as ``segment`` does it by default
  (``--strip auto --align auto``), as it is (``--strip off``), and of the same subject pre-aligned in
  ixi-2mm, each against its own DLMUSE map on its own grid.

Writes ``benchmarks/results/raw_scans/heads.{json,md}`` with the CPU model and commit. Seconds
are indicative unless the machine was otherwise idle.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line
from benchmarks.records import write_results
from deepatlas.data.io import load_image, load_label_codes
from deepatlas.evaluation.metrics import dice_per_class, finite_mean
from deepatlas.inference import load_run
from deepatlas.inference.apply import segment_volume
from deepatlas.inference.strip import HEAD_MIN_ML, brain_mask, foreground_ml, strip

ROOT = Path(__file__).resolve().parents[1]


def seg_dice(run, a: np.ndarray, b: np.ndarray) -> float:
    codes = [torch.from_numpy(run.scheme.encode(x, unknown="background")) for x in (a, b)]
    return finite_mean(dice_per_class(*codes, run.scheme.num_classes))


def criterion(data: Path) -> dict:
    """The auto criterion over every brain and head."""
    brains = [foreground_ml(load_image(p)) for p in sorted((data / "ixi-2mm" / "images").iterdir())]
    heads = {p.name: foreground_ml(load_image(p)) for p in sorted((data / "ixi-heads" / "images").iterdir())}
    return {
        "threshold_ml": HEAD_MIN_ML,
        "brains": {"n": len(brains), "min": min(brains), "median": float(np.median(brains)), "max": max(brains)},
        "heads": heads,
        "brains_stripped_by_auto": sum(b > HEAD_MIN_ML for b in brains),
        "heads_left_by_auto": sum(h <= HEAD_MIN_ML for h in heads.values()),
    }


def head_row(run, data: Path, name: str) -> dict:
    """Mask Dice, strip seconds and seg Dice of one labelled head (see the module doc)."""
    head = load_image(data / "ixi-heads" / "images" / name)
    truth = load_label_codes(data / "ixi-heads" / "labels" / name).array
    brain_mask(head)  # loads deepbet's networks: not part of a scan's time
    started = time.perf_counter()
    stripped, report = strip(head, "auto")
    seconds = time.perf_counter() - started
    mask_dice = 2 * (report.mask & (truth > 0)).sum() / (report.mask.sum() + (truth > 0).sum())
    pre = load_image(data / "ixi-2mm" / "images" / name)
    pre_truth = load_label_codes(data / "ixi-2mm" / "labels" / name).array
    return {
        "subject": name,
        "mask_dice": float(mask_dice),
        "strip_seconds": round(seconds, 2),
        "seg_dice_default": seg_dice(run, segment_volume(run, stripped, "auto"), truth),
        "seg_dice_unstripped": seg_dice(run, segment_volume(run, head, "auto"), truth),
        "seg_dice_prealigned": seg_dice(run, segment_volume(run, pre, "auto"), pre_truth),
    }


def write_markdown(result: dict, path: Path) -> None:
    c = result["criterion"]
    lines = [
        "# Whole-head scans: detection and brain extraction (`python -m benchmarks.heads`)",
        "",
        provenance_line(result["machine"]),
        "",
        f"`--strip auto` criterion, filled foreground (mL), threshold {c['threshold_ml']:.0f}:",
        f"- ixi-2mm brains (n={c['brains']['n']}, skull-stripped, MNI space): {c['brains']['min']:.0f} - "
        f"{c['brains']['max']:.0f} (median {c['brains']['median']:.0f}); "
        f"stripped by auto: {c['brains_stripped_by_auto']}",
        "- ixi-heads: " + ", ".join(f"{k} {v:.0f}" for k, v in c["heads"].items()) + f"; left by auto: "
        f"{c['heads_left_by_auto']}",
        "",
        "| head | mask Dice | strip s | seg Dice, default (strip + align auto) | seg Dice, --strip off "
        "| seg Dice, same subject pre-aligned (ixi-2mm) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["heads"]:
        lines.append(
            f"| {r['subject']} | {r['mask_dice']:.3f} | {r['strip_seconds']} | {r['seg_dice_default']:.3f} | "
            f"{r['seg_dice_unstripped']:.3f} | {r['seg_dice_prealigned']:.3f} |"
        )
    lines += [
        "",
        "Seconds: indicative (other work ran on the 2 cores). Seg Dice: mean over brain31's structures, "
        "each image against its own DLMUSE map on its own grid "
        "(the head's map on the head's grid; ixi-2mm's map resampled to MNI with its image).",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(data_root()))
    parser.add_argument("--model", default=str(ROOT / "models" / "brain-2mm"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "raw_scans"))
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    run = load_run(args.model)
    labelled = sorted(p.name for p in (data / "ixi-heads" / "labels").iterdir())
    result = {
        "machine": provenance(),
        "criterion": criterion(data),
        "heads": [head_row(run, data, name) for name in labelled],
    }
    write_results(result, out, write_markdown, name="heads")


if __name__ == "__main__":
    main()
