"""The command line, end to end, as a user runs it (in-process, through ``main``)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from deepatlas.cli.main import main
from deepatlas.config import load_config
from deepatlas.data.synthetic import STRUCTURES
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
    with pytest.raises(ValueError, match=r"recipe: .fast. is not one of \[.default., .distil., .synthesis., .seg-only"):
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
    results = json.loads((tmp_path / "d" / "results.json").read_text())
    # the quick schedule (18 steps) is a smoke run: its two seg nets are equally untrained (0.144 and
    # 0.142 measured), so the ranking of the full demo (docs/usage.md) is not its to show; what it
    # claims is a fair comparison, printed as written
    ours, alone = results["deepatlas_seg_dice"], results["seg_only_seg_dice"]
    dice = f"DeepAtlas {ours:.3f}   seg net on labelled only {alone:.3f}"
    assert dice in proc.stdout and f"registration Dice  {results['deepatlas_reg_dice']:.3f}" in proc.stdout
    assert "3 labelled, 3 unlabelled for training" in proc.stdout
    assert len(results["labelled"]) == 3 and results["unlabelled"] == 3

    def steps(run):
        kinds = [json.loads(line)["kind"] for line in (tmp_path / "d" / run / "metrics.jsonl").open()]
        return {kind: kinds.count(kind) for kind in set(kinds) - {"validation"}}

    joint, seg_only = steps("deepatlas"), steps("seg-only")
    assert seg_only == {"seg_pretrain": joint["seg_pretrain"] + joint["seg"]}  # as many seg-net updates
    assert joint["reg_pretrain"] + joint["reg"] > 0
    assert set(results["per_class"]) == {name for name, _ in STRUCTURES.values()}  # every phantom structure
    assert 0 < results["deepatlas_reg_dice"] <= 1 and results["deepatlas_folds"] < 0.01
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


def test_register_refine_flags_are_checked_and_change_the_result(trained_3d, phantoms_3d, tmp_path, capsys):
    """``--refine`` settings reach the refinement: 3 steps at full resolution bring the warped image
    and labels closer to the fixed ones than the session's barely trained net alone (measured: NCC
    0.955 -> 0.982, Dice 0.739 -> 0.791)."""
    from deepatlas.data.io import load_image, load_label_codes

    images = sorted((phantoms_3d / "images").iterdir())
    base = ["register", str(trained_3d), "--moving", str(images[0]), "--fixed", str(images[1])]
    base += ["--moving-labels", str(phantoms_3d / "labels" / images[0].name)]
    assert main(base + ["-o", str(tmp_path / "a"), "--refine", "iterations=[0,5]"]) == 2
    assert "refine.iterations" in capsys.readouterr().err
    assert main(base + ["-o", str(tmp_path / "b"), "--refine", "levels=[1]", "--refine", "iterations=[3]"]) == 0
    assert main(base + ["-o", str(tmp_path / "c"), "--net-only"]) == 0
    fixed = load_image(images[1]).array
    truth = load_label_codes(phantoms_3d / "labels" / images[1].name).array

    def scores(out):
        warped = load_image(tmp_path / out / "phantom000_to_phantom001_warped.nii.gz").array
        labels = load_label_codes(tmp_path / out / "phantom000_to_phantom001_labels.nii.gz").array
        codes = np.unique(truth)[1:]
        dice = [2 * ((labels == c) & (truth == c)).sum() / ((labels == c).sum() + (truth == c).sum()) for c in codes]
        return np.corrcoef(warped.ravel(), fixed.ravel())[0, 1], np.mean(dice)

    (refined_ncc, refined_dice), (net_ncc, net_dice) = scores("b"), scores("c")
    assert refined_ncc > net_ncc + 0.01 and refined_dice > net_dice + 0.02


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


@pytest.fixture(scope="module")
def run_with_template(trained_3d, phantoms_3d, tmp_path_factory):
    """The session's 3D run with a template (a phantom of its grid): what ``--align`` aligns to."""
    import shutil

    run = tmp_path_factory.mktemp("templated") / "run"
    shutil.copytree(trained_3d, run)
    shutil.copy(phantoms_3d / "images" / "phantom004.nii.gz", run / "template.nii.gz")
    return run


def _mean_dice(out_file, truth_file) -> float:
    from deepatlas.data.io import load_label_codes

    codes, truth = load_label_codes(out_file).array, load_label_codes(truth_file).array
    dice = [2 * ((codes == c) & (truth == c)).sum() / ((codes == c).sum() + (truth == c).sum()) for c in (2, 3)]
    return float(np.mean(dice))  # white matter and cortex: the structures a barely trained run gets


