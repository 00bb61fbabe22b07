"""The command-line arguments of ``register``, ``segment``, ``atlas-segment``, ``evaluate`` and
``report`` (:mod:`deepatlas.cli.apply` runs them): one function per verb, shared flags once."""

from __future__ import annotations

import argparse
import math

from deepatlas import options
from deepatlas.cli.apply import cmd_atlas_segment, cmd_evaluate, cmd_register, cmd_report, cmd_segment


def non_negative(text: str) -> float:
    """argparse type: a finite float >= 0."""
    value = float(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


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


def _force_flag(p) -> None:
    """``--force`` of the commands that check an input's alignment score (``--align`` on or auto)."""
    p.add_argument(
        "--force",
        action="store_true",
        help="go on with an image whose alignment score (rank correlation with the template inside its brain, "
        f"at 4 mm) is below {options.ALIGNMENT_REFUSE_SCORE}: no skull-stripped T1 brain where the template's "
        f"is (a whole head, another contrast, not a brain); by default such an image is refused. Below "
        f"{options.ALIGNMENT_MIN_SCORE} a warning is printed either way",
    )


def _align_flag(p, default: str) -> None:
    """``--align`` of ``segment`` (default auto), ``register`` and ``atlas-segment`` (default off)."""
    p.add_argument(
        "--align",
        choices=options.AFFINE,
        default=default,
        help="bring each image (register: the fixed one) into the model's space first: affine alignment to "
        "the run's template (its template.nii.gz, or the shipped template for runs on its grid such as "
        "brain-2mm); the networks then see it as they saw their training images, and results are "
        f"mapped back onto the image's own grid. auto: when the image correlates with the template with NCC < "
        f"{options.AFFINE_AUTO_THRESHOLD} (pooled 4x, by world coordinates): raw scans, not pre-aligned ones",
    )


def seg_averaging_flags(p) -> None:
    """``--mirror-average`` and ``--subvoxel-average`` of the commands that run the seg net on scans (the run's
    settings by default)."""
    p.add_argument(
        "--subvoxel-average",
        choices=options.SUBVOXEL_AVERAGE,
        default=None,
        help="average the seg net's probabilities over the image moved by a quarter voxel either way along every "
        "axis: volumes then follow changes smaller than a voxel; 8 passes of the seg net in 3-D. Default: the "
        "run's seg_net.subvoxel_average",
    )
    p.add_argument(
        "--mirror-average",
        choices=options.MIRROR_AVERAGE,
        default=None,
        help="average the seg net's probabilities with those of the image mirrored left-right, each structure "
        "read from its twin (-L/-R); twice the seg net's time, +1 Dice on ixi-2mm validation. Default: the "
        "run's seg_net.mirror_average (auto: on where every side-named structure has its twin)",
    )


def strip_flag(p) -> None:
    """``--strip`` of every command that takes scans (default auto)."""
    p.add_argument(
        "--strip",
        choices=options.STRIP,
        default="auto",
        help="brain extraction (deepbet: pip install 'deepatlas[strip]') before anything else, for whole-head "
        "scans; the mask is written beside the outputs. auto: when the scan's filled foreground exceeds "
        "the volume of any brain (a head), not for skull-stripped brains",
    )


def unknown_labels_flag(p, applies: str = "") -> None:
    """``--unknown-labels`` of every command that reads label maps against a run's label map."""
    p.add_argument(
        "--unknown-labels",
        choices=options.UNKNOWN_LABELS,
        help=f"label codes outside the run's label map{applies}: an error, or background (default: as in training)",
    )


RUN_HELP = "run folder (from deepatlas train), or the name of a shipped model: brain-2mm"
DEVICE_HELP = "where the networks run: auto (a GPU if there is one), cpu, cuda, cuda:1 ..."
OVERWRITE_HELP = "replace earlier outputs of the same names (never an input); by default they are refused"


def _common(p):
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--checkpoint", default="best", choices=options.CHECKPOINT, help="which checkpoint of the run")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def overwrite_flag(p) -> None:
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def _workers_flag(p):
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes working through many files (each loads the run; threads are shared out)",
    )


