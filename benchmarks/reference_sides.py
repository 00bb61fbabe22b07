"""Which ixi-2mm reference label maps have their left and right structures on the wrong sides.

Usage:
    python -m benchmarks.reference_sides [--data $DEEPATLAS_DATA/ixi-2mm]
        [--out benchmarks/results/reference_sides]

Why: the validation brain IXI638-HH-2786 made every seg net look worse on the right lateral ventricle under
synthetic atrophy; its reference map names the posterior third of the left hemisphere as right structures.
This runs the product's check (:func:`deepatlas.data.hemispheres.crossed_structures`, what ``train``,
``evaluate`` and ``morphometry`` run on every label map they read) over every ixi-2mm label map: the
flagged maps per split, and, on the maps it passes, the largest share of any structure past the margin
(how far the sound maps are from the threshold, :data:`deepatlas.data.hemispheres.MIN_SHARE`). Renders an
axial and a coronal slice of each flagged map and of a sound one, left-named structures blue, right red.

Writes ``<out>/results.{json,md,png}`` with the CPU model and commit. Seconds; no thread count matters.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.paths import data_root, parse_ixi_args
from benchmarks.provenance import command_line, provenance, provenance_line
from benchmarks.records import write_results
from deepatlas.data import hemispheres
from deepatlas.data.io import load_image, load_label_codes
from deepatlas.data.labels import LabelScheme

ROOT = Path(__file__).resolve().parents[1]


def shares(data: Path, subject: str, scheme: LabelScheme) -> dict[str, float]:
    """Per side-named structure of the subject's reference map, the share of its voxels past the margin
    (every structure, not only those over the threshold)."""
    labels = load_label_codes(data / "labels" / f"{subject}.nii.gz")
    classes = scheme.encode(labels.array, unknown="background")
    found = hemispheres.crossed_structures(classes, labels.affine, scheme, min_share=-1.0)
    return {c.name: round(c.share, 4) for c in found}


def measure(data: Path) -> dict:
    """Every split's flagged maps (with their structures' shares) and the sound maps' largest shares."""
    scheme = LabelScheme.from_file(data / "brain31.json")
    splits = json.loads((data / "splits.json").read_text())
    flagged, sound_max = {}, {}
    for split, ids in splits.items():
        for subject in ids:
            found = shares(data, subject, scheme)
            if max(found.values(), default=0.0) > hemispheres.MIN_SHARE:
                flagged.setdefault(split, {})[subject] = {k: v for k, v in found.items() if v > 0.01}
            else:
                for name, share in found.items():
                    sound_max[name] = max(sound_max.get(name, 0.0), share)
    counts = {split: len(ids) for split, ids in splits.items()}
    return {"counts": counts, "flagged": flagged, "sound_max": sound_max, "sound_example": splits["validation"][0]}


def render(data: Path, result: dict, path: Path) -> None:
    """Axial and coronal slices of each flagged map and one sound map, left-named blue, right-named red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scheme = LabelScheme.from_file(data / "brain31.json")
    side_of = np.array([{"left": 1, "right": 2}.get(s, 0) for s in scheme.sides()])
    subjects = [s for found in result["flagged"].values() for s in found] + [result["sound_example"]]
    fig, axes = plt.subplots(len(subjects), 2, figsize=(6, 3 * len(subjects)), squeeze=False)
    for row, subject in zip(axes, subjects):
        image = load_image(data / "images" / f"{subject}.nii.gz").array
        sides = side_of[
            scheme.encode(load_label_codes(data / "labels" / f"{subject}.nii.gz").array, unknown="background")
        ]
        for ax, cut, name in (
            (row[0], np.s_[:, :, image.shape[2] // 2], "axial"),
            (row[1], np.s_[:, image.shape[1] // 2, :], "coronal"),
        ):
            ax.imshow(image[cut].T, cmap="gray", origin="lower")
            ax.imshow(np.ma.masked_equal(sides[cut].T, 0), cmap="coolwarm", vmin=1, vmax=2, alpha=0.45, origin="lower")
            ax.set_title(f"{subject} {name}", fontsize=8)
            ax.axis("off")
    fig.suptitle(
        "ixi-2mm reference label maps: left-named structures blue, right-named red\n"
        "(array x grows to the subject's right)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_markdown(result: dict, path: Path) -> None:
    total = sum(result["counts"].values())
    n_flagged = sum(len(v) for v in result["flagged"].values())
    per_split = ", ".join(f"{split} {len(v)} of {result['counts'][split]}" for split, v in result["flagged"].items())
    lines = [
        "# ixi-2mm reference label maps with wrong sides (`python -m benchmarks.reference_sides`)",
        "",
        f"{provenance_line(result['machine'])} {result['seconds']:.0f} s.",
        f"Command: `{result['command']}`.",
        "",
        f"The product's check (`deepatlas.data.hemispheres`: a structure is flagged when more than "
        f"{100 * result['min_share']:.0f} % of its voxels lie more than {result['margin_mm']:g} mm past the "
        f"mid-plane on the other side) flags {n_flagged} of {total} label maps "
        f"({per_split}).",
        "",
        "| split | subject | structures past the margin (share of their voxels, over 1 %) |",
        "| --- | --- | --- |",
    ]
    for split, found in result["flagged"].items():
        for subject, by_name in found.items():
            listed = ", ".join(f"{k} {100 * v:.0f} %" for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]))
            lines.append(f"| {split} | {subject} | {listed} |")
    worst = sorted(result["sound_max"].items(), key=lambda kv: -kv[1])[:6]
    lines += [
        "",
        f"On the {total - n_flagged} maps it passes, the largest shares past the margin: "
        + ", ".join(f"{k} {100 * v:.1f} %" for k, v in worst)
        + ".",
        "",
        "![flagged maps](results.png)",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(data_root() / "ixi-2mm"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reference_sides"))
    args = parse_ixi_args(parser)
    started = time.perf_counter()
    result = {"machine": provenance(), "command": command_line(), **measure(Path(args.data))}
    result |= {"margin_mm": hemispheres.MARGIN_MM, "min_share": hemispheres.MIN_SHARE}
    result["seconds"] = time.perf_counter() - started
    Path(args.out).mkdir(parents=True, exist_ok=True)
    render(Path(args.data), result, Path(args.out) / "results.png")
    write_results(result, Path(args.out), write_markdown)


if __name__ == "__main__":
    main()
