"""The alignment QC score on real brains changed as other scanners change them, against failed
alignments (issue 34), and ``segment``'s warning / refusal built on it."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from benchmarks.moved_brains import random_affine, write_moved
from deepatlas import options
from deepatlas.cli.main import main
from deepatlas.data.io import Volume, load_image, save_volume
from deepatlas.data.splits import load_splits
from deepatlas.data.template import load_template
from deepatlas.inference.alignment import align_to_template
from tests.conftest import IXI

HEADS = IXI.parent / "ixi-heads" / "images"
MODEL = Path(__file__).resolve().parents[2] / "models" / "brain-2mm"
pytestmark = pytest.mark.skipif(not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI}")


def _validation_brain() -> Volume:
    sid = load_splits(IXI / "splits.json")["validation"][1]
    return load_image(IXI / "images" / f"{sid}.nii.gz")


def _other_scanner(brain: Volume, folder: Path) -> Volume:
    """``brain`` moved onto a 1 mm grid with another axis order, another T1 contrast (a gamma with a
    bump: not monotonic), a +-25 % bias field and noise, as another scanner would give it."""
    moved = load_image(write_moved(brain, random_affine(np.random.default_rng(3)), folder / "moved.nii.gz"))
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine[:3, :3], fine[:3, 3] = moved.affine[:3, :3] / 1.5, moved.affine[:3, 3]
    shape = tuple(int(n * 1.5) for n in moved.array.shape)
    array = map_coordinates(moved.array, np.indices(shape).reshape(3, -1) / 1.5, order=1).reshape(shape)
    x = np.clip(array / np.percentile(array[array > 0], 99.5), 0, 1)
    u, v, w = (
        np.linspace(-1, 1, n)[tuple(slice(None) if k == a else None for k in range(3))] for a, n in enumerate(shape)
    )
    bias = np.exp(0.25 * (0.6 * u + 0.4 * v * w))  # smooth, +-25 % across the field of view
    y = (x**0.7 + 0.06 * np.exp(-(((x - 0.5) / 0.08) ** 2) / 2)) * bias
    y = y + 0.03 * np.random.default_rng(4).standard_normal(shape)
    return Volume(np.where(x > 0.02, np.clip(y, 0.001, None), 0).astype(np.float32), fine, Path("other.nii.gz"))


def test_score_accepts_another_scanners_brain_and_rejects_failed_alignments(tmp_path):
    template, brain = load_template(), _validation_brain()
    good = align_to_template(_other_scanner(brain, tmp_path), template).score
    assert good >= options.ALIGNMENT_MIN_SCORE + 0.05, good
    flipped = Volume(np.flip(brain.array, 1).copy(), brain.affine, brain.path)  # ixi-2mm: axis 1 is A-P
    x = brain.array / brain.array.max()
    inverted = Volume(np.where(x > 0.05, 1.1 - x, 0).astype(np.float32), brain.affine, brain.path)
    bad = {"AP flipped": flipped, "contrast inverted": inverted}
    if HEADS.exists():
        bad["whole head"] = load_image(HEADS / "IXI015-HH-1258.nii.gz")
    scores = {name: align_to_template(volume, template).score for name, volume in bad.items()}
    assert max(scores.values()) < options.ALIGNMENT_MIN_SCORE - 0.01, scores
    assert scores["contrast inverted"] < options.ALIGNMENT_REFUSE_SCORE, scores


def test_segment_refuses_a_non_brain_unless_forced_and_records_scores(tmp_path, capsys):
    grid = np.indices((120, 120, 120)) - 60
    ball = ((grid**2).sum(0) < 50**2) * (1 + 1e-3 * np.random.default_rng(1).random(grid.shape[1:]))
    sphere = save_volume(ball.astype(np.float32), np.eye(4), tmp_path / "sphere.nii.gz")
    out = tmp_path / "out"
    assert main(["segment", str(MODEL), str(sphere), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sphere.nii.gz: alignment score" in err and "--force" in err and "Traceback" not in err
    assert not (out / "sphere_seg.nii.gz").exists()

    brain = IXI / "images" / f"{load_splits(IXI / 'splits.json')['validation'][1]}.nii.gz"
    assert main(["segment", str(MODEL), str(sphere), str(brain), "-o", str(out), "--force"]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning: alignment score" in line]
    assert len(warnings) == 1 and warnings[0].startswith(str(sphere)), warnings
    records = {Path(r["source"]).name: r for r in json.loads((out / "segment.json").read_text())}
    assert records["sphere.nii.gz"]["score"] < options.ALIGNMENT_REFUSE_SCORE
    assert records["sphere.nii.gz"]["aligned"] and records["sphere.nii.gz"]["warning"] == warnings[0]
    assert records[brain.name]["score"] >= options.ALIGNMENT_MIN_SCORE and records[brain.name]["warning"] is None
    assert Path(records[brain.name]["output"]).exists()


def test_prepare_accepts_another_scanners_brain_through_the_cli(tmp_path):
    """The reported case: a brain-extracted 1 mm scan of another scanner and axis order, well aligned,
    was rejected by ``prepare``; now it is prepared, and a flipped one is still rejected."""
    brain = _validation_brain()
    other = _other_scanner(brain, tmp_path)
    raw = tmp_path / "raw"
    save_volume(other.array, other.affine, raw / "other.nii.gz")
    save_volume(np.flip(brain.array, 1).copy(), brain.affine, raw / "flipped.nii.gz")
    out = tmp_path / "prepared"
    assert main(["prepare", str(raw), "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["id"] for s in manifest["subjects"]] == ["other"]
    assert [s["id"] for s in manifest["rejected"]] == ["flipped"]
