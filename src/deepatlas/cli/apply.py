"""``register``, ``segment``, ``atlas-segment``, ``evaluate`` and ``report``: using a trained run
(their arguments: :mod:`deepatlas.cli.apply_args`)."""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from deepatlas.cli.scans import load_scan, mask_path
from deepatlas.cli.workers import run_jobs
from deepatlas.data import DataError
from deepatlas.data.subjects import IMAGE_SUFFIXES, LABEL_SUFFIXES, label_map_owners, subject_id
from deepatlas.files import folder_lock
from deepatlas.run_folder import resolve_run

PAIR_KEYS = ("moving", "fixed", "moving_labels", "output")
"""The keys of a ``--pairs`` entry; ``output`` (optional) names the pair's outputs ``<output>_warped.nii.gz`` ...
instead of ``<moving>_to_<fixed>_warped.nii.gz``."""


@dataclass(frozen=True)
class AtlasFusion:
    """How ``atlas-segment`` fuses: ``fusion`` (``weighted`` or ``majority``) of the atlases' votes,
    and the seg net's vote weight (0: the atlases alone)."""

    fusion: str = "weighted"
    seg_net_weight: float | None = None
    """None: the run's ``seg_net.atlas_vote``."""


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given; folders become their image files, sorted (see :func:`expand_inputs`)."""
    return expand_inputs(paths)[0]


def expand_inputs(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """The images: files as given; folders become their image files, sorted, less the label maps
    beside their images (``<id>_seg`` beside ``<id>``, the rule ``prepare`` pairs them by:
    :func:`~deepatlas.data.subjects.label_map_owners`), which come second, to be protected from the
    outputs; one printed line counts them."""
    out: list[Path] = []
    skipped: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.endswith(IMAGE_SUFFIXES) and not p.name.startswith("."))
            by_id = {subject_id(p): p for p in found}
            labels = {by_id[sid] for sid, owner in label_map_owners(list(by_id)).items() if owner in by_id}
            if not found:
                raise DataError(f"{path}: no images in this folder")
            out += [p for p in found if p not in labels]
            skipped += sorted(labels)
        elif path.exists():
            out.append(path)
        else:
            raise DataError(f"{path}: file not found")
    if skipped:
        print(
            f"{len(skipped)} label map(s) left out of the images (e.g. {skipped[0]}: {'/'.join(LABEL_SUFFIXES)} "
            "beside an image of the same name); give one as a file to use it as an image"
        )
    return out, skipped


def load_run_from_args(args):
    """The run a command names, with the command's choices (``--unknown-labels``, ``--mirror-average``,
    ``--subvoxel-average``, ``--net-only``, ``--refine``) over its config."""
    from deepatlas.device import select_device
    from deepatlas.inference import load_run

    run = load_run(args.run, args.checkpoint, device=select_device(args.device))
    if getattr(args, "unknown_labels", None):  # --unknown-labels: this command's choice over the run's
        run.config.data.unknown_labels = args.unknown_labels
    if getattr(args, "mirror_average", None):  # --mirror-average: likewise, refused here if it cannot work
        from deepatlas.inference.apply import mirror_plan_of

        run.config.seg_net.mirror_average = args.mirror_average
        mirror_plan_of(run, run.grid_affine, len(run.grid_shape))
    if getattr(args, "subvoxel_average", None):  # --subvoxel-average: likewise
        run.config.seg_net.subvoxel_average = args.subvoxel_average
    if getattr(args, "net_only", False):
        run.set_refinement(None)
        run.refine_overrides = None
    elif getattr(args, "refine", None):
        try:
            run.set_refinement(run.config.refine.with_overrides(args.refine))
        except ValueError as err:
            raise ValueError(f"--refine: {err}") from None
        run.refine_overrides = list(args.refine)
    return run


def _pairs(args) -> tuple[list[tuple[Path, Path, Path | None, str | None]], list[Path]]:
    """The pairs (moving, fixed, moving labels or None, output name or None), and the label maps
    left out of the folders given."""
    if args.pairs:
        return _pairs_file(Path(args.pairs)), []
    if not (args.moving and args.fixed):
        raise DataError("give --moving and --fixed (files or folders), or --pairs FILE")
    (moving, skip_moving), (fixed, skip_fixed) = expand_inputs([args.moving]), expand_inputs([args.fixed])
    if len(fixed) == 1:
        fixed = fixed * len(moving)
    elif len(fixed) != len(moving) or [p.name for p in moving] != [p.name for p in fixed]:
        raise DataError(f"{args.fixed}: with two folders, --moving and --fixed must hold the same file names")
    labels: list[Path | None] = [None] * len(moving)
    if args.moving_labels:
        labels = expand_paths([args.moving_labels])
        if len(labels) != len(moving):
            raise DataError(f"{args.moving_labels}: expected {len(moving)} label maps, found {len(labels)}")
    return [(m, f, lab, None) for m, f, lab in zip(moving, fixed, labels)], skip_moving + skip_fixed


def _pairs_file(path: Path) -> list[tuple[Path, Path, Path | None, str | None]]:
    """The pairs of a ``--pairs`` JSON file (paths relative to the file; keys: :data:`PAIR_KEYS`)."""
    try:
        spec = json.loads(path.read_text())
        _check_pair_keys(path, spec)
        pairs = [(p["moving"], p["fixed"], p.get("moving_labels"), p.get("output")) for p in spec]
    except DataError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise DataError(
            f"{path}: not a pairs file ({type(err).__name__}: {err}); expected a JSON list of "
            f'{{"moving": ..., "fixed": ..., "moving_labels": ... (optional), "output": ... (optional)}}'
        ) from None
    for n, (*_, name) in enumerate(pairs):
        if name is not None and (not isinstance(name, str) or not name or Path(name).name != name or name[0] == "."):
            raise DataError(f'{path}: pair #{n} "output" must be a file name without folders, got {name!r}')
    base = path.parent
    return [(base / m, base / f, base / lab if lab else None, name) for m, f, lab, name in pairs]


def _check_pair_keys(path: Path, spec) -> None:
    """Refuse a key outside :data:`PAIR_KEYS` (a misspelt ``moving_label`` would be ignored)."""
    for n, entry in enumerate(spec if isinstance(spec, list) else []):
        unknown = sorted(set(entry) - set(PAIR_KEYS)) if isinstance(entry, dict) else []
        if unknown:
            raise DataError(
                f"{path}: pair #{n} has unknown key(s) {', '.join(map(repr, unknown))}; the keys are "
                f"{', '.join(PAIR_KEYS)} (moving_labels and output optional)"
            )


def _check_label_files(pairs: list) -> None:
    """Every moving label map on its moving image's grid, from the headers, before any work."""
    from deepatlas.data.io import check_label_grid, read_grid

    for moving, _, labels, *_ in pairs:
        if labels is not None:
            check_label_grid(read_grid(moving), read_grid(labels))


