"""``prepare``: a folder of raw scans -> an aligned dataset that ``train`` reads, with a QC page."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepatlas import options
from deepatlas.cli.apply_args import strip_flag
from deepatlas.cli.workers import run_jobs
from deepatlas.data import DataError

DESCRIPTION = (
    "Align every scan of RAW affinely to the template (default: the one shipped with deepatlas, the "
    "mean of ixi-2mm's training brains: 2 mm, 80x96x80, MNI space, the grid of models/brain-2mm), "
    "resample it (and its label map, by label interpolation) onto the template grid with intensities "
    "normalised to 0..1, and write DATASET/images, DATASET/labels, manifest.json and a QC page "
    "(qc/index.html). Scans that cannot be read, are not 3D, or align poorly are listed with the reason, "
    "never silently dropped; the rest go on. A re-run skips subjects already prepared from the same files. "
    "Expects T1 scans: skull-stripped brains, or whole heads, which are brain-extracted first (--strip)."
)


def _load_template(args: argparse.Namespace):
    from deepatlas.data.template import load_template

    return load_template(args.template)


def _prepare_and_render(template, job) -> None:
    """One subject: prepare it, then draw its QC row (a worker's job: module level, picklable)."""
    from deepatlas.data.io import load_image, load_label_codes, normalize_intensity
    from deepatlas.inference.prepare_dataset import PreparedDataset, prepare_subject
    from deepatlas.visualization.prepare_qc import qc_figure

    record = prepare_subject(template, job)
    dataset = PreparedDataset(job.output)
    if record["status"] == "failed":
        dataset.qc_image(record["id"]).unlink(missing_ok=True)
        return
    image = load_image(dataset.root / record["image"]).array
    mask = load_label_codes(dataset.root / record["mask"]).array if record.get("mask") else None
    title = f"{record['id']}: {record['status']}, score {record['score']:.3f}"
    qc_figure(image, normalize_intensity(template.array), title, dataset.qc_image(record["id"]), mask)


def _check_folders(raw: Path, output: Path) -> None:
    raw, output = raw.resolve(), output.resolve()
    if raw.is_dir() and (output == raw or raw in output.parents):
        raise DataError(f"{output}: the output folder is inside RAW ({raw}); choose one outside it")


def cmd_prepare(args: argparse.Namespace) -> int:
    from deepatlas.inference.prepare_dataset import (
        PreparedDataset,
        PrepareJob,
        PrepareSettings,
        find_raw_subjects,
        is_done,
        write_manifest,
    )
    from deepatlas.visualization.prepare_qc import qc_page

    settings = PrepareSettings(args.template, args.min_score, args.strip)
    settings.validate()
    _check_folders(Path(args.raw), Path(args.output))
    subjects = find_raw_subjects(args.raw)
    jobs = [PrepareJob(subject, str(args.output), settings) for subject in subjects]
    todo = [job for job in jobs if args.redo or not is_done(job)]
    if len(todo) < len(jobs):
        print(f"{len(jobs) - len(todo)} of {len(jobs)} subject(s) already prepared from the same files: skipped")
    if todo:
        _load_template(args)  # a bad --template fails here, once, not in every job
        run_jobs(args, todo, _prepare_and_render, _load_template, "prepare")
    dataset = PreparedDataset(args.output)
    groups = write_manifest(dataset, subjects, settings)
    images = {s.id: dataset.qc_image(s.id) for s in subjects}
    qc_page([r for rows in groups.values() for r in rows], images, dataset.qc_page, settings.min_score)
    _print_summary(groups, dataset)
    return 0 if groups["ok"] else 1


def _print_summary(groups: dict[str, list], dataset) -> None:
    print(f"{len(groups['ok'])} subject(s) prepared in {dataset.root}/images (manifest.json, QC: {dataset.qc_page})")
    for title, key in (("rejected (in rejected/, not used for training)", "poor"), ("failed", "failed")):
        if groups[key]:
            print(f"{len(groups[key])} {title}:")
            for record in groups[key]:
                print(f"  {record['id']}: {record['reason']}")
    if groups["ok"]:
        print(f"train on it: deepatlas train --dataset {dataset.root} -o RUN")


def add_command(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="raw scans (any orientation, spacing) -> a dataset aligned to the template, with a QC page",
        description=DESCRIPTION,
    )
    p.add_argument(
        "raw",
        help="folder of scans (searched recursively; label maps beside them named <id>_seg.nii.gz), "
        "a dataset folder with images/ (+ labels/), or a JSON manifest",
    )
    p.add_argument("-o", "--output", required=True, help="dataset folder to write (outside RAW)")
    p.add_argument("--template", metavar="IMAGE", help="align to this image instead of the shipped template")
    p.add_argument(
        "--min-score",
        type=float,
        default=options.PREPARE_MIN_SCORE,
        help=f"reject subjects whose alignment score (rank correlation with the template inside its brain, "
        f"at 4 mm) is below this (default {options.PREPARE_MIN_SCORE}; aligned T1 brains of any scanner score "
        f"0.87-0.94, whole heads, flipped brains and non-brain volumes 0.78 or less)",
    )
    strip_flag(p)
    p.add_argument("--redo", action="store_true", help="prepare every subject again, even those already done")
    p.add_argument("--workers", type=int, default=1, help="processes working through the scans")
    p.set_defaults(func=cmd_prepare)
