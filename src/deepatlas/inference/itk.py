"""A registration in the conventions of ITK, ANTs, SimpleITK and 3D Slicer, beside our own.

``register`` writes one deformation twice, because the two conventions differ in the sign of two
of the vector's components, and a tool that reads one as the other applies the map mirrored:

- ``_displacement.nii.gz`` (ours): mm along the **NIfTI world (RAS+)** axes, as nibabel and every
  NIfTI affine state them; ``deepatlas warp`` reads it.
- ``_Warp.nii.gz`` (ITK's, named as ``antsRegistration`` names its ``1Warp.nii.gz``): mm along
  **ITK's world (LPS+)** axes. ITK turns a NIfTI's *grid* from RAS into LPS when it reads it (it
  negates the first two rows of the affine) but reads the *values* of a vector image as they are
  stored, as LPS components: so the same field with its x and y components negated.
  ``antsApplyTransforms -t``, SimpleITK's ``DisplacementFieldTransform`` and Slicer
  (loaded as a transform) read it.

Both hold ``u`` with ``moving point = p + u(p)`` for a point ``p`` of the fixed grid: the map a
resampler needs (for each output point, where to read the input), which is the direction ITK
transforms point in. ``u`` includes the affine stage, so the file is the whole registration; the
affine stage alone (``_Affine.txt``, an ITK text transform) is for tools that want a linear start,
not to be chained before the Warp.
"""

from __future__ import annotations

import re

import numpy as np

FORWARD = "moving = p + u(p)"
INVERSE = "fixed = q + v(q)"
# RAS <-> LPS: the same diagonal flip both ways
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
_DESCRIPTION = re.compile(r"^deepatlas displacement mm (RAS|LPS), (moving = p \+ u\(p\)|fixed = q \+ v\(q\))")


def field_description(convention: str, meaning: str) -> str:
    """The NIfTI ``descrip`` of a field we write: ``deepatlas warp`` recognises its files by it."""
    if convention not in ("RAS", "LPS") or meaning not in (FORWARD, INVERSE):
        raise ValueError(f"unknown field convention {convention!r} or meaning {meaning!r}")
    return f"deepatlas displacement mm {convention}, {meaning}"


def parse_description(description: str) -> tuple[str, str] | None:
    """``(convention, meaning)`` of a header written by :func:`field_description`, else None."""
    match = _DESCRIPTION.match(description)
    return (match.group(1), match.group(2)) if match else None


def flip_ras_lps(field: np.ndarray) -> np.ndarray:
    """A field ``dims x *shape`` with components along RAS as components along LPS, or back."""
    out = np.array(field, copy=True)
    out[:2] *= -1
    return out


def lps_affine(matrix: np.ndarray) -> np.ndarray:
    """A 4x4 world map between RAS coordinates as the same map between LPS coordinates."""
    return _FLIP @ np.asarray(matrix, dtype=np.float64) @ _FLIP


def itk_affine_text(matrix: np.ndarray, dims: int = 3) -> str:
    """An ITK text transform file (``#Insight Transform File V1.0``) of a 4x4 world map (RAS).

    ``matrix`` maps a fixed world point to a moving one; ITK's transforms map a point of the
    output (fixed) image to where the resampler reads the input (moving), so it is written
    as it is, in LPS: ``AffineTransform_double_D_D`` with the ``D x D`` matrix row by row,
    then the translation, and centre (``FixedParameters``) 0, so the translation is the offset.
    A 2D map (identity along the third axis) is written with its first two rows and columns.
    """
    if dims not in (2, 3):
        raise ValueError(f"an ITK affine is written for 2D or 3D maps, got {dims}D")
    lps = lps_affine(matrix)
    linear, offset = lps[:dims, :dims], lps[:dims, 3]

    def numbers(values) -> str:
        return " ".join(repr(float(v)) for v in values)

    return (
        "#Insight Transform File V1.0\n#Transform 0\n"
        f"Transform: AffineTransform_double_{dims}_{dims}\n"
        f"Parameters: {numbers(linear.ravel())} {numbers(offset)}\n"
        f"FixedParameters: {numbers(np.zeros(dims))}\n"
    )
