"""``register``, ``segment``, ``atlas-segment``, ``evaluate`` and ``report``: using a trained run."""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from deepatlas import options
from deepatlas.cli.workers import run_jobs
from deepatlas.data import DataError
from deepatlas.data.subjects import IMAGE_SUFFIXES, subject_id
from deepatlas.run_folder import RunFolder


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given; folders become their image files, sorted."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.endswith(IMAGE_SUFFIXES) and not p.name.startswith("."))
            if not found:
                raise DataError(f"{path}: no images in this folder")
            out += found
        elif path.exists():
            out.append(path)
        else:
            raise DataError(f"{path}: file not found")
    return out


def load_run_from_args(args):
    from deepatlas.device import select_device
    from deepatlas.inference import load_run

    run = load_run(args.run, args.checkpoint, device=select_device(args.device))
    if getattr(args, "net_only", False):
        run.set_refinement(None)
    elif getattr(args, "refine", None):
        try:
            run.set_refinement(run.config.refine.with_overrides(args.refine))
        except ValueError as err:
            raise ValueError(f"--refine: {err}") from None
    return run


def _pairs(args) -> list[tuple[Path, Path, Path | None]]:
    if args.pairs:
        return _pairs_file(Path(args.pairs))
    if not (args.moving and args.fixed):
        raise DataError("give --moving and --fixed (files or folders), or --pairs FILE")
    moving, fixed = expand_paths([args.moving]), expand_paths([args.fixed])
    if len(fixed) == 1:
        fixed = fixed * len(moving)
    elif len(fixed) != len(moving) or [p.name for p in moving] != [p.name for p in fixed]:
        raise DataError(f"{args.fixed}: with two folders, --moving and --fixed must hold the same file names")
    labels: list[Path | None] = [None] * len(moving)
    if args.moving_labels:
        labels = expand_paths([args.moving_labels])
        if len(labels) != len(moving):
            raise DataError(f"{args.moving_labels}: expected {len(moving)} label maps, found {len(labels)}")
    return list(zip(moving, fixed, labels))


def _pairs_file(path: Path) -> list[tuple[Path, Path, Path | None]]:
    """The pairs of a ``--pairs`` JSON file (paths relative to the file)."""
    try:
        spec = json.loads(path.read_text())
        pairs = [(p["moving"], p["fixed"], p.get("moving_labels")) for p in spec]
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise DataError(
            f"{path}: not a pairs file ({type(err).__name__}: {err}); expected a JSON list of "
            f'{{"moving": ..., "fixed": ..., "moving_labels": ... (optional)}}'
        ) from None
    base = path.parent
    return [(base / m, base / f, base / lab if lab else None) for m, f, lab in pairs]


def cmd_register(args: argparse.Namespace) -> int:
    from deepatlas.inference.outputs import check_free, registration_paths

    options = _registration_options(args, inverse=args.inverse)
    pairs = _pairs(args)
    out = Path(args.output)
    summary = options.affine != "off" or options.align != "off"
    plans = [
        registration_paths(out, subject_id(m), subject_id(f), lab is not None, options.inverse, summary)
        for m, f, lab in pairs
    ]
    check_free([p for plan in plans for p in plan.values()], args.overwrite)
    jobs = [(moving, fixed, labels, paths, options) for (moving, fixed, labels), paths in zip(pairs, plans)]
    run_jobs(args, jobs, _register_job, load_run_from_args, "register")
    inverse = ", inverse on the moving grid (fixed = q + v(q))" if options.inverse else ""
    print(f"{len(pairs)} registration(s) written to {out}/ (displacement in mm, RAS axes, moving = p + u(p){inverse})")
    return 0


def _registration_options(args: argparse.Namespace, inverse: bool = False):
    """The affine-stage and inverse settings of ``register`` / ``atlas-segment``."""
    from deepatlas.inference.apply import RegistrationOptions

    return RegistrationOptions(affine=getattr(args, "affine", "auto"), align=args.align, inverse=inverse)


def _register_job(run, job: tuple) -> None:
    """``job``: moving, fixed, moving labels (or None), output paths, ``RegistrationOptions``."""
    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.inference.outputs import write_registration

    moving, fixed, labels, paths, options = job
    name = f"{subject_id(moving)}_to_{subject_id(fixed)}"
    moving_labels = load_label_codes(labels) if labels else None
    result = _register_and_say(run, options, name, load_image(moving), load_image(fixed), moving_labels)
    write_registration(result, paths)
    if result.inverse_consistency is not None:
        error = result.inverse_consistency
        print(
            f"{name}: inverse consistency {error['mean_mm']:.3f} mm mean, {error['p95_mm']:.3f} mm 95th "
            f"percentile (fixed foreground)"
        )


