"""Raw scans on ixi-2mm's validation split: what ``prepare`` and ``--align`` do for brains that are not pre-aligned.

Usage:
    python -m benchmarks.raw_scans [--data $DEEPATLAS_DATA/ixi-2mm] [--model models/brain-2mm] [--out DIR]

Each validation brain is also written "raw": moved by a seeded random affine (rotations up to
20 degrees, scalings up to 20 %, shifts up to 20 mm) onto a 1.5 mm grid with its axes swapped
and flipped, as a scan from another scanner position would come (``benchmarks/moved_brains.py``).
Measured per subject, for the pre-aligned and the raw copy:

- ``prepare``'s alignment to the shipped template: its score, the Dice (brain31) of the prepared
  label map with the subject's original one, seconds;
- ``segment`` with the shipped model, ``--align off`` and ``auto``: seg Dice against the labels;
- ``register`` (net + refinement, affine stage auto) of the next validation subject (pre-aligned)
  to the raw copy, ``--align off`` and ``on``: Dice and seconds.

Plus the alignment scores of volumes that are not brains (a sphere, an ellipsoid, smooth noise
inside an ellipsoid, uniform noise, a contrast-inverted brain), which ``prepare`` must reject.
Writes ``benchmarks/results/raw_scans/results.{json,md}``. Time it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from benchmarks.moved_brains import random_affine, write_moved
from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line
from benchmarks.records import write_results
from deepatlas.data.io import Volume, load_image, load_label_codes
from deepatlas.data.labels import LabelScheme
from deepatlas.data.splits import load_splits
from deepatlas.data.template import load_template
from deepatlas.evaluation.metrics import dice_per_class, finite_mean
from deepatlas.inference import load_run
from deepatlas.inference.alignment import align_to_template, labels_to_template
from deepatlas.inference.apply import RegistrationOptions, register_volumes, segment_volume
from deepatlas.options import PREPARE_MIN_SCORE

ROOT = Path(__file__).resolve().parents[1]


def dice(scheme: LabelScheme, a: np.ndarray, b: np.ndarray) -> float:
    codes = [torch.from_numpy(scheme.encode(x, unknown="background")) for x in (a, b)]
    return finite_mean(dice_per_class(*codes, scheme.num_classes))


def prepare_row(scheme, template, image: Volume, labels: Volume, original: np.ndarray) -> dict:
    started = time.perf_counter()
    alignment = align_to_template(image, template)
    prepared = labels_to_template(labels, alignment, template)
    seconds = time.perf_counter() - started
    return {"score": alignment.score, "dice": dice(scheme, prepared, original), "seconds": seconds}


def subject_rows(ctx: dict, sid: str, other: str, seed: int, folder: Path) -> dict:
    """Every measurement of one validation subject (see module doc)."""
    data, scheme, run, template = ctx["data"], ctx["scheme"], ctx["run"], ctx["template"]
    image, labels = load_image(data / "images" / f"{sid}.nii.gz"), load_label_codes(data / "labels" / f"{sid}.nii.gz")
    transform = random_affine(np.random.default_rng(seed))
    raw = load_image(write_moved(image, transform, folder / f"{sid}.nii.gz"))
    raw_labels = load_label_codes(write_moved(labels, transform, folder / f"{sid}_seg.nii.gz", "nearest"))
    row = {"id": sid}
    row["prepare_aligned"] = prepare_row(scheme, template, image, labels, labels.array)
    row["prepare_raw"] = prepare_row(scheme, template, raw, raw_labels, labels.array)
    row["segment_aligned"] = dice(scheme, segment_volume(run, image, "auto"), labels.array)
    for mode in ("off", "auto"):
        row[f"segment_raw_{mode}"] = dice(scheme, segment_volume(run, raw, mode), raw_labels.array)
    moving = load_image(data / "images" / f"{other}.nii.gz")
    moving_labels = load_label_codes(data / "labels" / f"{other}.nii.gz")
    for mode in ("off", "on"):
        started = time.perf_counter()
        result = register_volumes(run, moving, raw, moving_labels, options=RegistrationOptions("auto", mode))
        seconds = time.perf_counter() - started
        row[f"register_raw_{mode}"] = {"dice": dice(scheme, result.warped_labels, raw_labels.array), "seconds": seconds}
    return row


def non_brains(template: Volume, like: Volume) -> dict[str, float]:
    """Alignment scores of volumes that are not T1 brains (1 mm grids; the inverted brain on its own)."""
    grid = np.indices((120, 120, 120)).astype(np.float32) - 60
    ellipsoid = ((grid[0] / 40) ** 2 + (grid[1] / 55) ** 2 + (grid[2] / 45) ** 2 < 1).astype(np.float32)
    noise = np.random.default_rng(1).random((120, 120, 120)).astype(np.float32)
    inverted = np.where(like.array > 0.05, 1.1 - like.array, 0).astype(np.float32)
    volumes = {
        "sphere": (((grid**2).sum(0) < 50**2).astype(np.float32), np.eye(4)),
        "ellipsoid": (ellipsoid, np.eye(4)),
        "smooth noise in an ellipsoid": (gaussian_filter(noise, 6) * ellipsoid, np.eye(4)),
        "uniform noise": (noise, np.eye(4)),
        "contrast-inverted brain (T2-like)": (inverted, like.affine),
    }
    return {name: align_to_template(Volume(a, m, Path(name)), template).score for name, (a, m) in volumes.items()}


def prepare_figure(data: Path, sid: str, template: Volume, folder: Path, path: Path) -> Path:
    """Two rows of mid slices with the template's outline: a raw copy of ``sid`` read by world
    coordinates onto the template grid (no alignment), and the same scan after ``prepare``'s alignment."""
    from deepatlas.data.io import normalize_intensity
    from deepatlas.inference.geometry import resample
    from deepatlas.visualization.figures import planes, pyplot
    from deepatlas.visualization.prepare_qc import OUTLINE_LEVEL
    from deepatlas.visualization.slices import save_figure

    raw = load_image(
        write_moved(
            load_image(data / "images" / f"{sid}.nii.gz"),
            random_affine(np.random.default_rng(0)),
            folder / "figure.nii.gz",
        )
    )
    shape = tuple(template.array.shape)
    unaligned = resample(torch.from_numpy(normalize_intensity(raw.array))[None], raw.affine, shape, template.affine)[0]
    prepared = align_to_template(raw, template).image
    plt, outline = pyplot(), planes(normalize_intensity(template.array))
    fig, axes = plt.subplots(2, 3, figsize=(7.8, 5.6))
    for row, (title, image) in enumerate(
        (("raw scan, as its header places it", unaligned.numpy()), ("after prepare (affine to the template)", prepared))
    ):
        for ax, (name, plane) in zip(axes[row], planes(image).items()):
            ax.imshow(plane, cmap="gray", origin="lower", vmin=0, vmax=1)
            ax.contour(outline[name], levels=[OUTLINE_LEVEL], colors="red", linewidths=0.8, origin="lower")
            ax.set_title(f"{title}\n{name}" if name == "axial" else f"\n{name}", fontsize=8, loc="left")
            ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def summarize(rows: list[dict], others: dict[str, float]) -> dict:
    def values(key, sub=None):
        return [r[key][sub] if sub else r[key] for r in rows]

    out = {k: statistics.mean(values(k, "score")) for k in ("prepare_aligned", "prepare_raw")}
    out = {f"{k}_score_mean": v for k, v in out.items()}
    out |= {f"{k}_score_min": min(values(k, "score")) for k in ("prepare_aligned", "prepare_raw")}
    out |= {f"{k}_dice_mean": statistics.mean(values(k, "dice")) for k in ("prepare_aligned", "prepare_raw")}
    out["prepare_dice_min"] = min(values("prepare_raw", "dice") + values("prepare_aligned", "dice"))
    out["prepare_seconds_median"] = statistics.median(values("prepare_raw", "seconds"))
    for key in ("segment_aligned", "segment_raw_off", "segment_raw_auto"):
        out[key] = statistics.mean(values(key))
    for key in ("register_raw_off", "register_raw_on"):
        out[f"{key}_dice"] = statistics.mean(values(key, "dice"))
        out[f"{key}_seconds"] = statistics.median(values(key, "seconds"))
    out["non_brain_score_max"] = max(others.values())
    return out