def cmd_register(args: argparse.Namespace) -> int:
    """Outputs are named ``<moving>_to_<fixed>``, by :func:`~deepatlas.inference.outputs.unique_names`
    where file names repeat, or by a pair's ``output`` in a ``--pairs`` file."""
    from deepatlas.inference.outputs import check_free, check_outputs, registration_paths, unique_names

    options = _registration_options(args, inverse=args.inverse)
    pairs, skipped = _pairs(args)
    if options.label_term and not any(labels for _, _, labels, _ in pairs):
        raise ValueError("--label-term needs the moving labels: give --moving-labels (or moving_labels in --pairs)")
    _check_label_files(pairs)
    out = Path(args.output)
    summary = options.affine != "off" or options.align != "off"
    movers, fixeds = unique_names([p[0] for p in pairs]), unique_names([p[1] for p in pairs])
    plans = [
        registration_paths(out, m, f, lab is not None, options.inverse, summary, name)
        for (_, _, lab, name), m, f in zip(pairs, movers, fixeds)
    ]
    if options.strip != "off":  # the brain masks of scans that turn out to be heads
        for plan in plans:
            plan |= {f"{side}_mask": mask_path(plan["warped"], side) for side in ("moving", "fixed")}
    inputs = {p: "label map" for p in skipped} | ({Path(args.pairs): "pairs file"} if args.pairs else {})
    for moving, fixed, labels, _ in pairs:
        inputs |= {moving: "moving image", fixed: "fixed image"} | ({labels: "moving label map"} if labels else {})
    sources = [f"{moving} -> {fixed}" for moving, fixed, *_ in pairs]
    hint = 'give one of them another file name, or name its outputs ("output" in a --pairs file)'
    check_outputs([(s, list(plan.values())) for s, plan in zip(sources, plans)], inputs, hint)
    jobs = [(moving, fixed, labels, paths, options) for (moving, fixed, labels, _), paths in zip(pairs, plans)]
    with output_lock(args):
        check_free([p for plan in plans for p in plan.values()], args.overwrite)
        written = run_jobs(args, jobs, _register_job, load_run_from_args, "register")
    inverse = ", inverse on the moving grid (fixed = q + v(q))" if options.inverse else ""
    print(
        f"{len(set(written))} registration(s) written to {out}/ (displacement in mm, RAS axes, moving = p + u(p)"
        f"{inverse}; _Warp.nii.gz: the same in LPS axes, for ANTs, ITK and Slicer)"
    )
    return 0


