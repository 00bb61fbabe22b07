"""The training volumes' range, written by training and read by morphometry's flag."""

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from deepatlas.cli.main import main
from deepatlas.evaluation import volume_range as ranges_module
from deepatlas.evaluation.volume_range import (
    join_flags,
    range_flag,
    read_volume_range,
    sharpness_flag,
    sharpness_range,
    volume_range,
)
from deepatlas.run_folder import RunFolder
from deepatlas.training.run import train
from tests.conftest import tiny_config


def test_the_range_is_the_training_volumes_percentiles_per_structure_and_brain():
    rng = np.random.default_rng(0)
    labels = np.zeros((30, 10, 10, 10), dtype=np.uint8)
    for n in range(30):  # structure 1: n + 10 voxels, structure 2: 100 voxels
        flat = labels[n].reshape(-1)
        flat[: n + 10] = 1
        flat[500:600] = 2
        labels[n] = flat[rng.permutation(1000)].reshape(10, 10, 10)
    result = volume_range(labels, 8.0, ["background", "a", "b"])
    a = result["structures"]["a"]
    assert a["low_mm3"] == pytest.approx(np.percentile(np.arange(10, 40) * 8.0, 1), abs=0.05)
    assert a["high_mm3"] == pytest.approx(np.percentile(np.arange(10, 40) * 8.0, 99), abs=0.05)
    assert result["structures"]["b"] == {"low_mm3": 800.0, "median_mm3": 800.0, "high_mm3": 800.0}
    assert result["structures"]["brain"]["median_mm3"] == pytest.approx(8.0 * (24.5 + 100), abs=0.05)
    assert "background" not in result["structures"] and result["subjects"] == 30
    assert volume_range(labels[:19], 8.0, ["background", "a", "b"]) is None  # too few to bound anything
    assert range_flag("b", 801.0, result) == "above_training"
    assert range_flag("b", 799.0, result) == "below_training"
    assert range_flag("b", 800.0, result) == range_flag("c", 1e9, result) == range_flag("b", 1e9, None) == ""
    assert join_flags("disagree", "", "above_training") == "disagree;above_training" and join_flags("", "") == ""


def test_training_writes_the_range_and_morphometry_flags_volumes_outside_it(phantoms_3d, tmp_path, monkeypatch):
    monkeypatch.setattr(ranges_module, "RANGE_MIN_SUBJECTS", 2)  # the phantom set has 2 labelled images
    run = tmp_path / "run"
    train(tiny_config(phantoms_3d, seg_pretrain_steps=3, reg_pretrain_steps=0, cycles=0), run, progress=False)
    written = read_volume_range(RunFolder(run).volume_range)
    labelled = json.loads(RunFolder(run).data.read_text())["labelled"]
    assert written["subjects"] == len(labelled) == 2
    assert set(written["structures"]) >= {"brain"} and len(written["structures"]) > 2
    sharp = written["sharpness"]  # the training images' sharpness, 1/mm
    assert 0 < sharp["low_per_mm"] <= sharp["median_per_mm"] <= sharp["high_per_mm"]
    # a run whose training volumes are all far below the phantoms' (as a young cohort's ventricles
    # would be below an elderly one's): every volume is flagged above them, and ringed in the figure
    narrow = tmp_path / "narrow"
    shutil.copytree(run, narrow)
    for bounds in written["structures"].values():
        bounds.update(low_mm3=0.0, median_mm3=0.5, high_mm3=1.0)
    RunFolder(narrow).write_json(RunFolder(narrow).volume_range, written)
    images = sorted((phantoms_3d / "images").iterdir())[:2]
    assert main(["morphometry", str(narrow), *map(str, images), "-o", str(tmp_path / "out"), "--net-only"]) == 0
    with open(tmp_path / "out" / "volumes.csv") as handle:
        rows = list(csv.DictReader(handle))
    measured = [r for r in rows if r["structure"] in written["structures"] and float(r["mm3"]) > 1.0]
    assert measured and all(r["flag"] == "above_training" for r in measured)
    assert all(r["flag"] == "" for r in rows if r["structure"] == "foreground")  # no range for it
    # without a range file: no range flag
    RunFolder(narrow).volume_range.unlink()
    assert main(["morphometry", str(narrow), *map(str, images), "-o", str(tmp_path / "out2"), "--net-only"]) == 0
    with open(tmp_path / "out2" / "volumes.csv") as handle:
        assert {r["flag"] for r in csv.DictReader(handle)} == {""}
    assert nib.load(tmp_path / "out" / f"{images[0].name.split('.')[0]}_seg.nii.gz").shape == (24, 28, 24)