def write_markdown(result: dict, path: Path) -> None:
    s, machine = result["summary"], result["machine"]
    lines = [
        "# Raw scans: prepare and --align (ixi-2mm validation split)",
        "",
        f"{provenance_line(machine)} {len(result['rows'])} validation subjects, "
        "each also written raw (random affine: up to 20 degrees, 20 %, 20 mm; 1.5 mm grid, axes swapped and "
        "flipped). `python -m benchmarks.raw_scans`.",
        "",
        "| | pre-aligned | raw |",
        "| --- | --- | --- |",
        f"| prepare: alignment score, mean (min) | {s['prepare_aligned_score_mean']:.3f} "
        f"({s['prepare_aligned_score_min']:.3f}) | {s['prepare_raw_score_mean']:.3f} "
        f"({s['prepare_raw_score_min']:.3f}) |",
        f"| prepare: Dice of the prepared labels with the originals | {s['prepare_aligned_dice_mean']:.3f} | "
        f"{s['prepare_raw_dice_mean']:.3f} (all >= {s['prepare_dice_min']:.3f}) |",
        f"| segment, `--align off` | {s['segment_aligned']:.3f} | {s['segment_raw_off']:.3f} |",
        f"| segment, `--align auto` (default) | {s['segment_aligned']:.3f} (not triggered) | "
        f"{s['segment_raw_auto']:.3f} |",
        f"| register another subject to it, `--align off` (default; affine stage auto) | - | "
        f"{s['register_raw_off_dice']:.3f} ({s['register_raw_off_seconds']:.1f} s) |",
        f"| the same, `--align on` | - | {s['register_raw_on_dice']:.3f} ({s['register_raw_on_seconds']:.1f} s) |",
        "",
        f"prepare: {s['prepare_seconds_median']:.1f} s per raw scan (median). Alignment scores of volumes that "
        f"are not T1 brains (prepare's default `--min-score` is {PREPARE_MIN_SCORE}):",
        "",
        "| volume | score |",
        "| --- | --- |",
        *[f"| {name} | {score:.3f} |" for name, score in result["non_brains"].items()],
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "brain-2mm")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "raw_scans")
    args = parser.parse_args()
    ids = load_splits(args.data / "splits.json")["validation"]
    ctx = {"data": args.data, "scheme": LabelScheme.from_file(args.data / "brain31.json")}
    ctx |= {"run": load_run(args.model), "template": load_template()}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepare_figure(args.data, ids[0], ctx["template"], Path(tmp), args.out / "prepare.png")
        rows = []
        for k, sid in enumerate(ids):
            rows.append(subject_rows(ctx, sid, ids[(k + 1) % len(ids)], k, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    others = non_brains(ctx["template"], load_image(args.data / "images" / f"{ids[0]}.nii.gz"))
    result = {"machine": provenance(), "summary": summarize(rows, others), "non_brains": others, "rows": rows}
    write_results(result, args.out, write_markdown)


if __name__ == "__main__":
    main()
