import json

import numpy as np
import pytest

from deepatlas.data import DataError, LabelScheme

SPEC = {
    "background": 0,
    "classes": [
        {"index": 1, "name": "Cortex", "source_codes": [101, 103]},
        {"index": 2, "name": "Ventricle", "source_codes": [51]},
    ],
}


def test_label_file_maps_codes_to_classes(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(SPEC))
    scheme = LabelScheme.from_file(path)
    assert scheme.names == ["background", "Cortex", "Ventricle"]
    codes = np.array([[0, 101], [103, 51]])
    assert scheme.encode(codes).tolist() == [[0, 1], [1, 2]]
    assert scheme.decode(np.array([0, 1, 2])).tolist() == [0, 101, 51]


def test_unknown_codes_error_names_the_file_and_codes():
    scheme = LabelScheme.from_dict(SPEC)
    with pytest.raises(DataError, match=r"subj1\.nii\.gz.*7, 999"):
        scheme.encode(np.array([0, 7, 999, 51]), source="labels/subj1.nii.gz")


def test_unknown_codes_become_background_when_asked():
    scheme = LabelScheme.from_dict(SPEC)
    assert scheme.encode(np.array([7, 51, 999]), unknown="background").tolist() == [0, 2, 0]


def test_without_a_file_classes_are_sorted_codes():
    scheme = LabelScheme.from_codes([52, 0, 3, 52, 41])
    assert scheme.codes == [[0], [3], [41], [52]]
    assert scheme.encode(np.array([41, 0, 52])).tolist() == [2, 0, 3]


def test_roundtrip_through_dict():
    scheme = LabelScheme.from_dict(SPEC)
    again = LabelScheme.from_dict(scheme.to_dict())
    assert again.names == scheme.names and again.codes == scheme.codes


@pytest.mark.parametrize(
    "bad",
    [
        {"classes": [{"index": 2, "name": "a", "source_codes": [1]}]},
        {"classes": [{"index": 1, "name": "a", "source_codes": [1]}, {"index": 2, "name": "b", "source_codes": [1]}]},
        {"nothing": []},
    ],
)
def test_invalid_label_files_are_refused(tmp_path, bad):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match="bad.json"):
        LabelScheme.from_file(path)


def test_reads_the_ixi_brain31_file(ixi):
    scheme = LabelScheme.from_file(ixi / "brain31.json")
    assert scheme.num_classes == 32
