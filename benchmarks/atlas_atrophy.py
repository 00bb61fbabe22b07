"""The atlas path's volumes under several refinements, on synthetic atrophy of ixi-2mm brains (test: a check).

Usage:
    python -m benchmarks.atlas_atrophy [--subjects 9] [--split validation] [--levels 0 1 3]
        [--arms default compose-0.5 ...] [--jacobian]
        [--data $DEEPATLAS_DATA/ixi-2mm] [--out benchmarks/results/atlas_atrophy]
        [--cache /tmp/deepatlas-atlas-atrophy.jsonl]

Why: issue 38 item 3 asks for registration that expands where anatomy does. ``morphometry --from atlas``
(the 5 young atlases of :data:`benchmarks.morphometry.ATLASES` registered to the image by the shipped model,
net + refinement, fused by local NCC) measures the test split's largest ventricles 22-33 % small and
recovers about 0.6 of a synthetic enlargement (``benchmarks/results/morphometry``). The refinement's
diffusion penalty (``refine.regularizer_weight``) was chosen for Dice and smooth fields on pairs of young
brains, not for following a ventricle that doubles. Each arm (:data:`ARMS`) is a set of ``refine``
settings; every arm segments the same brains, so the table compares refinements and nothing else.

Measured per arm, on the first ``--subjects`` brains of ``--split`` (validation) whose references have sound
sides (choosing a refinement is tuning: ``--split test`` only checks, once, a setting already chosen on
validation) and their synthetic atrophy at ``--levels`` of
:data:`benchmarks.morphometry.STRENGTHS`
(:func:`deepatlas.evaluation.atrophy.synthesize_atrophy`): the fraction of the true change recovered per
target structure and level (``benchmarks.morphometry.recovery``), the bias of the original brains' volumes
against their reference label maps, the fused labels' mean Dice (31 structures) against the reference (on
the atrophied brains, the reference warped with them), the % of brain voxels where an atlas's registration
folds (original brains), and the median seconds per image (5 registrations
and the fusion).

Each arm is also read as ``morphometry``'s log-Jacobian maps would be with it (``--jacobian``): over a region,
the brain registered to each atlas as to a template and a structure's volume the integral of the Jacobian
determinant (floored as the maps are, :func:`deepatlas.evaluation.morphometry.log_jacobian`) over the atlas's label
of it, averaged over the 5 atlases; and voxel by voxel (:func:`map_quality`), each atrophied brain registered to its
own original, its log J against the deformation's own (:func:`true_growth`). ``--figure`` draws the first brain's
maps (``growth.png``).

One thread (``torch.set_num_threads(1)``). Volumes cached in ``--cache`` by subject, level and arm settings
(an interrupted run resumes). Writes ``<out>/results.{json,md}`` with the CPU model and commit.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.morphometry import (
    ATLASES,
    STRENGTHS,
    TARGETS,
    agreement,
    atrophy_at,
    class_volumes,
    labelled,
    recovery,
)
from benchmarks.paths import data_root, parse_ixi_args
from benchmarks.provenance import command_line, provenance, provenance_line
from benchmarks.records import JsonlCache, write_results
from benchmarks.references import sound_sides
from deepatlas.data.io import Volume
from deepatlas.evaluation.atrophy import IMAGE_RESAMPLING
from deepatlas.evaluation.metrics import dice_per_class
from deepatlas.evaluation.morphometry import log_jacobian
from deepatlas.inference import TrainedRun, load_run
from deepatlas.inference.apply import atlas_segment_volume, register_volumes

ROOT = Path(__file__).resolve().parents[1]

ARMS = {
    "default": {},
    "diffusion-1": {"regularizer_weight": 1.0},
    "diffusion-0.5": {"regularizer_weight": 0.5},
    "diffusion-0.25": {"regularizer_weight": 0.25},
    "diffusion-0.1": {"regularizer_weight": 0.1},
    "greedy": {"method": "greedy"},
    "greedy-sigma-1": {"method": "greedy", "greedy_sigma_grad": 1.0},
    "greedy-full-20": {"method": "greedy", "greedy_iterations": [20, 20]},
    "full-15": {"iterations": [20, 15]},
    "compose": {"form": "compose"},
    "compose-1": {"form": "compose", "regularizer_weight": 1.0},
    "compose-0.5": {"form": "compose", "regularizer_weight": 0.5},
    "compose-0.25": {"form": "compose", "regularizer_weight": 0.25},
    "flow": {"form": "flow"},
    "flow-0.5": {"form": "flow", "regularizer_weight": 0.5},
    "flow-0.25": {"form": "flow", "regularizer_weight": 0.25},
    "flow-0.1": {"form": "flow", "regularizer_weight": 0.1},
    "compose-0.5-anatomy-0.3": {"form": "compose", "regularizer_weight": 0.5, "anatomy_weight": 0.3},
    "compose-0.5-anatomy-1": {"form": "compose", "regularizer_weight": 0.5, "anatomy_weight": 1.0},
}
"""Refinement settings (``refine.*`` of the model's config) per arm: today's default, a weaker diffusion
penalty, greedy's compositive mode (follows large deformations where additive steps lag; with a narrower
smoothing of its steps, or more of them), more steps; the residual composed after the net's deformation
(``refine.form``: the penalty on the residual alone, as a displacement or a diffeomorphic flow) at several
penalties; and the composed residual pulled towards the seg net's structures too (``refine.anatomy_weight``: the soft
Dice of the two images' seg net predictions), which aligns what the log-Jacobian maps integrate over."""


