"""Slab-by-slab evaluation of output grids (``geometry.slabs``, issue 34: 1 mm inputs in bounded
memory) gives what evaluating the whole grid at once gives: labels equal, fields equal to float
rounding, on small grids cut into one-row slabs."""

import numpy as np
import pytest
import torch

from deepatlas.data.io import Volume, load_image, load_label_codes
from deepatlas.inference import geometry, load_run
from deepatlas.inference.apply import (
    RegistrationOptions,
    register_volumes,
    segment_probabilities,
    segment_volume,
)
from deepatlas.inference.geometry import (
    jacobian_determinant_world,
    resample,
    resample_argmax,
    slabs,
    world_coordinates,
)

WHOLE = 10**12  # a chunk larger than any grid here: the whole grid at once


def _rotated(spacing: float, dims: int = 3) -> np.ndarray:
    """A 4x4 affine with rotated, anisotropic voxel axes and an odd origin."""
    angle = np.deg2rad(20)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    scale = np.diag([spacing, spacing * 1.3, spacing * 0.8, 1.0])
    affine = rotation @ scale
    affine[:3, 3] = [-7.3, 4.1, -2.9]
    return affine


def test_slabs_cover_the_first_axis_in_whole_rows():
    assert slabs((7, 5, 6), 30) == [slice(i, i + 1) for i in range(7)]  # 30 voxels: one row each
    assert slabs((7, 5, 6), 100) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert slabs((7, 5, 6), 1) == slabs((7, 5, 6), 30)  # never less than a row
    assert slabs((7, 5, 6), WHOLE) == [slice(0, 7)]


def test_world_coordinates_of_a_slab_are_those_rows_of_the_grid():
    shape, affine = (7, 5, 6), _rotated(1.5)
    whole = world_coordinates(shape, affine)
    for rows in slabs(shape, 60):
        assert torch.equal(world_coordinates(shape, affine, rows), whole[:, rows])
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1)
    expected = (affine[:3, :3] @ index + affine[:3, 3:]).reshape(3, *shape)
    assert np.allclose(whole.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
def test_resampling_in_slabs_equals_the_whole_grid(dims):
    generator = torch.Generator().manual_seed(0)
    source_shape, target_shape = (9, 8, 7)[:dims], (11, 6, 5)[:dims]
    source_affine, target_affine = _rotated(2.0), _rotated(1.1)
    target_affine[:3, 3] += 1.7
    values = torch.rand((3, *source_shape), generator=generator, dtype=torch.float32)
    codes = torch.randint(0, 40, (1, *source_shape), generator=generator, dtype=torch.int32)
    for chunk in (1, 13, 100):  # one row, a row and a bit, several rows
        for source, mode in ((values, "bilinear"), (codes, "nearest")):
            for padding in ("zeros", "border"):
                sliced = resample(source, source_affine, target_shape, target_affine, mode, padding, chunk=chunk)
                whole = resample(source, source_affine, target_shape, target_affine, mode, padding, chunk=WHOLE)
                assert sliced.dtype == source.dtype and torch.equal(sliced, whole)
        classes = resample_argmax(values, source_affine, target_shape, target_affine, chunk=chunk)
        whole = resample(values, source_affine, target_shape, target_affine, padding="border", chunk=WHOLE)
        assert classes.dtype == torch.uint8 and torch.equal(classes.long(), whole.argmax(0))
    points = world_coordinates(target_shape, target_affine)  # sample() takes its points in slabs too
    assert torch.equal(
        geometry.sample(values, source_affine, points, chunk=7), geometry.sample(values, source_affine, points)
    )


@pytest.mark.parametrize("dims", [2, 3])
def test_jacobian_in_slabs_equals_the_whole_field(dims):
    generator = torch.Generator().manual_seed(1)
    shape = (9, 8, 7)[:dims]
    field = (
        torch.nn.functional.avg_pool3d(
            torch.randn((1, dims, 9, 8, 7), generator=generator), 3, stride=1, padding=1, count_include_pad=False
        )[0][(slice(None),) + (slice(None),) * dims + (0,) * (3 - dims)]
        * 3
    )
    affine = _rotated(1.7)
    whole = jacobian_determinant_world(field, affine, chunk=WHOLE)
    assert whole.shape == shape and whole.dtype == torch.float32
    for chunk in (1, 20, 100):
        assert torch.equal(jacobian_determinant_world(field, affine, chunk=chunk), whole)


def _fine_copy(volume: Volume, mode: str) -> Volume:
    """``volume`` on a finer (1 mm-ish), rotated, larger grid around it: not the network grid, so
    every result is resampled onto it."""
    affine = _rotated(1.0)
    affine[:3, 3] = volume.affine[:3, 3] - 5.0
    shape = (34, 30, 33)
    source = torch.from_numpy(volume.array.astype(np.float32 if mode == "bilinear" else np.int32))[None]
    array = resample(source, volume.affine, shape, affine, mode=mode)[0].numpy()
    return Volume(array if mode == "bilinear" else array.astype(np.int64), affine, volume.path)


def test_segment_and_register_in_slabs_match_the_whole_grid(trained_3d, phantoms_3d, monkeypatch):
    run = load_run(trained_3d)
    images = sorted((phantoms_3d / "images").iterdir())
    moving, labels = load_image(images[0]), load_label_codes(phantoms_3d / "labels" / images[0].name)
    fixed = _fine_copy(load_image(images[1]), "bilinear")
    options = RegistrationOptions(affine="on", inverse=True)  # every path: affine map, inverse, labels

    def both():
        return segment_volume(run, fixed), register_volumes(run, moving, fixed, labels, options=options)

    monkeypatch.setattr(geometry, "CHUNK_VOXELS", WHOLE)
    seg_whole, reg_whole = both()
    probabilities = segment_probabilities(run, fixed)
    monkeypatch.setattr(geometry, "CHUNK_VOXELS", 50)  # one row of the fixed grid per slab
    seg, reg = both()
    assert np.array_equal(seg, seg_whole) and seg.shape == fixed.array.shape
    assert np.array_equal(seg, run.scheme.decode(probabilities.argmax(0).numpy()))  # labels from probabilities
    assert torch.allclose(segment_probabilities(run, fixed), probabilities)
    assert reg.affine_stage.ran and np.array_equal(reg.warped_labels, reg_whole.warped_labels)
    assert len(np.unique(reg.warped_labels)) > 2  # labels really were warped onto the fine grid
    for name in ("warped", "displacement", "jacobian", "inverse"):
        sliced, whole = getattr(reg, name), getattr(reg_whole, name)
        assert sliced.shape == whole.shape and sliced.dtype == np.float32
        assert np.allclose(sliced, whole, rtol=1e-5, atol=1e-5), name
    for key, value in reg.inverse_consistency.items():
        assert value == pytest.approx(reg_whole.inverse_consistency[key], rel=1e-5, abs=1e-6)