def test_a_run_with_few_labels_keeps_its_images_sharpness_for_the_flag(phantoms_3d, tmp_path, monkeypatch):
    monkeypatch.setattr(ranges_module, "RANGE_MIN_SUBJECTS", 3)  # 2 labelled of 6 training images: no volumes
    run = tmp_path / "run"
    train(tiny_config(phantoms_3d, seg_pretrain_steps=1, reg_pretrain_steps=0, cycles=0), run, progress=False)
    written = read_volume_range(RunFolder(run).volume_range)
    assert "structures" not in written and written["sharpness"]["low_per_mm"] > 0  # from all 6 images
    assert range_flag("brain", 1e12, written) == ""  # no volume range to flag against
    assert sharpness_flag(written["sharpness"]["low_per_mm"] * 0.5, written) == "softer_than_training"
    monkeypatch.setattr(ranges_module, "RANGE_MIN_SUBJECTS", 7)  # neither: no file at all
    train(
        tiny_config(phantoms_3d, seg_pretrain_steps=1, reg_pretrain_steps=0, cycles=0), tmp_path / "r2", progress=False
    )
    assert not RunFolder(tmp_path / "r2").volume_range.exists()
    assert read_volume_range(tmp_path / "r2" / "missing.json") is None
    (tmp_path / "odd.json").write_text(json.dumps({"other": 1}))
    assert read_volume_range(tmp_path / "odd.json") is None


def test_a_scan_softer_than_the_training_images_flags_every_volume(trained_3d, phantoms_3d, tmp_path):
    from scipy import ndimage

    from deepatlas.data.io import load_image, save_volume
    from deepatlas.data.sharpness import sharpness

    image = load_image(sorted((phantoms_3d / "images").iterdir())[0])
    crisp = sharpness(image.array, image.spacing)
    soft = ndimage.gaussian_filter(image.array.astype(np.float32), 1.0)
    assert sharpness(soft, image.spacing) < 0.8 * crisp  # a blur lowers it
    assert sharpness(image.array * 7.0, image.spacing) == pytest.approx(crisp)  # not the intensity scale
    assert np.isnan(sharpness(np.zeros((8, 8, 8)), (2.0, 2.0, 2.0)))
    bounds = sharpness_range([crisp * (0.95 + 0.005 * k) for k in range(20)])  # the run trained on crisp images
    assert sharpness_range([crisp] * 19) is None
    assert sharpness_flag(crisp, {"sharpness": bounds}) == "" and sharpness_flag(crisp, None) == ""
    assert sharpness_flag(crisp * 2, {"sharpness": bounds}) == "sharper_than_training"
    run = tmp_path / "run"
    shutil.copytree(trained_3d, run)
    RunFolder(run).write_json(RunFolder(run).volume_range, {"structures": {}, "sharpness": bounds})
    blurred = tmp_path / "soft.nii.gz"
    save_volume(soft, image.affine, blurred)
    assert (
        main(["morphometry", str(run), str(image.path), str(blurred), "-o", str(tmp_path / "out"), "--net-only"]) == 0
    )
    with open(tmp_path / "out" / "volumes.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["flag"] for r in rows if r["subject"] == "soft"} == {"softer_than_training"}
    assert "softer_than_training" not in {r["flag"] for r in rows if r["subject"] != "soft"}
