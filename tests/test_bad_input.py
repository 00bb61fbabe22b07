"""The bad-input corpus: every case runs through the real command line and must end in one
clear line that names the file or setting, exit status 2, and no damage to earlier outputs
(nothing overwritten, nothing half-written, no empty run folder left by a failed ``train``)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from deepatlas.cli.main import main
from tests.conftest import tiny_config


def _save(path: Path, array: np.ndarray, affine=None) -> str:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return str(path)


def _image_files(folder: Path, dataset: Path) -> dict[str, str]:
    """One bad file of each kind, beside a good image of the dataset's grid."""
    good = nib.load(dataset / "images" / "phantom001.nii.gz")
    shape, affine = good.shape, good.affine
    raw = (dataset / "images" / "phantom000.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    (folder / "random.nii.gz").write_bytes(np.random.default_rng(0).bytes(4000))
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "empty_folder").mkdir()
    return {
        "good": str(dataset / "images" / "phantom001.nii.gz"),
        "truncated": str(folder / "truncated.nii.gz"),
        "random": str(folder / "random.nii.gz"),
        "empty": str(folder / "empty.nii.gz"),
        "nan": _save(folder / "nan.nii.gz", np.full(shape, np.nan, np.float32), affine),
        "constant": _save(folder / "constant.nii.gz", np.ones(shape, np.float32), affine),
        "flat": _save(folder / "flat.nii.gz", np.random.rand(*shape[:2]).astype(np.float32), affine),
        "float_labels": _save(folder / "float_labels.nii.gz", np.random.rand(*shape).astype(np.float32) * 3, affine),
        "empty_folder": str(folder / "empty_folder"),
        "pairs": str(_write(folder / "pairs.json", '[{"moving": "a.nii.gz"}]')),
    }


def _paired_files(folder: Path, dataset: Path) -> dict[str, str]:
    """Inputs that are bad only beside another: labels off their image, a misspelt pairs key, a
    scan too small for the model, a label map given as an image, values beyond float32, atlas codes
    outside the run's label map."""
    image = nib.load(dataset / "images" / "phantom001.nii.gz")
    codes = np.asarray(nib.load(dataset / "labels" / "phantom001.nii.gz").dataobj).astype(np.int16)
    shifted = image.affine.copy()
    shifted[0, 3] += 20.0  # the header 20 mm off: the labels would be used 20 mm off
    unknown = codes.copy()
    unknown[codes == codes.max()] = 77
    huge = np.random.default_rng(2).random(image.shape)  # float64
    huge[3, 4, 5] = 1e300
    good, labels = str(dataset / "images" / "phantom001.nii.gz"), str(dataset / "labels" / "phantom001.nii.gz")
    pairs = [{"moving": good, "fixed": good, "moving_label": labels}]  # misspelt: moving_labels
    return {
        "shifted_labels": _save(folder / "shifted_labels.nii.gz", codes, shifted),
        "unknown_atlas": _save(folder / "unknown_atlas.nii.gz", unknown, image.affine),
        "tiny": _save(folder / "tiny.nii.gz", np.random.default_rng(3).random((10, 10, 10)).astype(np.float32)),
        "label_as_image": str(dataset / "labels" / "phantom001.nii.gz"),
        "huge": _save(folder / "huge.nii.gz", huge, image.affine),
        "misspelt_pairs": str(_write(folder / "misspelt_pairs.json", json.dumps(pairs))),
    }


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _broken_runs(folder: Path, run: Path) -> dict[str, str]:
    """Copies of a trained run whose best checkpoint is random bytes, a code-running pickle, or NaN."""

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {folder / 'CODE_RAN'}",))

    out = {}
    for kind in ("random_bytes", "pickle_with_code", "nan_weights"):
        copy = folder / f"run_{kind}"
        shutil.copytree(run, copy)
        checkpoint = copy / "checkpoints" / "best.pt"
        if kind == "random_bytes":
            checkpoint.write_bytes(np.random.default_rng(1).bytes(3000))
        elif kind == "pickle_with_code":
            torch.save({"format": 1, "reg_net": RunsCode()}, checkpoint)
        else:
            state = torch.load(checkpoint, weights_only=True)
            first = next(iter(state["seg_net"]))
            state["seg_net"][first].fill_(float("nan"))
            torch.save(state, checkpoint)
        out[kind] = str(copy)
    return out


