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
    assert (
        main(["evaluate", str(run), "--data", str(dataset), "--split", "train", "-o", str(out), "--no-progress"]) == 0
    )
    printed = capsys.readouterr().out
    assert "WhiteMatter" in printed and "registration: Dice" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["subjects"] == 6 and summary["pair_count"] == 6
    # the session's small runs (measured: reg Dice 0.774 / 0.888 from 0.651 / 0.696 before, in 3D / 2D;
    # seg Dice 0.153 / 0.178, its seg net barely trained; no folds; SDlogJ 0.17 / 0.22)
    assert summary["reg_dice"] > summary["reg_dice_before"] + 0.05
    assert 0.1 < summary["seg_dice"] < 1 and 0 < summary["seg_hd95_mm"] < float("inf")
    assert summary["folds"] < 0.001 and 0 < summary["sdlogj"] < 0.5
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
    code = main(
        [
            "evaluate",
            str(trained_2d),
            "--data",
            str(data),
            "--split",
            "train",
            "--no-progress",
            "--unknown-labels",
            "error",
            "-o",
            str(tmp_path / "e"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert label.name in err and "77" in err


def test_atlas_segmentation_evaluation(trained_2d, phantoms_2d, tmp_path, capsys):
    splits = json.loads((phantoms_2d / "splits.json").read_text())
    atlases = splits["train"][:2]
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(trained_2d),
                "--data",
                str(phantoms_2d),
                "--split",
                "validation",
                "--atlases",
                *atlases,
                "--pairs",
                "none",
                "-o",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    # weighted fusion by default, as atlas-segment
    assert summary["segmentation"] == "atlas (2, weighted)" and summary["atlases"] == atlases
    assert summary["pair_count"] == 0 and "reg_dice" not in summary
    assert 0.0 < summary["seg_dice"] <= 1.0
    assert (
        main(
            [
                "evaluate",
                str(trained_2d),
                "--data",
                str(phantoms_2d),
                "--split",
                "validation",
                "--atlases",
                splits["validation"][0],
                "--pairs",
                "none",
                "--no-progress",
                "-o",
                str(tmp_path / "self"),
            ]
        )
        != 0
    )
    assert "would segment itself" in capsys.readouterr().err


def test_a_registrar_replaces_the_network(phantoms_2d):
    """Any method plugs in: with an identity 'registration' one atlas's segmentation is its own labels."""
    import numpy as np
    import torch

    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.data.labels import LabelScheme
    from deepatlas.evaluation.evaluate_run import evaluate_run
    from deepatlas.evaluation.metrics import dice_per_class, finite_mean
    from deepatlas.inference.apply import Registration

    def identity(moving, fixed, moving_labels):
        shape = fixed.array.shape
        return Registration(
            moving.array, np.zeros((len(shape),) + shape), np.ones(shape), moving_labels.array, fixed.affine
        )

    splits = json.loads((phantoms_2d / "splits.json").read_text())
    atlas, targets = splits["train"][0], splits["validation"]
    scheme = LabelScheme.from_file(phantoms_2d / "labels.json")
    summary = evaluate_run(
        None,
        phantoms_2d,
        "validation",
        pairs="next",
        atlases=[atlas],
        registrar=identity,
        scheme=scheme,
        progress=False,
    )
    atlas_classes = torch.from_numpy(scheme.encode(load_label_codes(phantoms_2d / "labels" / f"{atlas}.nii.gz").array))
    expected = finite_mean(
        torch.stack(
            [
                dice_per_class(
                    atlas_classes,
                    torch.from_numpy(scheme.encode(load_label_codes(phantoms_2d / "labels" / f"{t}.nii.gz").array)),
                    scheme.num_classes,
                )
                for t in targets
            ]
        )
    )
    assert abs(summary["seg_dice"] - expected) < 1e-6
    assert summary["reg_dice"] == pytest.approx(summary["reg_dice_before"]) and summary["folds"] == 0.0
    assert load_image(phantoms_2d / "images" / f"{atlas}.nii.gz").array.ndim == 2
    with pytest.raises(ValueError, match="registrar"):
        evaluate_run(None, phantoms_2d, "validation", progress=False)


def test_score_means_per_structure_and_pairs():
    from deepatlas.evaluation.evaluate_run import Tables, score

    seg = [
        {"subject": s, "structure": n, "dice": d, "hd95_mm": h}
        for s, n, d, h in [("a", "x", 0.5, 1.0), ("a", "y", 1.0, float("inf")), ("b", "x", 0.7, 3.0)]
    ]
    summary = score(Tables(seg, [1.0, 3.0, 2.0], [], []), ["x", "y"])
    assert summary["pair_count"] == 0 and "reg_dice" not in summary
    assert summary["seg_dice_per_structure"] == {"x": pytest.approx(0.6), "y": 1.0}
    assert summary["seg_seconds_per_image"] == 2.0 and summary["missing_structures"] == 1
    reg = [{"moving": "a", "fixed": "b", "structure": "x", "dice": 0.9, "dice_before": 0.4, "hd95_mm": 2.0}]
    pairs = [{"moving": "a", "fixed": "b", "folds": 0.01, "sdlogj": 0.2, "seconds": 4.0}]
    summary = score(Tables(seg, [1.0], reg, pairs), ["x", "y"])
    assert summary["pair_count"] == 1 and summary["reg_dice"] == 0.9 and summary["reg_dice_before"] == 0.4
    assert summary["folds"] == 0.01 and summary["reg_seconds_per_pair"] == 4.0


def test_evaluate_run_refuses_unknown_options(phantoms_2d):
    from deepatlas.evaluation.evaluate_run import evaluate_run

    with pytest.raises(TypeError, match="atlas_ids"):
        evaluate_run(None, phantoms_2d, "validation", atlas_ids=["phantom000"])


def test_the_seg_net_votes_with_the_atlases_when_weighted(trained_2d, phantoms_2d, tmp_path):
    """A weight beyond any atlas vote scores as the seg net alone; the summary says who voted."""
    from deepatlas.evaluation.evaluate_run import evaluate_run
    from deepatlas.inference import load_run

    run = load_run(trained_2d)
    atlases = json.loads((phantoms_2d / "splits.json").read_text())["train"][:2]
    common = {"split": "validation", "pairs": "none", "progress": False}
    seg_net = evaluate_run(run, phantoms_2d, output=tmp_path / "net", **common)
    outvoted = evaluate_run(
        run, phantoms_2d, output=tmp_path / "fused", atlases=atlases, fusion="weighted", seg_net_weight=1e6, **common
    )
    assert outvoted["segmentation"] == "atlas (2, weighted) + seg net x1e+06"
    assert outvoted["seg_dice"] == pytest.approx(seg_net["seg_dice"])
    with pytest.raises(ValueError, match="seg-net-weight must be a finite number >= 0"):
        evaluate_run(run, phantoms_2d, atlases=atlases, seg_net_weight=-1, **common)
    with pytest.raises(ValueError, match="give --atlases too"):
        evaluate_run(run, phantoms_2d, seg_net_weight=1, **common)