def output_lock(args: argparse.Namespace):
    """The output folder, held by this command while it writes there (:func:`~deepatlas.files.folder_lock`)."""
    return folder_lock(Path(args.output), f"deepatlas {args.command} -o {args.output}")


def _registration_options(args: argparse.Namespace, inverse: bool = False):
    """The affine-stage and inverse settings of ``register`` / ``atlas-segment``."""
    from deepatlas.inference.apply import RegistrationOptions

    strip, force = getattr(args, "strip", "off"), getattr(args, "force", False)
    label_term = getattr(args, "label_term", False)  # the labels guide the refinement (refine.label_weight)
    return RegistrationOptions(
        affine=getattr(args, "affine", "auto"),
        align=args.align,
        inverse=inverse,
        strip=strip,
        force=force,
        label_term=label_term,
    )


def _register_job(run, job: tuple) -> str:
    """``job``: moving, fixed, moving labels (or None), output paths, ``RegistrationOptions``; returns
    the warped image's path."""
    from deepatlas.data.io import load_label_codes
    from deepatlas.inference.outputs import write_registration

    moving, fixed, labels, paths, options = job
    name = f"{subject_id(moving)}_to_{subject_id(fixed)}"
    moving_labels = load_label_codes(labels) if labels else None
    moving_image = load_scan(moving, options.strip, paths.get("moving_mask"))
    fixed_image = load_scan(fixed, options.strip, paths.get("fixed_mask"))
    result = _register_and_say(run, options, name, moving_image, fixed_image, moving_labels)
    write_registration(result, paths)
    if result.inverse_consistency is not None:
        error = result.inverse_consistency
        print(
            f"{name}: inverse consistency {error['mean_mm']:.3f} mm mean, {error['p95_mm']:.3f} mm 95th "
            f"percentile (fixed foreground)"
        )
    return str(paths["warped"])


def _register_and_say(run, options, name: str, moving, fixed, moving_labels=None):
    """``register_volumes``, printing one line when ``auto`` switched the affine stage on, and one
    when the fixed image's alignment score is low (refusing, before anything is written, when far below)."""
    from deepatlas.inference.alignment import alignment_warning
    from deepatlas.inference.apply import register_volumes

    result = register_volumes(run, moving, fixed, moving_labels, options=options)
    warning = result.model_space and alignment_warning(result.model_space, fixed.path, options.force)
    if warning:
        print(warning)
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


def _write_label_maps(
    args, images: list[Path], suffix: str, atlases: list | None = None, skipped: list[Path] = (), extras=None
) -> tuple[Path, int]:
    """Segment each image (seg net, or ``atlases`` registered to it) into ``args.output``, as
    ``<name>_<suffix>.nii.gz`` (``name``: :func:`~deepatlas.inference.outputs.unique_names`);
    returns the folder and how many label maps were written. ``skipped``: label maps left out of
    the input folders, never written over. ``extras``: ``segment``'s other outputs
    (:class:`~deepatlas.cli.segment_outputs.SegmentExtras`), planned and checked with the label maps."""
    from deepatlas.inference.outputs import check_free, check_outputs, unique_names

    out = Path(args.output)
    targets = [out / f"{name}_{suffix}.nii.gz" for name in unique_names(images)]
    inputs = {p: "label map" for p in skipped} | {p: "image" for p in images}
    for image, labels in atlases or []:
        inputs |= {image: "atlas image", labels: "atlas label map"}
    options = _registration_options(args)
    masks = {t: [mask_path(t)] if options.strip != "off" else [] for t in targets}  # written for heads only
    if extras is not None:  # beside each label map, and the folder's own (the lookup tables: check_tables)
        masks = {t: masks[t] + extras.image_outputs(t) for t in targets}
    planned = [(str(p), [t, *masks[t]]) for p, t in zip(images, targets)]
    tables = [("the lookup and volume tables", list(extras.tables) + extras.folder_outputs())] if extras else []
    check_outputs(planned + tables, inputs, "rename one of them")
    fusion = AtlasFusion(getattr(args, "fusion", "weighted"), getattr(args, "seg_net_weight", None))
    jobs = [(path, target, atlases, fusion, options, extras) for path, target in zip(images, targets)]
    loader, run = load_run_from_args, None
    with output_lock(args):
        folder_files = extras.folder_outputs() if extras else []
        check_free(targets + [m for t in targets for m in masks[t]] + folder_files, args.overwrite)
        if extras is not None:  # the lookup tables need the run's label scheme, before any work
            run = load_run_from_args(args)
            extras.check_tables(run.scheme, args.overwrite)
            loader = (lambda _args: run) if args.workers <= 1 else load_run_from_args
        records = run_jobs(args, jobs, _label_job, loader, suffix)
        if extras is not None:
            extras.write(run.scheme, records)
        if atlases is None and any(r["score"] is not None for r in records):
            _write_segment_records(out / "segment.json", records)
    return out, records


