"""Metrics to a plain JSONL file and to TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path

from deepatlas.files import atomic_write_text
from deepatlas.run_folder import RunFolder


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl``. A cut last line (the run was killed while appending)
    is dropped; a damaged line elsewhere is refused with its number."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}: line {number} is not a JSON record; fix or delete that line") from None
    return records


class MetricsLogger:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    On resume, records after the checkpoint's step are dropped first, so the file
    never holds two histories of the same steps.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = RunFolder(run_dir).metrics
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(RunFolder(run_dir).tensorboard), purge_step=resume_step)
            except ImportError:  # tensorboard is optional at run time; the JSONL file is not
                self.writer = None

    def log(self, step: int, kind: str, values: dict) -> None:
        record = {"step": step, "kind": kind}
        for key, value in values.items():
            if isinstance(value, float) and math.isnan(value):
                value = None
            record[key] = value
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and value is not None and not isinstance(value, bool):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