def _bad_datasets(folder: Path, dataset: Path) -> dict[str, str]:
    """Copies of the phantom dataset with one defect each (in a subject whose labels are used)."""
    out = {}
    for kind in ("duplicate_ids", "label_shape", "unknown_codes", "image_shape", "label_affine"):
        copy = folder / f"data_{kind}"
        shutil.copytree(dataset, copy)
        label = nib.load(copy / "labels" / "phantom000.nii.gz")
        if kind == "duplicate_ids":
            shutil.copy(copy / "images" / "phantom000.nii.gz", copy / "images" / "phantom000.nii")
        elif kind == "label_shape":
            _save(copy / "labels" / "phantom000.nii.gz", np.zeros((5, 5, 5), np.int16), label.affine)
        elif kind == "label_affine":
            shifted = label.affine.copy()
            shifted[:3, 3] += [0.0, 20.0, 0.0]
            _save(copy / "labels" / "phantom000.nii.gz", np.asarray(label.dataobj).astype(np.int16), shifted)
        elif kind == "unknown_codes":
            codes = np.asarray(label.dataobj).astype(np.int16)
            codes[0, 0, 0] = 77
            _save(copy / "labels" / "phantom000.nii.gz", codes, label.affine)
        else:
            _save(copy / "images" / "phantom002.nii.gz", np.random.rand(9, 9, 9).astype(np.float32), label.affine)
        out[kind] = str(copy)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, phantoms_3d, trained_3d):
    folder = tmp_path_factory.mktemp("corpus")
    files = _image_files(folder, phantoms_3d)
    files.update(_broken_runs(folder, trained_3d))
    files.update(_bad_datasets(folder, phantoms_3d))
    files.update(_paired_files(folder, phantoms_3d))
    config = tiny_config(phantoms_3d)
    config.save(folder / "config.yaml")
    files.update(config=str(folder / "config.yaml"), run=str(trained_3d), dataset=str(phantoms_3d), root=str(folder))
    # earlier outputs that no failing command may touch
    earlier = folder / "earlier"
    assert (
        main(["register", str(trained_3d), "--moving", files["good"], "--fixed", files["good"], "-o", str(earlier)])
        == 0
    )
    assert main(["segment", str(trained_3d), files["good"], "-o", str(earlier)]) == 0
    files["earlier"] = str(earlier)
    return files


def _register(moving="{good}", fixed="{good}", run="{run}", *extra):
    return ["register", run, "--moving", moving, "--fixed", fixed, "-o", "{earlier}", "--overwrite", *extra]


def _segment(image):
    return ["segment", "{run}", image, "-o", "{earlier}", "--overwrite"]


def _atlas(image, labels, *extra):
    return ["atlas-segment", "{run}", "--atlas", image, labels, "{good}", "-o", "{earlier}", "--overwrite", *extra]


def _morphometry(atlas_labels):
    argv = ["morphometry", "{run}", "{good}", "--from", "atlas", "--atlas", "{good}", atlas_labels]
    return argv + ["-o", "{earlier}", "--overwrite"]


def _train(*extra):
    return ["train", "{config}", "-o", "{root}/new_run", "--no-progress", "--max-steps", "1", *extra]


def _train_on(dataset):
    labels = ["--labelled", "phantom000", "phantom001"]
    return _train(f"data.dataset={dataset}", f"data.label_map={dataset}/labels.json", *labels)


