"""White matter darkened around the ventricles: do a seg net's volumes hold on brains with aging's lesions?

Usage:
    python -m benchmarks.wm_hypointensity [--models brain-2mm=brain-2mm OTHER=RUN ...] [--widths 2 4 8]
        [--depths 0.5 1] [--split validation] [--limit 0] [--data $DEEPATLAS_DATA/ixi-2mm]
        [--out benchmarks/results/wm_hypointensity]

Why: issue 38 asks for volumes that hold on elderly brains, and elderly brains carry white-matter lesions,
most of them around the lateral ventricles; on T1 they are darker than white matter, some as dark as cortex.
The reference segmentations call them white matter. ixi-2mm has few such brains, so each validation brain is
given them: its white matter within ``--widths`` mm of the lateral ventricles (Euclidean distance, soft edge)
pulled toward ``white - depth * (white - cortex)`` (the brain's own medians over its reference white matter and
cortex; ``--depths``: 0.5 half-way, 1 as dark as cortex). Nothing else changes, so every structure's true volume
is its volume in the original brain: each model's reading of the darkened brain is compared with its reading of
the original (``morphometry --from seg``'s: ``segment_volume`` for volumes, pre-aligned brains). A uniform shell,
not the patches ``augment.hypointensity`` trains on, so a model trained with it is not scored on its own
augmentation.

Per model and setting: the mean change of the lateral ventricles, caudates, white matter and the median |change|
over all 31 structures, and the lesions' volume. Validation brains with sound references (never test: this is
for choosing). One thread; volumes only, no timing. Writes ``<out>/results.{json,md,png}`` with the CPU model and
commit.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from benchmarks.morphometry import class_volumes, labelled
from benchmarks.paths import data_root, named_runs, parse_ixi_args
from benchmarks.provenance import command_line, provenance, provenance_line
from benchmarks.records import write_results
from benchmarks.references import sound_sides
from deepatlas.data.io import Volume
from deepatlas.data.labels import LabelScheme
from deepatlas.inference import TrainedRun
from deepatlas.inference.apply import segment_volume

ROOT = Path(__file__).resolve().parents[1]
VENTRICLES = ("LateralVentricle-L", "LateralVentricle-R")
WHITE = ("CerebralWM-L", "CerebralWM-R")
CORTEX = ("Cortex-L", "Cortex-R")
SHOWN = (*VENTRICLES, "Caudate-L", "Caudate-R", *WHITE)
"""The structures whose change the table shows (brain31 names): the ventricles the lesions border, the caudates
beside them (grey matter: darkened white matter looks like them), the white matter that holds the lesions."""


def darkened(image: Volume, labels: Volume, scheme: LabelScheme, width_mm: float, depth: float) -> tuple[Volume, float]:
    """``image`` with its white matter within ``width_mm`` of the lateral ventricles darkened (the module says how)
    and the lesions' volume (ml)."""
    classes = scheme.encode(np.asarray(labels.array), unknown="background")

    def mask(names: tuple[str, ...]) -> np.ndarray:
        return np.isin(classes, [scheme.names.index(n) for n in names])

    array = np.asarray(image.array, dtype=np.float32)
    ventricles, white = mask(VENTRICLES), mask(WHITE)
    distance = ndimage.distance_transform_edt(~ventricles, sampling=image.spacing)
    region = white & (distance <= width_mm)
    soft = ndimage.gaussian_filter(region.astype(np.float32), 0.7) * white
    level_white, level_cortex = float(np.median(array[white])), float(np.median(array[mask(CORTEX)]))
    target = level_white - depth * (level_white - level_cortex)
    out = array - soft * np.clip(array - target, 0, None)
    return Volume(out, image.affine, image.path), float(region.sum() * np.prod(image.spacing) / 1000)


def read(run: TrainedRun, image: Volume) -> dict[str, float]:
    """Every structure's volume (mm^3) as ``morphometry --from seg`` reads it."""
    return class_volumes(run.scheme, segment_volume(run, image, align="off", for_volumes=True), image.affine)


def measure(models: dict[str, TrainedRun], data: Path, subjects: list[str], settings: list[tuple]) -> list[dict]:
    """One row per brain and setting (``(0, 0)``: the original): the lesions' volume and every model's volumes."""
    scheme = next(iter(models.values())).scheme
    rows = []
    for subject in subjects:
        image, labels = labelled(data, subject)
        for width, depth in [(0.0, 0.0), *settings]:
            changed, lesion_ml = darkened(image, labels, scheme, width, depth) if width else (image, 0.0)
            row = {"subject": subject, "width_mm": width, "depth": depth, "lesion_ml": lesion_ml}
            row |= {name: read(run, changed) for name, run in models.items()}
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("subject", "width_mm", "depth", "lesion_ml")}), flush=True)
    return rows


