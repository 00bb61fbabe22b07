"""Do a label map's left and right structures lie on their own sides of the brain?

A reference label map whose hemisphere split wanders is a quiet error: a seg net trained on it learns
wrong sides, and a benchmark scored against it reports a method's failure where the reference is at
fault. Found in ixi-2mm (2026-12-07, docs/results.md "Reference label maps with wrong sides"): four of
its 185 automatic label maps name a third to a half of one hemisphere's posterior structures as the
other hemisphere's.

The check works in world coordinates, whatever the grid's orientation: the medians of all voxels of
left-named and of right-named structures (:meth:`deepatlas.data.labels.LabelScheme.sides`) span the
left-right direction, and the plane half-way between them, normal to it, stands for the mid-plane. A
structure is reported when more than :data:`MIN_SHARE` of its voxels lie more than :data:`MARGIN_MM`
past that plane on the other side. Where the right-named structures lie on the subject's left as the
header puts it (world -x: NIfTI world is RAS), the whole map is swapped, or its header's left-right
axis is: every structure is judged against the header's left-right axis instead. Label maps whose class
names say no side (codes only) are not checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from deepatlas.data.labels import LabelScheme

MARGIN_MM = 5.0
"""How far past the mid-plane a voxel must lie to count as on the other side: midline structures of one
side (a ventricle's medial wall, the thalamus, the cingulate cortex) reach the plane, and a real brain's
mid-plane is neither flat nor exactly half-way between its hemispheres' medians."""
MIN_SHARE = 0.1
"""A structure is reported when more than this share of its voxels lie past the margin. On the 158
ixi-2mm training and validation label maps with sound sides no structure exceeds 1.6 %; on the two
defective ones several structures reach 23 % to 100 % (docs/results.md)."""
MIN_VOXELS = 20
"""Structures with fewer voxels are not judged (a share of a few voxels says little)."""


@dataclass(frozen=True)
class CrossedStructure:
    """A side-named structure with ``share`` of its voxels on the other hemisphere's side."""

    name: str
    share: float
    throughout: bool = False
    """The map's right-named structures lie on the subject's left as a whole (its header's world -x)."""


def crossed_structures(
    classes: np.ndarray,
    affine: np.ndarray,
    scheme: LabelScheme,
    margin_mm: float = MARGIN_MM,
    min_share: float = MIN_SHARE,
) -> list[CrossedStructure]:
    """The side-named structures of ``classes`` (class indices of ``scheme`` on a grid with ``affine``)
    of which more than ``min_share`` of the voxels lie more than ``margin_mm`` past the mid-plane on the
    other side (module docstring), largest share first (``min_share`` < 0: every structure judged, with its
    share); empty when both sides cannot be told."""
    side_of_class = np.array([{"left": -1, "right": 1}.get(s, 0) for s in scheme.sides()], dtype=np.int8)
    if not ((side_of_class < 0).any() and (side_of_class > 0).any()):
        return []
    voxel_side = side_of_class[np.asarray(classes, dtype=np.int64)]
    where = np.nonzero(voxel_side)
    side = voxel_side[where]
    if not ((side < 0).any() and (side > 0).any()):  # one side absent from this map: nothing to judge by
        return []
    matrix = np.asarray(affine, dtype=np.float64)  # (rows + 1) square; a 2-D map's may be 4 x 4
    rows = matrix.shape[0] - 1
    world = matrix[:rows, : len(where)] @ np.stack(where).astype(np.float64) + matrix[:rows, -1:]
    left, right = np.median(world[:, side < 0], axis=1), np.median(world[:, side > 0], axis=1)
    length = float(np.linalg.norm(right - left))
    if length <= margin_mm:  # the two sides' middles are not apart: no left-right direction to judge by
        return []
    direction = (right - left) / length
    throughout = rows == 3 and bool(direction[0] < 0)  # right-named structures on the subject's left (RAS -x)
    if throughout:
        direction = np.array([1.0, 0.0, 0.0])  # judged against the header's own left-right axis
    across = direction @ (world - (left + right)[:, None] / 2)  # mm toward the right side
    crossed = across * side < -margin_mm
    owner = np.asarray(classes)[where].astype(np.int64)
    totals = np.bincount(owner, minlength=len(scheme.names))
    wrong = np.bincount(owner[crossed], minlength=len(scheme.names))
    found = [
        CrossedStructure(scheme.names[k], float(wrong[k] / totals[k]), throughout)
        for k in np.nonzero(totals >= MIN_VOXELS)[0]
        if wrong[k] > min_share * totals[k]
    ]
    return sorted(found, key=lambda c: -c.share)


def describe_crossed(source: str, crossed: list[CrossedStructure], margin_mm: float = MARGIN_MM) -> str:
    """What lies where in the label map ``source``, in one clause."""
    shown = ", ".join(f"{100 * c.share:.0f} % of {c.name}" for c in crossed[:4])
    more = f" and {len(crossed) - 4} more structure(s)" if len(crossed) > 4 else ""
    whole = any(c.throughout for c in crossed)
    return (
        f"{source}: {shown}{more} lie more than {margin_mm:g} mm on the other hemisphere's side of the mid-plane: "
        + (
            "its left and right labels look swapped throughout (or its header's left-right axis is reversed)"
            if whole
            else "its left and right labels look swapped in part"
        )
    )


REFERENCE_ADVICE = "check it: scored against wrong sides, a right answer counts as wrong"


def warn_crossed(
    classes: np.ndarray, affine: np.ndarray, scheme: LabelScheme, source: str, advice: str = REFERENCE_ADVICE
) -> str | None:
    """Print and return ``warning: <what> (<advice>)`` for the label map ``source`` if its sides look swapped
    in part (:func:`crossed_structures`), else None. Information on stdout: the command goes on."""
    crossed = crossed_structures(classes, affine, scheme)
    if not crossed:
        return None
    line = f"warning: {describe_crossed(source, crossed)}; {advice}"
    if os.environ.get("RANK", "0") == "0":  # one process speaks for a torchrun launch
        print(line, flush=True)
    return line


ATLAS_ADVICE = "its sides would become every target's"


def warn_crossed_atlases(atlases: list, scheme: LabelScheme, unknown: str = "background") -> None:
    """:func:`warn_crossed` for each atlas's label map (``(image, labels)`` volumes; classes of ``scheme``, codes
    outside it as ``unknown`` says: ``error`` refuses them, naming the file), with the advice that an atlas's
    sides become every target's (``atlas-segment``, ``morphometry --atlas``)."""
    for _, labels in atlases:
        classes = scheme.encode(labels.array, source=str(labels.path), unknown=unknown)
        warn_crossed(classes, labels.affine, scheme, str(labels.path), ATLAS_ADVICE)