def _write_segment_records(path: Path, records: list[dict]) -> None:
    """``segment.json``: one record per input (source, output, aligned, why, score, warning, mirror_average:
    whether the seg net's mirrored pass was averaged in, subvoxel_average: whether its quarter-voxel shifts
    were), sorted by
    output; records of earlier runs into the folder are kept unless this run wrote the same output.
    Written where there are scores to keep: a run with a template and ``--align`` on or auto."""
    from deepatlas.files import atomic_write_text

    try:
        earlier = json.loads(path.read_text()) if path.exists() else []
    except (OSError, ValueError):
        raise DataError(f"{path}: not a segment record file; move it away or delete it") from None
    merged = {r["output"]: r for r in earlier if isinstance(r, dict) and "output" in r}
    merged |= {r["output"]: r for r in records}
    atomic_write_text(path, json.dumps([merged[k] for k in sorted(merged)], indent=1))


def _label_job(run, job: tuple) -> dict:
    """``job``: image, output path, atlases (None: the seg net), :class:`AtlasFusion`, ``RegistrationOptions``,
    ``segment``'s extra outputs (or None); returns the record of the path written (the seg net's: how the
    image was aligned, its alignment score, the warning printed; a score far below a brain's refuses
    before writing, unless ``force``)."""
    from deepatlas.cli.segment_outputs import reads_volumes, segment_image, write_image_extras
    from deepatlas.data.io import save_volume
    from deepatlas.inference.alignment import alignment_warning
    from deepatlas.inference.apply import (
        ATLAS_VOTE_MIN_SHARE,
        atlas_segment_volume,
        atlases_share_in_classes,
        mirror_plan_of,
        read_atlases,
        subvoxel_on,
    )
    from deepatlas.inference.outputs import label_dtype

    path, target, atlases, fusion, options, extras = job
    image = load_scan(path, options.strip, mask_path(target))
    record = {"source": str(path), "output": str(target)}
    probabilities = None
    if atlases is None:
        codes, probabilities, space = segment_image(run, image, options.align, extras)
        warning = alignment_warning(space, path, options.force)
        if warning:
            print(warning)
        score = None if space.score is None else round(space.score, 4)
        mirrored = mirror_plan_of(run, run.grid_affine, len(run.grid_shape)) is not None
        record |= {"aligned": space.aligned, "why": space.why, "score": score, "warning": warning}
        record["mirror_average"] = mirrored  # the seg net's pass on the mirrored image averaged in
        record["subvoxel_average"] = subvoxel_on(run, reads_volumes(extras))  # its quarter-voxel shifts
    else:
        registrar = functools.partial(_atlas_registrar, run, options)
        atlas_volumes = read_atlases(tuple(atlases))
        weight = fusion.seg_net_weight
        if weight is None:  # the run's default vote, for atlases in the label protocol its seg net learned
            share = atlases_share_in_classes(atlas_volumes, run.scheme) if run.config.seg_net.atlas_vote else 1.0
            weight = run.config.seg_net.atlas_vote if share >= ATLAS_VOTE_MIN_SHARE else 0.0
            record["atlas_share_in_classes"] = round(share, 4)
        record["seg_net_weight"] = weight
        codes = atlas_segment_volume(
            run,
            atlas_volumes,
            image,
            fusion.fusion,
            registrar=registrar,
            seg_net_weight=weight,
            # the seg net's vote sees the target as `segment` would (--align auto unless on): registration's
            # default (off) copes with a raw scan through its affine stage, the seg net does not
            align="on" if options.align == "on" else "auto",
        )
    save_volume(codes.astype(label_dtype(codes)), image.affine, target)
    return record | write_image_extras(run, extras, image, target, probabilities)


