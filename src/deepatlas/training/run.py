"""A training run as a folder: config, data choice, checkpoints, logs and results.

The folder's layout is owned by :mod:`deepatlas.run_folder`.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import numpy as np

from deepatlas.checkpoint import load_checkpoint
from deepatlas.config import Config
from deepatlas.data.io import grid_spacing
from deepatlas.data.loading import TrainingData, load_training_data
from deepatlas.data.sharpness import sharpness
from deepatlas.device import select_device
from deepatlas.evaluation.volume_range import sharpness_range, volume_range
from deepatlas.files import FolderBusyError, folder_lock, remove_orphans
from deepatlas.run_folder import RunFolder
from deepatlas.training.distributed import World, world_from_env
from deepatlas.training.faults import NonFiniteLoss
from deepatlas.training.trainer import Trainer

# settings a resumed run may change: they steer the rest of the run, not what was learnt
RESUMABLE_CHANGES = (
    "schedule.reg_lr",
    "schedule.seg_lr",
    "schedule.cycles",
    "schedule.time_budget_minutes",
    "schedule.lr_decay",
    "schedule.val_every",
    "schedule.checkpoint_every",
    "device",
    "threads",
)


def train(
    config: Config,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    data: TrainingData | None = None,
    max_steps: int | None = None,
) -> dict:
    """Train DeepAtlas as ``config`` says and leave everything in ``run_dir``.

    Under ``torchrun`` every process calls this; they train together and the main one
    writes the folder (:mod:`deepatlas.training.distributed`).

    Args:
        resume: continue from ``run_dir/checkpoints/last.pt``, with the saved config; only
            :data:`RESUMABLE_CHANGES` may differ from it (a lower learning rate after a
            divergence, a longer budget), because a resumed run must be the run that was started.
        data: already-loaded data (skips loading ``config.data``).
        max_steps: stop after this many steps of this call (the run can be resumed).

    Returns:
        The summary written to ``summary.json``.

    Raises:
        NonFiniteLoss: a loss or gradient became NaN or infinite; the last checkpoint is kept.
    """
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    select_device(config.device)  # a device that cannot work is refused before the data is read
    world = world_from_env(config.device)
    created = not run_dir.exists()
    with _hold(run_dir, world, resume):
        _check_resume(config, folder, resume)
        return _train_held(config, folder, world, created, resume, progress, data, max_steps)


def _train_held(config, folder, world, created, resume, progress, data, max_steps) -> dict:
    """:func:`train`, the run folder held."""
    run_dir = folder.root
    try:
        if world.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)  # an unwritable place fails now, not after loading
        data = data or load_training_data(config.data, progress=progress and world.is_main)
        trainer = Trainer(config, data.train, data.validation, run_dir, progress=progress, world=world)
        if world.is_main:
            _write_run_description(folder, config, data)
        if resume:
            trainer.resume(folder.checkpoint("last"))
        return _fit(trainer, folder, max_steps)
    except Exception:
        # a new run that failed before its first checkpoint leaves no folder behind
        if created and world.is_main and not folder.checkpoint("last").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


@contextlib.contextmanager
def _hold(run_dir: Path, world: World, resume: bool):
    """The run folder, locked while this run trains in it (:func:`~deepatlas.files.folder_lock`), so a
    second ``train`` (or ``--resume``) there stops with one line naming the holder instead of writing
    the same steps twice. Under torchrun rank 0 alone takes the lock, and every rank learns whether it did."""
    with contextlib.ExitStack() as stack:
        refused: Exception | None = None
        if world.is_main:
            try:
                stack.enter_context(folder_lock(run_dir, f"deepatlas train -o {run_dir}{' --resume' * resume}"))
            except (FolderBusyError, OSError) as err:
                refused = err
        if world.any(refused is not None):
            raise refused or FolderBusyError(f"{run_dir}: process 0 could not take the run folder (it says why)")
        yield


def _check_resume(config: Config, folder: RunFolder, resume: bool) -> None:
    checkpoint = folder.checkpoint("last")
    if not resume:
        if checkpoint.exists():
            raise FileExistsError(
                f"{folder.root}: already holds a run; pass --resume to continue it, or choose another output folder"
            )
        return
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: nothing to resume from (start without --resume)")
    remove_orphans(checkpoint.parent)  # temp files of writes that a kill interrupted
    remove_orphans(folder.root)
    # through Config: keys added by a later deepatlas version take their defaults on both sides
    saved = _flat(Config.from_saved(load_checkpoint(checkpoint)["config"]).to_dict())
    # and through Config.from_dict: an on/off switch set from Python as a bool reads as on/off, as saved
    wanted = _flat(Config.from_dict(config.to_dict()).to_dict())
    changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    refused = [k for k in changed if k not in RESUMABLE_CHANGES]
    if refused:
        raise ValueError(
            f"{folder.root}: the config differs from the one the run started with ({refused}); resume with "
            f"the same config (only {list(RESUMABLE_CHANGES)} may change), or start a new run folder"
        )


def _flat(spec: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in spec.items():
        if isinstance(value, dict) and key not in ("reg_pair_weights", "seg_pair_weights"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _write_run_description(folder: RunFolder, config: Config, data: TrainingData) -> None:
    folder.root.mkdir(parents=True, exist_ok=True)
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
    _write_training_ranges(folder, data)


def _write_training_ranges(folder: RunFolder, data: TrainingData) -> None:
    """``volume_range.json``: the labelled training images' structure volumes and every training image's
    sharpness (labelled or not: sharpness needs no labels, so a run with a few labels still flags a soft scan),
    each where there are enough images to bound it; no file where neither is."""
    labelled = data.train.labels[data.train.has_label].numpy()[:, 0]
    voxel = abs(float(np.linalg.det(np.asarray(data.train.affines[0])[:3, :3])))
    ranges = volume_range(labelled, voxel, data.scheme.names) or {}
    spacing = grid_spacing(data.train.affines[0], data.train.images.ndim - 2)
    sharp = sharpness_range([sharpness(image[0].numpy(), spacing) for image in data.train.images])
    if sharp is not None:
        ranges["sharpness"] = sharp
    if ranges:
        folder.write_json(folder.volume_range, ranges)


def _fit(trainer: Trainer, folder: RunFolder, max_steps: int | None) -> dict:
    """Run the trainer and write ``summary.json`` (also when a non-finite loss stops it)."""
    start, started_at = trainer.step, time.time()
    summary: dict = {"world_size": trainer.world.size}
    try:
        validation = trainer.fit(max_steps=max_steps)
    except NonFiniteLoss as err:
        checkpoint = folder.checkpoint("last")
        kept = f"step {load_checkpoint(checkpoint)['step']}" if checkpoint.exists() else None
        summary.update(stopped_by="non-finite loss", error=str(err), last_good_checkpoint=kept)
        if trainer.world.is_main and kept:
            folder.write_json(folder.summary, {**_summary(trainer, start, started_at, {}), **summary})
        err.advice = (
            f"{checkpoint} ({kept}) is kept: continue with --resume, adding schedule.reg_lr=... / "
            f"schedule.seg_lr=... (smaller) if it happens again"
            if kept
            else "no checkpoint had been written yet: start again with a smaller schedule.reg_lr / schedule.seg_lr"
        )
        raise
    summary.update(_summary(trainer, start, started_at, validation))
    if trainer.world.is_main:
        folder.write_json(folder.summary, summary)
    return summary


def _summary(trainer: Trainer, start: int, started_at: float, validation: dict) -> dict:
    return {
        "steps_done": trainer.step,
        "steps_total": trainer.schedule.total,
        "finished": trainer.stopped_by in ("schedule", "time budget"),
        "stopped_by": trainer.stopped_by,
        "training_seconds": round(trainer.elapsed, 1),
        "seconds_this_session": round(time.time() - started_at, 1),
        "steps_this_session": trainer.step - start,
        "device": str(trainer.device),
        "amp": str(trainer.amp) if trainer.amp else "off",
        # what teachers.enabled=auto resolved to, and what they cost
        "teachers": None
        if trainer.teachers is None
        else {
            "images": len(trainer.teachers.teachers),
            "seconds": round(trainer.teachers.seconds, 3),
            "synthesised": len(trainer.teachers.synthetic),
        },
        "augment": trainer.augmenting,  # what augment.enabled=auto resolved to
        "seg_step": trainer.seg_variant,  # which segmentation step the run took (options.SEG_STEPS)
        "best_validation_score": trainer.best_score if trainer.best_score > float("-inf") else None,
        "last_validation": validation,
    }
