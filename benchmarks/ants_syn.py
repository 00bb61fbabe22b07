"""ANTs SyN (through ``antspyx``, an optional benchmark dependency) as a :data:`Registrar`.

The classical reference of ``benchmarks/experiment.py``: plugged into
:func:`deepatlas.evaluation.evaluate_run.evaluate_run` it is scored by exactly the
code that scores the networks (same pairs, same Dice, same Jacobian rule: folds are
voxels with det <= 0). Install with ``pip install -e .[benchmark]``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from deepatlas.data.io import Volume
from deepatlas.inference.apply import Registration

# ITK's LPS world axes vs NIfTI's RAS: the first two flip
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def available() -> bool:
    try:
        import ants  # noqa: F401
    except ImportError:
        return False
    return True


def syn_registrar(type_of_transform: str = "SyNOnly", threads: int | None = None, **kwargs):
    """A registrar running ``ants.registration(fixed, moving, type_of_transform)``.

    ``SyNOnly``: deformable SyN without an affine stage (ixi-2mm is pre-aligned; the
    networks get no affine stage either), ANTsPy's default settings otherwise (Mattes
    mutual information, 3 levels, 40/20/0 iterations). Labels are warped with
    ``genericLabel`` interpolation.
    """
    import ants

    if threads:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)

    def read(volume: Volume):
        # from the file, so ANTs sees the geometry exactly as written (origin, direction, spacing)
        return ants.image_read(str(volume.path))

    def register(moving: Volume, fixed: Volume, moving_labels: Volume | None = None) -> Registration:
        fixed_a, moving_a = read(fixed), read(moving)
        with tempfile.TemporaryDirectory(prefix="deepatlas-ants-") as tmp:
            result = ants.registration(
                fixed_a, moving_a, type_of_transform=type_of_transform, outprefix=str(Path(tmp) / "syn_"), **kwargs
            )
            transforms = result["fwdtransforms"]
            warped = result["warpedmovout"].numpy()
            labels = None
            if moving_labels is not None:
                labels = (
                    ants.apply_transforms(fixed_a, read(moving_labels), transforms, interpolator="genericLabel")
                    .numpy()
                    .round()
                    .astype(np.int32)
                )
            field_file = next(t for t in transforms if t.endswith((".nii.gz", ".nii")))
            jacobian = ants.create_jacobian_determinant_image(fixed_a, field_file, do_log=False).numpy()
            field = ants.image_read(field_file).numpy()  # fixed grid x 3, mm, LPS
        displacement = np.moveaxis(field, -1, 0) * _LPS_TO_RAS[:, None, None, None]
        return Registration(warped.astype(np.float32), displacement, jacobian.astype(np.float64), labels, fixed.affine)

    return register
