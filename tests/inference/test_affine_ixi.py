"""The affine stage on a real brain moved far from its pre-alignment (skipped without ixi-2mm).

A test-split brain is moved by a random affine (rotations up to 20 degrees, scalings up to 20 %,
shifts up to 20 mm) and written at 1.5 mm with its axes swapped and flipped; ``register
--affine`` (the shipped model) must then match another subject as well as the unmoved brain does.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.moved_brains import label_dice, random_affine, write_moved
from deepatlas.cli.main import main
from deepatlas.data.io import load_image, load_label_codes
from deepatlas.data.labels import LabelScheme
from deepatlas.data.splits import load_splits
from tests.conftest import IXI

MODEL = Path(__file__).resolve().parents[2] / "models" / "brain-2mm"
pytestmark = pytest.mark.skipif(not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI}")


def test_register_with_affine_recovers_a_moved_brain(tmp_path):
    moving_id, fixed_id = load_splits(IXI / "splits.json")["test"][:2]
    image, labels = IXI / "images" / f"{moving_id}.nii.gz", IXI / "labels" / f"{moving_id}.nii.gz"
    fixed = IXI / "images" / f"{fixed_id}.nii.gz"
    transform = random_affine(np.random.default_rng(0))
    moved = write_moved(load_image(image), transform, tmp_path / "moved.nii.gz")
    moved_labels = write_moved(load_label_codes(labels), transform, tmp_path / "moved_labels.nii.gz", "nearest")
    # the net alone keeps the test fast; the affine stage is what is tested (refined numbers: docs)
    common = ["register", str(MODEL), "--fixed", str(fixed), "--net-only"]
    unmoved = [*common, "--moving", str(image), "--moving-labels", str(labels), "-o", str(tmp_path / "a")]
    assert main(unmoved) == 0
    args = ["--moving", str(moved), "--moving-labels", str(moved_labels), "--affine", "--inverse"]
    assert main([*common, *args, "-o", str(tmp_path / "b")]) == 0
    scheme = LabelScheme.from_file(IXI / "brain31.json")
    fixed_labels = load_label_codes(IXI / "labels" / f"{fixed_id}.nii.gz").array
    before = label_dice(tmp_path / "a" / f"{moving_id}_to_{fixed_id}_labels.nii.gz", fixed_labels, scheme)
    after = label_dice(tmp_path / "b" / f"moved_to_{fixed_id}_labels.nii.gz", fixed_labels, scheme)
    assert after > before - 0.02, f"Dice {after:.3f} after the affine stage, {before:.3f} unmoved"
    summary = json.loads((tmp_path / "b" / f"moved_to_{fixed_id}_registration.json").read_text())
    assert summary["affine_stage"]["ran"]
    assert summary["inverse_consistency_mm"]["mean_mm"] < 0.5
    # the pre-aligned pair: auto mode leaves the stage off, and there is nothing to summarise
    assert not (tmp_path / "a" / f"{moving_id}_to_{fixed_id}_registration.json").exists()


@pytest.mark.slow
def test_segment_aligns_a_raw_scan_to_the_model_space(tmp_path):
    """A moved brain (a raw scan's position and tilt) segments nearly as well as the pre-aligned one
    when ``segment`` first aligns it to the model's template (its default), and worse without (the
    shipped seg net, trained with rotations and scalings, degrades gracefully: 0.80 against 0.83 here)."""
    sid = load_splits(IXI / "splits.json")["validation"][0]
    image, labels = IXI / "images" / f"{sid}.nii.gz", IXI / "labels" / f"{sid}.nii.gz"
    transform = random_affine(np.random.default_rng(5))
    moved = write_moved(load_image(image), transform, tmp_path / "moved.nii.gz")
    moved_labels = load_label_codes(write_moved(load_label_codes(labels), transform, tmp_path / "ml.nii.gz", "nearest"))
    scheme = LabelScheme.from_file(IXI / "brain31.json")
    dice = {}
    for name, source, flags in (("unmoved", image, []), ("auto", moved, []), ("off", moved, ["--align", "off"])):
        assert main(["segment", str(MODEL), str(source), "-o", str(tmp_path / name), *flags]) == 0
        reference = moved_labels.array if source == moved else load_label_codes(labels).array
        dice[name] = label_dice(tmp_path / name / f"{Path(source).name[:-7]}_seg.nii.gz", reference, scheme)
    assert dice["auto"] > dice["unmoved"] - 0.04 and dice["auto"] > dice["off"] + 0.01, dice
    aligned = {n: json.loads((tmp_path / n / "segment.json").read_text())[0]["aligned"] for n in ("unmoved", "auto")}
    assert aligned == {"unmoved": False, "auto": True}
    # a pre-aligned image is not touched by auto: the same labels as --align off
    assert main(["segment", str(MODEL), str(image), "-o", str(tmp_path / "u_off"), "--align", "off"]) == 0
    same = [load_label_codes(tmp_path / f / f"{sid}_seg.nii.gz").array for f in ("unmoved", "u_off")]
    assert np.array_equal(*same)