def _register_and_say(run, options, name: str, moving, fixed, moving_labels=None):
    """``register_volumes``, printing one line when ``auto`` switched the affine stage on."""
    from deepatlas.inference.apply import register_volumes

    result = register_volumes(run, moving, fixed, moving_labels, options=options)
    stage = result.affine_stage
    if options.affine == "auto" and stage is not None and stage.ran:
        print(f"{name}: affine stage {stage.why}")
    space = result.model_space
    if options.align == "auto" and space is not None and space.aligned:
        print(f"{name}: fixed image aligned to the model's template first ({space.why})")
    return result


def _atlas_registrar(run, options, moving, fixed, moving_labels):
    """The registrar of ``atlas-segment``: names the pair by its files."""
    name = f"{subject_id(moving.path)}_to_{subject_id(fixed.path)}"
    return _register_and_say(run, options, name, moving, fixed, moving_labels)


def _write_label_maps(args, images: list[Path], suffix: str, atlases: list | None = None) -> Path:
    """Segment each image (seg net, or ``atlases`` registered to it) into ``args.output``."""
    from deepatlas.inference.outputs import check_free

    out = Path(args.output)
    targets = [out / f"{subject_id(p)}_{suffix}.nii.gz" for p in images]
    check_free(targets, args.overwrite)
    fusion = getattr(args, "fusion", None)
    options = _registration_options(args)
    jobs = [(path, target, atlases, fusion, options) for path, target in zip(images, targets)]
    run_jobs(args, jobs, _label_job, load_run_from_args, suffix)
    return out


def _label_job(run, job: tuple) -> None:
    """``job``: image, output path, atlases (None: the seg net), fusion, ``RegistrationOptions``."""
    from deepatlas.data.io import load_image, save_volume
    from deepatlas.inference.apply import atlas_segment_volume, read_atlases, segment_volume
    from deepatlas.inference.outputs import label_dtype

    path, target, atlases, fusion, options = job
    image = load_image(path)
    if atlases is None:
        codes = segment_volume(run, image, options.align)
    else:
        registrar = functools.partial(_atlas_registrar, run, options)
        codes = atlas_segment_volume(run, read_atlases(tuple(atlases)), image, fusion=fusion, registrar=registrar)
    save_volume(codes.astype(label_dtype(codes)), image.affine, target)


def cmd_segment(args: argparse.Namespace) -> int:
    images = expand_paths(args.images)
    out = _write_label_maps(args, images, "seg")
    print(f"{len(images)} label map(s) written to {out}/ (original label codes, input geometry)")
    return 0


def cmd_atlas_segment(args: argparse.Namespace) -> int:
    targets = expand_paths(args.targets)
    atlases = [(Path(img), Path(lab)) for img, lab in args.atlas]
    from deepatlas.inference.apply import read_atlases

    read_atlases(tuple(atlases))  # a bad atlas fails here, before any work
    out = _write_label_maps(args, targets, "atlas_seg", atlases)
    print(f"{len(targets)} label map(s) from {len(atlases)} atlas(es), {args.fusion} fusion, written to {out}/")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from deepatlas.evaluation.evaluate_run import evaluate_run, format_summary

    run = load_run_from_args(args)
    split = None if args.split == "all" else args.split
    out = Path(args.output) if args.output else RunFolder(args.run).evaluation(args.split)
    summary = evaluate_run(
        run,
        args.data,
        split,
        args.splits,
        args.pairs,
        args.unknown_labels,
        out,
        progress=not args.no_progress,
        atlases=args.atlases,
        fusion=args.fusion,
    )
    print(format_summary(summary))
    print(f"per-case CSV and summary.json in {out}/")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from deepatlas.visualization.report import build_report

    run = load_run_from_args(args)
    path = build_report(
        run, Path(args.run), Path(args.output), dataset=args.data, split=args.split, overwrite=args.overwrite
    )
    print(f"report: {path}")
    return 0


def _affine_flags(p) -> None:
    """``--affine`` / ``--no-affine`` of ``register`` and ``atlas-segment`` (default: auto)."""
    stage = p.add_mutually_exclusive_group()
    stage.add_argument(
        "--affine",
        dest="affine",
        action="store_const",
        const="on",
        default="auto",
        help="align each pair affinely (12 parameters) before the deformable stage; by default this "
        "happens when the images, resampled by world coordinates and pooled 4x, correlate with NCC < "
        f"{options.AFFINE_AUTO_THRESHOLD}",
    )
    stage.add_argument(
        "--no-affine", dest="affine", action="store_const", const="off", help="never run the affine stage"
    )


def _align_flag(p, default: str) -> None:
    """``--align`` of ``segment`` (default auto), ``register`` and ``atlas-segment`` (default off)."""
    p.add_argument(
        "--align",
        choices=options.AFFINE,
        default=default,
        help="bring each image (register: the fixed one) into the model's space first: affine alignment to "
        "the run's template (its template.nii.gz, or the shipped template for runs on its grid such as "
        "models/brain-2mm); the networks then see it as they saw their training images, and results are "
        f"mapped back onto the image's own grid. auto: when the image correlates with the template with NCC < "
        f"{options.AFFINE_AUTO_THRESHOLD} (pooled 4x, by world coordinates): raw scans, not pre-aligned ones "
        f"(default {default})",
    )


