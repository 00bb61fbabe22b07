"""The volume kinds of ``benchmarks.atrophy_validation`` (no data needed)."""

from pathlib import Path

import pytest


def test_csf_partial_volumes_count_a_half_dark_layer_outside_the_mask_as_half():
    """The exploratory volume kind of ``benchmarks.atrophy_validation``: a ventricle's mask grown by one voxel
    and read as CSF fractions of the intensities; a layer half CSF outside the mask adds half its volume."""
    import numpy as np

    from benchmarks.atrophy_validation import csf_partial_volumes
    from deepatlas.data.io import Volume
    from deepatlas.data.labels import LabelScheme

    scheme = LabelScheme(names=["background", "WM", "LateralVentricle-L"], codes=[[0], [1], [2]])
    codes = np.zeros((20, 20, 20), int)
    codes[2:18, 2:18, 2:18], codes[7:13, 7:13, 7:13] = 1, 2
    image = np.where(codes == 2, 0.1, np.where(codes == 1, 0.9, 0.0)).astype(np.float32)
    image[13, 7:13, 7:13] = 0.5  # 36 voxels half CSF beside the mask
    volumes = csf_partial_volumes(Volume(image, np.diag([2.0, 2.0, 2.0, 1.0]), Path("x.nii.gz")), codes, scheme, 1)
    assert volumes["LateralVentricle-L"] == pytest.approx((216 + 18) * 8.0)
    assert volumes["WM"] == float((codes == 1).sum() * 8.0)  # other structures: their label counts


def test_the_controls_shift_or_blur_the_brain_and_report_the_volume_change():
    """``benchmarks.atrophy_validation``'s half-voxel shift: the linear one averages neighbours (a blur), the
    cubic one keeps an edge sharper; its blurs spread the step without moving it; ``control_changes`` is the
    mean relative change per structure."""
    import numpy as np

    from benchmarks.atrophy_validation import CONTROLS, control_changes, controlled
    from benchmarks.morphometry import TARGETS
    from deepatlas.data.io import Volume

    image = np.zeros((12, 12, 12), np.float32)
    image[6:, :, :] = 1.0  # a step along the first axis
    volume = Volume(image, np.eye(4), Path("x.nii.gz"))
    linear, cubic = controlled(volume, "linear").array, controlled(volume, "cubic").array
    soft, softer = controlled(volume, "blur-0.5").array, controlled(volume, "blur-1").array
    assert soft[5:7, 6, 6].sum() == pytest.approx(1.0, abs=1e-5)  # symmetric about the step: it stays put
    assert 0 < softer[5, 6, 6] - soft[5, 6, 6] and softer[6, 6, 6] < soft[6, 6, 6] < 1
    assert linear[5, 6, 6] == pytest.approx(0.5)  # half of each side: the step now lies on a voxel
    assert linear[6, 6, 6] == pytest.approx(1.0) and linear[4, 6, 6] == pytest.approx(0.0)
    assert 0.45 < cubic[5, 6, 6] < 0.55 and cubic.min() >= 0 and cubic.max() <= 1
    still = {n: 100.0 for n in TARGETS}
    originals = {
        s: {"net": still, "controls": {"net": {k: {n: 100.0 + d for n in TARGETS} for k in CONTROLS}}}
        for s, d in (("a", -4.0), ("b", 2.0))
    }
    changes = control_changes(originals, "net")
    assert set(changes) == set(CONTROLS) and {"whole-voxel", "linear", "cubic", "blur-1"} <= set(CONTROLS)
    assert changes["cubic"][TARGETS[0]] == pytest.approx(-0.01)
    assert control_changes(originals, "net", spread=True)["cubic"][TARGETS[0]] == pytest.approx(0.03)  # sd 0.042
    rolled = controlled(volume, "whole-voxel").array  # the same values, one voxel further along every axis
    assert np.array_equal(rolled[1:, 1:, 1:], image[:-1, :-1, :-1])


