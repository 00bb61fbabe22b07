"""The ``deepatlas`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from deepatlas import options
from deepatlas.recipes import RECIPES, recipe_overrides, suggested_recipe

# the recipes a training set may be pointed to, and the docs/results.md section that measured each
SUGGESTION_SECTIONS = {"distil": "Five labelled images", "synthesis": "Registration as the seg net's augmenter"}


def _suggest_recipe(config) -> None:
    """One line naming a recipe measured to do better on a training set like this one's, if any."""
    from deepatlas.data.errors import DataError
    from deepatlas.data.loading import select_subjects

    if config.teachers.loss == "distil" or os.environ.get("RANK", "0") != "0":
        return  # distilling already, or not the process that speaks for a torchrun launch
    try:
        chosen = select_subjects(config.data)
    except (DataError, OSError, ValueError):
        return  # training reads the data next and reports the problem there, in its own words
    labelled, unlabelled = len(chosen.labelled_ids), chosen.unlabelled
    recipe = suggested_recipe(labelled, unlabelled)
    if recipe in SUGGESTION_SECTIONS:
        print(
            f"note: {labelled} labelled and {unlabelled} unlabelled training images: with this many labels the "
            f"{recipe} recipe trained a better seg net than these defaults (docs/results.md, "
            f"'{SUGGESTION_SECTIONS[recipe]}'); train with --recipe {recipe} to use it",
            flush=True,  # information, so on stdout: stderr is for the one line of an error
        )


