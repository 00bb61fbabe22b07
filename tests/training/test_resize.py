"""Structure resizing: a structure grows or shrinks by its strength's sign, image and labels together."""

import pytest
import torch

from deepatlas.config import Config
from deepatlas.registration.fields import warp
from deepatlas.training.resize import resize_field, resize_indices, resize_structures, sample_labels_stochastic


def _ball() -> torch.Tensor:
    """32^3 class indices: a ball of class 1 (radius 6) inside a cube of class 2."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(32.0)] * 3, indexing="ij"))
    labels = torch.zeros(32, 32, 32, dtype=torch.long)
    labels[4:28, 4:28, 4:28] = 2
    labels[((grid - 15.5) ** 2).sum(0) < 36] = 1
    return labels


def test_a_positive_strength_grows_the_structure_and_a_negative_one_shrinks_it():
    labels = _ball()
    before = int((labels == 1).sum())
    counts = {}
    for strength in (-2.0, 2.0):
        field = resize_field(labels, [1], [strength])
        moved = warp(labels[None, None].float(), field, "nearest")[0, 0].round().long()
        counts[strength] = int((moved == 1).sum())
        assert set(moved.unique().tolist()) <= {0, 1, 2}
    assert counts[-2.0] < 0.8 * before and counts[2.0] > 1.2 * before
    # far from the ball (the cube's corners) nothing moves
    assert float(resize_field(labels, [1], [2.0])[0, :, 5, 5, 5].abs().max()) < 0.05


def test_images_and_labels_move_together_and_zero_strength_changes_nothing():
    labels = _ball()[None, None].repeat(2, 1, 1, 1, 1)
    images = (labels == 1).float()  # an image that is its ball
    generator = torch.Generator().manual_seed(0)
    moved_images, moved_labels = resize_structures(images, labels, 3.0, 2, generator)
    assert moved_labels.dtype == labels.dtype and moved_images.shape == images.shape
    assert not torch.equal(moved_labels, labels)
    agree = ((moved_images > 0.5) == (moved_labels == 1)).float().mean()
    assert agree > 0.995
    same_images, same_labels = resize_structures(images, labels, 0.0, 2, generator)
    assert same_images is images and same_labels is labels


def test_only_the_eligible_structures_are_resized():
    labels = _ball()[None, None]
    generator = torch.Generator().manual_seed(0)
    images = labels.float()
    balls = set()
    for _ in range(4):  # the cube (class 2) may not be drawn: its outer boundary never moves
        _, moved = resize_structures(images, labels, 3.0, 2, generator, eligible=[1])
        balls.add(int((moved == 1).sum()))
        assert torch.equal(moved[0, 0, 4, 4:28, 4:28], labels[0, 0, 4, 4:28, 4:28])
        assert torch.equal(moved[..., :4, :, :], labels[..., :4, :, :])
    assert len(balls) > 1  # the ball itself grows and shrinks
    _, same = resize_structures(images, labels, 3.0, 2, generator, eligible=[3])  # absent: nothing moves
    assert torch.equal(same, labels)


def test_resize_classes_are_names_in_the_label_map():
    names = ["background", "LateralVentricle-L", "Hippocampus-L"]
    assert resize_indices([], names) is None
    assert resize_indices(["Hippocampus-L", "LateralVentricle-L"], names) == [2, 1]
    for bad in (["Ventricle"], ["background"]):
        with pytest.raises(ValueError, match=r"augment.resize_classes: .* choose from \['LateralVentricle-L'"):
            resize_indices(bad, names)
    config = Config()
    config.augment.resize_classes = "LateralVentricle-L"
    with pytest.raises(ValueError, match="augment.resize_classes must be a list of structure names"):
        config.validate()


def test_cubic_resizing_moves_the_image_as_linear_does_without_its_blur():
    """The same draws give the same labels either way; the cubic image keeps the ball's sharp edge (few
    voxels between 0 and 1: 504 against 704 here) where the linear one blurs it wherever a voxel moves by a
    fraction."""
    labels = _ball()[None, None]
    images = (labels == 1).float()
    moved = {}
    for kind in ("linear", "cubic"):
        generator = torch.Generator().manual_seed(1)
        moved[kind] = resize_structures(images, labels, 2.0, 1, generator, image_interpolation=kind)
    assert torch.equal(moved["linear"][1], moved["cubic"][1])
    partial = {k: int(((v[0] > 0.1) & (v[0] < 0.9)).sum()) for k, v in moved.items()}
    assert partial["cubic"] < 0.8 * partial["linear"], partial
    agree = ((moved["cubic"][0] > 0.5) == (moved["cubic"][1] == 1)).float().mean()
    assert agree > 0.995
    config = Config()
    config.augment.resize_image = "quintic"
    with pytest.raises(ValueError, match="augment.resize_image"):
        config.validate()


def test_resizing_is_checked_in_the_config():
    config = Config()
    config.augment.resize = -1.0
    with pytest.raises(ValueError, match="augment.resize must be >= 0"):
        config.validate()


def test_a_run_starts_from_another_runs_weights_and_refuses_other_networks(trained_3d, phantoms_3d):
    from deepatlas.data import load_training_data
    from deepatlas.inference import load_run
    from deepatlas.training import Trainer
    from tests.conftest import tiny_config

    config = tiny_config(phantoms_3d)
    config.init_from = str(trained_3d)
    data = load_training_data(config.data, progress=False)
    trainer = Trainer(config, data.train, progress=False)
    source = load_run(trained_3d, "best")
    for mine, theirs in ((trainer.seg_net, source.seg_net), (trainer.reg_net, source.reg_net)):
        for key, value in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[key], value), key
    config.seg_net.channels = [4, 8, 8]
    with pytest.raises(ValueError, match="init_from=.*networks differ from this config's"):
        Trainer(config, data.train, progress=False)


def test_sampled_labels_follow_a_growth_of_a_fraction_of_a_voxel_by_its_partial_volume():
    """A growth that moves the ball's boundary by less than half a voxel leaves nearest-neighbour labels as they
    were; drawn labels grow by the linearly warped mask's partial volume on average, and their mean one-hot map
    is the linearly warped one."""
    labels = _ball()
    field = resize_field(labels, [1], [0.4])
    assert float(field.abs().max()) < 0.5
    nearest = warp(labels[None, None].float(), field, "nearest")[0, 0].round().long()
    before = int((labels == 1).sum())
    assert int((nearest == 1).sum()) == before
    mask = warp((labels == 1)[None, None].float(), field)[0, 0]
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_labels_stochastic(labels[None], field[0], generator)[0] for _ in range(200)])
    assert set(draws.unique().tolist()) <= {0, 1, 2}
    counts = (draws == 1).flatten(1).sum(1).float()
    assert abs(float(counts.mean()) - float(mask.sum())) < 0.01 * before
    assert float(mask.sum()) > 1.02 * before  # the growth is there to find
    mean_map = (draws == 1).float().mean(0)
    assert float((mean_map - mask).abs().max()) < 0.15  # 200 draws of a chance: within ~4 sd
    same = sample_labels_stochastic(labels[None], torch.zeros_like(field[0]), generator)
    assert torch.equal(same, labels[None])


def test_resize_structures_draws_labels_when_asked_and_the_setting_is_checked():
    labels = _ball()[None, None]
    images = (labels == 1).float()
    first = resize_structures(images, labels, 0.4, 1, torch.Generator().manual_seed(3), label_sampling="sampled")
    again = resize_structures(images, labels, 0.4, 1, torch.Generator().manual_seed(3), label_sampling="sampled")
    assert torch.equal(first[1], again[1]) and first[1].dtype == labels.dtype  # reproducible from the generator
    config = Config()
    config.augment.resize_labels = "linear"
    with pytest.raises(ValueError, match="augment.resize_labels"):
        config.validate()


def test_drawn_labels_can_be_kept_to_the_named_structures_boundaries():
    """``sampled_classes``: labels are drawn only where the drawn or the nearest label is a named structure;
    every other voxel takes its nearest-neighbour label (a structure that is not named stays exact)."""
    labels = _ball()[None, None]
    images = (labels == 1).float()
    nearest = resize_structures(images, labels, 0.4, 1, torch.Generator().manual_seed(3))[1]
    drawn = resize_structures(
        images, labels, 0.4, 1, torch.Generator().manual_seed(3), label_sampling="sampled", sampled_classes=[1]
    )[1]
    absent = resize_structures(
        images, labels, 0.4, 1, torch.Generator().manual_seed(3), label_sampling="sampled", sampled_classes=[3]
    )[1]
    assert torch.equal(absent, nearest)
    changed = drawn != nearest
    assert int(changed.sum()) > 0  # the ball's boundary was drawn
    assert bool(((drawn[changed] == 1) | (nearest[changed] == 1)).all())
    trained = Config()
    trained.augment.resize_sampled_classes = "Hippocampus-L"
    with pytest.raises(ValueError, match="augment.resize_sampled_classes"):
        trained.validate()
    trained.augment.resize_sampled_classes = ["Hippocampus-L"]  # a list, but labels move by nearest neighbour
    with pytest.raises(ValueError, match="only augment.resize_labels=sampled"):
        trained.validate()
    trained.augment.resize_labels = "sampled"
    trained.validate()
