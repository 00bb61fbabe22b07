"""Which ixi-2mm reference label maps a benchmark scores against: those whose sides are sound.

Four of ixi-2mm's 185 automatic label maps name a third to a half of one hemisphere's posterior structures
as the other hemisphere's (:mod:`deepatlas.data.hemispheres`; one each in the training and validation
splits, two in test). Scored against such a map, a method that finds the right ventricle where it is loses
the change the reference puts on the wrong side: on synthetic atrophy of the validation brains, the one
defective map made every seg net look 0.05-0.09 worse on the right lateral ventricle (docs/results.md).
"""

from __future__ import annotations

from pathlib import Path

from deepatlas.data.hemispheres import crossed_structures, describe_crossed
from deepatlas.data.io import load_label_codes
from deepatlas.data.labels import LabelScheme


def sound_sides(
    data: Path, ids: list[str], scheme: LabelScheme, say: str = "left out"
) -> tuple[list[str], dict[str, str]]:
    """``ids`` whose reference label maps (``<data>/labels/<id>.nii.gz``) have sound sides, in order, and
    per other id the line that says why (printed after ``say``: what the benchmark does with it)."""
    kept, left_out = [], {}
    for subject in ids:
        labels = load_label_codes(data / "labels" / f"{subject}.nii.gz")
        classes = scheme.encode(labels.array, unknown="background")
        crossed = crossed_structures(classes, labels.affine, scheme)
        if crossed:
            left_out[subject] = describe_crossed(subject, crossed)
            print(f"{say}: {left_out[subject]}", flush=True)
        else:
            kept.append(subject)
    return kept, left_out
