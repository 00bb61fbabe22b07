"""Elderly-sized ventricles push the structures around them aside, and the seg net reads those 5-19 % off
(docs/results.md, "The structures around enlarged ventricles"): ``morphometry`` flags them where a lateral
ventricle reads above the training range."""

import csv

import numpy as np

from deepatlas.cli.main import main
from deepatlas.data.io import save_volume
from deepatlas.evaluation.volume_range import BESIDE_VENTRICLES, beside_large_ventricles
from tests.inference.conftest import SHIPPED as MODEL


def test_the_flag_needs_a_ventricle_above_the_range_and_names_only_known_structures():
    ranges = {"structures": {"LateralVentricle-L": {"low_mm3": 1.0, "high_mm3": 10.0}}}
    volumes = {"LateralVentricle-L": 11.0, "LateralVentricle-R": 99.0, "CorpusCallosum": 5.0, "Thalamus-L": 5.0}
    assert beside_large_ventricles(volumes, ranges) == {"CorpusCallosum"}
    assert beside_large_ventricles(volumes | {"LateralVentricle-L": 10.0}, ranges) == frozenset()  # R has no range
    assert beside_large_ventricles(volumes, None) == frozenset()
    assert beside_large_ventricles({"a": 1.0}, ranges) == frozenset()  # another label scheme


def test_morphometry_flags_the_structures_beside_ventricles_four_times_their_size(brain, tmp_path):
    from benchmarks.ventricle_range import enlarged
    from deepatlas.data.labels import LabelScheme

    image, labels = brain
    aged, _ = enlarged(image, labels, LabelScheme.from_file(MODEL / "labels.json"), 3.0)
    folder = tmp_path / "in"
    save_volume(np.asarray(image.array, dtype=np.float32), image.affine, folder / "original.nii.gz")
    save_volume(np.asarray(aged.array, dtype=np.float32), image.affine, folder / "aged.nii.gz")
    assert main(["morphometry", str(MODEL), str(folder), "-o", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "volumes.csv") as handle:
        flags = {(r["subject"], r["structure"]): r["flag"].split(";") for r in csv.DictReader(handle)}
    assert "above_training" in flags["aged", "LateralVentricle-L"]
    assert all("beside_large_ventricles" in flags["aged", n] for n in BESIDE_VENTRICLES)
    assert not any("beside_large_ventricles" in f for (subject, _), f in flags.items() if subject == "original")
    assert "beside_large_ventricles" not in flags["aged", "Thalamus-L"]
