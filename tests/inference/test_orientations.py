"""Geometry by world coordinates: one brain stored in each of the 48 axis orders and flips is
segmented onto the same world positions, on the model's own grid shape and on another one."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from deepatlas.data.io import Volume, load_image
from deepatlas.inference import load_run
from deepatlas.inference.apply import segment_volume
from tests.conftest import IXI

MODEL = Path(__file__).resolve().parents[2] / "models" / "brain-2mm"
pytestmark = pytest.mark.skipif(not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI}")


def stored(array: np.ndarray, affine: np.ndarray, order: tuple[int, ...], flips: tuple[bool, ...]):
    """``array`` stored with its axes in ``order`` and flipped where ``flips`` says, with the affine
    that keeps every voxel at its world position; and the map back to the original layout."""
    out = np.transpose(array, order)
    index = np.zeros((4, 4))  # new voxel index -> original voxel index
    index[3, 3] = 1
    for new_axis, (old_axis, flip) in enumerate(zip(order, flips)):
        index[old_axis, new_axis] = -1.0 if flip else 1.0
        index[old_axis, 3] = out.shape[new_axis] - 1 if flip else 0.0
    out = np.flip(out, [axis for axis, flip in enumerate(flips) if flip])

    def back(labels: np.ndarray) -> np.ndarray:
        unflipped = np.flip(labels, [axis for axis, flip in enumerate(flips) if flip])
        return np.transpose(unflipped, np.argsort(order))

    return np.ascontiguousarray(out), affine @ index, back


@pytest.fixture(scope="module")
def brain() -> Volume:
    return load_image(sorted((IXI / "images").iterdir())[0])


@pytest.mark.slow
@pytest.mark.parametrize("pad", [0, 1], ids=["model grid shape", "another shape"])
def test_48_orientations_land_on_the_same_world_positions(brain, pad):
    run = load_run(MODEL)
    array = np.pad(brain.array, pad)
    affine = brain.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)
    reference = segment_volume(run, Volume(array, affine, brain.path), align="off")
    assert (reference > 0).mean() > 0.2  # a brain was segmented, not background
    for order in itertools.permutations(range(3)):
        for flips in itertools.product([False, True], repeat=3):
            data, moved, back = stored(array, affine, order, flips)
            labels = back(segment_volume(run, Volume(data, moved, brain.path), align="off"))
            agree = (labels == reference).mean()
            assert agree > 0.999, f"axes {order}, flips {flips}: {agree:.4f} of voxels agree"


def test_a_left_right_flipped_file_on_the_model_grid_through_the_cli(brain, tmp_path):
    """The reported case: LAS storage of a brain on the model's own grid shape and voxel size."""
    import nibabel as nib

    from deepatlas.cli.main import main

    data, affine, back = stored(brain.array, brain.affine, (0, 1, 2), (True, False, False))
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "flipped.nii.gz")
    nib.save(nib.Nifti1Image(brain.array, brain.affine), tmp_path / "as_is.nii.gz")
    assert nib.aff2axcodes(affine)[0] == "L"
    out = tmp_path / "seg"
    assert (
        main(["segment", str(MODEL), str(tmp_path / "flipped.nii.gz"), str(tmp_path / "as_is.nii.gz"), "-o", str(out)])
        == 0
    )
    flipped = back(np.asarray(nib.load(out / "flipped_seg.nii.gz").dataobj))
    as_is = np.asarray(nib.load(out / "as_is_seg.nii.gz").dataobj)
    assert (flipped == as_is).mean() > 0.999 and (as_is > 0).mean() > 0.2
