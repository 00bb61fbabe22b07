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
    outputs = sorted((tmp_path / "seg").glob("*_seg.nii.gz"))  # beside them: labels.txt, labels.ctbl
    assert len(outputs) == len(images)
    first = nib.load(str(outputs[0]))
    assert first.shape == nib.load(str(images[0])).shape
    assert set(np.unique(np.asarray(first.dataobj)).tolist()) <= {0, 2, 3, 51, 52, 59, 60}
    # the session's seg net is barely trained (structure Dice 0.15 / 0.26 in 3D / 2D) but finds the
    # brain: foreground Dice 0.74-0.86 / 0.80-0.87 measured over the eight phantoms
    for output, image in zip(outputs, images):
        truth = load_label_codes(dataset / "labels" / image.name).array > 0
        assert _dice(np.asarray(nib.load(str(output)).dataobj) > 0, truth) > 0.6, output.name
    atlas_args = []
    for img in images[:2]:
        atlas_args += ["--atlas", str(img), str(dataset / "labels" / img.name)]
    truth = load_label_codes(dataset / "labels" / images[5].name).array
    unregistered = max(_mean_dice(load_label_codes(dataset / "labels" / img.name).array, truth) for img in images[:2])
    for fusion in ("majority", "weighted"):
        out = tmp_path / fusion
        assert main(["atlas-segment", str(run), *atlas_args, str(images[5]), "-o", str(out), "--fusion", fusion]) == 0
        result = nib.load(str(out / f"{images[5].name.split('.')[0]}_atlas_seg.nii.gz"))
        assert set(np.unique(np.asarray(result.dataobj)).tolist()) <= {0, 2, 3, 51, 52, 59, 60}
        # registration earns its keep: measured 0.86 / 0.94-0.95 against the better atlas unregistered 0.71 / 0.80
        assert _mean_dice(np.asarray(result.dataobj), truth) > max(0.8, unregistered + 0.05), fusion


def _dice(a, b) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def _mean_dice(codes, truth) -> float:
    """Mean Dice over the structures of a label map ``truth``, from label codes."""
    return float(np.mean([_dice(codes == c, truth == c) for c in np.unique(truth) if c != 0]))


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
    assert "norun: not a trained run (no checkpoints/last.pt)" in capsys.readouterr().err
    bad = tmp_path / "old" / "checkpoints"
    bad.mkdir(parents=True)
    state = torch.load(trained_2d / "checkpoints" / "last.pt", weights_only=True)
    state["format"] = 0
    torch.save(state, bad / "best.pt")
    with pytest.raises(ValueError, match="incompatible"):
        load_run(tmp_path / "old")


def _reoriented(volume, shift_mm):
    """The same anatomy stored with axes 0 and 1 swapped, axis 2 flipped, and moved ``shift_mm`` in
    world coordinates: the moving point matching world point ``p`` of ``volume`` is ``p + shift_mm``."""
    from deepatlas.data.io import Volume

    array = np.flip(np.transpose(volume.array, (1, 0, 2)), axis=2).copy()
    index = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, volume.array.shape[2] - 1], [0, 0, 0, 1]], float)
    shift = np.eye(4)
    shift[:3, 3] = shift_mm
    return Volume(array, shift @ volume.affine @ index, volume.path)


def test_affine_stage_undoes_a_world_shift_of_a_reoriented_image(trained_3d, phantoms_3d):
    """Net and refinement at zero: the affine stage alone must find the shift, in world mm, through
    the axis swap and flip, and the inverse must bring every point back."""
    from deepatlas.inference.apply import RegistrationOptions

    run = load_run(trained_3d)
    run.set_refinement(None)
    torch.nn.init.zeros_(run.reg_net.head.weight)
    torch.nn.init.zeros_(run.reg_net.head.bias)
    image, _, labels = _first_two(phantoms_3d)
    fixed, fixed_labels = load_image(image), load_label_codes(labels)
    shift = np.array([6.0, -4.0, 3.0])
    moving, moving_labels = _reoriented(fixed, shift), _reoriented(fixed_labels, shift)
    options = RegistrationOptions(affine="on", inverse=True)
    result = register_volumes(run, moving, fixed, moving_labels, options=options)
    assert result.affine_stage.ran and result.affine_stage.why == "asked for"
    brain = fixed_labels.array > 0
    error = np.linalg.norm(result.displacement - shift[:, None, None, None], axis=0)[brain]
    assert error.mean() < 0.5 and np.abs(result.jacobian[brain] - 1).max() < 0.05
    assert (result.warped_labels == fixed_labels.array)[brain].mean() > 0.95
    assert result.inverse.shape == (3, *moving.array.shape) and np.allclose(result.inverse_affine, moving.affine)
    assert result.inverse_consistency["p95_mm"] < 0.05  # an affine is inverted exactly
    # with the stage off, this pair is what it was before the stage existed: bit for bit
    plain = register_volumes(run, moving, fixed, moving_labels)
    again = register_volumes(run, moving, fixed, moving_labels, options=RegistrationOptions(affine="off"))
    assert plain.affine_stage.ran is False and np.array_equal(plain.displacement, again.displacement)
    assert np.abs(plain.displacement).max() == 0.0


