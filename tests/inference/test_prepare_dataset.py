"""``deepatlas prepare``: raw scans of any orientation and spacing -> the template's grid.

The real-data tests move ixi-2mm brains far from their pre-alignment (rotations up to 20
degrees, scalings up to 20 %, shifts up to 20 mm, written at 1.5 mm with axes swapped and
flipped) beside files that cannot be prepared, and check that ``prepare`` puts the brains back
(labels against the originals) and names every bad file with its reason.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.moved_brains import label_dice, random_affine, write_moved
from deepatlas import options
from deepatlas.cli.main import main
from deepatlas.data.errors import DataError
from deepatlas.data.io import load_image, load_label_codes
from deepatlas.data.labels import LabelScheme
from deepatlas.data.subjects import find_subjects
from deepatlas.inference.prepare_dataset import PrepareSettings, find_raw_subjects
from tests.conftest import IXI

needs_ixi = pytest.mark.skipif(not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI}")
SUBJECTS = ("IXI012-HH-1211", "IXI057-HH-1342")  # validation split


def _write_nifti(array: np.ndarray, path: Path, spacing: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([spacing] * 3 + [1.0])), str(path))
    return path


def _moved_subject(sid: str, folder: Path, seed: int) -> None:
    """``<sid>.nii.gz`` and ``<sid>_seg.nii.gz`` in ``folder``: the brain moved by a random affine."""
    transform = random_affine(np.random.default_rng(seed))
    write_moved(load_image(IXI / "images" / f"{sid}.nii.gz"), transform, folder / f"{sid}.nii.gz")
    labels = load_label_codes(IXI / "labels" / f"{sid}.nii.gz")
    write_moved(labels, transform, folder / f"{sid}_seg.nii.gz", "nearest")


def _raw_folder(root: Path) -> Path:
    """Two moved brains (one in a subfolder), a truncated file, a 2D image and a sphere."""
    raw = root / "raw"
    _moved_subject(SUBJECTS[0], raw, 0)
    _moved_subject(SUBJECTS[1], raw / "site-b", 1)
    whole = (raw / f"{SUBJECTS[0]}.nii.gz").read_bytes()
    (raw / "truncated.nii.gz").write_bytes(whole[: len(whole) // 3])
    _write_nifti(np.random.default_rng(0).random((64, 64)).astype(np.float32), raw / "slice2d.nii.gz")
    grid = np.indices((120, 120, 120)) - 60
    # a ball of tissue, not a mask: exact 0/1 values would be refused as a label map before alignment
    ball = ((grid**2).sum(0) < 50**2) * (1 + 1e-3 * np.random.default_rng(1).random(grid.shape[1:]))
    _write_nifti(ball.astype(np.float32), raw / "sphere.nii.gz")
    return raw


@pytest.mark.slow
@needs_ixi
def test_prepare_puts_moved_brains_back_and_names_bad_files(tmp_path, capsys):
    raw, out = _raw_folder(tmp_path), tmp_path / "dataset"
    assert main(["prepare", str(raw), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    scheme = LabelScheme.from_file(IXI / "brain31.json")
    for sid in SUBJECTS:
        original = load_label_codes(IXI / "labels" / f"{sid}.nii.gz").array
        assert label_dice(out / "labels" / f"{sid}.nii.gz", original, scheme) >= 0.9
        assert load_image(out / "images" / f"{sid}.nii.gz").array.shape == (80, 96, 80)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(r["id"] for r in manifest["subjects"]) == sorted(SUBJECTS)
    [sphere] = manifest["rejected"]
    assert sphere["id"] == "sphere" and sphere["score"] < options.ALIGNMENT_REFUSE_SCORE
    assert sphere["reason"] == f"alignment score {sphere['score']:.3f} < {options.PREPARE_MIN_SCORE}"
    assert (out / "rejected" / "images" / "sphere.nii.gz").exists()
    reasons = {r["id"]: r["reason"] for r in manifest["failed"]}
    assert "2D image" in reasons["slice2d"] and "cannot read" in reasons["truncated"]
    for name in ("sphere", "slice2d", "truncated"):
        assert name in printed and name in (out / "qc" / "index.html").read_text()
    # train reads the folder as it is: the two good subjects, with their label maps
    assert [(s.id, s.label is not None) for s in find_subjects(out)] == [(sid, True) for sid in SUBJECTS]

    # a re-run skips what is done; a changed source is prepared again
    before = {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()}
    (raw / "truncated.nii.gz").write_bytes((raw / f"{SUBJECTS[0]}.nii.gz").read_bytes())
    assert main(["prepare", str(raw), "-o", str(out)]) == 0
    assert "4 of 5 subject(s) already prepared" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()}
    assert [name for name in before if before[name] != after[name]] == ["truncated.json"]
    assert (out / "images" / "truncated.nii.gz").exists()


def test_flat_folder_pairs_label_maps_by_name(tmp_path):
    volume = np.zeros((8, 8, 8), np.float32)
    volume[2:6, 2:6, 2:6] = 1
    for name in ("a.nii.gz", "a_seg.nii.gz", "sub/b.nii", "sub/b_labels.nii", "c.nii.gz"):
        _write_nifti(volume, tmp_path / "raw" / name)
    subjects = find_raw_subjects(tmp_path / "raw")
    assert [(s.id, s.label and s.label.name) for s in subjects] == [
        ("a", "a_seg.nii.gz"),
        ("b", "b_labels.nii"),
        ("c", None),
    ]
    _write_nifti(volume, tmp_path / "raw" / "d_seg.nii.gz")
    with pytest.raises(DataError, match="label maps without an image"):
        find_raw_subjects(tmp_path / "raw")


def test_bad_settings_and_folders_give_one_clear_line(tmp_path, capsys):
    raw = tmp_path / "raw"
    _write_nifti(np.ones((8, 8, 8), np.float32), raw / "a.nii.gz")
    with pytest.raises(ValueError, match="min-score"):
        PrepareSettings(min_score=1.5).validate()
    assert main(["prepare", str(raw), "-o", str(raw / "out")]) == 2
    assert "inside RAW" in capsys.readouterr().err
    assert main(["prepare", str(raw), "-o", str(tmp_path / "o"), "--template", "nope.nii.gz"]) == 2
    assert "nope.nii.gz: template not found" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "absent"), "-o", str(tmp_path / "o")]) == 2
    assert "absent: not found" in capsys.readouterr().err


def test_a_small_slab_is_refused_with_its_size(tmp_path, capsys):
    raw = tmp_path / "raw"
    slab = np.random.default_rng(0).random((60, 60, 10)).astype(np.float32)
    _write_nifti(slab, raw / "slab.nii.gz")
    assert main(["prepare", str(raw), "-o", str(tmp_path / "out")]) == 1
    assert "covers only 60 x 60 x 10 mm" in capsys.readouterr().out
    assert "covers only" in (tmp_path / "out" / "qc" / "index.html").read_text()
