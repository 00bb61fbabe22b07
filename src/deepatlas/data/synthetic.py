"""Brain-like phantoms with label maps, for the demo and the tests (no download).

Each subject is an ellipsoidal brain with a folded cortical ribbon, white matter,
two lateral ventricles and two thalami, in anatomically plausible places and
proportions, then deformed by a random smooth field, given a bias field, noise
and blur. Subjects differ the way brains do to a registration method: in shape
and size of structures (ventricles vary most, as with age), not in topology.
Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives
the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepatlas.data.io import save_volume
from deepatlas.files import atomic_write_text

# label code -> (name, intensity); codes are deliberately not 0..K so code mapping is exercised
STRUCTURES = {
    3: ("Cortex", 0.55),
    2: ("WhiteMatter", 0.85),
    51: ("LateralVentricle-L", 0.12),
    52: ("LateralVentricle-R", 0.12),
    59: ("Thalamus-L", 0.68),
    60: ("Thalamus-R", 0.68),
}


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    return list(np.meshgrid(*axes, indexing="ij"))


def _ellipsoid(coords, center, radii) -> np.ndarray:
    return sum(((c - c0) / r) ** 2 for c, c0, r in zip(coords, center, radii))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], magnitude: float, nodes: int = 4) -> torch.Tensor:
    """Random displacement field (voxel units) interpolated from a coarse grid of nodes."""
    dims = len(shape)
    coarse = torch.from_numpy(rng.normal(0, magnitude, (1, dims) + (nodes,) * dims).astype(np.float32))
    mode = "trilinear" if dims == 3 else "bilinear"
    return F.interpolate(coarse, size=shape, mode=mode, align_corners=True)


def _warp(volume: np.ndarray, field: torch.Tensor, mode: str) -> np.ndarray:
    # the one upward import of the data layer, on purpose and lazy: phantoms are deformed with
    # the networks' own warp, so their ground-truth fields follow the convention the nets learn
    from deepatlas.networks.warp import warp_image, warp_labels

    tensor = torch.from_numpy(volume)[None, None]
    if mode == "nearest":
        return warp_labels(tensor.to(torch.int32), field)[0, 0].numpy()
    return warp_image(tensor.float(), field)[0, 0].numpy()


def make_phantom(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One subject: (image float32 in [0, 1], label map int16 of codes) on ``shape`` (2D or 3D).

    Axis 0 is left-right, axis 1 posterior-anterior, axis 2 inferior-superior; 2D
    phantoms are an axial slice through the ventricles.
    """
    dims = len(shape)
    coords = _grid(shape)
    if dims == 2:
        coords = coords + [np.full(shape, 0.1, dtype=np.float32)]
    x, y, z = coords
    size = rng.uniform(0.9, 1.05)
    brain_r = np.array([0.78, 0.88, 0.72]) * size * rng.uniform(0.96, 1.04, 3)
    # folded outer surface: the cortex ribbon follows the gyri
    theta, phi = np.arctan2(y, x), np.arctan2(z, np.hypot(x, y))
    k1, k2 = rng.integers(7, 11), rng.integers(5, 9)
    fold = 0.07 * np.sin(k1 * theta + rng.uniform(0, 6.3)) * np.cos(k2 * phi + rng.uniform(0, 6.3))
    radial = np.sqrt(_ellipsoid((x, y, z), (0, 0, 0), brain_r))
    brain = radial < 1.0 + fold
    white = radial < 0.78 + 1.3 * fold - rng.uniform(0.0, 0.04)
    labels = np.zeros(x.shape, dtype=np.int16)
    labels[brain] = 3
    labels[white] = 2
    vent = rng.uniform(0.6, 1.6)  # ventricle enlargement, the largest inter-subject variation
    for code, side in ((51, -1), (52, 1)):
        center = (side * 0.12 * size, rng.uniform(-0.05, 0.05), 0.10)
        radii = (0.075 * vent, 0.36 * size, 0.16 * vent**0.5)
        labels[(_ellipsoid((x, y, z), center, radii) < 1) & white] = code
    for code, side in ((59, -1), (60, 1)):
        center = (side * 0.15 * size, -0.14 * size, -0.10)
        radii = np.array([0.13, 0.17, 0.14]) * rng.uniform(0.9, 1.1)
        labels[(_ellipsoid((x, y, z), center, radii) < 1) & white & (labels == 2)] = code
    field = _smooth_field(rng, shape, magnitude=0.03 * min(shape))
    labels = _warp(labels.astype(np.int32), field, "nearest")
    labels = labels.astype(np.int16)
    image = np.zeros(shape, dtype=np.float32)
    for code, (_, intensity) in STRUCTURES.items():
        image[labels == code] = intensity * rng.uniform(0.95, 1.05)
    bias = 1.0 + 0.08 * _smooth_field(rng, shape, 1.0, nodes=3)[0, 0].numpy()
    image = image * bias * rng.uniform(0.9, 1.1)
    tensor = torch.from_numpy(image)[None, None]
    kernel = torch.tensor([0.25, 0.5, 0.25])
    for axis in range(dims):  # slight blur: partial volume at the boundaries
        view = [1, 1] + [1] * dims
        view[2 + axis] = 3
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = 1
        conv = F.conv3d if dims == 3 else F.conv2d
        tensor = conv(F.pad(tensor, pad, mode="replicate"), kernel.view(view))
    image = tensor[0, 0].numpy() + rng.normal(0, 0.02, shape).astype(np.float32)
    image[labels == 0] = np.clip(image[labels == 0], 0, 0.05)
    return np.clip(image, 0, 1).astype(np.float32), labels


def label_map_spec() -> dict:
    """The phantoms' label-map file (the ``brain31.json`` format)."""
    return {
        "description": "deepatlas demo phantom structures",
        "background": 0,
        "classes": [
            {"index": i + 1, "name": name, "source_codes": [code]}
            for i, (code, (name, _)) in enumerate(STRUCTURES.items())
        ],
    }


def make_dataset(
    root: str | Path,
    num_subjects: int = 24,
    shape: tuple[int, ...] = (48, 56, 48),
    seed: int = 0,
    spacing: float = 2.0,
    splits: dict[str, int] | None = None,
) -> Path:
    """Write a phantom dataset: ``images/``, ``labels/``, ``labels.json`` and ``splits.json``.

    ``splits`` gives the number of subjects per split, in order (default: 60%
    train, 15% validation, the rest test).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    affine = np.diag([spacing] * 3 + [1.0])
    affine[:3, 3] = [-spacing * (n - 1) / 2 for n in (list(shape) + [1])[:3]]
    ids = [f"phantom{n:03d}" for n in range(num_subjects)]
    for subject in ids:
        image, labels = make_phantom(tuple(shape), rng)
        save_volume(image, affine, root / "images" / f"{subject}.nii.gz")
        save_volume(labels, affine, root / "labels" / f"{subject}.nii.gz")
    if splits is None:
        n_train, n_val = round(0.6 * num_subjects), round(0.15 * num_subjects)
        splits = {"train": n_train, "validation": n_val, "test": num_subjects - n_train - n_val}
    out, start = {}, 0
    for name, count in splits.items():
        out[name] = ids[start : start + count]
        start += count
    atomic_write_text(root / "splits.json", json.dumps(out, indent=1))
    atomic_write_text(root / "labels.json", json.dumps(label_map_spec(), indent=1))
    return root
