"""Synthesised labelled images: appearance matching, the teachers' cache that makes them, the
distilled step that trains on them."""

import json

import pytest
import torch

from deepatlas.config import Config
from deepatlas.networks.warp import warp_image
from deepatlas.training.run import train
from deepatlas.training.synthesis import GAIN_RANGE, class_statistics, match_appearance
from deepatlas.training.teachers import TeacherCache
from tests.conftest import real_brains_4mm, refine_only, tiny_config


def _blocks() -> tuple[torch.Tensor, torch.Tensor]:
    """A 1 x 1 x 24^3 label map of three slabs (classes 0, 1, 2, 8 voxels thick each)."""
    labels = torch.zeros(1, 1, 24, 24, 24, dtype=torch.long)
    labels[..., 8:16, :, :], labels[..., 16:, :, :] = 1, 2
    return labels, labels.float()


def test_class_statistics_are_each_class_mean_and_spread():
    labels, _ = _blocks()
    image = torch.rand(1, 1, 24, 24, 24, generator=torch.Generator().manual_seed(0))
    mean, spread = class_statistics(image, labels, 4)
    for k in range(3):
        inside = image[labels == k]
        assert mean[k] == pytest.approx(float(inside.mean()), abs=1e-6)
        assert spread[k] == pytest.approx(float(inside.std(unbiased=False)), abs=1e-6)
    assert mean[3] == 0 and spread[3] == 0  # an absent class


def test_appearance_takes_the_target_contrast_and_keeps_the_texture():
    labels, _ = _blocks()
    noise = torch.randn(1, 1, 24, 24, 24, generator=torch.Generator().manual_seed(1))
    moved = torch.tensor([0.0, 0.7, 0.3])[labels] + 0.02 * noise  # class 1 bright, class 2 dark
    target = torch.tensor([0.0, 0.3, 0.8])[labels] + 0.04 * noise.flip(-1)  # the contrast inverted
    out = match_appearance(moved, labels, target, 3)
    core = torch.zeros_like(labels, dtype=torch.bool)
    core[..., 10:14, :, :] = True  # class 1 away from the blurred boundaries
    assert float(out[core].mean()) == pytest.approx(0.3, abs=0.01)
    core.zero_()
    core[..., 18:22, :, :] = True
    assert float(out[core].mean()) == pytest.approx(0.8, abs=0.01)
    # the texture is the moved image's, its spread the target's (gain 2, within GAIN_RANGE)
    inside = out[core] - out[core].mean()
    assert torch.corrcoef(torch.stack([inside, noise[core]]))[0, 1] > 0.99
    assert float(inside.std()) == pytest.approx(0.04, rel=0.1) and GAIN_RANGE[1] >= 2
    assert out.min() >= target.min() and out.max() <= target.max()


@pytest.fixture(scope="module")
def brains(ixi):
    return real_brains_4mm(3)


def test_a_synthesised_image_is_the_atlas_moved_onto_the_subject_with_its_labels(brains):
    images, labels, _ = brains
    cache = TeacherCache(images, labels, [0], refine_only([30, 15]), refresh_steps=10, synthesise=True)
    teacher = cache.labels_for([1], step=0)
    image, synth_labels = cache.synthetic_for([1])
    assert torch.equal(synth_labels, teacher)  # one atlas: the teacher is the synthesised image's labels
    assert image.shape == images[1:2].shape and image.dtype == torch.float32

    def corr(a, b):
        return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])

    # moved onto subject 1, the atlas image looks more like it than the atlas does, and it is the
    # atlas's own texture (matched per class), not subject 1's image
    assert corr(image, images[1]) > corr(images[0], images[1]) + 0.03
    assert corr(image, images[1]) < 0.995
    # a resumed run trains on the same synthesised pairs
    restored = TeacherCache(images, labels, [0], refine_only([1, 1]), refresh_steps=10, synthesise=True)
    restored.load_state_dict(cache.state_dict())
    again, again_labels = restored.synthetic_for([1])
    assert torch.equal(again_labels, synth_labels) and torch.allclose(again, image)
    # a cache whose checkpoint had no synthesised pairs makes them when next drawn
    plain = TeacherCache(images, labels, [0], refine_only([1, 1]), refresh_steps=10)
    plain.labels_for([2], step=0)
    late = TeacherCache(images, labels, [0], refine_only([1, 1]), refresh_steps=10, synthesise=True)
    late.load_state_dict(plain.state_dict())
    assert 2 not in late.synthetic
    late.labels_for([2], step=1)
    assert 2 in late.synthetic


def test_without_appearance_matching_a_synthesised_image_keeps_the_atlas_intensities(brains):
    """``teachers.synthesis_appearance=false`` (the ablation): the atlas image warped, nothing matched."""
    images, labels, _ = brains
    matched = TeacherCache(images, labels, [0], refine_only([10, 5]), refresh_steps=10, synthesise=True)
    plain = TeacherCache(images, labels, [0], refine_only([10, 5]), refresh_steps=10, synthesise=True, appearance=False)
    for cache in (matched, plain):
        cache.labels_for([1], step=0)
    field = refine_only([10, 5])()(images[0:1].float(), images[1:2].float()).field
    moved = warp_image(images[0:1].float(), field)
    assert torch.allclose(plain.synthetic_for([1])[0], moved, atol=2e-3)  # float16 storage
    assert not torch.allclose(matched.synthetic_for([1])[0], moved, atol=2e-3)
    config = Config()
    config.teachers.synthesis_appearance = "no"
    with pytest.raises(ValueError, match="teachers.synthesis_appearance must be true or false"):
        config.validate()


def test_synthesis_needs_the_distilled_step():
    config = Config()
    config.teachers.synthesis = 0.5
    with pytest.raises(ValueError, match="teachers.synthesis=0.5 needs teachers.loss=distil"):
        config.validate()
    config.teachers.synthesis = 1.5
    with pytest.raises(ValueError, match=r"teachers.synthesis must be in \[0, 1\]"):
        config.validate()


def test_a_distilled_run_trains_on_synthesised_images(tmp_path, phantoms_3d):
    config = tiny_config(phantoms_3d, seg_pretrain_steps=0, reg_pretrain_steps=0, cycles=3)
    config.data.num_labelled = 1
    config.teachers.enabled, config.teachers.loss, config.teachers.synthesis = "on", "distil", 1.0
    config.refine.iterations = [3, 2]
    train(config, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["teachers"]["synthesised"] == summary["teachers"]["images"] >= 1
    assert summary["seg_step"] == "distil"


def test_the_seg_step_variant_is_chosen_once_from_data_and_settings(phantoms_3d):
    from deepatlas.data import load_training_data
    from deepatlas.training import Trainer

    config = tiny_config(phantoms_3d)
    data = load_training_data(config.data, progress=False)
    assert Trainer(config, data.train, progress=False).seg_variant == "pair"
    config.teachers.enabled, config.teachers.loss = "on", "distil"
    assert Trainer(config, data.train, progress=False).seg_variant == "distil"
    config.data.num_labelled = None  # every training image labelled: nothing to pair
    every = load_training_data(config.data, progress=False)
    assert Trainer(config, every.train, progress=False).seg_variant == "supervised"