def _common(p, output_required=True):
    p.add_argument("run", help="run folder (from deepatlas train), e.g. models/brain-2mm")
    p.add_argument("-o", "--output", required=output_required, help="output folder")
    p.add_argument("--checkpoint", default="best", choices=options.CHECKPOINT, help="which checkpoint (default best)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ...")


def _workers_flag(p):
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes working through many files (each loads the run; threads are shared out)",
    )


def _registration_flags(p):
    p.add_argument(
        "--net-only",
        action="store_true",
        help="the registration net's prediction alone, without per-pair refinement",
    )
    p.add_argument(
        "--refine",
        action="append",
        metavar="KEY=VALUE",
        help="refinement setting, e.g. --refine iterations=[60,30] --refine anatomy_weight=0.5 "
        "(keys: the refine section of the config; defaults in deepatlas/config.py)",
    )


def _add_register(sub) -> None:
    r = sub.add_parser("register", help="register moving image(s) to fixed image(s) with a trained run")
    _common(r)
    r.add_argument("--moving", help="moving image, or a folder of them")
    r.add_argument("--fixed", help="fixed image, or a folder with the same file names")
    r.add_argument("--moving-labels", help="label map of the moving image (or a folder): warped with nearest neighbour")
    r.add_argument("--pairs", help='JSON list of {"moving": ..., "fixed": ..., "moving_labels": ...}')
    _registration_flags(r)
    _affine_flags(r)
    _align_flag(r, "off")
    r.add_argument(
        "--inverse",
        action="store_true",
        help="also write the fixed-to-moving field (<moving>_to_<fixed>_inverse_displacement.nii.gz, on the "
        "moving grid, mm RAS, fixed = q + v(q)) and report its inverse-consistency error",
    )
    r.add_argument("--overwrite", action="store_true")
    _workers_flag(r)
    r.set_defaults(func=cmd_register)


def _add_segment(sub) -> None:
    s = sub.add_parser("segment", help="segment images with a trained run's seg net")
    _common(s)
    s.add_argument("images", nargs="+", help="images or folders")
    _align_flag(s, "auto")
    s.add_argument("--overwrite", action="store_true")
    _workers_flag(s)
    s.set_defaults(func=cmd_segment)


def _add_atlas_segment(sub) -> None:
    a = sub.add_parser("atlas-segment", help="segment images by registering labelled atlases to them")
    _common(a)
    a.add_argument("--atlas", nargs=2, action="append", required=True, metavar=("IMAGE", "LABELS"))
    a.add_argument("targets", nargs="+", help="images or folders to segment")
    a.add_argument(
        "--fusion",
        choices=options.FUSION,
        default="weighted",
        help="weighted: votes weighted by local NCC of warped atlas and target (default)",
    )
    _registration_flags(a)
    _affine_flags(a)
    _align_flag(a, "off")
    a.add_argument("--overwrite", action="store_true")
    _workers_flag(a)
    a.set_defaults(func=cmd_atlas_segment)


def _add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="Dice, HD95, folds, SDlogJ of a run on a labelled split")
    _common(e, output_required=False)
    e.add_argument("--data", required=True, help="dataset (folder, manifest or OASIS root)")
    e.add_argument("--split", default="test", help="split to evaluate, or 'all' (default test)")
    e.add_argument("--splits", help="splits file (default: DATA/splits.json)")
    e.add_argument("--pairs", default="next", help="next (default), all, none, or a JSON file of [moving, fixed] ids")
    e.add_argument(
        "--atlases",
        nargs="+",
        metavar="ID",
        help="segment by atlas registration with these labelled subjects of DATA instead of the seg net",
    )
    e.add_argument(
        "--fusion", choices=options.FUSION, default="majority", help="label fusion with --atlases (default majority)"
    )
    e.add_argument("--unknown-labels", choices=options.UNKNOWN_LABELS, help="default: as in training")
    e.add_argument("--no-progress", action="store_true")
    _registration_flags(e)
    e.set_defaults(func=cmd_evaluate)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="an HTML report with figures of a run")
    _common(p)
    p.add_argument("--data", help="dataset for the example figures (default: the run's training dataset)")
    p.add_argument("--split", default=None, help="split for the example pair (default: the run's validation split)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_report)


def add_commands(sub) -> None:
    """The verbs that use a trained run: register, segment, atlas-segment, evaluate, report."""
    for add in (_add_register, _add_segment, _add_atlas_segment, _add_evaluate, _add_report):
        add(sub)