def test_register_inverse_and_affine_through_the_cli(trained_3d, phantoms_3d, tmp_path, capsys):
    import json

    moving, fixed, labels = _first_two(phantoms_3d)
    common = ["register", str(trained_3d), "--moving", str(moving), "--fixed", str(fixed), "--inverse"]
    assert main([*common, "--moving-labels", str(labels), "--affine", "-o", str(tmp_path / "a")]) == 0
    stem = f"{moving.name.split('.')[0]}_to_{fixed.name.split('.')[0]}"
    inverse = nib.load(str(tmp_path / "a" / f"{stem}_inverse_displacement.nii.gz"))
    moving_img = nib.load(str(moving))
    assert inverse.shape == moving_img.shape + (1, 3) and np.allclose(inverse.affine, moving_img.affine)
    assert inverse.header.get_intent()[0] == "vector"
    summary = json.loads((tmp_path / "a" / f"{stem}_registration.json").read_text())
    assert summary["affine_stage"]["ran"] and len(summary["affine_stage"]["matrix"]) == 4
    error = summary["inverse_consistency_mm"]
    assert error["mean_mm"] < 0.3 and error["p95_mm"] < 1.0  # 2 mm voxels
    out = capsys.readouterr().out
    assert f"{stem}: inverse consistency {error['mean_mm']:.3f} mm mean" in out
    assert main([*common, "--no-affine", "-o", str(tmp_path / "b")]) == 0
    summary = json.loads((tmp_path / "b" / f"{stem}_registration.json").read_text())
    assert summary["affine_stage"] == {"ran": False, "why": "off", "ncc": None, "matrix": None}
    with pytest.raises(SystemExit):  # argparse: --affine and --no-affine exclude each other
        main([*common, "--affine", "--no-affine", "-o", str(tmp_path / "c")])


def test_atlas_segment_switches_the_affine_stage_on_for_a_misaligned_target(trained_3d, phantoms_3d, tmp_path, capsys):
    from deepatlas.data.io import save_volume

    image, _, labels = _first_two(phantoms_3d)
    target = _reoriented(load_image(image), np.array([14.0, 0.0, 0.0]))  # 7 voxels: NCC < 0.93
    path = tmp_path / "target.nii.gz"
    save_volume(target.array, target.affine, path)
    args = ["atlas-segment", str(trained_3d), "--atlas", str(image), str(labels), str(path), "-o", str(tmp_path / "o")]
    assert main(args) == 0
    assert "affine stage switched on: alignment NCC" in capsys.readouterr().out
    result = load_label_codes(tmp_path / "o" / "target_atlas_seg.nii.gz").array
    expected = _reoriented(load_label_codes(labels), np.array([14.0, 0.0, 0.0])).array
    assert (result == expected)[expected > 0].mean() > 0.8


def test_align_needs_a_template_only_when_asked(trained_3d, phantoms_3d, tmp_path, capsys):
    """A run on its own phantom grid has no template: ``--align auto`` changes nothing, ``on`` says why not."""
    image = sorted((phantoms_3d / "images").iterdir())[0]
    assert main(["segment", str(trained_3d), str(image), "-o", str(tmp_path / "a")]) == 0
    assert main(["segment", str(trained_3d), str(image), "-o", str(tmp_path / "b"), "--align", "on"]) == 2
    assert "no template.nii.gz" in capsys.readouterr().err


def test_the_seg_net_as_one_more_voter(trained_3d, phantoms_3d):
    """Weight 0: the atlases alone; a weight beyond any atlas vote: the seg net's own labels; between,
    a map that takes some voxels from each (nearly all from one or the other: both votes are soft,
    so where each splits between labels their sum may rarely crown a third)."""
    from deepatlas.inference.apply import atlas_segment_volume, segment_volume

    run = load_run(trained_3d)
    images = sorted((phantoms_3d / "images").iterdir())
    atlas = (load_image(images[0]), load_label_codes(phantoms_3d / "labels" / images[0].name))
    target = load_image(images[3])
    alone = atlas_segment_volume(run, [atlas], target)
    assert np.array_equal(atlas_segment_volume(run, [atlas], target, seg_net_weight=0.0), alone)
    seg_net = segment_volume(run, target)
    assert np.array_equal(atlas_segment_volume(run, [atlas], target, seg_net_weight=1e6), seg_net)
    assert not np.array_equal(seg_net, alone)  # else the middle case tests nothing
    mixed = 0
    for weight in (0.5, 1.0, 2.0, 4.0, 8.0):
        both = atlas_segment_volume(run, [atlas], target, seg_net_weight=weight)
        assert ((both == alone) | (both == seg_net)).mean() > 0.99  # each voxel from one of the two voters
        mixed += not np.array_equal(both, alone) and not np.array_equal(both, seg_net)
    assert mixed  # some weight takes voxels from each
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="seg-net-weight must be a finite number >= 0"):
            atlas_segment_volume(run, [atlas], target, seg_net_weight=bad)


def test_atlas_segment_takes_a_seg_net_weight(trained_3d, phantoms_3d, tmp_path, capsys):
    image, _, labels = _first_two(phantoms_3d)
    target = sorted((phantoms_3d / "images").iterdir())[4]
    common = ["atlas-segment", str(trained_3d), "--atlas", str(image), str(labels), str(target)]
    assert main([*common, "-o", str(tmp_path / "o"), "--seg-net-weight", "1"]) == 0
    assert "1 atlas(es) and the seg net (x1)" in capsys.readouterr().out
    assert len(list((tmp_path / "o").iterdir())) == 1
    for bad in ("-0.5", "inf"):
        with pytest.raises(SystemExit):  # argparse: one line naming the flag
            main([*common, "-o", str(tmp_path / "p"), "--seg-net-weight", bad])
        assert "--seg-net-weight: must be a finite number >= 0" in capsys.readouterr().err
