"""Calibrating the alignment QC score: good alignments of T1 brains from other scanners vs failed ones.

Usage:
    python -m benchmarks.alignment_qc [--data $DEEPATLAS_DATA/ixi-2mm] [--heads $DEEPATLAS_DATA/ixi-heads]
        [--subjects 6] [--out DIR]

Brains of ixi-2mm's validation and training splits (never test) are changed as other scanners,
sequences and pipelines change them, then aligned to the shipped template as ``prepare`` aligns them:

- good: as shipped (pre-aligned); moved (random affine up to 20 degrees / 20 % / 20 mm) onto a
  1 mm or 1.5 mm grid with a random axis order and other field of view; the same with T1-like
  intensity remaps (random smooth monotone curves with a mild non-monotonic bump, gamma), a
  multiplicative bias field and noise; with the lower cerebellum or the top of the head cut off
  by the field of view; the whole-head scan of ixi-heads stripped by its own brain mask;
- failed: the brain flipped anterior-posterior or superior-inferior before alignment; the
  alignment found, then rotated by 30-90 degrees (a stage that stopped far off); contrast-inverted
  brains (a T2-like look: the model is T1-only); whole heads (not skull-stripped); a sphere, an
  ellipsoid, smooth noise in an ellipsoid, uniform noise;
- neither: most of the cerebellum missing (aligned well, segmented partly: a warning fits), and
  the moved brains before alignment (what ``--align auto`` must not leave as they are).

Every candidate score is computed on the same aligned images; the chosen one
(:func:`deepatlas.inference.alignment.alignment_score`) decides ``prepare --min-score`` and the
warn / refuse bounds of ``segment`` and ``register``. Writes ``results.{json,md}`` and
``scores.png`` (score per case type, thresholds drawn) under ``benchmarks/results/alignment_qc``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import binary_dilation, gaussian_filter
from scipy.stats import rankdata

from benchmarks.moved_brains import moved_grid, random_affine
from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line
from deepatlas import options
from deepatlas.data.io import Volume, load_image, load_label_codes, normalize_intensity
from deepatlas.data.splits import load_splits
from deepatlas.data.template import load_template
from deepatlas.inference import alignment as al
from deepatlas.inference.geometry import apply_affine, sample, world_coordinates

ROOT = Path(__file__).resolve().parents[1]

GOOD = ("as shipped", "moved, 1.5 mm", "other scanner, 1 mm", "cerebellum clipped", "top cropped", "stripped head")
BAD = ("AP flipped", "SI flipped", "rotated 30-90 deg", "contrast inverted", "whole head", "phantom")
OTHER = ("cerebellum missing", "moved, unaligned")
"""Neither: a scan without most of its cerebellum is aligned well but segmented partly (a warning
fits it); a raw scan before alignment is what ``--align auto`` must not leave as it is."""


# ---------------------------------------------------------------- what other scanners do to a brain


def resample_to(volume: Volume, rng: np.random.Generator, spacing: float, move: bool) -> Volume:
    """``volume`` on a grid of ``spacing`` mm with a random axis order and directions (ASL, PSR, ...),
    a field of view 10-40 mm wider than the brain, moved by a random affine when ``move``."""
    transform = random_affine(rng) if move else np.eye(4)
    axes = np.zeros((3, 3))
    axes[np.arange(3), rng.permutation(3)] = rng.choice([-1.0, 1.0], 3)
    axes *= spacing
    shape = tuple(int(n) for n in np.ceil((np.array([160, 200, 170]) + rng.uniform(10, 40, 3)) / spacing))
    shape = tuple(shape[int(np.argmax(np.abs(axes[:, k])))] for k in range(3))  # along each voxel axis
    grid, points = moved_grid(volume, transform, axes, shape)
    moved = sample(torch.from_numpy(volume.array.astype(np.float32))[None], volume.affine, points)[0].numpy()
    return Volume(moved, grid, volume.path)


def remap(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """T1-like contrast of another sequence: a random smooth monotone curve (or a gamma) with a mild
    bump, a smooth multiplicative bias field of +-15-30 %, noise in the brain; background stays 0."""
    x = normalize_intensity(array)
    brain = x > 0.02
    if rng.random() < 0.5:
        knots = np.concatenate([[0], np.cumsum(rng.uniform(0.3, 1.0, 8))])
        y = np.interp(x, np.linspace(0, 1, 9), knots / knots[-1])
    else:
        y = x ** rng.uniform(0.6, 1.6)
    centre = rng.uniform(0.3, 0.8)
    y = y + rng.uniform(0.03, 0.08) * np.exp(-(((x - centre) / 0.08) ** 2) / 2)
    field = gaussian_filter(rng.standard_normal(tuple(max(2, n // 16) for n in x.shape)), 1.0)
    field = torch.nn.functional.interpolate(
        torch.from_numpy(field / np.abs(field).max())[None, None].float(), size=x.shape, mode="trilinear"
    )[0, 0].numpy()
    y = y * np.exp(rng.uniform(0.15, 0.3) * field)
    y = y + rng.uniform(0.01, 0.04) * rng.standard_normal(x.shape).astype(np.float32)
    return np.where(brain, np.clip(y, 0.001, None), 0).astype(np.float32)


def crop(volume: Volume, axis: int, keep_below: float | None, keep_above: float | None) -> Volume:
    """Zero the voxels whose world coordinate ``axis`` is outside ``keep_above..keep_below`` (mm)."""
    world = world_coordinates(volume.array.shape, volume.affine)[axis].numpy()
    keep = np.ones_like(world, dtype=bool)
    if keep_below is not None:
        keep &= world <= keep_below
    if keep_above is not None:
        keep &= world >= keep_above
    return Volume(np.where(keep, volume.array, 0).astype(np.float32), volume.affine, volume.path)


def flipped(volume: Volume, world_axis: int) -> Volume:
    """The brain mirrored along a world axis (1: anterior-posterior, 2: superior-inferior), header kept."""
    axis = int(np.argmax(np.abs(volume.affine[world_axis, :3])))
    return Volume(np.flip(volume.array, axis).copy(), volume.affine, volume.path)


def inverted(array: np.ndarray) -> np.ndarray:
    x = normalize_intensity(array)
    return np.where(x > 0.05, 1.1 - x, 0).astype(np.float32)


def phantoms() -> dict[str, Volume]:
    grid = np.indices((120, 120, 120)).astype(np.float32) - 60
    ellipsoid = ((grid[0] / 40) ** 2 + (grid[1] / 55) ** 2 + (grid[2] / 45) ** 2 < 1).astype(np.float32)
    noise = np.random.default_rng(1).random((120, 120, 120)).astype(np.float32)
    arrays = {
        "sphere": ((grid**2).sum(0) < 50**2).astype(np.float32),
        "ellipsoid": ellipsoid,
        "smooth noise in an ellipsoid": gaussian_filter(noise, 6) * ellipsoid,
        "uniform noise": noise,
    }
    return {name: Volume(a, np.eye(4), Path(name)) for name, a in arrays.items()}


def rotation_about(centre: np.ndarray, angle: float, axis: np.ndarray) -> np.ndarray:
    """4x4 world map: a rotation by ``angle`` degrees about ``axis`` through ``centre``."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    turn = np.eye(3) + np.sin(np.radians(angle)) * k + (1 - np.cos(np.radians(angle))) * k @ k
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = turn, centre - turn @ centre
    return out


