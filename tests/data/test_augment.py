"""Random augmentation: labels follow their image, nothing changes at zero strength, draws repeat."""

import dataclasses

import pytest
import torch

from deepatlas.config import AugmentConfig
from deepatlas.data.augment import augment, random_affine

OFF = AugmentConfig(enabled=True, rotate_degrees=0, scale=0, translate_voxels=0, gamma=0, noise=0)


def _blob(spatial: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """An off-centre ellipsoid-ish block of class 2 inside a larger one of class 1; the image is
    bright where the labels are."""
    labels = torch.zeros(1, 1, *spatial, dtype=torch.long)
    outer = tuple(slice(n // 5, 3 * n // 4) for n in spatial)
    inner = tuple(slice(n // 3, n // 2) for n in spatial)
    labels[(0, 0, *outer)] = 1
    labels[(0, 0, *inner)] = 2
    return labels.float() / 2, labels


@pytest.mark.parametrize("spatial", [(40, 48), (24, 28, 20)])
def test_at_zero_strength_nothing_changes(spatial):
    images, labels = _blob(spatial)
    out_images, out_labels = augment(images, labels, OFF, torch.Generator().manual_seed(0))
    assert torch.equal(out_labels, labels)
    torch.testing.assert_close(out_images, images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("spatial", [(40, 48), (24, 28, 20)])
def test_labels_move_with_their_image(spatial):
    images, labels = _blob(spatial)
    spatial_only = dataclasses.replace(AugmentConfig(), gamma=0, noise=0)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        out_images, out_labels = augment(
            images.repeat(2, 1, 1, *[1] * (len(spatial) - 1)),
            labels.repeat(2, 1, 1, *[1] * (len(spatial) - 1)),
            spatial_only,
            generator,
        )
        assert out_labels.dtype == labels.dtype and set(out_labels.unique().tolist()) <= {0, 1, 2}
        assert not torch.equal(out_labels[0], labels[0])  # it moved
        # the image, thresholded, is the labels again: both went through the same transform
        agree = ((out_images * 2).round().long() == out_labels).float().mean()
        assert agree > 0.97


def test_draws_repeat_with_the_generator_and_differ_without():
    images, labels = _blob((24, 28, 20))
    cfg = AugmentConfig(enabled=True)
    a = augment(images, labels, cfg, torch.Generator().manual_seed(3))
    b = augment(images, labels, cfg, torch.Generator().manual_seed(3))
    c = augment(images, labels, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_the_affine_stays_within_its_limits():
    cfg = AugmentConfig(rotate_degrees=0, scale=0.1, translate_voxels=4)
    spatial = (81, 97, 65)  # x, y, z of grid_sample are the array axes reversed
    theta = random_affine(spatial, 200, cfg, torch.Generator().manual_seed(0)).double()
    zooms = 1 / theta[:, 0, 0]  # no rotation: the diagonal is 1 / zoom
    assert zooms.min() >= 0.9 - 1e-9 and zooms.max() <= 1.1 + 1e-9 and zooms.max() - zooms.min() > 0.15
    shifts_vox = theta[:, :, 3] * torch.tensor([32.0, 48.0, 40.0], dtype=torch.float64)  # half-extents
    assert shifts_vox.abs().max() <= 4 + 1e-9 and shifts_vox.abs().max() > 3.5


@pytest.mark.parametrize("spatial", [(64, 128), (80, 96, 60)])
def test_rotations_are_rigid_in_voxels_on_non_cubic_grids(spatial):
    cfg = AugmentConfig(rotate_degrees=90, scale=0, translate_voxels=0)
    theta = random_affine(spatial, 20, cfg, torch.Generator().manual_seed(0)).double()
    half = torch.diag(torch.tensor([(n - 1) / 2 for n in spatial[::-1]], dtype=torch.float64))
    for t in theta:
        voxel = half @ t[:, :-1] @ torch.linalg.inv(half)  # the map in voxel units
        torch.testing.assert_close(voxel @ voxel.T, torch.eye(len(spatial), dtype=torch.float64))
        assert torch.linalg.det(voxel) == pytest.approx(1.0)


def test_a_mirrored_left_structure_becomes_the_right_one_where_the_right_one_lies():
    from deepatlas.data.augment import lateral_axis, mirror
    from deepatlas.data.labels import LabelScheme

    scheme = LabelScheme(["background", "Hippocampus-L", "Hippocampus-R", "3rdVentricle"], [[0], [1], [2], [3]])
    labels = torch.zeros(2, 1, 12, 8, 6, dtype=torch.long)
    labels[:, 0, 1:3, 2:5, 1:4] = 1  # a left structure near the low end of axis 0
    labels[:, 0, 5:7] = 3  # the midline one, across the centre
    images = labels.float() / 3
    chosen = torch.tensor([True, False])
    moved_images, moved = mirror(images, labels, chosen, 0, scheme.mirrored())
    assert torch.equal(moved[1], labels[1]) and torch.equal(moved_images[1], images[1])
    assert int((moved[0] == 1).sum()) == 0 and torch.equal(moved[0, 0, 9:11, 2:5, 1:4], torch.full((2, 3, 3), 2))
    assert torch.equal(moved[0] == 3, labels[0] == 3)  # symmetric about the grid's centre: it stays
    assert torch.equal(moved_images[0], images[0].flip(1))  # the image is mirrored, not relabelled
    # the left-right axis is the one along world x, whatever order the grid's axes come in
    permuted = [[0, 0, -2, 80], [2, 0, 0, -112], [0, 2, 0, -74], [0, 0, 0, 1]]
    assert lateral_axis(permuted, 3) == 2 and lateral_axis([[-1.9, 0.2, 0], [0.2, 1, 0]], 2) == 0


def test_side_twins_are_found_by_name_in_the_usual_conventions():
    from deepatlas.data.labels import LabelScheme

    names = ["background", "Left-Hippocampus", "Right-Hippocampus", "ctx-lh-insula", "ctx-rh-insula"]
    names += ["Amygdala_L", "Amygdala_R", "3rd-Ventricle", "Lesion", "LEFT-Putamen", "RIGHT-Putamen", "ROI", "L1"]
    scheme = LabelScheme(names, [[k] for k in range(len(names))])
    assert scheme.mirrored() == [0, 2, 1, 4, 3, 6, 5, 7, 8, 10, 9, 11, 12]
    assert scheme.unpaired() == []
    lonely = LabelScheme(["background", "Caudate-L", "Vermis"], [[0], [1], [2]])
    assert lonely.mirrored() == [0, 1, 2] and lonely.unpaired() == ["Caudate-L"]


def test_mirroring_is_refused_where_it_would_teach_wrong_labels():
    from deepatlas.data.augment import mirror_plan
    from deepatlas.data.labels import LabelScheme

    eye = [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]
    with pytest.raises(ValueError, match=r"augment.flip: \['Caudate-L'\] name a side but have no twin"):
        mirror_plan(LabelScheme(["background", "Caudate-L"], [[0], [1]]), [eye], 3)
    turned = [[0, 2, 0, 0], [2, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]
    pair = LabelScheme(["background", "Caudate-L", "Caudate-R"], [[0], [1], [2]])
    with pytest.raises(ValueError, match=r"augment.flip: the training images run left-right along different"):
        mirror_plan(pair, [eye, turned], 3)
    assert mirror_plan(pair, [eye, eye], 3) == (0, [0, 2, 1])


def test_mirroring_is_a_chance_between_0_and_1():
    from deepatlas.config import Config

    config = Config()
    config.augment.flip = 1.5
    with pytest.raises(ValueError, match="augment.flip must be a chance between 0 and 1"):
        config.validate()