def arm_run(run: TrainedRun, settings: dict) -> TrainedRun:
    """``run`` with its refinement changed by ``settings`` (its networks shared, its config untouched)."""
    refine = copy.deepcopy(run.config.refine)
    for key, value in settings.items():
        setattr(refine, key, value)
    refine.validate()
    return run.with_refinement(refine)


def true_growth(synth) -> np.ndarray:
    """The log-growth a synthetic atrophy made, on the *original* brain's grid (> 0 where tissue grew): ``-log
    det`` of its pull-back's Jacobian (on the atrophied grid) carried back by the inverse of that pull-back
    (``w = -u(x + w)``, iterated)."""
    from deepatlas.evaluation.metrics import jacobian_determinant
    from deepatlas.registration.fields import warp

    pull = torch.from_numpy(synth.displacement)[None]
    growth = -torch.log(jacobian_determinant(pull).clamp_min(1e-3))[:, None]
    inverse = -pull
    for _ in range(20):
        inverse = -warp(pull, inverse)
    return warp(growth, inverse)[0, 0].numpy()


def read_growth(run: TrainedRun, original: Volume, atrophied: Volume) -> np.ndarray:
    """The log-growth ``run`` reads as ``morphometry`` would with the original brain as its template: the
    atrophied brain registered to the original, log J on the original's grid (floored as the maps are)."""
    return log_jacobian(register_volumes(run, atrophied, original).jacobian)