def sampled_through(volume: Volume, template: Volume, matrix: np.ndarray) -> np.ndarray:
    """``volume`` on the template grid through the world map ``matrix``, as ``align_to_template`` samples it."""
    scan = torch.from_numpy(normalize_intensity(al.antialias(volume, min(template.spacing))))[None]
    points = apply_affine(world_coordinates(tuple(template.array.shape), template.affine), matrix)
    return sample(scan, volume.affine, points)[0].numpy()


# ---------------------------------------------------------------- candidate scores


def _pooled(array: np.ndarray) -> np.ndarray:
    return al.pool_image(torch.from_numpy(array.astype(np.float32))[None, None], al.SCORE_POOLING)[0, 0].numpy()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-8))


def rank_ncc(image: np.ndarray, template: np.ndarray, pooled: bool = True, dilate: int = 1) -> float:
    """Spearman correlation inside the template's brain mask widened by ``dilate`` voxels."""
    image, template = (_pooled(image), _pooled(template)) if pooled else (image, template)
    region = binary_dilation(template > 0.1, iterations=dilate) if dilate else template > 0.1
    return _pearson(rankdata(image[region]), rankdata(template[region]))


def mask_dice(image: np.ndarray, template: np.ndarray) -> float:
    a, b = _pooled(image) > 0.1, _pooled(template) > 0.1
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def gradient_ncc(image: np.ndarray, template: np.ndarray) -> float:
    a, b = (np.linalg.norm(np.gradient(_pooled(x)), axis=0) for x in (image, template))
    return _pearson(a.ravel(), b.ravel())


def candidates(image: np.ndarray, template: np.ndarray) -> dict[str, float]:
    out = {"alignment score": al.alignment_score(image, template)}
    out["ncc (old)"] = _pearson(_pooled(image).ravel(), _pooled(template).ravel())
    out["rank ncc in mask+4mm"] = rank_ncc(image, template, dilate=1)
    out["rank ncc in mask+8mm"] = rank_ncc(image, template, dilate=2)
    out["rank ncc 2mm in mask+4mm"] = rank_ncc(image, template, pooled=False, dilate=2)
    out["mask dice"] = mask_dice(image, template)
    out["gradient ncc"] = gradient_ncc(image, template)
    out["min(rank ncc +4mm, dice)"] = min(out["rank ncc in mask+4mm"], out["mask dice"])
    return out


