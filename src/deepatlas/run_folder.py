"""The layout of a run folder, owned here: every other module asks this one for a path.

::

    config.yaml            the full resolved configuration
    labels.json            the label scheme (class index -> codes, names)
    data.json              training / labelled / validation subject ids, grid
    checkpoints/last.pt    everything needed to resume (written atomically)
    checkpoints/best.pt    best validation score so far
    best_validation.json   the validation metrics of best.pt
    metrics.jsonl          one record per step and per validation
    tensorboard/           the same, for TensorBoard (with the tensorboard extra installed)
    summary.json           final validation metrics and timing
    evaluation-<split>/    the evaluation ``deepatlas report`` made for that split (``evaluate`` writes into -o)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepatlas import options
from deepatlas.files import atomic_write_text

SHIPPED_MODELS = Path(__file__).resolve().parent / "models"
"""The run folders that ship inside the package (``brain-2mm``), each with its model card
(README.md): package data, so a wheel or ``pip install git+...`` has them, found by name from any
directory (:func:`resolve_run`)."""


def shipped_models() -> list[str]:
    """The names of the shipped models (their folders under :data:`SHIPPED_MODELS`), sorted."""
    if not SHIPPED_MODELS.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_MODELS.iterdir() if (p / "checkpoints").is_dir())


def resolve_run(run: str | Path) -> Path:
    """The run folder ``run`` names: a folder as given (a path wins over a name), else a shipped
    model by its bare name (``brain-2mm``), so the same command works from any directory. A path with
    folders in it is returned as it is (:func:`~deepatlas.inference.run.load_run` says what it lacks).

    Raises:
        FileNotFoundError: a bare name that is neither a folder here nor a shipped model's, in one line
        that lists the shipped models.
    """
    path = Path(run)
    if path.is_dir() or len(path.parts) != 1:
        return path
    shipped = shipped_models()
    if str(run) in shipped:
        return SHIPPED_MODELS / str(run)
    names = ", ".join(shipped) or "none installed"
    raise FileNotFoundError(
        f"{run}: no such run folder, nor the name of a shipped model ({names}); give the folder "
        "`deepatlas train -o` wrote, or a shipped model's name"
    )


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
    def volume_range(self) -> Path:
        """The training labels' structure volumes (:mod:`deepatlas.evaluation.volume_range`): morphometry
        flags a volume outside them. Absent with few labelled training images, and in runs made before it."""
        return self.root / "volume_range.json"

    @property
    def best_validation(self) -> Path:
        return self.root / "best_validation.json"

    def checkpoint(self, name: str = "last") -> Path:
        """``checkpoints/<name>.pt`` (``best`` or ``last``)."""
        options.look_up_option(name, options.CHECKPOINT, "checkpoint")
        return self.root / "checkpoints" / f"{name}.pt"

    def evaluation(self, split: str) -> Path:
        """Where ``report`` reads the evaluation of ``split`` (and keeps the one it makes when there is none);
        ``evaluate`` writes where its ``-o`` says."""
        return self.root / f"evaluation-{split}"

    def write_json(self, path: Path, value: Any) -> Path:
        return atomic_write_text(path, json.dumps(value, indent=1))

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