def map_quality(read: np.ndarray, true: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """How a growth map reads a known growth: ``recovered``, its mean over the voxels that grew by more than 10 %
    over the truth's mean there; ``noise``, its SD over the brain the deformation left as it was."""
    grew, still = true > np.log(1.1), brain & (np.abs(true) < 0.01)
    return {"recovered": float(read[grew].mean() / true[grew].mean()), "noise": float(read[still].std())}


class Bench:
    """The model, its arms, the atlases, the data and the cache of per-image volumes and seconds."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.data = Path(args.data)
        run = load_run(args.model)
        self.scheme = run.scheme
        self.arms = {name: arm_run(run, ARMS[name]) for name in args.arms}
        self.atlases = [self.labelled(s) for s in ATLASES]
        self.cache = JsonlCache(Path(args.cache))
        self.model = f"{run.path.resolve()}@{run.step}"
        self.jacobian = args.jacobian

    def labelled(self, subject: str) -> tuple[Volume, Volume]:
        return labelled(self.data, subject)

    def volumes(self, codes: np.ndarray, affine: np.ndarray) -> dict[str, float]:
        """mm^3 of each target structure (codes outside the scheme: background)."""
        every = class_volumes(self.scheme, codes, affine)
        return {n: every[n] for n in TARGETS}

    def measure(self, key: str, image: Volume, truth: np.ndarray, arm: str) -> dict:
        """The arm's atlas-path volumes of ``image``, the seconds they took and the mean Dice of its labels
        against ``truth`` (codes; 31 structures), cached by ``key``."""

        def compute() -> dict:
            started = time.perf_counter()
            codes = atlas_segment_volume(self.arms[arm], self.atlases, image, fusion="weighted")
            seconds = time.perf_counter() - started
            pred, true = (torch.from_numpy(self.scheme.encode(c, unknown="background")) for c in (codes, truth))
            dice = float(dice_per_class(pred.long(), true.long(), self.scheme.num_classes).nanmean())
            return {"mm3": self.volumes(codes, image.affine), "seconds": seconds, "dice": dice}

        return self.cache.get(f"{self.model}/{json.dumps(ARMS[arm], sort_keys=True)}/{key}/dice", compute)

    def jacobian_volumes(self, key: str, image: Volume, arm: str) -> dict[str, float]:
        """mm^3 of each target structure of ``image`` as the arm's log-Jacobian map reads it: ``image``
        registered to each atlas (as ``morphometry`` registers a brain to its template), the Jacobian
        determinant integrated over the atlas's label of the structure, the mean over the atlases (cached)."""

        def compute() -> dict[str, float]:
            found = []
            for atlas, labels in self.atlases:
                jacobian = np.exp(log_jacobian(register_volumes(self.arms[arm], image, atlas).jacobian))
                classes = self.scheme.encode(np.asarray(labels.array), unknown="background")
                unit = float(abs(np.linalg.det(atlas.affine[:3, :3])))
                found.append({n: float(jacobian[classes == self.scheme.names.index(n)].sum()) * unit for n in TARGETS})
            return {n: float(np.mean([f[n] for f in found])) for n in TARGETS}

        return self.cache.get(f"{self.model}/{json.dumps(ARMS[arm], sort_keys=True)}/{key}/jacobian", compute)

    def growth_quality(self, key: str, brains: tuple, arm: str) -> dict[str, float]:
        """:func:`map_quality` of the arm's growth map of one brain (``brains``: the original, its atrophied copy
        and the :class:`~deepatlas.evaluation.atrophy.Atrophy` that made it), cached by ``key``."""
        image, warped, synth = brains

        def compute() -> dict[str, float]:
            read = read_growth(self.arms[arm], image, warped)
            return map_quality(read, true_growth(synth), np.asarray(image.array) > 0)

        return self.cache.get(f"{self.model}/{json.dumps(ARMS[arm], sort_keys=True)}/{key}/growth-map", compute)

    def folds(self, subject: str, image: Volume, arm: str) -> float:
        """Mean % of the brain's voxels (the skull-stripped image's foreground) where an atlas's registration to
        ``image`` folds (Jacobian <= 0), over the 5 atlases (cached)."""

        def compute() -> float:
            brain = np.asarray(image.array) > 0
            found = []
            for atlas, labels in self.atlases:
                jacobian = register_volumes(self.arms[arm], atlas, image, labels).jacobian
                found.append(100 * float((jacobian[brain] <= 0).mean()))
            return float(np.mean(found))

        return self.cache.get(f"{self.model}/{json.dumps(ARMS[arm], sort_keys=True)}/{subject}/folds", compute)

    def subject_rows(self, subject: str, levels: list[int]) -> tuple[dict, list[dict], dict]:
        """One brain: its original row (reference and every arm's volumes), a row per atrophy level (the
        truth and every arm's volumes) and every arm's (seconds, Dice) per image."""
        image, labels = self.labelled(subject)
        reference = self.volumes(labels.array, labels.affine)
        original, spent = {"subject": subject, "reference": reference}, {arm: [] for arm in self.arms}
        for arm in self.arms:
            measured = self.measure(subject, image, labels.array, arm)
            original[arm] = measured["mm3"]
            spent[arm].append((measured["seconds"], measured["dice"]))
            original.setdefault("folds", {})[arm] = self.folds(subject, image, arm)
            if self.jacobian:
                original[f"{arm}{JACOBIAN}"] = self.jacobian_volumes(subject, image, arm)
        rows = []
        for level in levels:
            synth = atrophy_at(image, labels, self.scheme, level)
            warped = Volume(synth.image, image.affine, Path(f"{subject}-atrophy{level}.nii.gz"))
            truth = {n: reference[n] * (1 + synth.changes[n]) for n in TARGETS}
            row = {"subject": subject, "level": level, "truth": truth}
            for arm in self.arms:
                measured = self.measure(f"{subject}/atrophy{level}@{IMAGE_RESAMPLING}", warped, synth.labels, arm)
                row[arm] = measured["mm3"]
                spent[arm].append((measured["seconds"], measured["dice"]))
                if self.jacobian:
                    key = f"{subject}/atrophy{level}@{IMAGE_RESAMPLING}"
                    row[f"{arm}{JACOBIAN}"] = self.jacobian_volumes(key, warped, arm)
                    row.setdefault("maps", {})[arm] = self.growth_quality(key, (image, warped, synth), arm)
            rows.append(row)
        return original, rows, spent


JACOBIAN = "/jacobian"
"""The suffix of an arm's log-Jacobian reading (:meth:`Bench.jacobian_volumes`) in the rows."""


def measure_all(bench: Bench, args: argparse.Namespace) -> dict:
    splits = json.loads((bench.data / "splits.json").read_text())
    subjects, _ = sound_sides(bench.data, splits[args.split], bench.scheme)  # not a reference with wrong sides
    subjects = subjects[: args.subjects]
    originals, atrophied, spent = {}, [], {arm: [] for arm in bench.arms}
    for subject in subjects:
        original, rows, per_image = bench.subject_rows(subject, args.levels)
        originals[subject], atrophied = original, atrophied + rows
        for arm, values in per_image.items():
            spent[arm] += values
        print(f"{subject}: done", flush=True)
    arms = {}
    for arm in bench.arms:
        bias = agreement(list(originals.values()), arm, TARGETS)
        arms[arm] = {
            "settings": ARMS[arm],
            "atrophy": recovery(originals, atrophied, arm),
            "bias": {n: bias[n]["mean_bias"] for n in TARGETS},
            "seconds_per_image": float(np.median([sec for sec, _ in spent[arm]])),
            "dice": float(np.mean([dice for _, dice in spent[arm]])),
            "folds_percent": float(np.mean([o["folds"][arm] for o in originals.values()])),
        }
        if bench.jacobian:
            bias = agreement(list(originals.values()), arm + JACOBIAN, TARGETS)
            arms[arm]["jacobian"] = {
                "atrophy": recovery(originals, atrophied, arm + JACOBIAN),
                "bias": {n: bias[n]["mean_bias"] for n in TARGETS},
                "maps": {
                    str(level): {
                        k: float(np.mean([r["maps"][arm][k] for r in atrophied if r["level"] == level]))
                        for k in ("recovered", "noise")
                    }
                    for level in args.levels
                },
            }
    points = {"originals": originals, "atrophied": atrophied}
    return {
        "split": args.split,
        "subjects": subjects,
        "levels": args.levels,
        "atlases": ATLASES,
        "arms": arms,
        "points": points,
    }


def _recovered_cells(block: dict, levels: list[int]) -> list[str]:
    """Per level, the recovered fraction of LV-L / LV-R / Hip-L / Hip-R of one reading (``atrophy``)."""
    cells = []
    for level in levels:
        found = [[x["recovered"] for x in block["atrophy"][n]["levels"] if x["level"] == level] for n in TARGETS]
        cells.append(" / ".join(f"{f[0]:.2f}" if f else "n/a" for f in found))
    return cells


def _bias_cell(block: dict) -> str:
    return " / ".join(f"{100 * block['bias'][n]:+.0f} %" for n in TARGETS)


def _table(intro: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A paragraph and a markdown table under it."""
    lines = ["", intro, "", "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _jacobian_table(result: dict, requested: list[str]) -> list[str]:
    """The log-Jacobian readings' tables (:meth:`Bench.jacobian_volumes`, :meth:`Bench.growth_quality`), where
    they were measured."""
    arms = {arm: block for arm, block in result["arms"].items() if "jacobian" in block}
    if not arms:
        return []
    over_labels = _table(
        "Each brain registered to each atlas as to a template; a structure's volume: the Jacobian determinant "
        "(floored as the maps are) integrated over the atlas's label of it, mean over the 5 atlases. Recovered and "
        "bias as above.",
        ["arm", *(f"recovered at {r}" for r in requested), "bias", "folds %"],
        [
            [
                arm,
                *_recovered_cells(b["jacobian"], result["levels"]),
                _bias_cell(b["jacobian"]),
                f"{b['folds_percent']:.3f}",
            ]
            for arm, b in arms.items()
        ],
    )
    voxels = _table(
        "Growth maps, voxel by voxel: each atrophied brain registered to its own original as to a template (as "
        "`morphometry` registers a brain), the log-growth read (log J, on the original's grid) against the "
        "deformation's own. Recovered: the mean read over the voxels that grew by more than 10 %, over the truth's "
        "mean there; noise: the SD of the read growth over the brain that did not change (0 for a perfect map).",
        ["arm", *(f"recovered / noise at {r}" for r in requested)],
        [
            [arm, *(f"{m[str(lv)]['recovered']:.2f} / {m[str(lv)]['noise']:.3f}" for lv in result["levels"])]
            for arm, m in ((arm, b["jacobian"]["maps"]) for arm, b in arms.items())
        ],
    )
    return ["", "## The same refinements read as `morphometry`'s log-Jacobian maps", *over_labels, *voxels]


def write_markdown(result: dict, path: Path) -> None:
    names = "LV-L / LV-R / Hip-L / Hip-R"
    levels, split = result["levels"], result.get("split", "validation")
    requested = [" ".join(f"{100 * STRENGTHS[lv][n]:+.0f} %" for n in (TARGETS[0], TARGETS[2])) for lv in levels]
    lines = [
        f"# The atlas path under several refinements: synthetic atrophy of ixi-2mm {split} brains "
        "(`python -m benchmarks.atlas_atrophy`)",
        "",
        f"{provenance_line(result['machine'])} {result['minutes']:.1f} min for the last invocation.",
        f"Command: `{result['command']}`.",
        "",
        f"{len(result['subjects'])} {split} subjects ({', '.join(result['subjects'])}); atlases: the 5 of "
        f"`morphometry --from atlas` ({', '.join(result['atlases'])}), registered by the shipped model (net + "
        f"refinement as the arm says), weighted fusion. Recovered: mean measured / mean true change of {names} "
        f"per requested strength (ventricles, hippocampi). Bias: mean atlas / reference - 1 of {names} on the "
        "original brains. Dice: mean over the brains (original and atrophied) of the fused labels' mean Dice over 31 "
        "structures against the reference labels (warped with the brain). Folds: mean % of the brain's voxels where "
        "an atlas's registration to an original brain folds (Jacobian <= 0). Seconds: median per image (5 "
        "registrations and the fusion), one thread.",
        "",
        "| arm | refine settings | "
        + " | ".join(f"recovered at {r}" for r in requested)
        + " | bias | Dice | folds % | s / image |",
        "| --- | --- | " + " | ".join("---" for _ in levels) + " | --- | --- | --- | --- |",
    ]
    for arm, block in result["arms"].items():
        cells = _recovered_cells(block, levels)
        settings = ", ".join(f"{k}={v}" for k, v in block["settings"].items()) or "(default)"
        tail = f" | {_bias_cell(block)} | {block['dice']:.3f} | {block['folds_percent']:.3f} | "
        lines.append(f"| {arm} | {settings} | " + " | ".join(cells) + tail + f"{block['seconds_per_image']:.1f} |")
    path.write_text("\n".join(lines + _jacobian_table(result, requested)) + "\n")


def growth_maps(bench: Bench, subject: str, level: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """One brain and its synthetic atrophy at ``level``: the true log-growth (:func:`true_growth`), each arm's
    reading of it (:func:`read_growth`), both on the original's grid, and the original image."""
    image, labels = bench.labelled(subject)
    synth = atrophy_at(image, labels, bench.scheme, level)
    warped = Volume(synth.image, image.affine, Path(f"{subject}-atrophy{level}.nii.gz"))
    arms = {arm: read_growth(bench.arms[arm], image, warped) for arm in bench.arms}
    return true_growth(synth), arms, np.asarray(image.array)


def write_growth_figure(bench: Bench, subject: str, level: int, path: Path) -> None:
    """``growth_maps`` of one brain as a row of axial slices through the ventricles (> 0: the tissue grew)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true, arms, image = growth_maps(bench, subject, level)
    z = int(np.argmax((true > 0.1).sum(axis=(0, 1))))  # the slice where most of the growth is
    still = (image > 0) & (np.abs(true) < 0.01)  # brain the deformation left as it was
    panels = {"truth": true, **arms}
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.3))
    for ax, (name, growth) in zip(np.atleast_1d(axes), panels.items()):
        ax.imshow(np.rot90(image[:, :, z]), cmap="gray")
        ax.imshow(np.rot90(growth[:, :, z]), cmap="RdBu_r", vmin=-1, vmax=1, alpha=0.7)
        settings = ", ".join(f"{k}={v}" for k, v in ARMS.get(name, {}).items()) or "register's refinement"
        title = name if name == "truth" else f"{name}\n{settings}\nSD where nothing grew: {growth[still].std():.3f}"
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    requested = STRENGTHS[level][TARGETS[0]]
    fig.suptitle(
        f"log growth (red: larger) of {subject} with its ventricles {100 * requested:+.0f} %, read by registering "
        "it to the original brain",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(data_root() / "ixi-2mm"))
    parser.add_argument("--model", default="brain-2mm")
    parser.add_argument("--subjects", type=int, default=9, help="first N subjects of --split with sound references")
    parser.add_argument(
        "--split",
        default="validation",
        choices=["validation", "test"],
        help="test: only to check, once, a setting already chosen on validation",
    )
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 1, 3], choices=range(len(STRENGTHS)))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument(
        "--jacobian", action="store_true", help="also read each arm's volumes from its Jacobian (5 more registrations)"
    )
    parser.add_argument(
        "--figure",
        action="store_true",
        help="also growth.png: each arm's growth map of the first brain (1 registration)",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "atlas_atrophy"))
    parser.add_argument("--cache", default="/tmp/deepatlas-atlas-atrophy.jsonl", help="per-image volumes (resume)")
    args = parse_ixi_args(parser)
    started = time.perf_counter()
    result = {"machine": provenance(), "command": command_line()}
    result |= measure_all(bench := Bench(args), args)
    result["minutes"] = (time.perf_counter() - started) / 60
    write_results(result, Path(args.out), write_markdown)
    if args.figure:
        write_growth_figure(bench, result["subjects"][0], max(args.levels), Path(args.out) / "growth.png")


if __name__ == "__main__":
    main()
