"""Where the benchmarks find the repository and the data sets: one setting, ``DEEPATLAS_DATA``
(docs/speed.md, "Running the benchmarks")."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The repository root (models/, benchmarks/results/ are below it)."""


def data_root() -> Path:
    """The folder holding the data sets (``ixi-2mm``, ``ixi-heads``, ...): ``$DEEPATLAS_DATA``, else
    ``shared/data`` beside the repository (where the project's checkouts keep them)."""
    return Path(os.environ.get("DEEPATLAS_DATA", REPO.parent / "shared" / "data"))
