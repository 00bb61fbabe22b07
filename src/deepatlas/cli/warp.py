"""``warp``: a saved registration applied to more images or label maps (no model needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepatlas.cli.apply import expand_paths, output_lock


def cmd_warp(args: argparse.Namespace) -> int:
    from deepatlas.inference.warp import warp_files

    inputs = expand_paths(args.images)
    with output_lock(args):  # one writer per output folder, as for register and segment
        field = warp_files(Path(args.displacement), inputs, Path(args.output), args.labels, args.overwrite)
    grid = "fixed" if field.forward else "moving"
    kind = "label map(s), label interpolation" if args.labels else "image(s), linear"
    print(f"{len(inputs)} {kind}, warped onto the {grid} image's grid: {args.output}/<id>_warped.nii.gz")
    return 0


def add_command(sub) -> None:
    w = sub.add_parser(
        "warp",
        help="apply a saved registration (register's _displacement.nii.gz) to more images or label maps",
        description="Resample images through a displacement field written by deepatlas register: "
        "<moving>_to_<fixed>_displacement.nii.gz brings images in the moving image's space (another contrast "
        "of the same scan, a label map drawn on it) onto the fixed image's grid; _inverse_displacement.nii.gz "
        "brings fixed-space images onto the moving image's grid. Inputs may be on any grid (sampled through "
        "world coordinates); each output is on the field's grid, as <input id>_warped.nii.gz. The _Warp.nii.gz "
        "copies (ITK/ANTs convention) are read too. For ANTs or ITK instead: "
        "antsApplyTransforms -i IMAGE -r FIXED -t <moving>_to_<fixed>_Warp.nii.gz -o OUT.",
    )
    w.add_argument("displacement", help="_displacement.nii.gz or _inverse_displacement.nii.gz from deepatlas register")
    w.add_argument("images", nargs="+", help="images or folders of images to warp")
    w.add_argument("-o", "--output", required=True, help="output folder")
    w.add_argument(
        "--labels",
        action="store_true",
        help="the inputs are label maps: label interpolation (each label's indicator linearly, the largest "
        "wins), codes kept (default: images, linear). Not guessed "
        "from the data type, as T1 images are often stored as integers; warp images and label maps in two calls",
    )
    w.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    w.set_defaults(func=cmd_warp)
