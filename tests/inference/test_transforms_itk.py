"""``register``'s ITK/ANTs files (``_Warp``, ``_InverseWarp``, ``_Affine.txt``) applied by SimpleITK
reproduce deepatlas's own outputs, and ``deepatlas warp`` applies a saved registration to more images.

The real pair (two ixi-2mm validation subjects, the shipped model, net only) has a moving brain moved
far by an affine and written obliquely at 1.5 mm, and a fixed brain stored in LPS orientation with its
first two axes swapped: neither grid is RAS or axis-aligned with the other, so a sign or axis slip in
the files' conventions shows.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from benchmarks.moved_brains import label_dice, random_affine, write_moved
from deepatlas.cli.main import main
from deepatlas.data.io import Volume, load_image, load_label_codes, save_volume
from deepatlas.data.labels import LabelScheme
from deepatlas.data.splits import load_splits
from deepatlas.inference.apply import AffineStageReport, Registration
from deepatlas.inference.geometry import resample
from deepatlas.inference.outputs import registration_paths, write_registration
from tests.conftest import IXI

MODEL = Path(__file__).resolve().parents[2] / "models" / "brain-2mm"
LPS = np.diag([-1.0, -1.0, 1.0])
real_data = pytest.mark.skipif(not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI}")


def oblique_affine() -> np.ndarray:
    """A grid with flipped, rotated, anisotropic axes (not RAS, not axis-aligned)."""
    angle = np.radians(25)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = turn @ np.diag([-1.5, 2.0, -1.2])
    affine[:3, 3] = [12.0, -30.0, 8.0]
    return affine


def sitk_field(path: Path) -> sitk.DisplacementFieldTransform:
    return sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkVectorFloat64))


def test_the_itk_files_map_points_as_our_field_and_matrix(tmp_path):
    """Without data: a known field and affine written by ``write_registration`` on an oblique grid
    move points in SimpleITK exactly as they move them in RAS world coordinates."""
    shape, affine = (9, 11, 7), oblique_affine()
    index = np.indices(shape).astype(np.float64)
    field = np.stack([1.0 + 0.2 * index[1], -2.0 + 0.1 * index[2], 3.0 - 0.3 * index[0]]).astype(np.float32)
    matrix = np.eye(4)
    matrix[:3, :3] = [[1.05, 0.1, 0.0], [-0.08, 0.97, 0.05], [0.02, 0.0, 1.1]]
    matrix[:3, 3] = [4.0, -6.0, 2.5]
    stage = AffineStageReport(True, "asked for", matrix=matrix)
    zeros = np.zeros(shape, np.float32)
    result = Registration(zeros + 1, field, zeros + 1, None, affine, stage, inverse=-field, inverse_affine=affine)
    paths = registration_paths(tmp_path, "m", "f", False, inverse=True, summary=True)
    write_registration(result, paths)
    forward, inverse = sitk_field(paths["itk_warp"]), sitk_field(paths["itk_inverse"])
    transform = sitk.ReadTransform(str(paths["itk_affine"]))
    for voxel in [(0, 0, 0), (4, 5, 3), (8, 10, 6), (2, 9, 1)]:
        p = affine[:3, :3] @ voxel + affine[:3, 3]  # RAS world
        u = field[(slice(None), *voxel)]
        np.testing.assert_allclose(forward.TransformPoint(tuple(LPS @ p)), LPS @ (p + u), atol=1e-4)
        np.testing.assert_allclose(inverse.TransformPoint(tuple(LPS @ p)), LPS @ (p - u), atol=1e-4)
        expected = LPS @ (matrix[:3, :3] @ p + matrix[:3, 3])
        np.testing.assert_allclose(transform.TransformPoint(tuple(LPS @ p)), expected, atol=1e-9)
    assert paths["itk_affine"].read_text().startswith("#Insight Transform File V1.0\n")
    header = nib.load(paths["itk_warp"]).header
    assert header.get_intent()[0] == "vector" and nib.load(paths["itk_warp"]).shape == (*shape, 1, 3)
    # without an affine stage, no Affine.txt (and none left from the run before)
    result.affine_stage = AffineStageReport(False, "off")
    write_registration(result, paths)
    assert not paths["itk_affine"].exists() and paths["itk_warp"].exists()


def test_warp_refuses_what_is_not_our_field_and_never_replaces_an_input(tmp_path, capsys):
    affine = oblique_affine()
    image = save_volume(np.random.default_rng(0).random((9, 11, 7)).astype(np.float32), affine, tmp_path / "a.nii.gz")
    zeros = np.zeros((9, 11, 7), np.float32)
    result = Registration(zeros + 1, np.zeros((3, 9, 11, 7), np.float32), zeros + 1, None, affine)
    paths = registration_paths(tmp_path / "reg", "m", "f", False)
    write_registration(result, paths)
    for bad in (image, paths["jacobian"]):
        assert main(["warp", str(bad), str(image), "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "not a displacement field of deepatlas" in err and str(bad) in err and err.count("\n") == 1
    # an output that would be an input: refused even with --overwrite, nothing written
    other = save_volume(np.ones((9, 11, 7), np.float32) * np.arange(7), affine, tmp_path / "a_warped.nii.gz")
    before = other.read_bytes()
    args = ["warp", str(paths["displacement"]), str(image), str(other), "-o", str(tmp_path), "--overwrite"]
    assert main(args) == 2
    assert "would replace an input" in capsys.readouterr().err and other.read_bytes() == before
    # a zero field on the image's own grid gives the image back, from the ITK copy as well
    for field in (paths["displacement"], paths["itk_warp"]):
        assert main(["warp", str(field), str(image), "-o", str(tmp_path / "out"), "--overwrite"]) == 0
        warped = load_image(tmp_path / "out" / "a_warped.nii.gz")
        np.testing.assert_allclose(warped.array, load_image(image).array, atol=1e-5)
        np.testing.assert_allclose(warped.affine, affine, atol=1e-5)


def write_lps(volume: Volume, path: Path) -> Path:
    """``volume`` stored in LPS orientation with its first two axes swapped: the same world content,
    no interpolation (voxels only reordered)."""
    n = volume.array.shape
    flip = np.array([[-1, 0, 0, n[0] - 1], [0, -1, 0, n[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    swap = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    array = volume.array[::-1, ::-1].transpose(1, 0, 2)
    return save_volume(np.ascontiguousarray(array), volume.affine @ flip @ swap, path)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A real pair registered with the affine stage and the inverse: (folder, moving, moving labels,
    fixed, fixed labels, output stem)."""
    folder = tmp_path_factory.mktemp("itk")
    moving_id, fixed_id = load_splits(IXI / "splits.json")["validation"][:2]
    transform = random_affine(np.random.default_rng(3))
    moving = write_moved(load_image(IXI / "images" / f"{moving_id}.nii.gz"), transform, folder / "moving.nii.gz")
    labels = load_label_codes(IXI / "labels" / f"{moving_id}.nii.gz")
    moving_labels = write_moved(labels, transform, folder / "moving_labels.nii.gz", "nearest")
    fixed = write_lps(load_image(IXI / "images" / f"{fixed_id}.nii.gz"), folder / "fixed.nii.gz")
    fixed_labels = load_label_codes(IXI / "labels" / f"{fixed_id}.nii.gz")
    fixed_labels = Volume(fixed_labels.array.astype(np.int16), fixed_labels.affine, fixed_labels.path)
    fixed_labels = write_lps(fixed_labels, folder / "fixed_labels.nii.gz")
    args = ["register", str(MODEL), "--moving", str(moving), "--moving-labels", str(moving_labels)]
    args += ["--fixed", str(fixed), "--net-only", "--affine", "--inverse", "-o", str(folder / "reg")]
    assert main(args) == 0
    return folder, moving, moving_labels, fixed, fixed_labels, folder / "reg" / "moving_to_fixed"


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def sitk_resample(path: Path, reference: Path, field: Path, labels: bool, out: Path) -> np.ndarray:
    """``path`` resampled by SimpleITK onto ``reference`` through an ITK displacement field file,
    written and read back as we read files (so the arrays share our voxel order). Label maps go through
    ITK's generic label interpolator with linear weights (``sitkLabelLinear``), as ours do."""
    interpolator = sitk.sitkLabelLinear if labels else sitk.sitkLinear
    image = sitk.ReadImage(str(path), sitk.sitkInt32 if labels else sitk.sitkFloat32)
    warped = sitk.Resample(image, sitk.ReadImage(str(reference)), sitk_field(field), interpolator, 0)
    sitk.WriteImage(warped, str(out))
    return (load_label_codes(out) if labels else load_image(out)).array


