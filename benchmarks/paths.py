"""Where the benchmarks find the repository and the data sets: one setting, ``DEEPATLAS_DATA``
(docs/speed.md, "Running the benchmarks")."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The repository root (models/, benchmarks/results/ are below it)."""


def data_root() -> Path:
    """The folder holding the data sets (``ixi-2mm``, ``ixi-heads``, ...): ``$DEEPATLAS_DATA``, else
    ``shared/data`` beside the repository (where the project's checkouts keep them)."""
    return Path(os.environ.get("DEEPATLAS_DATA", REPO.parent / "shared" / "data"))


def parse_ixi_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The command's arguments, its ``--data`` checked to be the ixi-2mm folder (one line naming it if not),
    and torch held to one thread (the machine's cores are shared; the results say so)."""
    import torch

    args = parser.parse_args()
    if not (Path(args.data) / "splits.json").is_file():
        parser.error(f"--data {args.data}: no splits.json there; give the ixi-2mm folder")
    torch.set_num_threads(1)
    return args


def named_runs(parser: argparse.ArgumentParser, items: list[str], flag: str, reserved=()) -> tuple[dict, dict]:
    """``NAME=RUN_DIR`` items (a run folder or a shipped model's name) -> (name -> the item's RUN_DIR, name -> the
    run's ``best`` checkpoint, loaded); a bad item ends the command with one line naming ``flag``. ``reserved``:
    names a run may not take (the keys of the benchmark's own rows)."""
    from deepatlas.inference import load_run

    folders, runs = {}, {}
    for item in items:
        name, _, folder = item.partition("=")
        if not name or not folder or name in runs or name in reserved:
            none_of = f" and none of {sorted(reserved)}" if reserved else ""
            parser.error(f"{flag} {item}: give NAME=RUN_DIR, each NAME once{none_of}")
        try:
            folders[name], runs[name] = folder, load_run(folder, "best")
        except (FileNotFoundError, ValueError) as error:
            parser.error(f"{flag} {item}: {error}")
    return folders, runs
