"""Fixed splits and the choice of which training images keep their labels."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from deepatlas.data.errors import DataError


def load_splits(path: str | Path) -> dict[str, list[str]]:
    """Read a splits file: ``{"train": [ids], "validation": [ids], "test": [ids]}`` (any split names)."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read splits file: {err}") from None
    if not isinstance(spec, dict) or not all(isinstance(v, list) for v in spec.values()):
        raise DataError(f"{path}: a splits file maps split names to lists of subject ids")
    seen: dict[str, str] = {}
    for name, ids in spec.items():
        for i in ids:
            if i in seen:
                raise DataError(f"{path}: subject {i!r} is in both {seen[i]!r} and {name!r}")
            seen[i] = name
    return {k: [str(i) for i in v] for k, v in spec.items()}


def choose_labelled(
    with_labels: Sequence[str],
    num_labelled: int | None = None,
    labelled_ids: Sequence[str] | None = None,
    seed: int = 0,
) -> list[str]:
    """Which of the subjects that have labels keep them for training (the rest are hidden).

    ``labelled_ids`` (explicit) wins over ``num_labelled`` (drawn with ``seed`` from
    the sorted ids, so the choice is reproducible); neither means all.
    """
    available = sorted(with_labels)
    if labelled_ids is not None:
        missing = sorted(set(labelled_ids) - set(available))
        if missing:
            raise DataError(f"labelled subjects requested but not found with labels in the training set: {missing}")
        return sorted(labelled_ids)
    if num_labelled is None:
        return available
    if num_labelled > len(available):
        raise DataError(f"num_labelled={num_labelled} but only {len(available)} training subjects have labels")
    return sorted(random.Random(seed).sample(available, num_labelled))
