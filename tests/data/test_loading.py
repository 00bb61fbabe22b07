"""Every bad input is refused before training, with the file named."""

import nibabel as nib
import numpy as np
import pytest

from deepatlas.data import DataError, LabelScheme, find_subjects, load_image_set


def _make(tmp_path, images: dict, labels: dict):
    for name, array in images.items():
        (tmp_path / "images").mkdir(exist_ok=True)
        path = tmp_path / "images" / f"{name}.nii.gz"
        if isinstance(array, bytes):
            path.write_bytes(array)
        else:
            nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    for name, array in labels.items():
        (tmp_path / "labels").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(tmp_path / "labels" / f"{name}.nii.gz"))
    return find_subjects(tmp_path)


def _good(shape=(6, 7, 8)):
    return np.random.default_rng(0).random(shape).astype(np.float32)


SCHEME = LabelScheme.from_codes([0, 1, 2])


@pytest.mark.parametrize(
    "case, match",
    [
        ("unreadable", r"bad\.nii\.gz: cannot read"),
        ("nan", r"bad\.nii\.gz: image contains NaN"),
        ("constant", r"bad\.nii\.gz: image is constant"),
        ("shape", r"bad\.nii\.gz: image shape \(6, 7, 9\) differs"),
        ("label_shape", r"labels/bad\.nii\.gz: label map shape"),
        ("unknown_code", r"labels/bad\.nii\.gz: label codes not in the label-map file: 7"),
        ("fractional_label", r"labels/bad\.nii\.gz: label map has non-integer values"),
    ],
)
def test_bad_input_names_the_file(tmp_path, case, match):
    images, labels = {"good": _good(), "good2": _good()}, {"good": np.zeros((6, 7, 8), np.int16)}
    bad = _good()
    if case == "unreadable":
        bad = b"this is not a nifti file"
    elif case == "nan":
        bad[1, 2, 3] = np.nan
    elif case == "constant":
        bad = np.full((6, 7, 8), 0.5, np.float32)
    elif case == "shape":
        bad = _good((6, 7, 9))
    images["bad"] = bad
    if case == "label_shape":
        labels["bad"] = np.zeros((6, 7, 7), np.int16)
    elif case == "unknown_code":
        labels["bad"] = np.full((6, 7, 8), 7, np.int16)
    elif case == "fractional_label":
        labels["bad"] = np.full((6, 7, 8), 1.5, np.float32)
    subjects = _make(tmp_path, images, labels)
    with pytest.raises(DataError, match=match):
        load_image_set(subjects, SCHEME, progress=False)


def test_2d_images_and_trailing_singleton_axes(tmp_path):
    subjects = _make(tmp_path, {"a": _good((12, 10)), "b": _good((12, 10, 1))}, {"a": np.ones((12, 10), np.int16)})
    images = load_image_set(subjects, SCHEME, progress=False)
    assert images.spatial_dims == 2 and images.shape == (12, 10)
    assert images.has_label.tolist() == [True, False]
    assert float(images.images.max()) <= 1.0 and float(images.images.min()) >= 0.0


def test_hidden_labels_are_not_loaded(tmp_path):
    subjects = _make(
        tmp_path,
        {"a": _good(), "b": _good()},
        {"a": np.ones((6, 7, 8), np.int16), "b": np.full((6, 7, 8), 2, np.int16)},
    )
    images = load_image_set(subjects, SCHEME, keep_labels=["b"], progress=False)
    assert images.has_label.tolist() == [False, True]
    assert int(images.labels[0].max()) == 0 and int(images.labels[1].max()) == 2


def test_geometry_is_kept(tmp_path):
    affine = np.diag([2.0, 1.5, 3.0, 1.0])
    affine[:3, 3] = [10, -4, 7]
    (tmp_path / "images").mkdir()
    nib.save(nib.Nifti1Image(_good(), affine), str(tmp_path / "images" / "a.nii.gz"))
    images = load_image_set(find_subjects(tmp_path), SCHEME, progress=False)
    assert np.allclose(images.affines[0], affine)


def test_the_subject_selection_is_what_training_loads(phantoms_3d):
    """``select_subjects`` (a directory scan, used before training to suggest a recipe) chooses the
    same training, validation and labelled subjects as ``load_training_data`` loads."""
    from deepatlas.config import DataConfig
    from deepatlas.data.loading import load_training_data, select_subjects

    cfg = DataConfig(dataset=str(phantoms_3d), splits=str(phantoms_3d / "splits.json"), num_labelled=3, seed=4)
    chosen, data = select_subjects(cfg), load_training_data(cfg, progress=False)
    assert [s.id for s in chosen.train] == data.train.ids and len(chosen.train) == 6
    assert [s.id for s in chosen.validation] == data.validation.ids
    assert chosen.labelled_ids == data.labelled_ids and len(chosen.labelled_ids) == 3 and chosen.unlabelled == 3
    with pytest.raises(DataError, match="num_labelled=7 but only 6"):
        select_subjects(DataConfig(dataset=str(phantoms_3d), splits=cfg.splits, num_labelled=7))
