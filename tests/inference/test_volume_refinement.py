"""Registrations read for volumes (``morphometry``'s log-Jacobian maps and its atlas path) refine with
``refine.for_volumes``: a penalty on the refinement's own correction, weaker than ``register``'s penalty on the
total field, which holds a registration back from an enlarged ventricle (docs/results.md, "Registration that
follows an enlargement")."""

from pathlib import Path

import nibabel as nib
import numpy as np

from deepatlas.cli.main import main
from deepatlas.data.io import save_volume
from tests.inference.conftest import SHIPPED as MODEL


def test_morphometrys_log_jacobian_follows_an_enlarged_ventricle(brain, tmp_path):
    """A validation brain with its ventricles doubled (the benchmark's strongest level), against the brain itself
    as the template: ``morphometry``'s log-Jacobian map over the template's ventricles reads 0.95 of the growth,
    registered as ``register`` registers 0.78 (measured on this brain)."""
    from benchmarks.morphometry import atrophy_at
    from deepatlas.data.labels import LabelScheme

    image, labels = brain
    scheme = LabelScheme.from_file(MODEL / "labels.json")
    enlarged = atrophy_at(image, labels, scheme, 3)
    template = save_volume(np.asarray(image.array, dtype=np.float32), image.affine, tmp_path / "template.nii.gz")
    subject = save_volume(enlarged.image, image.affine, tmp_path / "in" / "enlarged.nii.gz")
    classes = scheme.encode(labels.array, unknown="background")
    sides = {n: classes == scheme.names.index(n) for n in ("LateralVentricle-L", "LateralVentricle-R")}
    ventricles = np.logical_or(*sides.values())
    truth = sum(enlarged.changes[n] * mask.sum() for n, mask in sides.items()) / ventricles.sum()

    def growth(out: str, *refine: str) -> float:
        flags = [f"--refine={setting}" for setting in refine] + ["--subvoxel-average", "off"]  # the seg net: not here
        assert main(["morphometry", str(MODEL), str(subject), "--template", str(template), "-o", out, *flags]) == 0
        logjac = np.asarray(nib.load(Path(out) / "enlarged_logjac.nii.gz").dataobj)
        return float(np.exp(logjac[ventricles]).mean() - 1) / truth

    as_morphometry = growth(str(tmp_path / "volumes"))
    as_register = growth(str(tmp_path / "register"), "form=add", "regularizer_weight=2")
    assert 0.85 <= as_morphometry <= 1.15, as_morphometry
    assert as_register < as_morphometry - 0.1, (as_register, as_morphometry)
