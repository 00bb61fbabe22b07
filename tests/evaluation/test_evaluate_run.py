import csv
import json

import pytest

from deepatlas.cli.main import main
from deepatlas.evaluation.evaluate_run import declared_pairs


def test_declared_pairs(tmp_path):
    ids = ["a", "b", "c"]
    assert declared_pairs(ids, "next") == [("a", "b"), ("b", "c"), ("c", "a")]
    assert len(declared_pairs(ids, "all")) == 6
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([["c", "a"]]))
    assert declared_pairs(ids, str(path)) == [("c", "a")]
    path.write_text(json.dumps([["c", "zz"]]))
    with pytest.raises(ValueError, match="zz"):
        declared_pairs(ids, str(path))


@pytest.mark.parametrize("which", ["trained_2d", "trained_3d"])
def test_evaluate_command_writes_csv_and_summary(request, tmp_path, which, capsys):
    run = request.getfixturevalue(which)
    dataset = request.getfixturevalue("phantoms_2d" if which == "trained_2d" else "phantoms_3d")
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--data", str(dataset), "--split", "train", "-o", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "WhiteMatter" in printed and "registration: Dice" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["subjects"] == 6 and summary["pair_count"] == 6
    for key in ("seg_dice", "reg_dice", "reg_dice_before", "folds", "sdlogj", "seg_hd95_mm"):
        assert summary[key] == summary[key], key  # not NaN
    rows = list(csv.DictReader((out / "segmentation.csv").open()))
    assert len(rows) == 6 * 6 and set(rows[0]) == {"subject", "structure", "dice", "hd95_mm"}
    assert len(list(csv.DictReader((out / "pairs.csv").open()))) == 6


def test_label_codes_the_model_never_saw_are_named(trained_2d, phantoms_2d, tmp_path, capsys):
    import shutil

    import nibabel as nib
    import numpy as np

    data = tmp_path / "data"
    shutil.copytree(phantoms_2d, data)
    label = sorted((data / "labels").iterdir())[0]
    img = nib.load(str(label))
    codes = np.asarray(img.dataobj).copy()
    codes[0, 0] = 77
    nib.save(nib.Nifti1Image(codes, img.affine), str(label))
    code = main(["evaluate", str(trained_2d), "--data", str(data), "--split", "train", "--no-progress",
                 "--unknown-labels", "error", "-o", str(tmp_path / "e")])
    assert code == 2
    err = capsys.readouterr().err
    assert label.name in err and "77" in err
