"""register / segment / atlas-segment end to end on runs trained by the test session."""

import nibabel as nib
import numpy as np
import pytest
import torch

from deepatlas.cli.main import main
from deepatlas.data.io import load_image, load_label_codes
from deepatlas.inference import load_run
from deepatlas.inference.apply import register_volumes


def _first_two(dataset):
    images = sorted((dataset / "images").iterdir())
    return images[0], images[1], dataset / "labels" / images[0].name


@pytest.mark.parametrize("which", ["trained_2d", "trained_3d"])
def test_register_command_writes_all_outputs_in_the_fixed_geometry(request, tmp_path, which):
    run = request.getfixturevalue(which)
    dataset = request.getfixturevalue("phantoms_2d" if which == "trained_2d" else "phantoms_3d")
    moving, fixed, labels = _first_two(dataset)
    out = tmp_path / "out"
    assert (
        main(
            [
                "register",
                str(run),
                "--moving",
                str(moving),
                "--fixed",
                str(fixed),
                "--moving-labels",
                str(labels),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    stem = f"{moving.name.split('.')[0]}_to_{fixed.name.split('.')[0]}"
    fixed_img = nib.load(str(fixed))
    for suffix in ("warped", "displacement", "jacdet", "labels"):
        img = nib.load(str(out / f"{stem}_{suffix}.nii.gz"))
        assert np.allclose(img.affine, fixed_img.affine)
        assert img.shape[: fixed_img.ndim] == fixed_img.shape
    disp = nib.load(str(out / f"{stem}_displacement.nii.gz"))
    assert disp.shape[-1] == fixed_img.ndim and disp.header.get_intent()[0] == "vector"
    warped_codes = np.unique(np.asarray(nib.load(str(out / f"{stem}_labels.nii.gz")).dataobj))
    assert set(warped_codes.tolist()) <= set(np.unique(np.asarray(nib.load(str(labels)).dataobj)).tolist())
    # outputs are not overwritten silently
    assert main(["register", str(run), "--moving", str(moving), "--fixed", str(fixed), "-o", str(out)]) == 2
    assert (
        main(["register", str(run), "--moving", str(moving), "--fixed", str(fixed), "-o", str(out), "--overwrite"]) == 0
    )


def test_zero_displacement_returns_the_moving_image_and_labels(trained_3d, phantoms_3d):
    run = load_run(trained_3d)
    run.set_refinement(None)  # the net alone: refinement would move it
    torch.nn.init.zeros_(run.reg_net.head.weight)
    torch.nn.init.zeros_(run.reg_net.head.bias)
    moving, fixed, labels = _first_two(phantoms_3d)
    result = register_volumes(run, load_image(moving), load_image(fixed), load_label_codes(labels))
    assert np.allclose(result.warped, load_image(moving).array, atol=1e-5)
    assert np.array_equal(result.warped_labels, load_label_codes(labels).array)
    assert np.allclose(result.jacobian, 1.0) and np.allclose(result.displacement, 0.0)


def test_geometry_round_trips_for_a_non_identity_affine_and_another_size(trained_3d, phantoms_3d, tmp_path):
    """An image with a rotated, shifted affine and a different size: outputs come back on its own grid."""
    image = nib.load(str(sorted((phantoms_3d / "images").iterdir())[2]))
    array = np.pad(np.asarray(image.dataobj, dtype=np.float32), ((3, 2), (1, 4), (2, 2)))
    affine = np.array([[0, 2.0, 0, 17], [-2.0, 0, 0, 40], [0, 0, 2.0, -30], [0, 0, 0, 1]])
    path = tmp_path / "rotated.nii.gz"
    nib.save(nib.Nifti1Image(array, affine), str(path))
    assert main(["segment", str(trained_3d), str(path), "-o", str(tmp_path / "seg")]) == 0
    seg = nib.load(str(tmp_path / "seg" / "rotated_seg.nii.gz"))
    assert seg.shape == array.shape and np.allclose(seg.affine, affine)
    codes = set(np.unique(np.asarray(seg.dataobj)).tolist())
    scheme_codes = {c for codes_ in load_run(trained_3d).scheme.codes for c in codes_}
    assert codes <= scheme_codes  # original label codes, not class indices


@pytest.mark.parametrize("which", ["trained_2d", "trained_3d"])
def test_segment_a_folder_and_atlas_segment(request, which, tmp_path):
    run = request.getfixturevalue(which)
    dataset = request.getfixturevalue("phantoms_2d" if which == "trained_2d" else "phantoms_3d")
    images = sorted((dataset / "images").iterdir())
    assert main(["segment", str(run), str(dataset / "images"), "-o", str(tmp_path / "seg")]) == 0
    outputs = sorted((tmp_path / "seg").iterdir())
    assert len(outputs) == len(images)
    first = nib.load(str(outputs[0]))
    assert first.shape == nib.load(str(images[0])).shape
    assert set(np.unique(np.asarray(first.dataobj)).tolist()) <= {0, 2, 3, 51, 52, 59, 60}
    atlas_args = []
    for img in images[:2]:
        atlas_args += ["--atlas", str(img), str(dataset / "labels" / img.name)]
    for fusion in ("majority", "weighted"):
        out = tmp_path / fusion
        assert main(["atlas-segment", str(run), *atlas_args, str(images[5]), "-o", str(out), "--fusion", fusion]) == 0
        result = nib.load(str(out / f"{images[5].name.split('.')[0]}_atlas_seg.nii.gz"))
        assert set(np.unique(np.asarray(result.dataobj)).tolist()) <= {0, 2, 3, 51, 52, 59, 60}


def test_majority_vote_of_identical_atlases_is_that_atlas(trained_3d, phantoms_3d):
    from deepatlas.inference.apply import atlas_segment_volume

    run = load_run(trained_3d)
    torch.nn.init.zeros_(run.reg_net.head.weight)
    torch.nn.init.zeros_(run.reg_net.head.bias)
    img, _, lab = _first_two(phantoms_3d)
    atlas = (load_image(img), load_label_codes(lab))
    fused = atlas_segment_volume(run, [atlas, atlas, atlas], load_image(img), fusion="majority")
    assert np.array_equal(fused, atlas[1].array)


def test_missing_checkpoint_and_incompatible_run_are_named(tmp_path, trained_2d, phantoms_2d, capsys):
    image = sorted((phantoms_2d / "images").iterdir())[0]
    code = main(["segment", str(tmp_path / "norun"), str(image), "-o", str(tmp_path / "o")])
    assert code == 2
    assert "norun/checkpoints/last.pt: checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "old" / "checkpoints"
    bad.mkdir(parents=True)
    state = torch.load(trained_2d / "checkpoints" / "last.pt", weights_only=True)
    state["format"] = 0
    torch.save(state, bad / "best.pt")
    with pytest.raises(ValueError, match="incompatible"):
        load_run(tmp_path / "old")
