"""Reading the scans a command was given: load, brain-extract whole heads (``--strip``), and write the
brain mask beside the outputs, with one printed line per scan that was stripped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MASK_SUFFIX = "_brainmask.nii.gz"
OUTPUT_SUFFIXES = ("_atlas_seg.nii.gz", "_seg.nii.gz", "_warped.nii.gz")
"""The outputs a mask is named after: a label map, or a registration's warped image."""


def mask_path(output: Path, side: str = "") -> Path:
    """The brain mask's path beside ``output`` (``<stem>_seg.nii.gz``, ``<stem>_warped.nii.gz`` ...):
    ``<stem>_brainmask.nii.gz``, or ``<stem>_<side>_brainmask.nii.gz`` (register: ``moving``, ``fixed``)."""
    name = output.name
    suffix = next((s for s in OUTPUT_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise ValueError(f"{output}: not a segment or register output name")
    return output.with_name(name[: -len(suffix)] + (f"_{side}" if side else "") + MASK_SUFFIX)


def load_scan(path: Path, strip: str, mask: Path | None):
    """The image at ``path``, brain-extracted as ``strip`` says (:func:`deepatlas.inference.strip.strip`);
    when it was, its mask (uint8, on the scan's own grid) is written to ``mask`` (planned and checked
    free by the command before any work)."""
    from deepatlas.data.io import load_image, save_volume
    from deepatlas.inference.strip import strip as extract

    volume, report = extract(load_image(path), strip)
    if report.stripped:
        print(f"{path}: brain-extracted ({report.why}; brain {report.brain_ml:.0f} mL)")
        if mask is not None:
            save_volume(report.mask.astype(np.uint8), volume.affine, mask)
    elif mask is not None:  # not a head this time: no mask, and none left from an earlier run (--overwrite)
        mask.unlink(missing_ok=True)
    return volume
