import json

import nibabel as nib
import numpy as np
import pytest

from deepatlas.data import DataError, LabelScheme, find_subjects, load_image_set


def _nifti(path, array, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def test_folder_layout_with_partial_labels(tmp_path):
    for name in ("a", "b", "c"):
        _nifti(tmp_path / "images" / f"{name}.nii.gz", np.random.rand(6, 6, 6).astype(np.float32))
    _nifti(tmp_path / "labels" / "b.nii.gz", np.zeros((6, 6, 6), np.int16))
    subjects = find_subjects(tmp_path)
    assert [s.id for s in subjects] == ["a", "b", "c"]
    assert [s.label is not None for s in subjects] == [False, True, False]


def test_orphan_label_is_an_error(tmp_path):
    _nifti(tmp_path / "images" / "a.nii.gz", np.random.rand(4, 4, 4).astype(np.float32))
    _nifti(tmp_path / "labels" / "zz.nii.gz", np.zeros((4, 4, 4), np.int16))
    with pytest.raises(DataError, match="zz.nii.gz"):
        find_subjects(tmp_path)


def test_manifest_with_relative_paths(tmp_path):
    _nifti(tmp_path / "d" / "img1.nii", np.random.rand(4, 4, 4).astype(np.float32))
    _nifti(tmp_path / "d" / "seg1.nii", np.zeros((4, 4, 4), np.int16))
    _nifti(tmp_path / "d" / "img2.nii", np.random.rand(4, 4, 4).astype(np.float32))
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps({"subjects": [{"id": "s1", "image": "d/img1.nii", "label": "d/seg1.nii"}, {"image": "d/img2.nii"}]})
    )
    subjects = find_subjects(manifest)
    assert [(s.id, s.label is not None) for s in subjects] == [("img2", False), ("s1", True)]
    assert subjects[1].image.exists()


def test_oasis_layout_in_analyze_format(tmp_path):
    rng = np.random.default_rng(0)
    for n in (1, 2):
        sid = f"OAS1_000{n}_MR1"
        stem = f"{sid}_mpr_n4_anon_111_t88_masked_gfc"
        proc = tmp_path / sid / "PROCESSED" / "MPRAGE" / "T88_111"
        proc.mkdir(parents=True)
        # OASIS stores 176x208x176x1; a trailing singleton axis must not make it 4D
        nib.save(nib.AnalyzeImage(rng.random((10, 12, 10, 1)).astype(np.float32), np.eye(4)), str(proc / f"{stem}.img"))
        seg = tmp_path / sid / "FSL_SEG"
        seg.mkdir()
        nib.save(
            nib.AnalyzeImage(rng.integers(0, 4, (10, 12, 10, 1)).astype(np.uint8), np.eye(4)),
            str(seg / f"{stem}_fseg.img"),
        )
    subjects = find_subjects(tmp_path)
    assert [s.id for s in subjects] == ["OAS1_0001_MR1", "OAS1_0002_MR1"]
    assert all(s.label is not None and s.label.name.endswith("_fseg.img") for s in subjects)
    from deepatlas.data.dataset import scan_label_codes

    scheme = LabelScheme.from_codes(scan_label_codes(subjects))
    assert scheme.codes == [[0], [1], [2], [3]]
    images = load_image_set(subjects, scheme, progress=False)
    assert images.images.shape == (2, 1, 10, 12, 10)
    assert images.has_label.tolist() == [True, True]


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="not a dataset"):
        find_subjects(tmp_path)
    with pytest.raises(DataError, match="not found"):
        find_subjects(tmp_path / "missing")
