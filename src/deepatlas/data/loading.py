"""From a :class:`DataConfig` to the in-memory training and validation sets."""

from __future__ import annotations

from dataclasses import dataclass

from deepatlas.config import DataConfig
from deepatlas.data.dataset import ImageSet, load_image_set, scan_label_codes
from deepatlas.data.errors import DataError
from deepatlas.data.labels import LabelScheme
from deepatlas.data.splits import choose_labelled, load_splits
from deepatlas.data.subjects import Subject, find_subjects


@dataclass
class TrainingData:
    train: ImageSet
    validation: ImageSet | None
    scheme: LabelScheme
    labelled_ids: list[str]


def select_split(subjects: list[Subject], splits: dict[str, list[str]], name: str, source: str) -> list[Subject]:
    if name not in splits:
        raise DataError(f"{source}: no split named {name!r} (splits: {sorted(splits)})")
    by_id = {s.id: s for s in subjects}
    missing = [i for i in splits[name] if i not in by_id]
    if missing:
        raise DataError(f"{source}: split {name!r} names subjects not in the dataset: {missing[:10]}")
    return [by_id[i] for i in splits[name]]


@dataclass
class TrainingSelection:
    """Which subjects a :class:`DataConfig` trains and validates on, before any image is read."""

    train: list[Subject]
    validation: list[Subject]
    """Validation subjects that have labels (the others cannot be scored)."""
    labelled_ids: list[str]
    """Training subjects whose labels are kept; the others train unlabelled."""

    @property
    def unlabelled(self) -> int:
        return len(self.train) - len(self.labelled_ids)


def select_subjects(cfg: DataConfig) -> TrainingSelection:
    """Find the subjects, apply the splits and choose the labelled ones (a directory scan, no image read)."""
    if cfg.dataset is None:
        raise DataError("no dataset given: set data.dataset (a folder with images/, a manifest or an OASIS root)")
    subjects = find_subjects(cfg.dataset)
    validation: list[Subject] = []
    if cfg.splits is not None:
        splits = load_splits(cfg.splits)
        train = select_split(subjects, splits, cfg.train_split, cfg.splits)
        if cfg.val_split is not None and cfg.val_split in splits:
            validation = [s for s in select_split(subjects, splits, cfg.val_split, cfg.splits) if s.label]
    else:
        train = subjects
    labelled = choose_labelled(
        [s.id for s in train if s.label is not None], cfg.num_labelled, cfg.labelled_ids, cfg.seed
    )
    if not labelled:
        raise DataError(f"{cfg.dataset}: no labelled training subject; DeepAtlas needs at least one label map")
    return TrainingSelection(train, validation, labelled)


def load_training_data(cfg: DataConfig, progress: bool = True) -> TrainingData:
    """Find, check and load the training (and validation) subjects; hide the labels not chosen."""
    chosen = select_subjects(cfg)
    train, validation, labelled = chosen.train, chosen.validation, chosen.labelled_ids
    if cfg.label_map is not None:
        scheme = LabelScheme.from_file(cfg.label_map)
    else:
        keep = set(labelled)
        scheme = LabelScheme.from_codes(scan_label_codes([s for s in train if s.id in keep] + validation))
    train_set = load_image_set(
        train, scheme, labelled, cfg.unknown_labels, cfg.normalize, progress=progress, desc="loading train"
    )
    val_set = None
    if validation:
        val_set = load_image_set(
            validation,
            scheme,
            None,
            cfg.unknown_labels,
            cfg.normalize,
            shape=train_set.shape,
            progress=progress,
            desc="loading validation",
        )
    return TrainingData(train_set, val_set, scheme, labelled)
