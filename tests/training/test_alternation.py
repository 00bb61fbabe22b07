"""The frozen network of a phase does not change; the trained one does."""

import torch

from deepatlas.data import load_training_data
from deepatlas.training import Trainer
from tests.conftest import augmented_at, augmenting_trainer, tiny_config


def _snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_registration_step_leaves_seg_net_unchanged(phantoms_3d):
    config = tiny_config(phantoms_3d)
    data = load_training_data(config.data, progress=False)
    trainer = Trainer(config, data.train, progress=False)
    for group in ("neither", "moving", "fixed", "both"):
        seg, reg = _snapshot(trainer.seg_net), _snapshot(trainer.reg_net)
        losses = trainer.reg_step(group=group)
        assert "anatomy" in losses
        assert _same(seg, _snapshot(trainer.seg_net)), group
        assert not _same(reg, _snapshot(trainer.reg_net)), group


def test_segmentation_step_leaves_reg_net_unchanged(phantoms_3d):
    config = tiny_config(phantoms_3d)
    data = load_training_data(config.data, progress=False)
    trainer = Trainer(config, data.train, progress=False)
    trainer.reg_step()  # make the reg net non-trivial first
    for group in ("moving", "fixed"):
        seg, reg = _snapshot(trainer.seg_net), _snapshot(trainer.reg_net)
        losses = trainer.seg_step(group=group)
        assert "anatomy" in losses and "supervised" in losses
        assert _same(reg, _snapshot(trainer.reg_net)), group
        assert not _same(seg, _snapshot(trainer.seg_net)), group


def test_weak_supervision_reaches_the_unlabelled_image(phantoms_3d):
    """In a 'moving' seg step only the fixed (unlabelled) image's prediction carries the anatomy
    loss: with the supervised weight at 0 the seg net still learns, from warped labels alone."""
    config = tiny_config(phantoms_3d)
    config.loss.supervised_weight = 0.0
    data = load_training_data(config.data, progress=False)
    trainer = Trainer(config, data.train, progress=False)
    before = _snapshot(trainer.seg_net)
    losses = trainer.seg_step(group="moving")
    assert losses["anatomy"] > 0
    assert not _same(before, _snapshot(trainer.seg_net))


def test_supervised_batches_hold_distinct_images(phantoms_3d):
    """A labelled batch never holds one image twice; with one labelled image it is that image once."""
    config = tiny_config(phantoms_3d)
    config.data.num_labelled = 3
    config.schedule.batch_size = 2
    trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
    draws = [trainer.batches.labelled_batch() for _ in range(50)]
    assert all(len(set(d)) == 2 and set(d) <= set(trainer.labelled) for d in draws)
    assert len({tuple(sorted(d)) for d in draws}) == 3  # every pair of the three comes up
    config.data.num_labelled = 1
    trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
    assert trainer.batches.labelled_batch() == trainer.labelled and len(trainer.labelled) == 1
    losses = trainer.seg_pretrain_step()
    assert losses["loss"] > 0


def test_a_misspelt_pair_group_is_refused(phantoms_3d):
    import pytest

    config = tiny_config(phantoms_3d)
    config.schedule.seg_pair_weights = {"moving": 1.0, "fixd": 1.0}
    with pytest.raises(ValueError, match=r"schedule.seg_pair_weights: unknown pair groups \['fixd'\]"):
        Trainer(config, load_training_data(config.data, progress=False).train, progress=False)


def test_augmentation_reaches_the_supervised_steps(phantoms_3d):
    """The seg net learns from changed images when augmentation is on, in pre-training and in the
    pair step (whose registration side, the reg net, must not see them)."""
    for step in ("seg_pretrain_step", "seg_step"):
        after = {}
        for enabled in (False, True):
            config = tiny_config(phantoms_3d)
            config.augment.enabled = enabled
            trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
            getattr(trainer, step)()
            after[enabled] = _snapshot(trainer.seg_net)
        assert not _same(after[False], after[True]), step


def test_augmentation_takes_one_draw_from_the_run_generator_whatever_the_batch(phantoms_3d):
    """Processes of one run must keep their batch generators equal; one may augment more distinct
    labelled images than another, so augmenting takes the same draws for any batch."""
    config = tiny_config(phantoms_3d)
    config.augment.enabled = True
    trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
    images, labels = trainer.batches.to_device(trainer.labelled)
    states = []
    for count in (1, 2):
        trainer.generator.manual_seed(5)
        out, _ = trainer._augment(images[:count], labels[:count])
        assert out.shape == images[:count].shape and out.dtype == images.dtype
        states.append(trainer.generator.get_state())
    assert torch.equal(states[0], states[1])


def test_augmentation_needs_normalised_intensities():
    import pytest

    from deepatlas.config import load_config

    with pytest.raises(ValueError, match="augment.enabled needs data.normalize"):
        load_config(None, ["augment.enabled=true", "data.normalize=false"])


def test_auto_augments_few_labelled_normalised_images_only(phantoms_3d):
    """``augment.enabled=auto`` (the default): on with at most two labelled images and intensities
    in [0, 1]; ``on`` without them is refused, ``auto`` is then quietly off; old runs stay off."""
    import pytest

    from deepatlas.config import Config, load_config

    auto = Config().augment
    assert auto.enabled == "auto" and auto.active(1) and auto.active(2) and not auto.active(3)
    assert not auto.active(1, normalized=False)
    assert load_config(None, ["augment.enabled=true"]).augment.enabled == "on"  # YAML's true reads as on
    raw = load_config(None, ["data.normalize=false"])  # accepted: auto is off there, not an error
    assert not raw.augment.active(1, raw.data.normalize)
    with pytest.raises(ValueError, match="augment.enabled"):
        load_config(None, ["augment.enabled=sometimes"])
    # a run saved before augmentation existed resumes without it
    assert Config.from_saved({"data": {}}).augment.enabled == "off"
    for labelled, wanted in [(2, True), (3, False)]:
        config = tiny_config(phantoms_3d)
        config.augment.enabled, config.data.num_labelled = "auto", labelled
        trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
        assert trainer.augmenting is wanted


def test_mirroring_draws_only_when_on_and_mirrors_every_image_at_chance_1(phantoms_3d):
    """``augment.flip=0`` (the default) leaves a run's random stream as it was; at 1 every augmented image is
    mirrored along the grid's left-right axis."""
    trainer = augmenting_trainer(phantoms_3d, flip=1.0)
    images, labels, out = augmented_at(trainer, "flip", (0.0, 1.0))
    axis, twins = trainer.mirroring
    assert torch.allclose(out[0.0][0], images, atol=1e-5) and torch.equal(out[0.0][1], labels)
    assert torch.allclose(out[1.0][0], images.flip(2 + axis), atol=1e-5)
    assert torch.equal(out[1.0][1], torch.tensor(twins)[labels.flip(2 + axis).long()].to(labels.dtype))