def cmd_segment(args: argparse.Namespace) -> int:
    from deepatlas.cli.segment_outputs import SegmentExtras

    images, skipped = expand_inputs(args.images)
    extras = SegmentExtras(Path(args.output), args.volumes, args.probabilities)
    out, records = _write_label_maps(args, images, "seg", skipped=skipped, extras=extras)
    written = len({r["output"] for r in records})
    more = ", volumes.csv (mm^3)" if args.volumes else ""
    more += ", <name>_probabilities.nii.gz" if args.probabilities else ""
    print(
        f"{written} label map(s) written to {out}/ (original label codes, input geometry; labels.txt, labels.ctbl: "
        f"their names and colours for ITK-SNAP and Slicer{more})"
    )
    return 0


def _warn_wrong_sided_atlases(run: str, atlases) -> None:
    """One ``warning:`` line per atlas whose left and right labels look swapped in part (judged by the run's
    class names, :mod:`deepatlas.data.hemispheres`): its sides would become every target's."""
    from deepatlas.data.hemispheres import warn_crossed_atlases
    from deepatlas.data.labels import LabelScheme
    from deepatlas.run_folder import RunFolder, resolve_run

    labels_file = RunFolder(resolve_run(run)).labels
    if not labels_file.exists():
        return  # not a run folder: loading it says so, in its own words
    warn_crossed_atlases(atlases, LabelScheme.from_file(labels_file))  # codes are checked where they are used


def cmd_atlas_segment(args: argparse.Namespace) -> int:
    targets, skipped = expand_inputs(args.targets)
    atlases = [(Path(img), Path(lab)) for img, lab in args.atlas]
    from deepatlas.inference.apply import ATLAS_VOTE_MIN_SHARE, read_atlases

    _warn_wrong_sided_atlases(args.run, read_atlases(tuple(atlases)))  # a bad atlas fails here, before any work
    out, records = _write_label_maps(args, targets, "atlas_seg", atlases, skipped)
    voters = f"{len(atlases)} atlas(es)"
    weights = sorted({r["seg_net_weight"] for r in records})
    if weights and weights[-1] > 0:  # one run, one weight
        given = "" if args.seg_net_weight is not None else ", the run's seg_net.atlas_vote; --seg-net-weight 0: off"
        voters += f" and the seg net (x{weights[-1]:g}{given})"
    shares = [r["atlas_share_in_classes"] for r in records if "atlas_share_in_classes" in r]
    if shares and weights == [0.0]:  # the run's default vote left out for these atlases
        print(
            f"note: the seg net did not vote: only {min(shares):.0%} of an atlas's labelled voxels carry codes of "
            f"the run's classes (a vote needs {ATLAS_VOTE_MIN_SHARE:.0%}: atlases in another label protocol); "
            "--seg-net-weight W makes it vote"
        )
    written = len({r["output"] for r in records})
    print(f"{written} label map(s) from {voters}, {args.fusion} fusion, written to {out}/")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Writes where ``-o`` says (never into the run folder: a shipped model's is the installed package),
    refusing an earlier evaluation there unless ``--overwrite``."""
    from deepatlas.evaluation.evaluate_run import EVALUATION_FILES, evaluate_run, format_summary
    from deepatlas.inference.outputs import check_free

    out = Path(args.output)
    check_free([out / name for name in EVALUATION_FILES], args.overwrite)
    run = load_run_from_args(args)
    split = None if args.split == "all" else args.split
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
        seg_net_weight=_evaluation_vote(args, run),
    )
    print(format_summary(summary))
    print(f"per-case CSV and summary.json in {out}/")
    return 0


def _evaluation_vote(args: argparse.Namespace, run) -> float:
    """``evaluate``'s seg net weight: ``--seg-net-weight``, else, with ``--atlases``, the run's
    ``seg_net.atlas_vote`` (as ``atlas-segment``), else 0 (the seg net is scored alone)."""
    if args.seg_net_weight is not None:
        return args.seg_net_weight
    return run.config.seg_net.atlas_vote if args.atlases else 0.0


def cmd_report(args: argparse.Namespace) -> int:
    from deepatlas.visualization.report import build_report

    run = load_run_from_args(args)
    path = build_report(
        run, resolve_run(args.run), Path(args.output), dataset=args.data, split=args.split, overwrite=args.overwrite
    )
    print(f"report: {path}")
    return 0