# case -> (command line, what the one error line must name)
CASES = {
    "truncated image": (_register(moving="{truncated}"), "truncated.nii.gz"),
    "unreadable image": (_register(moving="{random}"), "random.nii.gz"),
    "empty file": (_register(fixed="{empty}"), "empty.nii.gz"),
    "NaN image": (_register(moving="{nan}"), "nan.nii.gz"),
    "constant image": (["segment", "{run}", "{constant}", "-o", "{earlier}", "--overwrite"], "constant.nii.gz"),
    "2D image into a 3D model": (_register(moving="{flat}"), "flat.nii.gz"),
    "2D image to segment": (["segment", "{run}", "{flat}", "-o", "{earlier}", "--overwrite"], "flat.nii.gz"),
    "float label codes": (_register("{good}", "{good}", "{run}", "--moving-labels", "{float_labels}"), "float_labels"),
    "empty folder": (["segment", "{run}", "{empty_folder}", "-o", "{earlier}", "--overwrite"], "empty_folder"),
    "missing file": (_register(moving="{root}/nope.nii.gz"), "nope.nii.gz"),
    "pairs file without fixed": (["register", "{run}", "--pairs", "{pairs}", "-o", "{earlier}"], "pairs.json"),
    "not a run folder": (_register(run="{empty_folder}"), "empty_folder"),
    "checkpoint of random bytes": (_register(run="{random_bytes}"), "best.pt"),
    "pickle that would run code": (_register(run="{pickle_with_code}"), "could run code"),
    "checkpoint with NaN weights": (_register(run="{nan_weights}"), "not finite"),
    "NaN weights, segment": (["segment", "{nan_weights}", "{good}", "-o", "{earlier}", "--overwrite"], "not finite"),
    "unknown config key": (_train("schedule.cylces=2"), "schedule.cylces"),
    "wrong-typed config value": (_train("schedule.cycles=many"), "schedule.cycles"),
    "wrong type where the default is null": (_train("schedule.time_budget_minutes=soon"), "time_budget_minutes"),
    "ids that YAML reads as numbers": (_train("data.labelled_ids=[001,010]"), "data.labelled_ids"),
    "unknown option value": (_train("loss.similarity=ssim"), "loss.similarity"),
    "bad refinement setting": (_register("{good}", "{good}", "{run}", "--refine", "lr=-1"), "refine.lr"),
    "greedy refinement with an anatomy term": (
        _register("{good}", "{good}", "{run}", "--refine", "method=greedy", "--refine", "anatomy_weight=1"),
        "refine.anatomy_weight must be 0 with refine.method=greedy",
    ),
    "unknown refinement method": (_register("{good}", "{good}", "{run}", "--refine", "method=lbfgs"), "refine.method"),
    "unknown device": (_train("--device", "gpu7"), "gpu7"),
    "output folder under a file": (["segment", "{run}", "{good}", "-o", "{config}/out"], "config.yaml/out"),
    "run folder under a file": (["train", "{config}", "-o", "{config}/run", "--no-progress"], "config.yaml/run"),
    "missing config file": (["train", "{root}/nope.yaml", "-o", "{root}/new_run"], "nope.yaml"),
    "empty dataset folder": (_train("data.dataset={empty_folder}"), "empty_folder"),
    "duplicate subject ids": (_train_on("{duplicate_ids}"), "phantom000"),
    "label map of another shape": (_train_on("{label_shape}"), "phantom000.nii.gz"),
    "unknown label codes": (_train_on("{unknown_codes}"), "77"),
    "images on different grids": (_train_on("{image_shape}"), "phantom002.nii.gz"),
    "labels 20 mm off their image": (
        _register("{good}", "{good}", "{run}", "--moving-labels", "{shifted_labels}"),
        "shifted_labels.nii.gz: its header places the label map up to 20.0 mm away",
    ),
    "atlas labels off their image": (_atlas("{good}", "{shifted_labels}"), "shifted_labels.nii.gz"),
    "morphometry atlas labels off their image": (_morphometry("{shifted_labels}"), "shifted_labels.nii.gz"),
    "training labels off their image": (_train_on("{label_affine}"), "phantom000.nii.gz"),
    "evaluated labels off their image": (
        ["evaluate", "{run}", "--data", "{label_affine}", "--split", "all", "--pairs", "none", "-o", "{root}/eval"],
        "labels/phantom000.nii.gz",
    ),
    "misspelt key in a pairs file": (
        ["register", "{run}", "--pairs", "{misspelt_pairs}", "-o", "{earlier}", "--overwrite"],
        "unknown key(s) 'moving_label'; the keys are moving, fixed, moving_labels, output",
    ),
    "image too small to be a brain": (_segment("{tiny}"), "tiny.nii.gz: covers only 10 x 10 x 10 mm"),
    "image too small, register": (_register(fixed="{tiny}"), "tiny.nii.gz: covers only"),
    "label map given as an image": (_segment("{label_as_image}"), "phantom001.nii.gz: looks like a label map"),
    "values too large for float32": (_register(moving="{huge}"), "huge.nii.gz: intensities up to 1e+300"),
    "atlas codes outside the run's labels, morphometry": (
        _morphometry("{unknown_atlas}"),
        "--unknown-labels background",
    ),
    "atlas codes outside the run's labels, atlas-segment": (
        _atlas("{good}", "{unknown_atlas}", "--seg-net-weight", "1"),
        "unknown_atlas.nii.gz: label codes not in the label-map file: 77",
    ),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_clear_line(case, corpus, capsys):
    argv, names = CASES[case]
    argv = [arg.format(**corpus) for arg in argv]
    earlier = Path(corpus["earlier"])
    before = _snapshot(earlier)
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2  # README: refused with one line, exit status 2
    assert len(err) == 1 and err[0].startswith("deepatlas: error: "), err
    assert names in err[0], err[0]
    assert _snapshot(earlier) == before, "a failing command changed earlier outputs"
    assert not Path(corpus["root"], "new_run").exists(), "a failed train left a run folder"
    assert not Path(corpus["root"], "CODE_RAN").exists()


def test_flags_and_overrides_in_any_order(corpus, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--max-steps", "1", "schedule.cycles=1", "-o", str(out), corpus["config"], "--no-progress"]
    argv += ["--labelled", "phantom000", "phantom001", "schedule.val_every=0"]
    assert main(argv) == 0
    assert (out / "checkpoints" / "last.pt").exists()
    assert "cycles: 1" in (out / "config.yaml").read_text()


def test_a_real_process_exits_non_zero_with_one_line(corpus):
    done = subprocess.run(
        [sys.executable, "-m", "deepatlas", "segment", corpus["run"], corpus["truncated"], "-o", corpus["earlier"]],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "truncated.nii.gz" in lines[0], done.stderr


def test_values_beyond_float32_one_line_and_no_warning(corpus):
    """float64 intensities near 1e300 are named for what they are (not NaN), without nibabel's
    overflow warning on stderr; NaN stays NaN."""
    for key, says in (("huge", "too large for float32"), ("nan", "NaN or infinite")):
        argv = ["segment", corpus["run"], corpus[key], "-o", corpus["earlier"], "--overwrite"]
        done = subprocess.run([sys.executable, "-m", "deepatlas", *argv], capture_output=True, text=True)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1 and says in lines[0], done.stderr
