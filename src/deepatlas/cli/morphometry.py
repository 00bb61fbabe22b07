"""``morphometry``: structure volumes and log-Jacobian maps of many images, and group differences."""

from __future__ import annotations

import argparse
import math

from deepatlas import options
from deepatlas.cli.apply import expand_inputs, load_run_from_args, output_lock
from deepatlas.cli.apply_args import DEVICE_HELP, RUN_HELP, overwrite_flag, seg_averaging_flags, unknown_labels_flag
from deepatlas.cli.workers import run_jobs
from deepatlas.data import DataError

TEMPLATE_HELP = (
    "reference image defining atlas space (log-Jacobian maps are on its grid). Default: the voxel-wise "
    "mean of the inputs (intensities normalised, on the first image's grid), written as template.nii.gz: "
    "no subject or group is favoured, which a subject template would be. Inputs must be pre-aligned as the "
    "model's training images were (e.g. affinely to MNI)"
)


def cmd_morphometry(args: argparse.Namespace) -> int:
    from deepatlas.evaluation.morphometry import (
        check_atlases,
        measure_subject,
        plan_morphometry,
        start_outputs,
        summarize,
    )
    from deepatlas.evaluation.volume_range import read_volume_range
    from deepatlas.visualization.morphometry import morphometry_figures

    if args.source == "atlas" and not args.atlas:
        raise DataError("--from atlas needs --atlas IMAGE LABELS (one or more)")
    images, skipped = expand_inputs(args.images)
    cross_check = args.source == "seg"  # --atlas with the seg net: the atlases check its volumes (flag)
    plan = plan_morphometry(images, args.output, args.template, args.groups, args.atlas, args.fusion, cross_check)
    _check_outputs(plan, args, skipped)
    run = load_run_from_args(args)
    if plan.atlases is not None:
        check_atlases(run, plan.atlases)
    _check_refinements(run, plan.atlases is not None)
    with output_lock(args):
        start_outputs(plan, args.overwrite)
        loader = (lambda _args: run) if args.workers <= 1 else load_run_from_args
        run_jobs(args, plan.jobs(), measure_subject, loader, "morphometry")
        ranges = read_volume_range(run.folder.volume_range)
        result = summarize(plan, run.scheme, run.config.data.unknown_labels, ranges)
        morphometry_figures(result, plan.output)
    print(
        f"{len(plan.subjects)} subject(s) in {plan.output}/: volumes.csv (mm^3), <id>_{plan.suffix}.nii.gz, "
        + ("<id>_atlas_seg.nii.gz (the atlases' check: volumes.csv's flag), " if plan.cross_check else "")
        + "<id>_logjac.nii.gz (log det J on the template grid, > 0: subject larger than the template), morphometry.png"
    )
    if result.differences:
        _print_differences(result, len(plan.subjects))
    return 0


def _check_refinements(run, atlases: bool) -> None:
    """The registrations run: ``refine.for_maps`` (the log-Jacobian maps) and, with atlases,
    ``refine.for_volumes``, each followed by ``--refine``."""
    for preset, apply in (("for_maps", run.for_maps), ("for_volumes", run.for_volumes))[: 1 + atlases]:
        try:
            apply()
        except ValueError as err:
            what = "the atlases register" if preset == "for_volumes" else "the log-Jacobian maps register"
            raise ValueError(
                f"{what} with refine.{preset}={getattr(run.config.refine, preset)} then --refine, which cannot "
                f"run: {err} (or set refine.{preset}=[] in the run's config)"
            ) from None


def _check_outputs(plan, args: argparse.Namespace, skipped: list) -> None:
    """No two subjects write one file, and no output replaces an input (image, label map beside
    one, atlas, template, groups file), with or without --overwrite."""
    from pathlib import Path

    from deepatlas.inference.outputs import check_outputs

    inputs = {p: "label map" for p in skipped} | {p: "image" for p in plan.images}
    for image, labels in plan.atlases or ():
        inputs |= {image: "atlas image", labels: "atlas label map"}
    inputs |= {Path(args.template): "template"} if args.template else {}
    inputs |= {Path(args.groups): "groups file"} if args.groups else {}
    planned = [(str(i), [plan.labels_path(s), plan.logjac_path(s)]) for i, s in zip(plan.images, plan.subjects)]
    mine = {p for _, paths in planned for p in paths}
    planned.append(("the morphometry summary", [p for p in plan.outputs() if p not in mine]))
    check_outputs(planned, inputs)


def _print_differences(result, subjects: int) -> None:
    first, second = result.groups
    rows = [r for r in result.differences if not math.isnan(r["cohens_d"])]
    grouped = sum(len(m) for m in result.groups.values())
    print(f"group_differences.csv, logjac_difference.nii.gz/.png: {second} - {first}")
    if rows:
        top = max(rows, key=lambda r: abs(r["cohens_d"]))
        d, p = top["cohens_d"], top["p_welch"]
        print(f"largest effect: {top['structure']} (Cohen's d {d:.2f}, Welch p {p:.3g}, uncorrected)")
    if grouped < subjects:
        print(f"{subjects - grouped} subject(s) not in the groups file: in volumes.csv, not in the group analysis")


def add_command(sub) -> None:
    m = sub.add_parser(
        "morphometry",
        help="structure volumes (mm^3) and log-Jacobian maps of images, group differences",
        description="Per image: structure volumes (seg net, or --from atlas) and the log of the Jacobian "
        "determinant of its registration to a template (> 0: subject larger than the template). "
        "With --groups: per-structure group differences (Cohen's d, Welch t-test) and the difference "
        "of the groups' mean log-Jacobian maps.",
    )
    m.add_argument("run", help=RUN_HELP)
    m.add_argument("images", nargs="+", help="images or folders")
    m.add_argument("-o", "--output", required=True, help="output folder")
    m.add_argument("--template", metavar="IMAGE", help=TEMPLATE_HELP)
    m.add_argument(
        "--groups",
        metavar="CSV",
        help="columns subject,group (subject = file name without extension); exactly two groups: "
        "the difference is the second minus the first group in file order",
    )
    m.add_argument(
        "--from",
        dest="source",
        choices=("seg", "atlas"),
        default="seg",
        help="label maps from the seg net, or the atlases",
    )
    m.add_argument(
        "--atlas",
        nargs=2,
        action="append",
        metavar=("IMAGE", "LABELS"),
        help="an atlas; with --from seg (the default) the atlases' volumes check the seg net's: "
        "volumes.csv's atlas_mm3 and flag (5 atlases: the flag margins' setting)",
    )
    m.add_argument("--fusion", choices=options.FUSION, default="weighted", help="label fusion with --from atlas")
    unknown_labels_flag(m, " in the atlases (--from atlas); background: not counted in any structure")
    seg_averaging_flags(m)
    m.add_argument("--checkpoint", default="best", choices=options.CHECKPOINT, help="which checkpoint of the run")
    m.add_argument("--device", default="auto", help=DEVICE_HELP)
    m.add_argument("--net-only", action="store_true", help="register with the net alone (no per-pair refinement)")
    m.add_argument(
        "--refine",
        action="append",
        metavar="KEY=VALUE",
        help="refinement setting, as for register; the atlases (--from atlas, --atlas) register with the run's "
        "refine.for_volumes first (form=compose regularizer_weight=0.5 as shipped: atlases that follow an enlarged "
        "ventricle), the log-Jacobian maps with refine.for_maps first (regularizer_weight=1: half register's penalty)",
    )
    overwrite_flag(m)
    m.add_argument("--workers", type=int, default=1, help="processes working through the images")
    m.set_defaults(func=cmd_morphometry)
