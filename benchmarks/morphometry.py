"""Morphometry against the truth: do structure volumes follow the reference, and a known change?

Usage:
    python -m benchmarks.morphometry [--data $DEEPATLAS_DATA/ixi-2mm] [--model models/brain-2mm]
        [--atlas-subjects 6] [--atlas-atrophy 2] [--validation 10] [--atrophy-subjects 0]
        [--cache /tmp/deepatlas-morphometry.jsonl]

Two methods, as ``morphometry`` runs them on pre-aligned brains: the shipped model's seg net
(``segment_volume``, ``--from seg``) and ``--from atlas`` with the 5 atlases :data:`ATLASES` (the first 5
ixi-2mm training subjects, fixed here) registered by the shipped model (net + refinement) and fused by
local NCC (``atlas_segment_volume``). Volumes: voxels of each brain31 class times the voxel volume (mm^3).

Measured:

- **(a) test split** (25 subjects): per structure, Pearson r, ICC(2,1) (two-way random effects, absolute
  agreement, single measure: a bias lowers it), mean and worst relative bias (method / reference - 1) of
  volumes against the reference (DLMUSE) label maps;
- **(b) the test subjects with the largest lateral ventricles** (the top quarter): the same;
- **(c) synthetic atrophy** (:func:`deepatlas.evaluation.atrophy.synthesize_atrophy`): each test brain
  and its labels deformed together by a diffeomorphism that enlarges the lateral ventricles and shrinks
  the hippocampi by :data:`STRENGTHS`; the true change is that of the reference masks warped linearly
  (partial volumes). Per method, structure and strength: the fraction of the true change recovered
  (mean measured change / mean true change, mm^3), the pooled slope of measured against true change
  (least squares through 0, all strengths), and Cohen's d between the atrophied and the original
  brains, measured and true;
- **the flag margin** of ``morphometry``: per structure, the 95th percentile over ixi-2mm *validation*
  subjects (the first ``--validation`` whose reference maps have sound sides, :mod:`benchmarks.references`)
  of |seg - atlas| / mean(seg, atlas).

The atlas path registers 5 atlases per image (seconds each on one CPU thread, where the seg net takes a
fraction of one): it runs on a subset, stated in the results (``--atlas-subjects``: the first half in split
order and the half with the largest ventricles; ``--atlas-atrophy``: the first of the test split, at every
strength). One thread (``torch.set_num_threads(1)``: the machine's 2 cores are shared). Writes
``benchmarks/results/morphometry/results.{json,md,png}`` with the CPU
model and commit; per-image volumes are cached in ``--cache`` so an interrupted run resumes (one cache file
per ``--model``: it refuses another model's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.paths import data_root
from benchmarks.provenance import provenance, provenance_line
from benchmarks.records import JsonlCache, write_results
from benchmarks.references import sound_sides
from deepatlas import options
from deepatlas.data.io import Volume, load_labelled
from deepatlas.data.labels import LabelScheme
from deepatlas.evaluation.atrophy import IMAGE_RESAMPLING, SIGMA_MM, Atrophy, synthesize_atrophy
from deepatlas.evaluation.morphometry import cohens_d
from deepatlas.inference import load_run
from deepatlas.inference.apply import atlas_segment_volume, segment_volume

ROOT = Path(__file__).resolve().parents[1]

ATLASES = ["IXI013-HH-1212", "IXI014-HH-1236", "IXI015-HH-1258", "IXI033-HH-1259", "IXI048-HH-1326"]
"""The first 5 ixi-2mm training subjects (splits.json order), the atlases of ``--from atlas``."""

STRENGTHS = [
    {"LateralVentricle-L": 0.10, "LateralVentricle-R": 0.10, "Hippocampus-L": -0.05, "Hippocampus-R": -0.05},
    {"LateralVentricle-L": 0.25, "LateralVentricle-R": 0.25, "Hippocampus-L": -0.10, "Hippocampus-R": -0.10},
    {"LateralVentricle-L": 0.50, "LateralVentricle-R": 0.50, "Hippocampus-L": -0.15, "Hippocampus-R": -0.15},
    {"LateralVentricle-L": 1.00, "LateralVentricle-R": 1.00, "Hippocampus-L": -0.20, "Hippocampus-R": -0.20},
]
"""Requested relative changes per synthetic-atrophy level (ventricles enlarge, hippocampi shrink)."""

TARGETS = list(STRENGTHS[0])


def atrophy_at(image: Volume, labels: Volume, scheme: LabelScheme, level: int, sigma_mm: float = SIGMA_MM) -> Atrophy:
    """``image`` and its ``labels`` (codes) deformed together at level ``level`` of :data:`STRENGTHS`
    (:func:`atrophy_of`)."""
    return atrophy_of(image, labels, scheme, STRENGTHS[level], sigma_mm)


def atrophy_of(
    image: Volume, labels: Volume, scheme: LabelScheme, changes: dict[str, float], sigma_mm: float = SIGMA_MM
) -> Atrophy:
    """``image`` and its ``labels`` (codes) deformed together so that each structure of ``changes`` (a name of
    ``scheme`` -> requested relative change) changes by about that much
    (:func:`deepatlas.evaluation.atrophy.synthesize_atrophy`; masks smoothed by ``sigma_mm``, in mm of the
    image's own voxel sizes)."""
    targets = {n: (scheme.codes[scheme.names.index(n)], c) for n, c in changes.items()}
    return synthesize_atrophy(image.array, labels.array.astype(np.int32), targets, list(image.spacing), sigma_mm)


METHODS = ("seg", "atlas")


def labelled(data: Path, subject: str) -> tuple[Volume, Volume]:
    """An ixi-2mm subject's image and reference label map."""
    return load_labelled(data / "images" / f"{subject}.nii.gz", data / "labels" / f"{subject}.nii.gz")


def class_volumes(scheme: LabelScheme, codes: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """mm^3 per class of ``scheme`` of the label map ``codes`` (codes outside it: background)."""
    classes = scheme.encode(np.asarray(codes), unknown="background")
    counts = np.bincount(classes.ravel().astype(np.int64), minlength=scheme.num_classes)
    unit = float(abs(np.linalg.det(affine[:3, :3])))
    return {scheme.names[k]: float(counts[k] * unit) for k in range(1, scheme.num_classes)}


class Bench:
    """The run, the atlases, the data and the cache of per-image volumes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.data = Path(args.data)
        self.run = load_run(args.model)
        if args.subvoxel_average:
            self.run.config.seg_net.subvoxel_average = args.subvoxel_average
        refine = self.run.config.refine
        self.refine = refine.volumes() if args.refine_for_volumes else refine  # as morphometry registers
        self.run.set_refinement(self.refine)
        self.scheme = self.run.scheme
        self.splits = json.loads((self.data / "splits.json").read_text())
        self.atlases = [self.labelled(s) for s in ATLASES]
        self.cache = JsonlCache(Path(args.cache))
        # volumes are cached by subject: one cache file per model and seg net reading
        seg = self.run.config.seg_net
        model = f"{self.run.path.resolve()}@mirror_average={seg.mirror_average}"
        if seg.subvoxel_average != "off":  # morphometry's quarter-voxel average (caches before it: a single pass)
            model += f"@subvoxel_average={seg.subvoxel_average}"
        if args.refine_for_volumes and refine.for_volumes:  # the atlas path's refinement (caches before it: register's)
            model += f"@refine={','.join(refine.for_volumes)}"
        if self.cache.get("model", lambda: model) != model:
            raise SystemExit(f"--cache {args.cache} holds another model's volumes; give a cache file for {args.model}")

    def labelled(self, subject: str) -> tuple[Volume, Volume]:
        return labelled(self.data, subject)

    def volumes(self, codes: np.ndarray, affine: np.ndarray) -> dict[str, float]:
        return class_volumes(self.scheme, codes, affine)

    def measure(self, key: str, image: Volume, method: str) -> dict[str, float]:
        def compute() -> dict[str, float]:
            if method == "seg":
                codes = segment_volume(self.run, image, align="off", for_volumes=True)  # as morphometry: pre-aligned
            else:
                codes = atlas_segment_volume(self.run, self.atlases, image, fusion="weighted")
            return self.volumes(codes, image.affine)

        return self.cache.get(f"{key}/{method}", compute)

    def original(self, subject: str, methods: tuple[str, ...]) -> dict:
        image, labels = self.labelled(subject)
        row = {
            "subject": subject,
            "reference": self.cache.get(f"{subject}/ref", lambda: self.volumes(labels.array, labels.affine)),
        }
        for method in methods:
            row[method] = self.measure(subject, image, method)
        return row

    def atrophied(self, subject: str, level: int, methods: tuple[str, ...]) -> dict:
        """One test brain at one atrophy level; the truth: reference volume times (1 + achieved change)."""
        key = f"{subject}/atrophy{level}@{IMAGE_RESAMPLING}"
        needed = [m for m in methods if f"{key}/{m}" not in self.cache]
        image, labels = self.labelled(subject)
        reference = self.cache.get(f"{subject}/ref", lambda: self.volumes(labels.array, labels.affine))
        synth = None
        if needed or f"{key}/truth" not in self.cache:
            synth = atrophy_at(image, labels, self.scheme, level)
        truth = self.cache.get(f"{key}/truth", lambda: {n: reference[n] * (1 + synth.changes[n]) for n in TARGETS})
        row = {"subject": subject, "level": level, "truth": truth}
        warped = Volume(synth.image, image.affine, Path(f"{key}.nii.gz")) if synth is not None else None
        for method in methods:
            row[method] = self.measure(key, warped, method)
        return row


def icc_2_1(x: np.ndarray, y: np.ndarray) -> float:
    """ICC(2,1) of two raters (Shrout and Fleiss: two-way random, absolute agreement, single measure)."""
    data = np.stack([x, y], axis=1).astype(np.float64)
    n, k = data.shape
    grand = data.mean()
    ssr = k * ((data.mean(1) - grand) ** 2).sum()
    ssc = n * ((data.mean(0) - grand) ** 2).sum()
    sse = ((data - grand) ** 2).sum() - ssr - ssc
    msr, msc, mse = ssr / (n - 1), ssc / (k - 1), sse / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    return float((msr - mse) / denominator) if denominator > 0 else float("nan")


def agreement(rows: list[dict], method: str, names: list[str]) -> dict[str, dict]:
    """Per structure: n, r, ICC(2,1), mean and worst (largest |.|, signed) relative bias against the reference."""
    rows = [r for r in rows if method in r]
    out = {}
    for name in names:
        ref = np.array([r["reference"][name] for r in rows])
        got = np.array([r[method][name] for r in rows])
        keep = ref > 0
        bias = got[keep] / ref[keep] - 1
        with np.errstate(all="ignore"):
            r = float(np.corrcoef(ref, got)[0, 1]) if len(rows) > 2 else float("nan")
        out[name] = {
            "n": len(rows),
            "r": r,
            "icc21": icc_2_1(ref, got) if len(rows) > 2 else float("nan"),
            "mean_bias": float(bias.mean()) if bias.size else float("nan"),
            "worst_bias": float(bias[np.argmax(np.abs(bias))]) if bias.size else float("nan"),
            "mean_ref_mm3": float(ref.mean()),
        }
    return out


def bootstrap_ratio(measured: np.ndarray, true: np.ndarray, draws: int = 2000) -> list[float]:
    """The 95 % interval of ``mean(measured) / mean(true)`` over the brains, by resampling the brains with
    replacement (``draws`` times, a fixed seed): how far a recovered fraction could move with other brains."""
    if len(true) < 2:
        return [float("nan"), float("nan")]
    picks = np.random.default_rng(0).integers(0, len(true), (draws, len(true)))
    ratios = measured[picks].mean(axis=1) / true[picks].mean(axis=1)
    return [float(x) for x in np.percentile(ratios, [2.5, 97.5])]


def recovery(originals: dict[str, dict], atrophied: list[dict], method: str) -> dict[str, dict]:
    """Per target structure: per level the mean true and measured change (mm^3 and %), the recovered
    fraction with its 95 % interval over the brains (:func:`bootstrap_ratio`) and Cohen's d (true and
    measured); and the pooled slope (through 0) over all levels."""
    out = {}
    for name in TARGETS:
        levels, true_all, got_all = [], [], []
        for level in range(len(STRENGTHS)):
            rows = [r for r in atrophied if r["level"] == level and method in r and method in originals[r["subject"]]]
            if not rows:
                continue
            ref0 = np.array([originals[r["subject"]]["reference"][name] for r in rows])
            got0 = np.array([originals[r["subject"]][method][name] for r in rows])
            true1 = np.array([r["truth"][name] for r in rows])
            got1 = np.array([r[method][name] for r in rows])
            true_all += list(true1 - ref0)
            got_all += list(got1 - got0)
            levels.append(
                {
                    "level": level,
                    "n": len(rows),
                    "requested": STRENGTHS[level][name],
                    "true_change": float((true1 / ref0 - 1).mean()),
                    "measured_change": float((got1 / np.maximum(got0, 1e-9) - 1).mean()),
                    "recovered": float((got1 - got0).mean() / (true1 - ref0).mean()),
                    "recovered_ci95": bootstrap_ratio(got1 - got0, true1 - ref0),
                    "d_true": cohens_d(ref0, true1) if len(rows) > 1 else float("nan"),
                    "d_measured": cohens_d(got0, got1) if len(rows) > 1 else float("nan"),
                }
            )
        true_all, got_all = np.array(true_all), np.array(got_all)
        slope = float((true_all * got_all).sum() / (true_all**2).sum()) if true_all.size else float("nan")
        out[name] = {"levels": levels, "slope": slope}
    return out


def flag_margins(rows: list[dict], names: list[str]) -> dict[str, float]:
    """Per structure: the 95th percentile over subjects of |seg - atlas| / mean(seg, atlas) (none without
    subjects: ``--validation 0``, a seg-net-only run)."""
    out = {}
    if not rows:
        return out
    for name in names:
        seg = np.array([r["seg"][name] for r in rows])
        atlas = np.array([r["atlas"][name] for r in rows])
        mean = (seg + atlas) / 2
        out[name] = float(np.percentile(np.abs(seg - atlas) / np.maximum(mean, 1e-9), 95))
    return out


def flagged(row: dict, margins: dict[str, float]) -> list[str]:
    """The structures whose seg and atlas volumes of one subject differ by more than their margin."""
    out = []
    for name, margin in margins.items():
        seg, atlas = row["seg"][name], row["atlas"][name]
        if seg + atlas > 0 and abs(seg - atlas) / ((seg + atlas) / 2) > margin:
            out.append(name)
    return out


def measure_all(bench: Bench, args: argparse.Namespace) -> dict:
    test = bench.splits["test"][: args.limit or None]
    names = list(bench.scheme.names[1:])
    refs = {s: bench.original(s, ()) for s in test}
    ventricles = {
        s: refs[s]["reference"]["LateralVentricle-L"] + refs[s]["reference"]["LateralVentricle-R"] for s in test
    }
    # the truth of a wrong-sided reference is wrong: not among the largest ventricles, nor atrophied
    sound_test, wrong_sided = sound_sides(bench.data, test, bench.scheme, "not atrophied")
    largest = sorted(sound_test, key=lambda s: -ventricles[s])[: max(2, len(test) // 4)]
    half = args.atlas_subjects // 2
    atlas_set = list(dict.fromkeys(test[: args.atlas_subjects - half] + largest[:half]))
    atrophy_atlas = sound_test[: args.atlas_atrophy]
    atlas_set = list(dict.fromkeys(atlas_set + atrophy_atlas))
    originals = {s: bench.original(s, ("seg", "atlas") if s in atlas_set else ("seg",)) for s in test}
    sound, _ = sound_sides(bench.data, bench.splits["validation"], bench.scheme)  # a wrong-sided reference
    validation = [bench.original(s, ("seg", "atlas")) for s in sound[: args.limit or args.validation]]
    atrophied = [
        bench.atrophied(s, level, ("seg", "atlas") if s in atrophy_atlas else ("seg",))
        for s in sound_test[: args.atrophy_subjects or None]
        for level in range(len(STRENGTHS))
    ]
    rows = list(originals.values())
    big = [originals[s] for s in largest]
    return {
        "structures": names,
        "atlases": ATLASES,
        "atlas_subjects": atlas_set,
        "atlas_atrophy_subjects": atrophy_atlas,
        "atrophy_subjects": len({r["subject"] for r in atrophied}),
        "wrong_sided": sorted(wrong_sided),
        "mirror_average": bench.run.config.seg_net.mirror_average,
        "subvoxel_average": bench.run.config.seg_net.subvoxel_average,
        "atlas_refine": {k: getattr(bench.refine, k) for k in ("form", "regularizer_weight")},
        "largest_ventricles": {s: ventricles[s] for s in largest},
        "test": {m: agreement(rows, m, names) for m in METHODS},
        "largest": {m: agreement(big, m, names) for m in METHODS},
        "atrophy": {m: recovery(originals, atrophied, m) for m in METHODS},
        "flag_margin": (margins := flag_margins(validation, names)),
        "flagged": {s: flagged(originals[s], margins) for s in atlas_set},
        "validation_n": len(validation),
        "points": {"originals": originals, "atrophied": atrophied},
    }


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:+.0f} %"


def _agreement_lines(block: dict, names: list[str]) -> list[str]:
    lines = [
        "| structure | seg n | seg r | seg ICC | seg bias mean / worst | atlas n | atlas r | atlas ICC "
        "| atlas bias mean / worst |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in names:
        cells = [name]
        for m in METHODS:
            a = block[m][name]
            cells += [
                str(a["n"]),
                f"{a['r']:.2f}",
                f"{a['icc21']:.2f}",
                f"{_pct(a['mean_bias'])} / {_pct(a['worst_bias'])}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    medians = [f"{np.nanmedian([a['r'] for a in block[m].values()]):.2f}" for m in METHODS]
    lines.append(f"| median r, all {len(block['seg'])} structures | | {medians[0]} | | | | {medians[1]} | | |")
    return lines


def _interval(level: dict) -> str:
    low, high = level.get("recovered_ci95", [float("nan")] * 2)
    return "" if low != low else f" ({low:.2f}-{high:.2f})"


def _atrophy_lines(result: dict) -> list[str]:
    lines = [
        "| structure | method | requested | true change | measured change | recovered (95 % interval over the "
        "brains) | Cohen's d true / measured | n |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in TARGETS:
        for m in METHODS:
            for lv in result["atrophy"][m][name]["levels"]:
                lines.append(
                    f"| {name} | {m} | {_pct(lv['requested'])} | {_pct(lv['true_change'])} | "
                    f"{_pct(lv['measured_change'])} | {lv['recovered']:.2f}{_interval(lv)} | {lv['d_true']:.2f} / "
                    f"{lv['d_measured']:.2f} | {lv['n']} |"
                )
            lines.append(
                f"| {name} | {m} | pooled slope (measured vs true change) | | | "
                f"{result['atrophy'][m][name]['slope']:.2f} | | |"
            )
    return lines


def suspect_references(originals: dict[str, dict], names: list[str]) -> dict[str, list[str]]:
    """Per test subject, its reference volumes of tissue structures (of ``names``) far from the test median
    (under a third or over 1.6 times it): label errors of the reference, which weigh on r and bias whatever
    the method measures. Ventricles are not judged (they do vary that much)."""
    found: dict[str, list[str]] = {}
    for name in [n for n in names if "Ventricle" not in n]:
        volumes = {s: r["reference"][name] for s, r in originals.items()}
        median = float(np.median(list(volumes.values())))
        for s, v in volumes.items():
            if not median / 3 <= v <= 1.6 * median:
                found.setdefault(s, []).append(f"{name} {v:.0f} mm^3")
    return found


def _outliers(result: dict, names: list[str]) -> str:
    found = suspect_references(result["points"]["originals"], names)
    if not found:
        return ""
    listed = ", ".join(f"{s} {entry}" for s, entries in found.items() for entry in entries)
    return f"Reference volumes far from the test median (under 1/3 or over 1.6 x; likely label errors): {listed}."


def _without_suspects(result: dict, names: list[str]) -> list[str]:
    """(a) again without the subjects :func:`suspect_references` names (a subject's reference map that is
    wrong in one structure is suspect in its neighbours: both such maps are also far from symmetric in
    their lateral ventricles)."""
    suspects = suspect_references(result["points"]["originals"], names)
    if not suspects:
        return []
    rows = [r for s, r in result["points"]["originals"].items() if s not in suspects]
    block = {m: agreement(rows, m, result["structures"]) for m in METHODS}  # the median r: over every structure
    return [
        f"## (a') the test split without the {len(suspects)} subjects of those reference volumes "
        f"({', '.join(suspects)})",
        "",
        *_agreement_lines(block, names),
        "",
    ]


ATROPHY_TEXT = (
    "Each brain and its labels deformed together (`deepatlas.evaluation.atrophy`: velocity = gradient of the "
    "Gaussian-smoothed (4 mm) structure mask times a strength, scaling and squaring; image by a cubic "
    "B-spline, labels nearest). True change: the reference masks warped linearly (partial volumes; the "
    "nearest-neighbour label map moves only where a voxel moves by more than half a voxel, so it lags). "
    "Recovered: mean measured change / mean true change (mm^3); Cohen's d between atrophied and original "
    "brains (independent groups)."
)
"""What section (c) of the results file measures."""


def _subjects_line(result: dict, names: list[str]) -> str:
    """Which test subjects each method measured, and which references were left out of the atrophy."""
    atlas, atrophy = result["atlas_subjects"], result["atlas_atrophy_subjects"]
    wrong = result.get("wrong_sided")
    return (
        f"The atlas path (5 registrations per image) ran on {len(atlas)} of the 25 test subjects ({', '.join(atlas)}) "
        f"and on the atrophy of {len(atrophy)} ({', '.join(atrophy)}); the seg net on all "
        f"{result['test']['seg'][names[0]]['n']} and on the atrophy of {result['atrophy_subjects']}"
        + (f" (not {', '.join(wrong)}: references with wrong sides, `benchmarks.references`)" if wrong else "")
        + (f"; mirrored inference: {result['mirror_average']}" if "mirror_average" in result else "")
        + (f"; quarter-voxel average: {result['subvoxel_average']}" if "subvoxel_average" in result else "")
        + (f"; the atlas path's refinement: {result['atlas_refine']}" if result.get("atlas_refine") else "")
        + "."
    )


def write_markdown(result: dict, path: Path) -> None:
    names = result["structures"]
    key = TARGETS + ["3rdVentricle", "Amygdala-L", "Amygdala-R"]
    key = [n for n in key if n in names]
    lines = [
        "# Morphometry against the truth (`python -m benchmarks.morphometry`)",
        "",
        f"{provenance_line(result['machine'])} "
        f"{result['minutes']:.0f} min for the last invocation (volumes cached by earlier ones reused).",
        "",
        f"Model: `{result.get('model', 'models/brain-2mm')}`. Methods: `seg` = its seg net "
        "(`morphometry --from seg`); `atlas` = `--from atlas` with 5 ixi-2mm training subjects "
        f"({', '.join(result['atlases'])}), registered by the model (net + refinement), weighted fusion. "
        "Volumes in mm^3 on the images' own 2 mm grid (MNI-aligned). ICC: ICC(2,1), "
        "absolute agreement. Bias: method / reference - 1 (mean over subjects; worst: largest |.|, signed).",
        _subjects_line(result, names),
        "",
        "## (a) ixi-2mm test split: key structures",
        "",
        *_agreement_lines(result["test"], key),
        "",
        f"All {len(names)} structures: results.json (`test`). " + _outliers(result, key),
        "",
        *_without_suspects(result, key),
        "## (b) the test subjects with the largest lateral ventricles",
        "",
        "Subjects (L + R reference, mm^3): "
        + ", ".join(f"{s} {v:.0f}" for s, v in result["largest_ventricles"].items()),
        "",
        *_agreement_lines(result["largest"], key),
        "",
        "## (c) synthetic atrophy (test brains)",
        "",
        ATROPHY_TEXT,
        "",
        *_atrophy_lines(result),
        "",
        "## Flag margin (`morphometry`'s `flag` column), ixi-2mm validation split",
        "",
        f"95th percentile over {result['validation_n']} validation subjects of |seg - atlas| / mean(seg, atlas):",
        "",
        "| structure | margin |",
        "| --- | --- |",
        *[f"| {n} | {v:.3f} |" for n, v in result["flag_margin"].items()],
        "",
        f"Flagged with these margins, the test subjects of the atlas path (of {len(names)} structures; the "
        "largest ventricles are the last three of the atlas set): "
        + "; ".join(f"{s} {len(v)} ({', '.join(v)})" for s, v in result["flagged"].items())
        + f". With {result['validation_n']} validation subjects the 95th percentile is close to their largest "
        "disagreement, so "
        "brains like the validation set's are flagged more often than 1 in 20.",
        "",
        "![measured against true volume](results.png)",
    ]
    path.write_text("\n".join(lines) + "\n")


def write_figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    originals, atrophied = result["points"]["originals"], result["points"]["atrophied"]
    fig, axes = plt.subplots(len(METHODS), len(TARGETS), figsize=(4 * len(TARGETS), 4 * len(METHODS)))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(STRENGTHS) + 1))
    for i, method in enumerate(METHODS):
        for j, name in enumerate(TARGETS):
            ax = axes[i, j]
            rows = [r for r in originals.values() if method in r]
            ax.scatter(
                [r["reference"][name] / 1000 for r in rows],
                [r[method][name] / 1000 for r in rows],
                s=12,
                color=colors[0],
                label="original",
            )
            for level in range(len(STRENGTHS)):
                rows = [r for r in atrophied if r["level"] == level and method in r]
                ax.scatter(
                    [r["truth"][name] / 1000 for r in rows],
                    [r[method][name] / 1000 for r in rows],
                    s=12,
                    color=colors[level + 1],
                    label=f"{_pct(STRENGTHS[level][name])}",
                )
            low, high = ax.get_xlim()
            ax.plot([low, high], [low, high], "k--", lw=0.8)
            ax.set_title(f"{name}, {method}")
            ax.set_xlabel("true volume (cm^3)")
            ax.set_ylabel("measured (cm^3)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(data_root() / "ixi-2mm"))
    parser.add_argument("--model", default=str(ROOT / "models" / "brain-2mm"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "morphometry"))
    parser.add_argument("--atlas-subjects", type=int, default=6, help="test subjects the atlas path measures")
    parser.add_argument("--atlas-atrophy", type=int, default=2, help="test subjects whose atrophy it measures")
    parser.add_argument("--atrophy-subjects", type=int, default=0, help="test subjects atrophied (0: all)")
    parser.add_argument("--validation", type=int, default=10, help="validation subjects for the flag margin")
    parser.add_argument("--limit", type=int, default=0, help="first N test and validation subjects (a smoke run)")
    parser.add_argument("--cache", default="/tmp/deepatlas-morphometry.jsonl", help="per-image volumes (resume)")
    parser.add_argument(
        "--subvoxel-average",
        choices=options.SUBVOXEL_AVERAGE,
        default=None,
        help="the seg net's quarter-voxel average (seg_net.subvoxel_average; default the model's: auto, on for "
        "morphometry's volumes; results before 2026-12-07's 'Volumes read at several grid phases' are a single pass)",
    )
    parser.add_argument(
        "--refine-for-volumes",
        choices=("on", "off"),
        default="on",
        help="the atlas path registers as morphometry does (on: refine.for_volumes, since 2026-12-08) or as "
        "register does (off: results before it)",
    )
    args = parser.parse_args()
    args.refine_for_volumes = args.refine_for_volumes == "on"
    torch.set_num_threads(1)
    started = time.perf_counter()
    bench = Bench(args)
    result = {"machine": provenance(), "model": str(args.model)}  # torch's threads: 1
    result |= measure_all(bench, args)
    result["minutes"] = (time.perf_counter() - started) / 60
    write_results(result, Path(args.out), write_markdown)
    write_figure(result, Path(args.out) / "results.png")


if __name__ == "__main__":
    main()
