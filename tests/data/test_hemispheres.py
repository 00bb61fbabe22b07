"""Label maps whose left and right structures lie on the wrong sides are found, in any orientation."""

import json

import nibabel as nib
import numpy as np
import pytest

from deepatlas.data import DataError
from deepatlas.data.hemispheres import MARGIN_MM, crossed_structures, warn_crossed
from deepatlas.data.io import load_labelled
from deepatlas.data.labels import LabelScheme
from deepatlas.data.loading import load_training_data
from tests.conftest import tiny_config

SCHEME = LabelScheme(
    names=["background", "Cortex-L", "Cortex-R", "Ventricle-L", "Ventricle-R", "Brainstem"],
    codes=[[0], [1], [2], [3], [4], [5]],
)
RAS_2MM = np.diag([2.0, 2.0, 2.0, 1.0])


def two_hemispheres(shape=(40, 24, 20)) -> np.ndarray:
    """Left cortex at low x (RAS: x grows to the right), right at high x, a ventricle inside each, a
    midline brainstem."""
    classes = np.zeros(shape, dtype=np.uint8)
    mid = shape[0] // 2
    classes[2:mid, 2:-2, 2:-2], classes[mid:-2, 2:-2, 2:-2] = 1, 2
    classes[mid - 6 : mid - 1, 8:14, 6:12], classes[mid + 1 : mid + 6, 8:14, 6:12] = 3, 4
    classes[mid - 1 : mid + 1, 4:8, 2:6] = 5
    return classes


def test_scheme_sides_follow_the_side_words():
    scheme = LabelScheme(
        names=["background", "Left-Hippocampus", "rh-insula", "Caudate_R", "Brainstem", "LR1"],
        codes=[[0], [1], [2], [3], [4], [5]],
    )
    assert scheme.sides() == [None, "left", "right", "right", None, None]


def test_sound_sides_are_not_reported_in_any_orientation():
    classes = two_hemispheres()
    assert crossed_structures(classes, RAS_2MM, SCHEME) == []
    # the same brain stored with the x axis reversed (LPS-like: array index grows to the left)
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])
    flipped[0, 3] = 2.0 * (classes.shape[0] - 1)
    assert crossed_structures(classes[::-1], flipped, SCHEME) == []
    # and with the lateral axis last in the array
    permuted = np.zeros((4, 4))
    permuted[0, 2] = permuted[1, 0] = permuted[2, 1] = 2.0
    permuted[3, 3] = 1.0
    assert crossed_structures(np.transpose(classes, (1, 2, 0)), permuted, SCHEME) == []


@pytest.mark.parametrize("reverse_x", [False, True])
def test_a_hemisphere_labelled_as_the_other_in_part_is_reported(reverse_x):
    classes = two_hemispheres()
    mid = classes.shape[0] // 2
    back = classes[:mid, :10]  # the posterior part of the left hemisphere, labelled right
    back[back == 1], back[back == 3] = 2, 4
    affine = RAS_2MM.copy()
    if reverse_x:
        classes, affine[0, 0], affine[0, 3] = classes[::-1], -2.0, 2.0 * (classes.shape[0] - 1)
    crossed = {c.name: c.share for c in crossed_structures(classes, affine, SCHEME)}
    assert "Cortex-R" in crossed and not any(name.endswith("-L") for name in crossed)
    assert 0.1 < crossed["Cortex-R"] < 0.5
    line = warn_crossed(classes, affine, SCHEME, "labels/bad.nii.gz")
    assert line.startswith("warning: labels/bad.nii.gz: ") and "Cortex-R" in line and f"{MARGIN_MM:g} mm" in line


def test_a_map_swapped_throughout_is_reported():
    """Every left label on the subject's right as the header has it (or a header whose x axis is reversed)."""
    classes = two_hemispheres()[::-1]  # the same labels, the array's x reversed under a RAS header
    crossed = crossed_structures(classes, RAS_2MM, SCHEME)
    assert {c.name for c in crossed} == {"Cortex-L", "Cortex-R", "Ventricle-L", "Ventricle-R"}
    line = warn_crossed(classes, RAS_2MM, SCHEME, "labels/flipped.nii.gz")
    assert "swapped throughout" in line