def test_the_recovery_figure_is_written_for_every_row(tmp_path):
    from benchmarks.atrophy_validation import write_figure
    from benchmarks.morphometry import STRENGTHS, TARGETS

    def block(recovered: float) -> dict:
        return {n: {"levels": [{"requested": s[n], "recovered": recovered} for s in STRENGTHS]} for n in TARGETS}

    result = {"validation": ["a", "b"], "runs": {"one": {"atrophy": block(0.8)}, "two": {"atrophy": block(0.95)}}}
    write_figure(result, tmp_path / "results.png")
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_mirror_control_puts_the_left_structure_where_the_right_one_was():
    """``--mirror``: the brain mirrored along its left-right axis on its own grid, each label turned into its
    twin's, so a side's deficit can be told from the array's side."""
    import numpy as np

    from benchmarks.atrophy_validation import mirrored
    from deepatlas.data.io import Volume
    from deepatlas.data.labels import LabelScheme

    scheme = LabelScheme(["background", "Hippocampus-L", "Hippocampus-R"], [[0], [48, 50], [47]])
    codes = np.zeros((10, 6, 6), np.int32)
    codes[1:3, 2:4, 2:4], codes[6:9, 2:4, 2:4] = 50, 47  # the left one at low x, the right one at high x
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # LPS-like: left-right still along the first axis
    image = Volume((codes > 0).astype(np.float32) + np.arange(10)[:, None, None], affine, Path("x.nii.gz"))
    out_image, out_labels = mirrored(image, Volume(codes, affine, Path("y.nii.gz")), scheme)
    assert np.array_equal(out_image.array, image.array[::-1]) and np.array_equal(out_labels.affine, affine)
    assert set(np.unique(out_labels.array[7:9, 2:4, 2:4])) == {47}  # the left one mirrored: now the right one
    assert set(np.unique(out_labels.array[1:4, 2:4, 2:4])) == {48}  # and the right one the left (first code)


def test_ventricle_split_counts_a_claimed_voxel_where_the_reference_puts_it():
    """``benchmarks.ventricle_split``: growth the seg net gives the left ventricle inside the right white
    matter counts there, where the truth (no displacement: no growth) has none."""
    import numpy as np
    import torch

    from benchmarks.ventricle_split import growth_by_region
    from deepatlas.data.labels import LabelScheme

    names = ["background", "LateralVentricle-L", "LateralVentricle-R", "CerebralWM-L", "CerebralWM-R"]
    scheme = LabelScheme(names, [[k] for k in range(5)])
    reference = np.zeros((12, 6, 6), np.uint8)
    reference[:6], reference[6:] = 3, 4
    reference[4:6, 2:4, 2:4], reference[7:9, 2:4, 2:4] = 1, 2
    after = reference.copy()
    after[6, 2:4, 2:4] = 1  # the left ventricle claims a layer of the right white matter
    regions = growth_by_region(scheme, reference, torch.zeros(3, 12, 6, 6), reference, after)
    assert regions["LateralVentricle-L"]["CerebralWM-R"] == [0.0, 4.0]
    assert regions["LateralVentricle-R"]["CerebralWM-R"] == [0.0, 0.0]


def test_shift_averaging_rolls_each_pass_back_and_restores_the_seg_net(monkeypatch):
    """Within ``shift_averaged`` every pass's probabilities are rolled back by their shift (a map that follows
    the image comes back unchanged) and averaged over the 8 phases (a map fixed to the grid is averaged with
    its neighbours'); after it, inference is the single phase again."""
    import torch

    from benchmarks.atrophy_validation import shift_averaged
    from deepatlas.inference import apply

    image = torch.rand(1, 4, 5, 6)
    grid = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 5, 6).contiguous()
    follows, fixed = (lambda run, x, affine, *_: x.clone()), (lambda run, x, affine, *_: grid.clone())
    monkeypatch.setattr(apply, "seg_probabilities", follows)
    with shift_averaged():
        assert torch.allclose(apply.seg_probabilities(None, image, None), image)
    assert apply.seg_probabilities is follows
    monkeypatch.setattr(apply, "seg_probabilities", fixed)
    with shift_averaged():
        averaged = apply.seg_probabilities(None, image, None)
    assert torch.allclose(averaged[0, 1], torch.full((5, 6), 1.5))  # (1 + 2) / 2: its own phase and the next
