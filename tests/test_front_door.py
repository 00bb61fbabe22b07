"""Issue 37's front door: the shipped model by name and in the wheel, ``--version``, help for every
flag, the lookup tables, ``--volumes`` and ``--probabilities`` of ``segment``, ``evaluate -o``."""

import argparse
import csv
import inspect
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from deepatlas import __version__
from deepatlas.cli.main import build_parser, main
from deepatlas.data.template import TEMPLATE_PATH
from deepatlas.inference.apply import segment_volume
from deepatlas.run_folder import SHIPPED_MODELS, resolve_run, shipped_models

ROOT = Path(__file__).resolve().parents[1]


def _verbs() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"deepatlas {__version__}"


def test_every_flag_of_every_verb_has_help_and_says_its_default_once():
    verbs = _verbs()
    assert {"train", "demo", "segment", "register", "atlas-segment", "evaluate", "report", "morphometry"} <= set(verbs)
    for verb, parser in verbs.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help and action.help.strip(), f"{verb} {name}: no help"
            shown = formatter._get_help_string(action) % {"default": action.default}
            assert shown.count("(default") <= 1, f"{verb} {name}: the default said twice: {shown}"
            plain = action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in action.help
            if plain:  # a value to show, not in the help's own words: the formatter shows it
                assert f"(default: {action.default})" in shown, f"{verb} {name}: default not shown"
    assert "(default: best)" in verbs["segment"].format_help()


def test_the_api_segments_as_the_command_does_by_default():
    align = next(a for a in _verbs()["segment"]._actions if a.dest == "align")
    assert inspect.signature(segment_volume).parameters["align"].default == align.default == "auto"