def _train(args: argparse.Namespace) -> int:
    from deepatlas.config import load_config
    from deepatlas.run_folder import RunFolder
    from deepatlas.training.distributed import shutdown
    from deepatlas.training.run import train

    # the recipe first, then the user's overrides, then the flags: a later value of a key wins
    overrides = recipe_overrides(args.recipe) + list(args.overrides)
    for flag, key in (
        ("dataset", "data.dataset"),
        ("label_map", "data.label_map"),
        ("splits", "data.splits"),
        ("num_labelled", "data.num_labelled"),
        ("device", "device"),
        ("unknown_labels", "data.unknown_labels"),
        ("init", "init_from"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.labelled:
        # as JSON strings: YAML would read the id 010 as the octal number 8
        overrides.append(f"data.labelled_ids={json.dumps(list(args.labelled))}")
    if args.resume and args.config is None:
        # the run's own config, with the overrides a resume may make (e.g. a smaller schedule.reg_lr)
        saved = RunFolder(args.output).config
        if not saved.exists():
            raise FileNotFoundError(f"{saved}: not found; is {args.output} a run folder?")
        config = load_config(saved, overrides, saved=True)
    else:
        config = load_config(args.config, overrides)
    if args.recipe == "default" and not args.resume:
        _suggest_recipe(config)
    try:
        summary = train(
            config, args.output, resume=args.resume, progress=not args.no_progress, max_steps=args.max_steps
        )
    finally:
        shutdown()  # the process group of a torchrun launch, if any
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun the main process speaks for all
    state = "finished" if summary["finished"] else f"stopped at step {summary['steps_done']}/{summary['steps_total']}"
    print(f"run {state}: {args.output}")
    if summary.get("last_validation"):
        v = summary["last_validation"]
        print("validation: " + ", ".join(f"{k} {v[k]:.4f}" for k in ("seg_dice", "reg_dice", "folds") if k in v))
    return 0


def _sort_train_positionals(args: argparse.Namespace, extra: list[str], parser: argparse.ArgumentParser) -> None:
    """The config file and KEY=VALUE overrides may come in any order, before or after the flags."""
    # `--labelled A B key=value` hands the override to --labelled: ids have no "="
    spilled = [item for item in args.labelled or [] if "=" in item]
    args.labelled = [item for item in args.labelled or [] if "=" not in item] or None
    items = ([args.config] if args.config else []) + list(args.overrides) + list(extra) + spilled
    flags = [item for item in items if item.startswith("-")]
    if flags:
        parser.error(f"unrecognized arguments: {' '.join(flags)}")
    configs = [item for item in items if "=" not in item or Path(item).exists()]
    if len(configs) > 1:
        parser.error(f"one config file at most, got {configs}; overrides look like section.key=value")
    args.config = configs[0] if configs else None
    args.overrides = [item for item in items if item not in configs]


def _demo(args: argparse.Namespace) -> int:
    from deepatlas.demo import run_demo

    run_demo(args.output, quick=args.quick, progress=not args.no_progress)
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every flag's default, except where its help already says it in its own words
    (``default``: "(default: as in training)" says more than "(default: None)") or there is no value
    to show (None, an empty list, a switch that is off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """The parser of ``deepatlas`` and of each verb (``add_subparsers`` makes its verbs of this class):
    :class:`HelpFormatter` everywhere, without each verb's module having to ask for it."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def add_train(sub) -> None:
    """The ``train`` command's parser."""
    t = sub.add_parser(
        "train",
        help="train DeepAtlas; every run leaves a folder with config, checkpoints and logs",
        description="Train a registration net and a segmentation net jointly. Settings come from "
        "the config file, then --recipe, then KEY=VALUE overrides (e.g. schedule.cycles=10 "
        "loss.regularizer_weight=2), then the flags (which win over an override of the same key).",
    )
    t.add_argument("config", nargs="?", help="YAML or JSON config file (optional: defaults otherwise)")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides")
    t.add_argument("-o", "--output", required=True, help="run folder")
    t.add_argument("--dataset", help="folder with images/ (+ labels/), a JSON manifest, or an OASIS-1 root")
    t.add_argument("--label-map", help="label-map file (brain31.json format)")
    t.add_argument("--splits", help="splits file (splits.json format)")
    t.add_argument("--num-labelled", type=int, help="keep the labels of N training subjects (seeded choice)")
    t.add_argument("--labelled", nargs="+", metavar="ID", help="keep the labels of exactly these subjects")
    t.add_argument("--unknown-labels", choices=options.UNKNOWN_LABELS, help="label codes not in the label map")
    t.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    t.add_argument(
        "--recipe",
        default="default",
        choices=tuple(RECIPES),
        help="a named set of settings measured together (deepatlas/recipes.py): distil = distilled "
        "multi-atlas teachers, for 3+ labelled images and 45+ minutes (default: the defaults)",
    )
    t.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    t.add_argument(
        "--init",
        metavar="RUN",
        help="start from the weights of a trained run (folder or shipped model name, e.g. brain-2mm): "
        "fine-tuning; same network settings and label classes (config key init_from)",
    )
    t.add_argument("--max-steps", type=int, help="stop after this many steps (resume later)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)


def build_parser() -> argparse.ArgumentParser:
    from deepatlas import __version__

    parser = Parser(prog="deepatlas", description="Joint registration and segmentation (DeepAtlas).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train(sub)
    d = sub.add_parser("demo", help="train and evaluate on built-in brain phantoms (no data needed, a few minutes)")
    d.add_argument("-o", "--output", default="deepatlas-demo", help="output folder")
    d.add_argument("--quick", action="store_true", help="a seconds-long smoke version")
    d.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    d.set_defaults(func=_demo)

    from deepatlas.cli.apply_args import add_commands

    add_commands(sub)
    from deepatlas.cli.morphometry import add_command

    add_command(sub)
    from deepatlas.cli.prepare import add_command as add_prepare

    add_prepare(sub)
    from deepatlas.cli.warp import add_command as add_warp

    add_warp(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        _sort_train_positionals(args, extra, parser)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    warnings.filterwarnings("ignore", message=".*Using PyTorch native grid_sample.*")
    warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")
    from deepatlas.data.errors import DataError

    try:
        return args.func(args)
    except (DataError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"deepatlas: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # unwritable folder, full disk: name the file, not torch's internals
        where = f"{err.filename}: " if err.filename else ""
        print(
            f"deepatlas: error: {where}{err.strerror or err} (check the path, its permissions and free space)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("deepatlas: interrupted; the last checkpoint is kept, continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