# ---------------------------------------------------------------- the cases


def subject_cases(image: Volume, rng: np.random.Generator) -> list[tuple[str, Volume]]:
    """Good and failed versions of one pre-aligned brain (see module doc), before alignment."""
    other = resample_to(image, rng, 1.0, move=True)
    other = Volume(remap(other.array, rng), other.affine, other.path)
    # MNI z (mm): the cerebellum spans about -70..-20, the vertex is at +75
    clip, low, high = rng.uniform(-55, -45), rng.uniform(-40, -30), rng.uniform(50, 62)
    cases = [("as shipped", image), ("moved, 1.5 mm", resample_to(image, rng, 1.5, move=True))]
    cases += [("other scanner, 1 mm", other)]
    cuts = {"cerebellum clipped": (None, clip), "cerebellum missing": (None, low), "top cropped": (high, None)}
    for case, cut in ((case, crop(image, 2, *limits)) for case, limits in cuts.items()):
        moved = resample_to(cut, rng, 1.5, move=True)
        cases.append((case, Volume(remap(moved.array, rng), moved.affine, moved.path)))
    for case, axis in (("AP flipped", 1), ("SI flipped", 2)):
        moved = resample_to(flipped(image, axis), rng, 1.5, move=True)
        cases.append((case, Volume(remap(moved.array, rng), moved.affine, moved.path)))
    moved = resample_to(image, rng, 1.5, move=True)
    cases.append(("contrast inverted", Volume(inverted(remap(moved.array, rng)), moved.affine, moved.path)))
    return cases


def head_cases(heads: Path, rng: np.random.Generator) -> list[tuple[str, Volume]]:
    """Whole heads as scanned and moved onto 1 mm grids with another contrast; the labelled head
    stripped by its brain mask (labels > 0), the same way."""
    cases = []
    for path in sorted((heads / "images").glob("*.nii.gz")):
        head = load_image(path)
        moved = resample_to(head, rng, 1.0, move=True)
        cases += [("whole head", head), ("whole head", Volume(remap(moved.array, rng), moved.affine, path))]
        label = heads / "labels" / path.name
        if label.exists():
            mask = load_label_codes(label).array > 0
            brain = Volume(np.where(mask, head.array, 0).astype(np.float32), head.affine, path)
            moved = resample_to(brain, rng, 1.0, move=True)
            cases += [("stripped head", brain), ("stripped head", Volume(remap(moved.array, rng), moved.affine, path))]
    return cases


def measure(name: str, case: str, volume: Volume, template: Volume, rng: np.random.Generator) -> list[dict]:
    """Rows of one case: its alignment's scores; for a good 1 mm one also the alignment rotated
    30-90 degrees (failed), and for a moved one its scores before alignment (``unaligned``)."""
    fixed = normalize_intensity(template.array)
    started = time.perf_counter()
    found = al.align_to_template(volume, template)
    rows = [{"case": case, "id": name, "seconds": time.perf_counter() - started} | candidates(found.image, fixed)]
    if case == "other scanner, 1 mm":
        centre = template.affine[:3, :3] @ ((np.array(fixed.shape) - 1) / 2) + template.affine[:3, 3]
        turn = rotation_about(centre, rng.uniform(30, 90) * rng.choice([-1, 1]), rng.standard_normal(3))
        image = sampled_through(volume, template, found.matrix @ turn)
        rows.append({"case": "rotated 30-90 deg", "id": name} | candidates(image, fixed))
    if case == "moved, 1.5 mm":
        image = sampled_through(volume, template, np.eye(4))
        rows.append({"case": "moved, unaligned", "id": name} | candidates(image, fixed))
    return rows


# ---------------------------------------------------------------- summary, report


def separation(rows: list[dict], score: str) -> dict:
    """Lowest good and highest failed score of a candidate, and the gap between them."""
    good = [r[score] for r in rows if r["case"] in GOOD]
    bad = [r[score] for r in rows if r["case"] in BAD]
    return {"good_min": min(good), "bad_max": max(bad), "gap": min(good) - max(bad)}