def test_a_shipped_model_by_name_and_an_unknown_name(tmp_path, monkeypatch, capsys):
    assert "brain-2mm" in shipped_models()
    assert resolve_run("brain-2mm") == SHIPPED_MODELS / "brain-2mm"
    assert (ROOT / "models" / "brain-2mm" / "checkpoints" / "best.pt").exists()  # the checkout's path still works
    monkeypatch.chdir(tmp_path)
    (tmp_path / "brain-2mm").mkdir()  # a folder of that name wins over the shipped model: a path is a path
    assert resolve_run("brain-2mm") == Path("brain-2mm")
    assert main(["segment", "brain-3mm", str(TEMPLATE_PATH), "-o", "out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "brain-3mm" in err[0] and "brain-2mm" in err[0]
    assert not (tmp_path / "out").exists()


def test_the_wheel_carries_the_model_and_segments_by_name_from_anywhere(tmp_path):
    # built from a copy: a build in the checkout would leave build/ and egg-info beside other work
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "-q"]
    build = ["wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel")]
    subprocess.run(pip + build, check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "wheel").glob("deepatlas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = SHIPPED_MODELS / "brain-2mm"
    for path in (p for p in shipped.rglob("*") if p.is_file()):
        assert f"deepatlas/models/brain-2mm/{path.relative_to(shipped).as_posix()}" in names
    site = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [sys.executable, "-m", "deepatlas", "segment", "brain-2mm", str(TEMPLATE_PATH), "-o", "out"]
    env = {**os.environ, "PYTHONPATH": str(site)}  # the wheel's deepatlas first, not the checkout's
    done = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    codes = np.asarray(nib.load(elsewhere / "out" / "t1_2mm_seg.nii.gz").dataobj)
    assert len(np.unique(codes)) > 25  # the template's brain in its structures, not background
    assert (elsewhere / "out" / "labels.txt").exists() and (elsewhere / "out" / "labels.ctbl").exists()


def _rows(path: Path) -> list[list[str]]:
    return [shlex.split(line) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_lookup_tables_name_every_code_of_the_label_map(trained_3d, phantoms_3d, tmp_path):
    from deepatlas.inference import load_run

    image = sorted((phantoms_3d / "images").iterdir())[0]
    out = tmp_path / "seg"
    assert main(["segment", str(trained_3d), str(image), "-o", str(out)]) == 0
    scheme = load_run(trained_3d).scheme
    written = set(np.unique(np.asarray(nib.load(out / f"{image.name[:-7]}_seg.nii.gz").dataobj)).tolist())
    itk = _rows(out / "labels.txt")
    assert all(len(row) == 8 for row in itk)
    assert [(int(r[0]), r[7]) for r in itk] == [(c[0], n) for n, c in zip(scheme.names, scheme.codes)]
    assert all(f'"{name}"' in (out / "labels.txt").read_text() for name in scheme.names)  # quoted names
    for row in itk:
        rgb, alpha, shown = [int(v) for v in row[1:4]], float(row[4]), {int(row[5]), int(row[6])}
        assert all(0 <= v <= 255 for v in rgb) and 0 <= alpha <= 1 and shown <= {0, 1}
    assert len({tuple(r[1:4]) for r in itk}) == len(itk)  # one colour per structure
    assert written - {0} and written <= {int(r[0]) for r in itk}
    text = (out / "labels.ctbl").read_text()
    slicer = _rows(out / "labels.ctbl")
    assert f"# {len(slicer)} values" in text and all(len(row) == 6 for row in slicer)
    assert [int(r[0]) for r in slicer] == [int(r[0]) for r in itk]
    assert [r[2:5] for r in slicer] == [r[1:4] for r in itk]
    # a second image into the same folder: the same tables, kept; another model's tables: refused
    second = sorted((phantoms_3d / "images").iterdir())[1]
    assert main(["segment", str(trained_3d), str(second), "-o", str(out)]) == 0
    (out / "labels.ctbl").write_text("# Color table file\n0 background 0 0 0 0\n")
    third = sorted((phantoms_3d / "images").iterdir())[2]
    assert main(["segment", str(trained_3d), str(third), "-o", str(out)]) == 2
    assert not (out / f"{third.name[:-7]}_seg.nii.gz").exists()


def test_volumes_are_morphometrys_and_probabilities_sum_to_one(trained_3d, phantoms_3d, tmp_path):
    image = sorted((phantoms_3d / "images").iterdir())[0]
    name = image.name[: -len(".nii.gz")]
    seg = tmp_path / "seg"
    argv = ["segment", str(trained_3d), str(image), "-o", str(seg), "--align", "off"]
    assert main(argv + ["--volumes", "--probabilities"]) == 0
    assert main(["morphometry", str(trained_3d), str(image), "-o", str(tmp_path / "morpho")]) == 0
    with open(seg / "volumes.csv") as a, open(tmp_path / "morpho" / "volumes.csv") as b:
        ours, theirs = list(csv.DictReader(a)), list(csv.DictReader(b))
    # morphometry adds columns (template_mm3, atlas_mm3, flag) and the image's foreground row
    theirs = [{k: r[k] for k in ours[0]} for r in theirs if r["structure"] != "foreground"]
    assert ours == theirs and any(float(r["mm3"]) > 0 for r in ours if r["code"])
    probabilities = nib.load(seg / f"{name}_probabilities.nii.gz")
    labels = np.asarray(nib.load(seg / f"{name}_seg.nii.gz").dataobj)
    values = np.asarray(probabilities.dataobj)
    assert values.dtype == np.float32 and values.shape == labels.shape + (len(_rows(seg / "labels.txt")),)
    np.testing.assert_allclose(values.sum(-1), 1, atol=1e-4)
    assert np.allclose(probabilities.affine, nib.load(image).affine)
    codes = np.array([int(r[0]) for r in _rows(seg / "labels.txt")])
    assert np.array_equal(codes[values.argmax(-1)], labels)

    # the label map is the one segment writes without --probabilities; existing tables refuse a rerun
    def label_map(folder: str, *flags: str) -> np.ndarray:
        assert (
            main(["segment", str(trained_3d), str(image), "-o", str(tmp_path / folder), "--align", "off", *flags]) == 0
        )
        return np.asarray(nib.load(tmp_path / folder / f"{name}_seg.nii.gz").dataobj)

    assert np.array_equal(label_map("plain", "--volumes"), labels)
    # read for volumes, the label map is morphometry's quarter-voxel average (seg_net.subvoxel_average: auto);
    # without --volumes it is one pass, as --subvoxel-average off gives with them
    single = label_map("single")
    assert not np.array_equal(single, labels)
    assert np.array_equal(label_map("off", "--volumes", "--subvoxel-average", "off"), single)
    one_pass = tmp_path / "morpho-one-pass"  # morphometry reads one pass when asked, as segment does
    assert main(["morphometry", str(trained_3d), str(image), "-o", str(one_pass), "--subvoxel-average", "off"]) == 0
    assert np.array_equal(np.asarray(nib.load(one_pass / f"{name}_seg.nii.gz").dataobj), single)
    assert np.array_equal(np.asarray(nib.load(tmp_path / "morpho" / f"{name}_seg.nii.gz").dataobj), labels)
    assert main(argv + ["--volumes"]) == 2  # volumes.csv (and the label map) exist: --overwrite to replace


def test_evaluate_writes_where_o_says_and_refuses_to_replace(trained_3d, phantoms_3d, tmp_path, capsys):
    run_files = sorted(p.name for p in trained_3d.iterdir())
    out = tmp_path / "eval"
    argv = ["evaluate", str(trained_3d), "--data", str(phantoms_3d), "--split", "validation", "--pairs", "none"]
    assert main(argv + ["-o", str(out), "--no-progress"]) == 0
    assert (out / "summary.json").exists() and sorted(p.name for p in trained_3d.iterdir()) == run_files
    before = (out / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(argv + ["-o", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "summary.json").read_bytes() == before
    assert main(argv + ["-o", str(out), "--no-progress", "--overwrite"]) == 0
    with pytest.raises(SystemExit):  # -o is required: no default into the run folder
        main(argv)