@pytest.mark.slow
@real_data
def test_simpleitk_applies_the_warp_as_register_did(registered, tmp_path):
    folder, moving, moving_labels, fixed, fixed_labels, stem = registered
    warp = Path(f"{stem}_Warp.nii.gz")
    ours = load_image(f"{stem}_warped.nii.gz").array
    theirs = sitk_resample(moving, fixed, warp, False, tmp_path / "w.nii.gz")
    assert correlation(ours, theirs) > 0.999
    scheme = LabelScheme.from_file(IXI / "brain31.json")
    reference = load_label_codes(fixed_labels).array
    sitk_labels = sitk_resample(moving_labels, fixed, warp, True, tmp_path / "l.nii.gz")
    ours_dice = label_dice(Path(f"{stem}_labels.nii.gz"), reference, scheme)
    assert round(label_dice(tmp_path / "l.nii.gz", reference, scheme), 3) == round(ours_dice, 3)
    assert float((sitk_labels == load_label_codes(f"{stem}_labels.nii.gz").array).mean()) > 0.999
    # the RAS file read by ITK as if it were LPS: the mirrored map this task is about
    sitk_resample(moving_labels, fixed, Path(f"{stem}_displacement.nii.gz"), True, tmp_path / "m.nii.gz")
    assert label_dice(tmp_path / "m.nii.gz", reference, scheme) < ours_dice - 0.1
    # the affine stage alone, as ITK reads it, maps points as the summary's matrix
    matrix = np.array(json.loads(Path(f"{stem}_registration.json").read_text())["affine_stage"]["matrix"])
    transform = sitk.ReadTransform(f"{stem}_Affine.txt")
    for point in ([0.0, 0.0, 0.0], [30.0, -40.0, 20.0], [-50.0, 10.0, 60.0]):
        expected = LPS @ (matrix[:3, :3] @ point + matrix[:3, 3])
        np.testing.assert_allclose(transform.TransformPoint(tuple(LPS @ point)), expected, atol=1e-3)


