"""The layout of a run folder, owned here: every other module asks this one for a path.

::

    config.yaml            the full resolved configuration
    labels.json            the label scheme (class index -> codes, names)
    data.json              training / labelled / validation subject ids, grid
    checkpoints/last.pt    everything needed to resume (written atomically)
    checkpoints/best.pt    best validation score so far
    best_validation.json   the validation metrics of best.pt
    metrics.jsonl          one record per step and per validation
    tensorboard/           the same, for TensorBoard
    summary.json           final validation metrics and timing
    evaluation-<split>/    what ``deepatlas evaluate`` wrote for that split
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepatlas import options
from deepatlas.files import atomic_write_text


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run folder (nothing is created until something is written)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def labels(self) -> Path:
        return self.root / "labels.json"

    @property
    def data(self) -> Path:
        return self.root / "data.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def template(self) -> Path:
        """The image that defines the model's space (``--align``); optional: runs on the shipped
        template's grid use that template (:func:`deepatlas.inference.run.run_template`)."""
        return self.root / "template.nii.gz"

    @property
    def best_validation(self) -> Path:
        return self.root / "best_validation.json"

    def checkpoint(self, name: str = "last") -> Path:
        """``checkpoints/<name>.pt`` (``best`` or ``last``)."""
        options.look_up_option(name, options.CHECKPOINT, "checkpoint")
        return self.root / "checkpoints" / f"{name}.pt"

    def evaluation(self, split: str) -> Path:
        """Where ``deepatlas evaluate`` writes (and ``report`` reads) the evaluation of ``split``."""
        return self.root / f"evaluation-{split}"

    def write_json(self, path: Path, value: Any) -> Path:
        return atomic_write_text(path, json.dumps(value, indent=1))

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