def write_markdown(result: dict, path: Path) -> None:
    machine, rows, chosen = result["machine"], result["rows"], result["chosen"]
    cases = [c for c in (*GOOD, *BAD, *OTHER) if any(r["case"] == c for r in rows)]
    lines = [
        "# Alignment QC: good alignments of other scanners' brains vs failed ones",
        "",
        f"{provenance_line(machine)} "
        f"{result['subjects']} ixi-2mm brains (validation, then training; never test) and ixi-heads. "
        "`python -m benchmarks.alignment_qc` (module doc: the cases).",
        "",
        f"Chosen: **{chosen}** (`alignment_score`). prepare `--min-score` {options.PREPARE_MIN_SCORE}; "
        f"segment / register warn below it and refuse (exit 2, unless `--force`) below "
        f"{options.ALIGNMENT_REFUSE_SCORE}. Ranks make it blind to a monotone intensity map (another scanner's "
        "T1 contrast) and scoring inside the template's brain only makes it blind to a looser or tighter brain mask; "
        "global NCC (`ncc (old)`) weighs the brain's outline, which phantoms and flipped brains share. "
        "'neither' rows are in no gap: a missing cerebellum is warned about; raw scans before alignment are "
        "for reference (`--align auto` keeps its own criterion, global NCC < 0.93, which aligns whenever in doubt).",
        "",
        "## Lowest good, highest failed score per candidate",
        "",
        "| candidate | good: min | failed: max | gap |",
        "| --- | --- | --- | --- |",
        *[
            f"| {name} | {s['good_min']:.3f} | {s['bad_max']:.3f} | {s['gap']:+.3f} |"
            for name, s in result["separation"].items()
        ],
        "",
        "## Chosen score per case type: min / median / max (n)",
        "",
        "| case | kind | min | median | max | n |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for case in cases:
        values = [r[chosen] for r in rows if r["case"] == case]
        kind = "good" if case in GOOD else "failed" if case in BAD else "neither"
        lines.append(
            f"| {case} | {kind} | {min(values):.3f} | {np.median(values):.3f} | {max(values):.3f} | {len(values)} |"
        )
    lines += ["", "![scores](scores.png)", ""]
    path.write_text("\n".join(lines))


def write_figure(result: dict, path: Path) -> None:
    from deepatlas.visualization.figures import pyplot
    from deepatlas.visualization.slices import save_figure

    plt, rows, chosen = pyplot(), result["rows"], result["chosen"]
    cases = [c for c in (*GOOD, *BAD, *OTHER) if any(r["case"] == c for r in rows)]
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for k, case in enumerate(cases):
        values = [r[chosen] for r in rows if r["case"] == case]
        colour = "tab:green" if case in GOOD else "tab:red" if case in BAD else "tab:grey"
        jitter = np.random.default_rng(k).uniform(-0.15, 0.15, len(values))
        ax.scatter(k + jitter, values, s=14, color=colour, alpha=0.8)
    for level, style, text in (
        (options.PREPARE_MIN_SCORE, "-", "min score (prepare; warn)"),
        (options.ALIGNMENT_REFUSE_SCORE, "--", "refuse (segment, register)"),
    ):
        ax.axhline(level, color="black", linestyle=style, linewidth=1)
        ax.text(len(cases) - 0.5, level + 0.01, text, ha="right", fontsize=8)
    ax.set_xticks(range(len(cases)), cases, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(chosen)
    ax.set_title("alignment score per case (green: good, red: failed)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def all_cases(args: argparse.Namespace, ids: list[str], rng: np.random.Generator):
    """``(id, case, volume)`` of every case, made one subject at a time (1 mm copies are large)."""
    for sid in ids:
        for case, volume in subject_cases(load_image(args.data / "images" / f"{sid}.nii.gz"), rng):
            yield sid, case, volume
    for case, volume in head_cases(args.heads, rng):
        yield volume.path.name.split(".")[0], case, volume
    for name, volume in phantoms().items():
        yield name, "phantom", volume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=data_root() / "ixi-2mm")
    parser.add_argument("--heads", type=Path, default=data_root() / "ixi-heads")
    parser.add_argument("--subjects", type=int, default=6, help="validation brains first, then training ones")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "alignment_qc")
    parser.add_argument(
        "--tables-only", action="store_true", help="rewrite results.md and the figure from results.json"
    )
    args = parser.parse_args()
    if args.tables_only:  # e.g. after a threshold changed: the scores are what they were
        return write_tables(json.loads((args.out / "results.json").read_text()), args.out)
    splits = load_splits(args.data / "splits.json")
    ids = (splits["validation"] + splits["train"])[: args.subjects]
    template, rng, rows = load_template(), np.random.default_rng(0), []
    for sid, case, volume in all_cases(args, ids, rng):
        rows += measure(sid, case, volume, template, rng)
        print(json.dumps(rows[-1]), flush=True)
    names = [k for k in rows[0] if k not in ("case", "id", "seconds")]
    result = {"machine": provenance(), "subjects": len(ids), "chosen": "alignment score"}
    result |= {"separation": {name: separation(rows, name) for name in names}, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    write_tables(result, args.out)


def write_tables(result: dict, out: Path) -> None:
    write_markdown(result, out / "results.md")
    write_figure(result, out / "scores.png")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
