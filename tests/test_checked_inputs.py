"""Inputs checked against each other: a label map on its image's grid, images that are label maps,
values beyond float32, scans too small for a model, atlas codes outside a run's label map."""

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from deepatlas.cli.main import main
from deepatlas.data import DataError
from deepatlas.data.io import Volume, check_label_grid, load_image, load_label_codes, load_labelled
from deepatlas.data.synthetic import make_dataset
from tests.conftest import IXI

HEADS = IXI.parent / "ixi-heads"


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _oblique() -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0] @ np.diag([1.2, 1.0, 2.5])
    affine[:3, 3] = [-91.3, 120.7, -60.1]
    return affine


def test_label_grid_accepts_header_rounding_and_refuses_a_moved_header(tmp_path):
    """Tolerance: origin within a tenth of a voxel, voxel axes within 1e-3 of the spacing; what header
    rewriting does (float32 sform, a 0.01 mm origin change) passes, a 20 mm shift or a flip does not."""
    shape, affine = (20, 22, 18), _oblique()
    image = load_image(_save(tmp_path / "image.nii.gz", np.random.default_rng(1).random(shape, np.float32), affine))
    codes = np.zeros(shape, np.int16)
    codes[5:15, 6:16, 4:14] = 3
    rounded = affine.astype(np.float32).astype(np.float64)
    rounded[:3, 3] += 0.01
    check_label_grid(image, load_label_codes(_save(tmp_path / "ok.nii.gz", codes, rounded)))
    shifted = affine.copy()
    shifted[:3, 3] += affine[:3, 2] / np.linalg.norm(affine[:3, 2]) * 20.0
    flipped = affine @ np.diag([-1.0, 1.0, 1.0, 1.0])
    third_voxel = affine.copy()
    third_voxel[:3, 3] += [0.3, 0.0, 0.0]  # three tenths of the smallest (1 mm) voxel
    for name, bad, says in (("shifted", shifted, "up to 20.0 mm away"), ("flipped", flipped, "up to 45.6 mm away")):
        labels = load_label_codes(_save(tmp_path / f"{name}.nii.gz", codes, bad))
        with pytest.raises(DataError, match=f"{name}.nii.gz: its header places the label map {says}") as err:
            check_label_grid(image, labels)
        assert str(tmp_path / "image.nii.gz") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="0.3 mm away"):
        check_label_grid(image, load_label_codes(_save(tmp_path / "third.nii.gz", codes, third_voxel)))
    with pytest.raises(DataError, match=r"label map shape \(20, 22, 17\) does not match its image"):
        check_label_grid(image, Volume(codes[..., :17].astype(np.int64), affine, tmp_path / "short.nii.gz"))


def test_label_maps_are_refused_as_images_and_8_bit_scans_are_not(tmp_path, phantoms_3d):
    labels = phantoms_3d / "labels" / "phantom000.nii.gz"
    with pytest.raises(DataError, match=r"phantom000.nii.gz: looks like a label map, not an image \(7 distinct"):
        load_image(labels)
    as_float = _save(
        tmp_path / "float_labels.nii.gz", np.asarray(nib.load(labels).dataobj).astype(np.float32), np.eye(4)
    )
    with pytest.raises(DataError, match="looks like a label map"):
        load_image(as_float)
    load_image(phantoms_3d / "images" / "phantom000.nii.gz")
    # an 8-bit scan (FreeSurfer's brain.mgz is one): 256 integer values, a zero background, but noisy
    rng = np.random.default_rng(2)
    brain = ndimage.gaussian_filter(rng.random((40, 48, 40)), 3)
    brain = (brain - brain.min()) / np.ptp(brain) * 200 + rng.normal(0, 8, brain.shape)
    mask = np.zeros(brain.shape, bool)
    mask[6:34, 6:42, 6:34] = True
    scan = np.where(mask, np.clip(np.rint(brain), 1, 255), 0).astype(np.uint8)
    load_image(_save(tmp_path / "brain_8bit.nii.gz", scan, np.eye(4)))


def test_non_finite_and_too_large_values_are_told_apart(tmp_path):
    array = np.random.default_rng(3).random((12, 12, 12))
    huge, nan = array.copy(), array.copy()
    huge[1, 2, 3], nan[1, 2, 3] = -3e300, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nibabel's overflow warning would be a second line on stderr
        with pytest.raises(DataError, match=r"huge.nii.gz: intensities up to 3e\+300 are too large for float32"):
            load_image(_save(tmp_path / "huge.nii.gz", huge, np.eye(4)))
        with pytest.raises(DataError, match="nan.nii.gz: image contains NaN or infinite intensities"):
            load_image(_save(tmp_path / "nan.nii.gz", nan, np.eye(4)))
        with pytest.raises(DataError, match=r"big_labels.nii.gz: label values up to 1e\+300, beyond any label code"):
            load_label_codes(_save(tmp_path / "big_labels.nii.gz", np.where(array > 0.5, 1e300, 0.0), np.eye(4)))


