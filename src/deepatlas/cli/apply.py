"""``register``, ``segment``, ``atlas-segment``, ``evaluate`` and ``report``: using a trained run
(their arguments: :mod:`deepatlas.cli.apply_args`)."""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from deepatlas.cli.workers import run_jobs
from deepatlas.data import DataError
from deepatlas.data.subjects import IMAGE_SUFFIXES, subject_id
from deepatlas.run_folder import RunFolder


@dataclass(frozen=True)
class AtlasFusion:
    """How ``atlas-segment`` fuses: ``fusion`` (``weighted`` or ``majority``) of the atlases' votes,
    and the seg net's vote weight (0: the atlases alone)."""

    fusion: str = "weighted"
    seg_net_weight: float = 0.0


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
    fusion = AtlasFusion(getattr(args, "fusion", "weighted"), getattr(args, "seg_net_weight", 0.0))
    options = _registration_options(args)
    jobs = [(path, target, atlases, fusion, options) for path, target in zip(images, targets)]
    run_jobs(args, jobs, _label_job, load_run_from_args, suffix)
    return out


def _label_job(run, job: tuple) -> None:
    """``job``: image, output path, atlases (None: the seg net), :class:`AtlasFusion`, ``RegistrationOptions``."""
    from deepatlas.data.io import load_image, save_volume
    from deepatlas.inference.apply import atlas_segment_volume, read_atlases, segment_volume
    from deepatlas.inference.outputs import label_dtype

    path, target, atlases, fusion, options = job
    image = load_image(path)
    if atlases is None:
        codes = segment_volume(run, image, options.align)
    else:
        registrar = functools.partial(_atlas_registrar, run, options)
        atlas_volumes = read_atlases(tuple(atlases))
        codes = atlas_segment_volume(
            run,
            atlas_volumes,
            image,
            fusion.fusion,
            registrar=registrar,
            seg_net_weight=fusion.seg_net_weight,
            align=options.align,  # the seg net sees the target as the registration does
        )
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
    voters = f"{len(atlases)} atlas(es)"
    if args.seg_net_weight > 0:
        voters += f" and the seg net (x{args.seg_net_weight:g})"
    print(f"{len(targets)} label map(s) from {voters}, {args.fusion} fusion, written to {out}/")
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
        seg_net_weight=args.seg_net_weight,
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
