"""A training run as a folder: config, data choice, checkpoints, logs and results.

The folder's layout is owned by :mod:`deepatlas.run_folder`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from deepatlas.checkpoint import load_checkpoint
from deepatlas.config import Config
from deepatlas.data.prepare import TrainingData, prepare_data
from deepatlas.run_folder import RunFolder
from deepatlas.training.trainer import Trainer


def train(
    config: Config,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    data: TrainingData | None = None,
    max_steps: int | None = None,
) -> dict:
    """Train DeepAtlas as ``config`` says and leave everything in ``run_dir``.

    Args:
        resume: continue from ``run_dir/checkpoints/last.pt``. The saved config is
            used; a config that differs from it is refused, because a resumed run
            must be the run that was started.
        data: already-loaded data (skips loading ``config.data``).
        max_steps: stop after this many steps of this call (the run can be resumed).

    Returns:
        The summary written to ``summary.json``.
    """
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    checkpoint = folder.checkpoint("last")
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"{checkpoint}: nothing to resume from (start without --resume)")
        # through Config: keys added by a later deepatlas version take their defaults on both sides
        saved = Config.from_dict(load_checkpoint(checkpoint)["config"]).to_dict()
        if saved != config.to_dict():
            changed = sorted(k for k in set(saved) | set(config.to_dict()) if saved.get(k) != config.to_dict().get(k))
            raise ValueError(
                f"{run_dir}: the config differs from the one the run started with (sections "
                f"{changed}); resume with the same config, or start a new run folder"
            )
    elif checkpoint.exists():
        raise FileExistsError(
            f"{run_dir}: already holds a run; pass --resume to continue it, or choose another output folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    data = data or prepare_data(config.data, progress=progress)
    config.save(folder.config)
    folder.write_json(folder.labels, data.scheme.to_dict())
    folder.write_json(
        folder.data,
        {
            "train": data.train.ids,
            "labelled": data.labelled_ids,
            "unlabelled": [i for i in data.train.ids if i not in set(data.labelled_ids)],
            "validation": data.validation.ids if data.validation is not None else [],
            "grid_shape": list(data.train.shape),
            "affine": np.asarray(data.train.affines[0]).tolist(),
        },
    )
    trainer = Trainer(config, data.train, data.validation, run_dir, progress=progress)
    if resume:
        trainer.resume(checkpoint)
    start, started_at = trainer.step, time.time()
    validation = trainer.fit(max_steps=max_steps)
    summary = {
        "steps_done": trainer.step,
        "steps_total": trainer.schedule.total,
        "finished": trainer.stopped_by in ("schedule", "time budget"),
        "stopped_by": trainer.stopped_by,
        "training_seconds": round(trainer.elapsed, 1),
        "seconds_this_session": round(time.time() - started_at, 1),
        "steps_this_session": trainer.step - start,
        "device": str(trainer.device),
        "amp": str(trainer.amp) if trainer.amp else "off",
        "best_validation_score": trainer.best_score if trainer.best_score > float("-inf") else None,
        "last_validation": validation,
    }
    folder.write_json(folder.summary, summary)
    return summary