@pytest.mark.slow
@real_data
def test_deepatlas_warp_reproduces_register_and_its_inverse_brings_labels_back(registered, tmp_path):
    folder, moving, moving_labels, fixed, fixed_labels, stem = registered
    field = f"{stem}_displacement.nii.gz"
    assert main(["warp", field, str(moving), "-o", str(tmp_path / "img")]) == 0
    assert main(["warp", field, str(moving_labels), "-o", str(tmp_path / "lab"), "--labels"]) == 0
    ours = load_image(f"{stem}_warped.nii.gz")
    warped = load_image(tmp_path / "img" / "moving_warped.nii.gz")
    assert correlation(ours.array, warped.array) > 0.9999
    np.testing.assert_allclose(warped.affine, ours.affine, atol=1e-5)
    labels = load_label_codes(tmp_path / "lab" / "moving_labels_warped.nii.gz").array
    assert float((labels == load_label_codes(f"{stem}_labels.nii.gz").array).mean()) > 0.9999
    # the inverse: the fixed labels onto the moving grid, matching the moving labels there
    inverse = f"{stem}_inverse_displacement.nii.gz"
    assert main(["warp", inverse, str(fixed_labels), "-o", str(tmp_path / "back"), "--labels"]) == 0
    back = load_label_codes(tmp_path / "back" / "fixed_labels_warped.nii.gz")
    np.testing.assert_allclose(back.affine, load_image(moving).affine, atol=1e-5)
    scheme = LabelScheme.from_file(IXI / "brain31.json")
    reference = load_label_codes(moving_labels).array
    dice_back = label_dice(tmp_path / "back" / "fixed_labels_warped.nii.gz", reference, scheme)
    # SimpleITK with the _InverseWarp gives the same labels
    sitk_back = sitk_resample(fixed_labels, moving, Path(f"{stem}_InverseWarp.nii.gz"), True, tmp_path / "b.nii.gz")
    assert float((sitk_back == back.array).mean()) > 0.999
    # far better than the fixed labels brought over by their world coordinates alone; below the forward
    # Dice, as both maps on the 1.5 mm moving grid are nearest-neighbour copies of 2 mm maps
    fixed_codes = load_label_codes(fixed_labels)
    unregistered = resample(
        torch.from_numpy(fixed_codes.array)[None], fixed_codes.affine, reference.shape, back.affine, mode="nearest"
    )[0].numpy()
    save_volume(unregistered.astype(np.int16), back.affine, tmp_path / "unregistered.nii.gz")
    baseline = label_dice(tmp_path / "unregistered.nii.gz", reference, scheme)
    forward_dice = label_dice(Path(f"{stem}_labels.nii.gz"), fixed_codes.array, scheme)
    assert dice_back > max(baseline + 0.4, forward_dice - 0.12), (dice_back, baseline, forward_dice)
