"""Brain extraction for whole-head scans: ``--strip auto|on|off`` of every command that takes scans.

The networks and the template were trained on skull-stripped brains; a whole head (skull, scalp,
neck) put through them gives labels that are wrong almost everywhere, with no error. So a head is
detected and stripped first, by deepbet (Fisch et al. 2024, MIT licence; its two networks ship
inside its wheel, so nothing downloads at run time, and it runs on a CPU in a few seconds). It is
an optional dependency (``pip install 'deepatlas[strip]'``); without it, a scan that looks like a
head is refused with one line saying what to install, never segmented as it is.

``auto`` decides by the scan's *filled foreground volume* in millilitres (world units, so the same
at any voxel size): the largest connected region brighter than a tenth of the 99th intensity
percentile, holes filled. A skull-stripped brain is that brain, a head is brain plus skull, scalp
and often neck. :data:`HEAD_MIN_ML` sits between the two (measured in
``benchmarks/results/raw_scans/heads.md``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from deepatlas import options
from deepatlas.data.errors import DataError
from deepatlas.data.io import Volume
from deepatlas.options import look_up_option

HEAD_MIN_ML = 2600.0
"""``--strip auto`` strips a scan whose filled foreground exceeds this (mL): skull-stripped ixi-2mm
brains, in MNI space and so larger than native brains, fill at most 2.2 L; whole IXI heads 4.1-4.4 L
(``benchmarks/results/raw_scans/heads.md``)."""
INSTALL_HINT = "pip install 'deepatlas[strip]' (deepbet)"


@dataclass(frozen=True)
class StripReport:
    """Whether a scan was brain-extracted, why, and the mask (on the scan's own grid) if so.

    ``foreground_ml``: the auto criterion (filled foreground, mL; None where it was not computed:
    ``off``, 2D images); ``brain_ml``: the mask's volume."""

    stripped: bool
    why: str
    foreground_ml: float | None
    brain_ml: float | None = None
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {
            "stripped": self.stripped,
            "why": self.why,
            "foreground_ml": None if self.foreground_ml is None else round(self.foreground_ml, 1),
            "brain_ml": None if self.brain_ml is None else round(self.brain_ml, 1),
        }


def voxel_ml(volume: Volume) -> float:
    """The volume of one voxel in mL (2D images: mm2 / 1000, as if 1 mm thick)."""
    dims = volume.array.ndim
    return float(abs(np.linalg.det(volume.affine[:dims, :dims]))) / 1000.0


def foreground_ml(volume: Volume) -> float:
    """The filled foreground volume (mL) of :data:`HEAD_MIN_ML`'s criterion (see the module doc)."""
    array = volume.array
    positive = array[array > 0]
    if positive.size == 0:
        return 0.0
    mask = array > 0.1 * float(np.percentile(positive, 99))
    regions, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(regions.ravel())[1:]
        mask = regions == 1 + int(sizes.argmax())
    return float(ndimage.binary_fill_holes(mask).sum()) * voxel_ml(volume)


@functools.lru_cache(maxsize=1)
def _extractor():
    """deepbet's networks, loaded once per process (about 2 s)."""
    try:
        from deepbet.bet import BrainExtraction
    except ImportError:
        return None
    import torch

    return BrainExtraction(no_gpu=not torch.cuda.is_available())


def brain_mask(volume: Volume) -> np.ndarray:
    """deepbet's brain mask of a 3D scan, on the scan's own grid (bool)."""
    import nibabel as nib

    extractor = _extractor()
    if extractor is None:
        raise DataError(f"{volume.path}: brain extraction needs deepbet, which is not installed: {INSTALL_HINT}")
    image = nib.Nifti1Image(volume.array.astype(np.float32), volume.affine)
    try:
        _, mask, _ = extractor.run(image)
    except (AssertionError, RuntimeError, ValueError) as err:  # deepbet asserts on images without foreground
        raise DataError(f"{volume.path}: brain extraction failed ({type(err).__name__}: {err})") from None
    return np.asarray(mask.dataobj).astype(bool).reshape(volume.array.shape)


def strip(volume: Volume, mode: str = "auto") -> tuple[Volume, StripReport]:
    """``volume`` with everything outside the brain set to zero, and what was done.

    ``mode``: ``off`` (as it is), ``on`` (always extract), ``auto`` (extract when the filled foreground
    exceeds :data:`HEAD_MIN_ML`). 2D images are never stripped (``on`` refuses them).
    """
    look_up_option(mode, options.STRIP, "--strip")
    if volume.array.ndim != 3:
        if mode == "on":
            raise DataError(f"{volume.path}: --strip on needs a 3D scan, this one is {volume.array.ndim}D")
        return volume, StripReport(False, "2D image", None)
    if mode == "off":  # the criterion is not needed: its labelling of a 1 mm scan costs seconds
        return volume, StripReport(False, "off", None)
    size = foreground_ml(volume)
    if mode == "auto" and size <= HEAD_MIN_ML:
        return volume, StripReport(False, f"a brain: foreground {size:.0f} mL <= {HEAD_MIN_ML:.0f}", size)
    why = "asked for" if mode == "on" else f"a whole head: foreground {size:.0f} mL > {HEAD_MIN_ML:.0f}"
    if _extractor() is None:
        raise DataError(
            f"{volume.path}: {why}, and brain extraction needs deepbet, which is not installed: "
            f"{INSTALL_HINT}, or pass --strip off if the scan is a brain"
        )
    mask = brain_mask(volume)
    if not mask.any():
        raise DataError(f"{volume.path}: brain extraction found no brain; is this a T1 head or brain scan?")
    array = np.where(mask, volume.array, 0.0).astype(np.float32)  # zero: the background normalisation skips
    report = StripReport(True, why, size, float(mask.sum()) * voxel_ml(volume), mask)
    return Volume(array, volume.affine, volume.path), report