def test_names_without_sides_are_not_judged():
    codes_only = LabelScheme.from_codes([0, 1, 2, 3, 4, 5])
    classes = two_hemispheres()
    classes[: classes.shape[0] // 2][classes[: classes.shape[0] // 2] == 1] = 2
    assert crossed_structures(classes, RAS_2MM, codes_only) == []


def test_ixi_reference_with_a_wandering_split_is_found(ixi):
    scheme = LabelScheme.from_file(ixi / "brain31.json")
    found = {}
    for subject in ("IXI012-HH-1211", "IXI638-HH-2786"):
        image, labels = load_labelled(ixi / "images" / f"{subject}.nii.gz", ixi / "labels" / f"{subject}.nii.gz")
        classes = scheme.encode(labels.array, unknown="background")
        found[subject] = {c.name: c.share for c in crossed_structures(classes, labels.affine, scheme)}
    assert found["IXI012-HH-1211"] == {}
    assert found["IXI638-HH-2786"]["CerebralWM-R"] > 0.15 and found["IXI638-HH-2786"]["Cortex-R"] > 0.15


@pytest.fixture
def one_wrong_sided(tmp_path):
    """Three subjects on a 2 mm RAS grid, all labelled; the third's left posterior cortex labelled right."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for n in range(3):
        classes = two_hemispheres()
        if n == 2:
            half = classes[: classes.shape[0] // 2, :10]
            half[half == 1] = 2
        image = (classes > 0) * 0.5 + rng.random(classes.shape) * 0.1
        nib.save(nib.Nifti1Image(image.astype(np.float32), RAS_2MM), str(tmp_path / "images" / f"s{n}.nii.gz"))
        nib.save(nib.Nifti1Image(classes, RAS_2MM), str(tmp_path / "labels" / f"s{n}.nii.gz"))
    classes = [{"index": k, "name": n, "source_codes": [k]} for k, n in enumerate(SCHEME.names) if k]
    (tmp_path / "scheme.json").write_text(json.dumps({"background": 0, "classes": classes}))
    config = tiny_config(tmp_path)
    config.data.label_map = str(tmp_path / "scheme.json")
    config.data.splits, config.data.num_labelled = None, 3  # every label map read
    return config


def test_training_leaves_wrong_sided_labels_out_and_says_so(one_wrong_sided, capsys):
    data = load_training_data(one_wrong_sided.data, progress=False)
    out = capsys.readouterr().out
    assert "labels/s2.nii.gz" in out and "Cortex-R" in out and "left out" in out
    assert "labels/s0.nii.gz" not in out and "labels/s1.nii.gz" not in out
    assert data.train.has_label.tolist() == [True, True, False] and int(data.train.labels[2].max()) == 0
    assert sorted(data.labelled_ids) == ["s0", "s1"] and len(data.train) == 3  # the image stays, unlabelled


def test_wrong_sides_kept_or_refused_as_asked(one_wrong_sided, capsys):
    one_wrong_sided.data.wrong_sides = "keep"
    data = load_training_data(one_wrong_sided.data, progress=False)
    assert data.train.has_label.all() and "labels/s2.nii.gz" in capsys.readouterr().out
    one_wrong_sided.data.wrong_sides = "error"
    with pytest.raises(DataError, match=r"labels/s2\.nii\.gz: .*Cortex-R.*data\.wrong_sides=unlabel"):
        load_training_data(one_wrong_sided.data, progress=False)
    one_wrong_sided.data.wrong_sides = "sometimes"
    with pytest.raises(ValueError, match="data.wrong_sides"):
        one_wrong_sided.validate()


def test_atlas_segment_warns_of_an_atlas_with_wrong_sides(ixi, tmp_path, capsys):
    from deepatlas.cli.main import main

    atlas = [str(ixi / "images" / "IXI638-HH-2786.nii.gz"), str(ixi / "labels" / "IXI638-HH-2786.nii.gz")]
    target = str(ixi / "images" / "IXI012-HH-1211.nii.gz")
    assert main(["atlas-segment", "brain-2mm", "--atlas", *atlas, target, "-o", str(tmp_path), "--net-only"]) == 0
    out = capsys.readouterr().out
    assert "warning: " + atlas[1] in out
    assert "its sides would become every target's" in out
