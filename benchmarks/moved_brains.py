"""Real brains moved far from their pre-alignment, as a scanner in another position would give them
(shared by the benchmarks alignment_qc and raw_scans and by the affine-stage and ``prepare`` tests)."""

from pathlib import Path

import numpy as np
import torch

from deepatlas.data.io import Volume, load_label_codes, save_volume
from deepatlas.evaluation.metrics import dice_per_class, finite_mean
from deepatlas.inference.geometry import apply_affine, sample, world_coordinates


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


def moved_grid(volume: Volume, transform: np.ndarray, axes: np.ndarray, shape: tuple[int, ...]):
    """A grid of voxel ``axes`` (3x3, mm) and ``shape`` centred on where ``transform`` moves the volume's
    centre, and the world points of the original at which each of its voxels samples it (``T q``)."""
    grid = np.eye(4)
    grid[:3, :3] = axes
    centre = volume.affine[:3, :3] @ ((np.array(volume.array.shape) - 1) / 2) + volume.affine[:3, 3]
    centre = np.linalg.solve(transform[:3, :3], centre - transform[:3, 3])
    grid[:3, 3] = centre - axes @ ((np.array(shape) - 1) / 2)
    return grid, apply_affine(world_coordinates(shape, grid), transform)


def write_moved(volume: Volume, transform: np.ndarray, path: Path, mode: str = "bilinear") -> Path:
    """``volume`` moved by ``transform`` (its content at world ``q`` is the original's at ``T q``)
    onto a 1.5 mm grid with axes (y, z, x), y reversed, wide enough for the moved brain."""
    axes = np.array([[0, 0, 1], [-1, 0, 0], [0, 1, 0]], dtype=float) * 1.5
    shape = (150, 140, 130)
    grid, points = moved_grid(volume, transform, axes, shape)
    source = torch.from_numpy(volume.array.astype(np.float32 if mode == "bilinear" else np.int32))[None]
    moved = sample(source, volume.affine, points, mode=mode)[0].numpy()
    return save_volume(moved if mode == "bilinear" else moved.astype(np.int16), grid, path)


def label_dice(labels_path: Path, reference: np.ndarray, scheme) -> float:
    """Mean Dice over the structures of ``scheme`` (brain31) of a label map file against reference
    codes, as benchmarks.registration scores."""
    codes = [scheme.encode(c, unknown="background") for c in (load_label_codes(labels_path).array, reference)]
    return finite_mean(dice_per_class(*(torch.from_numpy(c) for c in codes), scheme.num_classes))
