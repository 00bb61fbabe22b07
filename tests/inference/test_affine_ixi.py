"""The affine stage on a real brain moved far from its pre-alignment (skipped without ixi-2mm).

A test-split brain is moved by a random affine (rotations up to 20 degrees, scalings up to 20 %,
shifts up to 20 mm) and written at 1.5 mm with its axes swapped and flipped; ``register
--affine`` (the shipped model) must then match another subject as well as the unmoved brain does.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepatlas.cli.main import main
from deepatlas.data.io import Volume, load_image, load_label_codes, save_volume
from deepatlas.data.labels import LabelScheme
from deepatlas.data.splits import load_splits
from deepatlas.evaluation.metrics import dice_per_class, finite_mean
from deepatlas.inference.geometry import apply_affine, sample, world_coordinates
from tests.conftest import IXI

MODEL = Path(__file__).resolve().parents[2] / "models" / "brain-2mm"
pytestmark = pytest.mark.skipif(not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI}")


def random_affine(rng: np.random.Generator) -> np.ndarray:
    """4x4 world map: rotations about the three axes (up to 20 degrees each), scalings (up to 20 %),
    a shift (up to 20 mm per axis)."""
    linear = np.eye(3)
    for axis, angle in enumerate(np.radians(rng.uniform(-20, 20, 3))):
        i, j = [a for a in range(3) if a != axis]
        turn = np.eye(3)
        turn[i, i] = turn[j, j] = np.cos(angle)
        turn[i, j], turn[j, i] = -np.sin(angle), np.sin(angle)
        linear = linear @ turn
    out = np.eye(4)
    out[:3, :3] = linear @ np.diag(rng.uniform(0.8, 1.2, 3))
    out[:3, 3] = rng.uniform(-20, 20, 3)
    return out


def write_moved(volume: Volume, transform: np.ndarray, path: Path, mode: str = "bilinear") -> Path:
    """``volume`` moved by ``transform`` (its content at world ``q`` is the original's at ``T q``)
    onto a 1.5 mm grid with axes (y, z, x), y reversed, wide enough for the moved brain."""
    axes = np.array([[0, 0, 1], [-1, 0, 0], [0, 1, 0]], dtype=float) * 1.5
    shape = (150, 140, 130)
    grid = np.eye(4)
    grid[:3, :3] = axes
    centre = volume.affine[:3, :3] @ ((np.array(volume.array.shape) - 1) / 2) + volume.affine[:3, 3]
    centre = np.linalg.solve(transform[:3, :3], centre - transform[:3, 3])
    grid[:3, 3] = centre - axes @ ((np.array(shape) - 1) / 2)
    points = apply_affine(world_coordinates(shape, grid), transform)
    source = torch.from_numpy(volume.array.astype(np.float32 if mode == "bilinear" else np.int32))[None]
    moved = sample(source, volume.affine, points, mode=mode)[0].numpy()
    return save_volume(moved if mode == "bilinear" else moved.astype(np.int16), grid, path)


def _dice(labels_path: Path, fixed_labels: np.ndarray, scheme: LabelScheme) -> float:
    """Mean Dice over the brain31 structures, as benchmarks/registration.py scores."""
    warped = scheme.encode(load_label_codes(labels_path).array, unknown="background")
    target = scheme.encode(fixed_labels, unknown="background")
    return finite_mean(dice_per_class(torch.from_numpy(warped), torch.from_numpy(target), scheme.num_classes))


def test_register_with_affine_recovers_a_moved_brain(tmp_path):
    moving_id, fixed_id = load_splits(IXI / "splits.json")["test"][:2]
    image, labels = IXI / "images" / f"{moving_id}.nii.gz", IXI / "labels" / f"{moving_id}.nii.gz"
    fixed = IXI / "images" / f"{fixed_id}.nii.gz"
    transform = random_affine(np.random.default_rng(0))
    moved = write_moved(load_image(image), transform, tmp_path / "moved.nii.gz")
    moved_labels = write_moved(load_label_codes(labels), transform, tmp_path / "moved_labels.nii.gz", "nearest")
    # the net alone keeps the test fast; the affine stage is what is tested (refined numbers: docs)
    common = ["register", str(MODEL), "--fixed", str(fixed), "--net-only"]
    unmoved = [*common, "--moving", str(image), "--moving-labels", str(labels), "-o", str(tmp_path / "a")]
    assert main(unmoved) == 0
    args = ["--moving", str(moved), "--moving-labels", str(moved_labels), "--affine", "--inverse"]
    assert main([*common, *args, "-o", str(tmp_path / "b")]) == 0
    scheme = LabelScheme.from_file(IXI / "brain31.json")
    fixed_labels = load_label_codes(IXI / "labels" / f"{fixed_id}.nii.gz").array
    before = _dice(tmp_path / "a" / f"{moving_id}_to_{fixed_id}_labels.nii.gz", fixed_labels, scheme)
    after = _dice(tmp_path / "b" / f"moved_to_{fixed_id}_labels.nii.gz", fixed_labels, scheme)
    assert after > before - 0.02, f"Dice {after:.3f} after the affine stage, {before:.3f} unmoved"
    summary = json.loads((tmp_path / "b" / f"moved_to_{fixed_id}_registration.json").read_text())
    assert summary["affine_stage"]["ran"]
    assert summary["inverse_consistency_mm"]["mean_mm"] < 0.5
    # the pre-aligned pair: auto mode leaves the stage off, and there is nothing to summarise
    assert not (tmp_path / "a" / f"{moving_id}_to_{fixed_id}_registration.json").exists()
