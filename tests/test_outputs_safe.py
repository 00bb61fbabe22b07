"""Nothing lost, nothing silently replaced (issue 34): through the real command line, every
per-input output has its own name, no output replaces an input, label maps in an input folder
are not taken for images, and a folder being written (or trained in) is held by one process."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deepatlas.cli.main import main
from deepatlas.files import LOCK_NAME, folder_lock


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("deepatlas: error: "), err
    return err[0]


@pytest.fixture()
def files(tmp_path, phantoms_3d) -> Path:
    """``a/s``, ``b/s`` (two images with one file name), a flat folder ``flat/`` holding ``p0``, ``p1``
    and the label map ``p0_seg`` beside ``p0``, and ``fixed``."""
    images, labels = phantoms_3d / "images", phantoms_3d / "labels"
    for folder, n in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        shutil.copy(images / f"phantom00{n}.nii.gz", tmp_path / folder / "s.nii.gz")
    (tmp_path / "flat").mkdir()
    shutil.copy(images / "phantom000.nii.gz", tmp_path / "flat" / "p0.nii.gz")
    shutil.copy(images / "phantom001.nii.gz", tmp_path / "flat" / "p1.nii.gz")
    shutil.copy(labels / "phantom000.nii.gz", tmp_path / "flat" / "p0_seg.nii.gz")
    shutil.copy(images / "phantom002.nii.gz", tmp_path / "fixed.nii.gz")
    return tmp_path


def test_segment_names_each_input_its_own_output(trained_3d, files, capsys):
    out = files / "out"
    assert main(["segment", str(trained_3d), str(files / "a/s.nii.gz"), str(files / "b/s.nii.gz"), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a_s_seg.nii.gz", "b_s_seg.nii.gz"]
    assert "2 label map(s) written" in capsys.readouterr().out
    assert (out / "a_s_seg.nii.gz").read_bytes() != (out / "b_s_seg.nii.gz").read_bytes()


def test_the_same_image_twice_is_refused_naming_both(trained_3d, files, capsys):
    image = str(files / "a/s.nii.gz")
    assert main(["segment", str(trained_3d), image, image, "-o", str(files / "out")]) == 2
    line = _error(capsys)
    assert line.count(image) == 2 and "s_seg.nii.gz" in line
    assert not (files / "out").exists()


def test_atlas_segment_targets_with_one_name(trained_3d, files, phantoms_3d, capsys):
    atlas = [str(phantoms_3d / "images/phantom003.nii.gz"), str(phantoms_3d / "labels/phantom003.nii.gz")]
    out = files / "out"
    argv = ["atlas-segment", str(trained_3d), "--atlas", *atlas, "--net-only", "--no-affine", "-o", str(out)]
    assert main([*argv, str(files / "a/s.nii.gz"), str(files / "b/s.nii.gz")]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a_s_atlas_seg.nii.gz", "b_s_atlas_seg.nii.gz"]
    assert "2 label map(s) from 1 atlas(es)" in capsys.readouterr().out


def test_an_atlas_is_never_written_over(trained_3d, files, phantoms_3d, capsys):
    # the atlas' label map sits where the target's output would go: refused, even with --overwrite
    out = files / "out"
    out.mkdir()
    labels = shutil.copy(phantoms_3d / "labels/phantom003.nii.gz", out / "p1_atlas_seg.nii.gz")
    before = _snapshot(files)
    atlas = [str(phantoms_3d / "images/phantom003.nii.gz"), str(labels)]
    argv = ["atlas-segment", str(trained_3d), "--atlas", *atlas, str(files / "flat/p1.nii.gz"), "-o", str(out)]
    assert main([*argv, "--overwrite"]) == 2
    line = _error(capsys)
    assert "p1_atlas_seg.nii.gz" in line and "atlas label map" in line and "even with --overwrite" in line
    assert _snapshot(files) == before


def test_register_pairs_with_one_moving_name(trained_3d, files, capsys):
    # atlas_1/t1weighted_brain and atlas_2/t1weighted_brain to one fixed image: two sets of outputs
    for n, source in ((1, "a"), (2, "b")):
        (files / f"atlas_{n}").mkdir()
        shutil.copy(files / source / "s.nii.gz", files / f"atlas_{n}" / "t1weighted_brain.nii.gz")
    pairs = files / "pairs.json"
    entries = [f'{{"moving": "atlas_{n}/t1weighted_brain.nii.gz", "fixed": "fixed.nii.gz"}}' for n in (1, 2)]
    pairs.write_text("[" + ", ".join(entries) + "]")
    out = files / "out"
    assert main(["register", str(trained_3d), "--pairs", str(pairs), "--net-only", "--no-affine", "-o", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {f"atlas_{n}_t1weighted_brain_to_fixed_warped.nii.gz" for n in (1, 2)} <= names
    assert "2 registration(s) written" in capsys.readouterr().out


def test_a_pairs_entry_names_its_outputs(trained_3d, files, capsys):
    pairs = files / "pairs.json"
    pairs.write_text(
        '[{"moving": "a/s.nii.gz", "fixed": "fixed.nii.gz", "output": "first"},'
        ' {"moving": "b/s.nii.gz", "fixed": "fixed.nii.gz", "output": "second"}]'
    )
    out = files / "out"
    assert main(["register", str(trained_3d), "--pairs", str(pairs), "--net-only", "--no-affine", "-o", str(out)]) == 0
    assert (out / "first_warped.nii.gz").exists() and (out / "second_displacement.nii.gz").exists()
    # two entries naming one output: refused before any work, naming both pairs
    pairs.write_text(
        '[{"moving": "a/s.nii.gz", "fixed": "fixed.nii.gz", "output": "same"},'
        ' {"moving": "b/s.nii.gz", "fixed": "fixed.nii.gz", "output": "same"}]'
    )
    capsys.readouterr()
    assert main(["register", str(trained_3d), "--pairs", str(pairs), "-o", str(files / "out2")]) == 2
    line = _error(capsys)
    assert "a/s.nii.gz" in line and "b/s.nii.gz" in line and "same_warped.nii.gz" in line
    assert not (files / "out2").exists()
    pairs.write_text('[{"moving": "a/s.nii.gz", "fixed": "fixed.nii.gz", "output": "../elsewhere"}]')
    assert main(["register", str(trained_3d), "--pairs", str(pairs), "-o", str(files / "out2")]) == 2
    assert '"output"' in _error(capsys)


def test_register_never_writes_over_its_inputs(trained_3d, files, capsys):
    # the fixed image is named as one of the pair's outputs would be
    out = files / "out"
    out.mkdir()
    fixed = shutil.copy(files / "fixed.nii.gz", out / "s_to_f_warped.nii.gz")
    pairs = files / "pairs.json"
    pairs.write_text(f'[{{"moving": "a/s.nii.gz", "fixed": "{fixed}", "output": "s_to_f"}}]')
    before = _snapshot(files)
    assert main(["register", str(trained_3d), "--pairs", str(pairs), "-o", str(out), "--overwrite"]) == 2
    line = _error(capsys)
    assert "s_to_f_warped.nii.gz" in line and "fixed image" in line
    assert _snapshot(files) == before


def test_a_folder_of_inputs_leaves_its_label_maps_out(trained_3d, files, capsys):
    out = files / "out"
    assert main(["segment", str(trained_3d), str(files / "flat"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 label map(s) left out of the images" in printed and "2 label map(s) written" in printed
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["p0_seg.nii.gz", "p1_seg.nii.gz"]


def test_the_users_label_maps_survive_overwrite(trained_3d, files, capsys):
    # segment dir -o dir --overwrite: p0_seg.nii.gz is the user's label map, not an earlier output
    flat = files / "flat"
    before = _snapshot(flat)
    assert main(["segment", str(trained_3d), str(flat), "-o", str(flat), "--overwrite"]) == 2
    line = _error(capsys)
    assert "p0_seg.nii.gz" in line and "label map" in line and "even with --overwrite" in line
    assert _snapshot(flat) == before


def test_morphometry_never_writes_over_a_label_map(trained_3d, files, capsys):
    flat = files / "flat"
    before = _snapshot(flat)
    assert main(["morphometry", str(trained_3d), str(flat), "-o", str(flat), "--overwrite"]) == 2
    assert "p0_seg.nii.gz" in _error(capsys)
    assert _snapshot(flat) == before


def test_a_second_process_writing_into_a_held_folder_stops(trained_3d, files, capsys):
    out = files / "out"
    assert main(["segment", str(trained_3d), str(files / "flat/p0.nii.gz"), "-o", str(out)]) == 0
    before, inputs = _snapshot(out), _snapshot(files / "flat")
    with folder_lock(out, "the test's holder"):
        # in this process, through main ...
        argv = ["segment", str(trained_3d), str(files / "flat"), "-o", str(out), "--overwrite"]
        assert main(argv) == 2
        line = _error(capsys)
        assert f"pid {os.getpid()} on {socket.gethostname()} (the test's holder, since " in line
        # ... and from a real second process
        done = subprocess.run([sys.executable, "-m", "deepatlas.cli.main", *argv], capture_output=True, text=True)
        assert done.returncode == 2
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and f"pid {os.getpid()}" in lines[0] and str(out) in lines[0], done.stderr
    assert _snapshot(out) == before and _snapshot(files / "flat") == inputs
    assert not (out / LOCK_NAME).exists()


def test_a_second_training_in_a_held_run_folder_stops(trained_3d, tmp_path, capsys):
    run = Path(shutil.copytree(trained_3d, tmp_path / "run"))
    before = _snapshot(run)
    with folder_lock(run, "deepatlas train (the test)"):
        argv = ["train", "-o", str(run), "--resume", "--no-progress", "--max-steps", "1"]
        assert main(argv) == 2
        line = _error(capsys)
        assert str(run) in line and f"pid {os.getpid()}" in line and "deepatlas train (the test)" in line
    assert _snapshot(run) == before