def test_register_aligns_to_the_template_and_reads_a_pairs_file(run_with_template, phantoms_3d, tmp_path):
    images, labels = phantoms_3d / "images", phantoms_3d / "labels"
    argv = ["register", str(run_with_template), "--moving", str(images / "phantom000.nii.gz")]
    argv += ["--fixed", str(images / "phantom001.nii.gz"), "--moving-labels", str(labels / "phantom000.nii.gz")]
    assert main([*argv, "--align", "on", "-o", str(tmp_path / "aligned")]) == 0
    summary = json.loads((tmp_path / "aligned" / "phantom000_to_phantom001_registration.json").read_text())
    assert summary["model_space"]["aligned"] and summary["model_space"]["why"] == "asked for"
    warped = tmp_path / "aligned" / "phantom000_to_phantom001_labels.nii.gz"
    before = _mean_dice(labels / "phantom000.nii.gz", labels / "phantom001.nii.gz")
    # registered through the model space's detour (measured 0.78 -> 0.85)
    assert _mean_dice(warped, labels / "phantom001.nii.gz") > before + 0.03
    pairs = [
        {"moving": str(images / f"phantom00{m}.nii.gz"), "fixed": str(images / f"phantom00{f}.nii.gz")}
        for m, f in ((2, 3), (3, 2))
    ]
    pairs[0]["moving_labels"] = str(labels / "phantom002.nii.gz")
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    # a pairs file with the default refinement (and the model-space default, off)
    argv = ["register", str(run_with_template), "--pairs", str(tmp_path / "pairs.json"), "-o", str(tmp_path / "p")]
    assert main(argv) == 0
    written = {p.name for p in (tmp_path / "p").iterdir()}
    assert {"phantom002_to_phantom003_labels.nii.gz", "phantom003_to_phantom002_warped.nii.gz"} <= written
    assert "phantom003_to_phantom002_labels.nii.gz" not in written  # no labels given for that pair
    warped = tmp_path / "p" / "phantom002_to_phantom003_labels.nii.gz"
    before = _mean_dice(labels / "phantom002.nii.gz", labels / "phantom003.nii.gz")
    assert _mean_dice(warped, labels / "phantom003.nii.gz") > before + 0.03


def test_atlas_segment_flags(run_with_template, phantoms_3d, tmp_path):
    """--refine, --workers and --align in one call, --net-only in another: refinement earns its keep
    (measured: Dice 0.83 / 0.83 against 0.79 / 0.80 with the net alone)."""
    images, labels = phantoms_3d / "images", phantoms_3d / "labels"
    argv = ["atlas-segment", str(run_with_template)]
    for atlas in ("phantom000", "phantom001"):
        argv += ["--atlas", str(images / f"{atlas}.nii.gz"), str(labels / f"{atlas}.nii.gz")]
    argv += [str(images / "phantom006.nii.gz"), str(images / "phantom007.nii.gz")]
    refined = ["--refine", "iterations=[2,1]", "--workers", "2", "--align", "on", "-o", str(tmp_path / "refined")]
    assert main([*argv, *refined]) == 0
    assert main([*argv, "--net-only", "-o", str(tmp_path / "net")]) == 0
    for target in ("phantom006", "phantom007"):
        truth = labels / f"{target}.nii.gz"
        net = _mean_dice(tmp_path / "net" / f"{target}_atlas_seg.nii.gz", truth)
        assert _mean_dice(tmp_path / "refined" / f"{target}_atlas_seg.nii.gz", truth) > net + 0.02, target


def test_segment_reads_mgz_and_the_last_checkpoint(trained_3d, phantoms_3d, tmp_path):
    """A FreeSurfer .mgz is segmented as the same image in NIfTI is; ``--checkpoint last`` is the
    last checkpoint's seg net."""
    import nibabel as nib

    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.inference import load_run
    from deepatlas.inference.apply import segment_volume

    nifti = phantoms_3d / "images" / "phantom003.nii.gz"
    image = nib.load(nifti)
    nib.save(nib.MGHImage(np.asarray(image.dataobj, dtype=np.float32), image.affine), tmp_path / "phantom003.mgz")
    assert main(["segment", str(trained_3d), str(tmp_path / "phantom003.mgz"), "-o", str(tmp_path / "mgz")]) == 0
    assert main(["segment", str(trained_3d), str(nifti), "-o", str(tmp_path / "nii")]) == 0
    from_mgz = load_label_codes(tmp_path / "mgz" / "phantom003_seg.nii.gz")
    np.testing.assert_array_equal(from_mgz.array, load_label_codes(tmp_path / "nii" / "phantom003_seg.nii.gz").array)
    np.testing.assert_allclose(from_mgz.affine, image.affine, atol=1e-5)
    assert main(["segment", str(trained_3d), str(nifti), "-o", str(tmp_path / "last"), "--checkpoint", "last"]) == 0
    expected = segment_volume(load_run(trained_3d, "last"), load_image(nifti))
    np.testing.assert_array_equal(load_label_codes(tmp_path / "last" / "phantom003_seg.nii.gz").array, expected)


@pytest.mark.parametrize("recipe, kind", [("seg-only", "seg_pretrain"), ("reg-only", "reg_pretrain")])
def test_the_baseline_recipes_train_one_net(recipe, kind, phantoms_3d, tmp_path):
    config = tiny_config(phantoms_3d)
    config.save(tmp_path / "config.yaml")
    out = tmp_path / "run"
    argv = ["train", str(tmp_path / "config.yaml"), "-o", str(out), "--recipe", recipe, "--no-progress"]
    assert main([*argv, "--max-steps", "3", "schedule.val_every=0"]) == 0
    kinds = {json.loads(line)["kind"] for line in (out / "metrics.jsonl").open()}
    assert kinds == {kind}
    assert load_config(out / "config.yaml", saved=True).schedule.time_budget_minutes == 45


def test_the_synthesis_recipe_trains_the_seg_net_on_synthesised_images(phantoms_3d, tmp_path):
    """One image per seg step, the labelled one and a synthesised one in turn; no reg steps; the
    synthesised pairs kept with the teachers (so a resumed run has them)."""
    config = tiny_config(phantoms_3d)
    config.save(tmp_path / "config.yaml")
    out = tmp_path / "run"
    argv = ["train", str(tmp_path / "config.yaml"), "-o", str(out), "--recipe", "synthesis", "--no-progress"]
    assert main([*argv, "--num-labelled", "1", "--max-steps", "4", "schedule.val_every=0"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open() if '"kind"' in line]
    assert {row["kind"] for row in rows} == {"seg"}
    assert json.loads((out / "summary.json").read_text())["seg_step"] == "distil"
    assert any(row["teachers"] >= 1 for row in rows)
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert len(state["teachers"]["synthetic_positions"]) >= 1