@pytest.mark.skipif(not IXI.exists() or not HEADS.exists(), reason="needs ../shared/data/ixi-2mm and ixi-heads")
def test_real_scans_are_images_and_their_label_maps_are_not():
    """A few of ixi-2mm's images (all 185 and both heads were measured: none refused) and both
    whole heads load as images; their label maps are refused as images and pair with them."""
    images = sorted((IXI / "images").glob("*.nii.gz"))[::60] + sorted((HEADS / "images").glob("*.nii.gz"))
    for path in images:
        load_image(path)
    for root in (IXI, HEADS):
        labels = sorted((root / "labels").glob("*.nii.gz"))[0]
        load_labelled(root / "images" / labels.name, labels)
        with pytest.raises(DataError, match="looks like a label map"):
            load_image(labels)


def test_prepare_refuses_labels_off_their_scan(tmp_path, capsys):
    raw = make_dataset(tmp_path / "raw", num_subjects=1, shape=(24, 28, 24), spacing=3.0, seed=5)  # 72 mm
    labels = raw / "labels" / "phantom000.nii.gz"
    original = nib.load(labels)
    moved = original.affine.copy()
    moved[2, 3] -= 20.0
    _save(labels, np.asarray(original.dataobj), moved)
    assert main(["prepare", str(raw), "-o", str(tmp_path / "out"), "--strip", "off"]) == 1
    record = json.loads((tmp_path / "out" / "records" / "phantom000.json").read_text())
    assert record["status"] == "failed"
    assert "labels/phantom000.nii.gz: its header places the label map up to 20.0 mm away" in record["reason"]
    assert "images/phantom000.nii.gz" in record["reason"]


def test_the_smallest_input_is_judged_against_the_training_grid(trained_3d, tmp_path):
    """prepare's 60 mm for models trained on brains, half the training grid for smaller ones (the 48 mm
    phantoms: 24 mm), so a phantom-sized input passes and a 10 mm crop does not."""
    from deepatlas.inference import load_run
    from deepatlas.inference.apply import min_extent_mm

    assert min_extent_mm(load_run(trained_3d)) == pytest.approx(24.0)
    shipped = Path(__file__).resolve().parents[1] / "models" / "brain-2mm"
    if shipped.exists():
        assert min_extent_mm(load_run(shipped)) == pytest.approx(60.0)
    crop = np.random.default_rng(6).random((12, 30, 30)).astype(np.float32)  # 24 x 60 x 60 mm at 2 mm
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    assert (
        main(
            ["segment", str(trained_3d), str(_save(tmp_path / "crop.nii.gz", crop, affine)), "-o", str(tmp_path / "o")]
        )
        == 0
    )
    affine[0, 0] = 1.9
    assert (
        main(
            ["segment", str(trained_3d), str(_save(tmp_path / "thin.nii.gz", crop, affine)), "-o", str(tmp_path / "o")]
        )
        == 2
    )


def test_unknown_atlas_codes_name_the_flag_that_maps_them_to_background(trained_3d, phantoms_3d, tmp_path, capsys):
    """atlas-segment (with the seg net's vote) and morphometry refuse atlas codes the run does not
    know, naming --unknown-labels, which both have: background counts them as no structure."""
    image, labels = phantoms_3d / "images" / "phantom001.nii.gz", phantoms_3d / "labels" / "phantom001.nii.gz"
    codes = np.asarray(nib.load(labels).dataobj).astype(np.int16)
    codes[codes == codes.max()] = 77
    atlas = _save(tmp_path / "atlas77.nii.gz", codes, nib.load(labels).affine)
    segment = ["atlas-segment", str(trained_3d), "--atlas", str(image), str(atlas), str(image), "--seg-net-weight", "1"]
    morphometry = ["morphometry", str(trained_3d), str(image), "--from", "atlas", "--atlas", str(image), str(atlas)]
    for argv in (segment, morphometry):
        assert main(argv + ["-o", str(tmp_path / "refused")]) == 2
        assert "--unknown-labels background" in capsys.readouterr().err
        assert main(argv + ["-o", str(tmp_path / argv[0]), "--unknown-labels", "background"]) == 0
    rows = (tmp_path / "morphometry" / "volumes.csv").read_text()
    assert ",77," not in rows and "phantom001" in rows