def summarize(rows: list[dict], models: list[str]) -> dict:
    """Per model and setting: the mean relative change of each structure against the model's own reading of the
    original brains, the median |change| over every structure, and the mean lesion volume."""
    out: dict = {}
    for name in models:
        originals = {r["subject"]: r[name] for r in rows if r["width_mm"] == 0}
        for width, depth in sorted({(r["width_mm"], r["depth"]) for r in rows if r["width_mm"]}):
            at = [r for r in rows if (r["width_mm"], r["depth"]) == (width, depth)]
            change = {
                s: float(np.mean([r[name][s] / max(originals[r["subject"]][s], 1e-9) - 1 for r in at]))
                for s in at[0][name]
            }
            out.setdefault(name, {})[f"{width:g} mm, depth {depth:g}"] = {
                "n": len(at),
                "lesion_ml": float(np.mean([r["lesion_ml"] for r in at])),
                "change": change,
                "median_abs_change": float(np.median(np.abs(list(change.values())))),
            }
    return out


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "# White matter darkened around the ventricles (`python -m benchmarks.wm_hypointensity`)",
        "",
        f"{provenance_line(result['machine'])} {result['minutes']:.1f} min.",
        f"Command: `{result['command']}`. Models: "
        + ", ".join(f"{n} = `{p}`" for n, p in result["models"].items())
        + f". {result['split']} brains with sound references: {len(result['subjects'])}.",
        "",
        "Each brain's white matter within the width of its lateral ventricles pulled toward `white - depth * (white "
        "- cortex)` (its own medians; depth 1: as dark as cortex), nothing else changed, so the truth is the "
        "original brain's volume. Change: each model's reading of the darkened brain over its reading of the "
        "original, minus 1 (mean over the brains); median |change| over all 31 structures.",
        "",
        "| model | darkened | lesions ml | " + " | ".join(SHOWN) + " | median \\|change\\| |",
        "| --- | --- | --- | " + " | ".join("---" for _ in SHOWN) + " | --- |",
    ]
    for name, settings in result["summary"].items():
        for setting, s in settings.items():
            cells = " | ".join(f"{100 * s['change'][n]:+.1f} %" for n in SHOWN)
            lines.append(
                f"| {name} | {setting} | {s['lesion_ml']:.0f} | {cells} | {100 * s['median_abs_change']:.1f} % |"
            )
    lines += ["", "![a darkened brain and each model's ventricles](results.png)"]
    path.write_text("\n".join(lines) + "\n")


def figure(result: dict, models: dict[str, TrainedRun], data: Path, path: Path) -> None:
    """The first brain as it is and darkened (the widest, darkest setting), each model's lateral ventricles on it
    (red) beside its reading of the original (blue outline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subject = result["subjects"][0]
    image, labels = labelled(data, subject)
    scheme = next(iter(models.values())).scheme
    width, depth = max((r["width_mm"], r["depth"]) for r in result["rows"])
    dark, _ = darkened(image, labels, scheme, width, depth)
    ventricles = [scheme.codes[scheme.names.index(n)] for n in VENTRICLES]
    z = int(np.argmax(np.isin(labels.array, ventricles).sum(axis=(0, 1))))
    fig, axes = plt.subplots(1, 1 + len(models), figsize=(3.2 * (1 + len(models)), 3.6))
    axes[0].imshow(np.rot90(np.asarray(image.array)[:, :, z]), cmap="gray")
    axes[0].set_title(f"{subject} as it is", fontsize=8)
    for ax, (name, run) in zip(axes[1:], models.items()):
        ax.imshow(np.rot90(np.asarray(dark.array)[:, :, z]), cmap="gray")
        seen = np.isin(segment_volume(run, dark, align="off", for_volumes=True)[:, :, z], ventricles)
        before = np.isin(segment_volume(run, image, align="off", for_volumes=True)[:, :, z], ventricles)
        ax.imshow(np.rot90(np.ma.masked_where(~seen, seen)), cmap="autumn", alpha=0.5)
        ax.contour(np.rot90(before), levels=[0.5], colors="deepskyblue", linewidths=0.8)
        ax.set_title(
            f"{name}: darkened {width:g} mm, depth {depth:g}\nred: its ventricles; blue: on the original", fontsize=8
        )
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(data_root() / "ixi-2mm"))
    parser.add_argument("--models", nargs="+", default=["brain-2mm=brain-2mm"], metavar="NAME=RUN")
    parser.add_argument("--widths", nargs="+", type=float, default=[2.0, 4.0, 8.0], help="mm from the ventricles")
    parser.add_argument("--depths", nargs="+", type=float, default=[0.5, 1.0], help="0: white matter, 1: cortex")
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--limit", type=int, default=0, help="the split's first N brains (0: all)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "wm_hypointensity"))
    args = parse_ixi_args(parser)
    torch.set_num_threads(1)
    started, data = time.perf_counter(), Path(args.data)
    paths, models = named_runs(parser, args.models, "--models", ("subject", "width_mm", "depth", "lesion_ml"))
    ids = json.loads((data / "splits.json").read_text())[args.split]
    subjects, _ = sound_sides(data, ids[: args.limit or None], next(iter(models.values())).scheme)
    settings = [(w, d) for w in args.widths for d in args.depths]
    rows = measure(models, data, subjects, settings)
    result = {"machine": provenance(), "command": command_line(), "models": paths, "split": args.split}
    result |= {"subjects": subjects, "rows": rows, "summary": summarize(rows, list(models))}
    result["minutes"] = (time.perf_counter() - started) / 60
    write_results(result, Path(args.out), write_markdown)
    figure(result, models, data, Path(args.out) / "results.png")


if __name__ == "__main__":
    main()
