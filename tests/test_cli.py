"""The command line, end to end, as a user runs it (in-process, through ``main``)."""

import json
import subprocess
import sys

import pytest

from deepatlas.cli.main import main
from deepatlas.config import load_config
from deepatlas.recipes import recipe_overrides
from tests.conftest import tiny_config


def test_train_with_config_file_flags_and_overrides(tmp_path, phantoms_3d, capsys):
    config = tiny_config(phantoms_3d)
    config.data.num_labelled = None
    config.save(tmp_path / "config.yaml")
    out = tmp_path / "run"
    code = main(
        [
            "train",
            str(tmp_path / "config.yaml"),
            "schedule.cycles=1",
            "-o",
            str(out),
            "--num-labelled",
            "3",
            "--no-progress",
            "--max-steps",
            "4",
        ]
    )
    assert code == 0
    assert "cycles: 1" in (out / "config.yaml").read_text()
    assert len(json.loads((out / "data.json").read_text())["labelled"]) == 3
    # 3 labelled and 3 unlabelled images under the defaults: the measured better recipe is named
    assert "3 labelled and 3 unlabelled training images" in capsys.readouterr().out
    assert main(["train", "-o", str(out), "--resume", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["finished"]


def test_overrides_without_a_config_file(tmp_path, phantoms_2d):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "-o",
            str(out),
            "--dataset",
            str(phantoms_2d),
            "--label-map",
            str(phantoms_2d / "labels.json"),
            "schedule.cycles=0",
            "schedule.seg_pretrain_steps=1",
            "schedule.reg_pretrain_steps=1",
            "seg_net.channels=[4,8]",
            "seg_net.strides=[2]",
            "reg_net.channels=[4,8]",
            "reg_net.strides=[2]",
            "--no-progress",
        ]
    )
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 2


def test_a_recipe_sets_its_settings_and_the_users_overrides_win(tmp_path, phantoms_3d, capsys):
    config = tiny_config(phantoms_3d)
    config.save(tmp_path / "config.yaml")
    out = tmp_path / "run"
    args = ["train", str(tmp_path / "config.yaml"), "-o", str(out), "--recipe", "distil", "--no-progress"]
    assert main([*args, "teachers.refine_iterations=[3,2,1]", "--max-steps", "12"]) == 0
    saved = load_config(out / "config.yaml", saved=True)
    assert saved.teachers.loss == "distil" and saved.teachers.enabled == "on" and saved.teachers.atlases == 3
    assert saved.teachers.refine_levels == [4, 2, 1] and saved.teachers.refine_iterations == [3, 2, 1]
    assert saved.refine.levels == config.refine.levels  # how the trained run registers is not the teachers'
    assert saved.schedule.time_budget_minutes == 45 and saved.schedule.seg_pretrain_steps == 0
    assert saved.teachers.guide_registration and saved.schedule.reg_steps_per_cycle == 10
    # steps 1-10 train the reg net, 11-12 are distil steps: their taught images got teachers
    assert json.loads((out / "summary.json").read_text())["teachers"]["images"] >= 1
    assert "--recipe distil" not in capsys.readouterr().out  # distilling already: no suggestion
    with pytest.raises(SystemExit):
        main([*args, "--recipe", "fast"])
    assert "invalid choice: 'fast'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"recipe: .fast. is not one of \[.default., .distil., .seg-only"):
        recipe_overrides("fast")


def test_bad_input_gives_a_one_line_error_not_a_traceback(tmp_path, capsys):
    code = main(["train", "-o", str(tmp_path / "run"), "--dataset", str(tmp_path / "nothing"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("deepatlas: error:") and "nothing: dataset not found" in err
    assert "Traceback" not in err


def test_demo_quick_writes_results_and_figure(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "deepatlas.cli.main", "demo", "--quick", "-o", str(tmp_path / "d"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "segmentation Dice" in proc.stdout
    results = json.loads((tmp_path / "d" / "results.json").read_text())
    assert 0 <= results["deepatlas_seg_dice"] <= 1 and 0 <= results["seg_only_seg_dice"] <= 1
    png = (tmp_path / "d" / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_overrides_after_the_flags_are_accepted_as_the_readme_writes_them(tmp_path, capsys):
    """`deepatlas train CONFIG -o RUN --num-labelled 5 schedule.cycles=100` parses (then stops at the data)."""
    code = main(
        [
            "train",
            "-o",
            str(tmp_path / "run"),
            "--dataset",
            str(tmp_path / "nothing"),
            "--num-labelled",
            "5",
            "schedule.cycles=100",
            "--no-progress",
        ]
    )
    assert code == 2 and "nothing: dataset not found" in capsys.readouterr().err


def test_register_refine_flags_are_checked(trained_3d, phantoms_3d, tmp_path, capsys):
    images = sorted((phantoms_3d / "images").iterdir())
    base = ["register", str(trained_3d), "--moving", str(images[0]), "--fixed", str(images[1])]
    assert main(base + ["-o", str(tmp_path / "a"), "--refine", "iterations=[0,5]"]) == 2
    assert "refine.iterations" in capsys.readouterr().err
    assert main(base + ["-o", str(tmp_path / "b"), "--refine", "levels=[1]", "--refine", "iterations=[3]"]) == 0
    assert main(base + ["-o", str(tmp_path / "c"), "--net-only"]) == 0


def test_workers_write_what_one_process_writes(trained_3d, phantoms_3d, tmp_path):
    import shutil

    import nibabel as nib
    import numpy as np

    images = [str(p) for p in sorted((phantoms_3d / "images").iterdir())[:3]]
    moving = tmp_path / "moving"
    moving.mkdir()
    for image in (images[0], images[2]):
        shutil.copy(image, moving)
    for workers in ("1", "2"):
        out = str(tmp_path / f"w{workers}")
        assert main(["segment", str(trained_3d), *images, "-o", out, "--workers", workers]) == 0
        register = ["register", str(trained_3d), "--moving", str(moving), "--fixed", images[1], "-o", out]
        assert main(register + ["--workers", workers]) == 0
    one, two = (sorted(p for p in (tmp_path / w).iterdir() if p.name.endswith(".nii.gz")) for w in ("w1", "w2"))
    # 3 label maps; per pair: warped, displacement (RAS), _Warp (LPS, for ITK/ANTs), jacdet
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 3 + 2 * 4
    for a, b in zip(one, two):
        np.testing.assert_allclose(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj), atol=1e-4)
