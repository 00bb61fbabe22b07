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
