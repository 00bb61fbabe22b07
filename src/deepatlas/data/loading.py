"""From a :class:`DataConfig` to the in-memory training and validation sets."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from deepatlas.config import DataConfig
from deepatlas.data.dataset import ImageSet, load_image_set, scan_label_codes
from deepatlas.data.errors import DataError
from deepatlas.data.hemispheres import crossed_structures, describe_crossed, warn_crossed
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
    wrong = {
        sid
        for subjects, image_set in ((train, train_set), (validation, val_set))
        for sid in wrong_sided(subjects, image_set, cfg.wrong_sides)
    }
    if cfg.wrong_sides == "unlabel" and wrong:
        train_set, labelled = without_labels(train_set, wrong), [i for i in labelled if i not in wrong]
        val_set = without_subjects(val_set, wrong)
        if not labelled:
            raise DataError(
                f"{cfg.dataset}: every labelled training subject's label map has wrong sides (above); mend them, "
                "or use them as they are with data.wrong_sides=keep"
            )
    return TrainingData(train_set, val_set, scheme, labelled)


SIDE_ADVICE = {
    "unlabel": "its labels are left out (a training image trains unlabelled, a validation subject is not scored); "
    "data.wrong_sides=keep uses them",
    "keep": "used as it is (data.wrong_sides=keep)",
    "error": "mend it, leave it out of the splits, or train with data.wrong_sides=unlabel (or keep)",
}
"""What each ``data.wrong_sides`` does with such a label map, as its warning line says it."""


def wrong_sided(subjects: list[Subject], image_set: ImageSet | None, mode: str) -> list[str]:
    """Ids of the loaded label maps whose left and right structures lie on the wrong sides
    (:func:`deepatlas.data.hemispheres.warn_crossed`: one printed line each, saying what ``mode`` does);
    with ``mode`` ``error``, a :class:`DataError` naming the first."""
    found = []
    for n, subject in enumerate(subjects if image_set is not None else []):
        if image_set.has_label[n]:
            labels, advice = image_set.labels[n, 0].numpy(), SIDE_ADVICE[mode]
            if mode == "error":
                crossed = crossed_structures(labels, image_set.affines[n], image_set.scheme)
                if crossed:
                    raise DataError(f"{describe_crossed(str(subject.label), crossed)}; {advice}")
            elif warn_crossed(labels, image_set.affines[n], image_set.scheme, str(subject.label), advice):
                found.append(subject.id)
    return found


def without_labels(image_set: ImageSet, ids: set[str]) -> ImageSet:
    """``image_set`` with the labels of ``ids`` dropped (their images stay, unlabelled)."""
    drop = torch.tensor([i in ids for i in image_set.ids])
    labels = image_set.labels.clone()
    labels[drop] = 0
    return replace(image_set, labels=labels, has_label=image_set.has_label & ~drop)


def without_subjects(image_set: ImageSet | None, ids: set[str]) -> ImageSet | None:
    """``image_set`` without the subjects ``ids`` (None when none is left)."""
    if image_set is None:
        return None
    keep = [n for n, i in enumerate(image_set.ids) if i not in ids]
    if not keep:
        return None
    return replace(
        image_set,
        ids=[image_set.ids[n] for n in keep],
        images=image_set.images[keep],
        labels=image_set.labels[keep],
        has_label=image_set.has_label[keep],
        affines=[image_set.affines[n] for n in keep],
    )