def _seg_net_weight_flag(p) -> None:
    p.add_argument(
        "--seg-net-weight",
        type=non_negative,
        default=None,
        metavar="W",
        help="the run's seg net votes too, its class probabilities times W (a sure prediction counts as "
        "much as W atlases matching the target perfectly); it decides each voxel's structure with the "
        "atlases, and the atlases' own codes are kept within it. Default: the run's seg_net.atlas_vote "
        "(chosen on validation for a shipped model, see its card; 0, off, for runs you train: measure "
        "yours with benchmarks/fusion_weight.py). Tuned with --fusion weighted; with majority votes a "
        "weight <= 1 only breaks ties",
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


def _label_term_flag(p, labels: str, otherwise: str) -> None:
    p.add_argument(
        "--label-term",
        action="store_true",
        help=f"let {labels} guide the refinement too (against the seg net's prediction of the fixed image, "
        f"weight refine.label_weight; about 3x the refinement's time); {otherwise}",
    )


def _add_register(sub) -> None:
    r = sub.add_parser("register", help="register moving image(s) to fixed image(s) with a trained run")
    _common(r)
    r.add_argument("--moving", help="moving image, or a folder of them")
    r.add_argument("--fixed", help="fixed image, or a folder with the same file names")
    r.add_argument(
        "--moving-labels",
        help="label map of the moving image (or a folder): warped by label interpolation (each label's "
        "indicator linearly, the largest wins; codes kept)",
    )
    r.add_argument("--pairs", help='JSON list of {"moving": ..., "fixed": ..., "moving_labels": ...}')
    _label_term_flag(r, "the moving labels", "without it they are only warped")
    _registration_flags(r)
    _affine_flags(r)
    _align_flag(r, "off")
    _force_flag(r)
    strip_flag(r)
    r.add_argument(
        "--inverse",
        action="store_true",
        help="also write the fixed-to-moving field (<moving>_to_<fixed>_inverse_displacement.nii.gz, on the "
        "moving grid, mm RAS, fixed = q + v(q)) and report its inverse-consistency error",
    )
    overwrite_flag(r)
    _workers_flag(r)
    r.set_defaults(func=cmd_register)


def _add_segment(sub) -> None:
    s = sub.add_parser("segment", help="segment images with a trained run's seg net")
    _common(s)
    s.add_argument("images", nargs="+", help="images or folders")
    _align_flag(s, "auto")
    _force_flag(s)
    strip_flag(s)
    seg_averaging_flags(s)
    s.add_argument(
        "--volumes",
        action="store_true",
        help="also write volumes.csv: per image and structure its voxels and mm^3 on the image's own grid "
        "(the columns and numbers of morphometry's volumes.csv)",
    )
    s.add_argument(
        "--probabilities",
        action="store_true",
        help="also write <name>_probabilities.nii.gz: the seg net's class probabilities on the image's grid "
        "(4D, float32, classes last in the order of labels.txt's rows; 4 bytes per class and voxel)",
    )
    overwrite_flag(s)
    _workers_flag(s)
    s.set_defaults(func=cmd_segment)


def _add_atlas_segment(sub) -> None:
    a = sub.add_parser("atlas-segment", help="segment images by registering labelled atlases to them")
    _common(a)
    a.add_argument(
        "--atlas",
        nargs=2,
        action="append",
        required=True,
        metavar=("IMAGE", "LABELS"),
        help="a labelled atlas: its image and its label map (on the image's grid); repeat for more atlases",
    )
    a.add_argument("targets", nargs="+", help="images or folders to segment")
    a.add_argument(
        "--fusion",
        choices=options.FUSION,
        default="weighted",
        help="weighted: votes weighted by local NCC of warped atlas and target (default)",
    )
    _seg_net_weight_flag(a)
    seg_averaging_flags(a)
    unknown_labels_flag(a, " in the atlases, with --seg-net-weight (the atlases alone keep every code)")
    _label_term_flag(a, "the atlases' labels", "off by default: +2 Dice per atlas but +0.1 fused, on validation")
    _registration_flags(a)
    _affine_flags(a)
    _align_flag(a, "off")
    _force_flag(a)
    strip_flag(a)
    overwrite_flag(a)
    _workers_flag(a)
    a.set_defaults(func=cmd_atlas_segment)


def _add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="Dice, HD95, folds, SDlogJ of a run on a labelled split")
    _common(e)
    e.add_argument("--data", required=True, help="dataset (folder, manifest or OASIS root)")
    e.add_argument("--split", default="test", help="split to evaluate, or 'all'")
    e.add_argument("--splits", help="splits file (default: DATA/splits.json)")
    e.add_argument(
        "--pairs",
        default="next",
        help="pairs to register: next (each subject to the next), all, none, or a JSON file of [moving, fixed] ids",
    )
    e.add_argument(
        "--atlases",
        nargs="+",
        metavar="ID",
        help="segment by atlas registration with these labelled subjects of DATA instead of the seg net",
    )
    e.add_argument(
        "--fusion",
        choices=options.FUSION,
        default="weighted",
        help="label fusion with --atlases: weighted by local NCC (default, as atlas-segment) or majority",
    )
    _seg_net_weight_flag(e)
    seg_averaging_flags(e)
    unknown_labels_flag(e)
    e.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    _registration_flags(e)
    overwrite_flag(e)
    e.set_defaults(func=cmd_evaluate)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="an HTML report with figures of a run")
    _common(p)
    p.add_argument("--data", help="dataset for the example figures (default: the run's training dataset)")
    p.add_argument("--split", default=None, help="split for the example pair (default: the run's validation split)")
    unknown_labels_flag(p, " in the example pair's label maps")
    overwrite_flag(p)
    p.set_defaults(func=cmd_report)


def add_commands(sub) -> None:
    """The verbs that use a trained run: register, segment, atlas-segment, evaluate, report."""
    for add in (_add_register, _add_segment, _add_atlas_segment, _add_evaluate, _add_report):
        add(sub)
