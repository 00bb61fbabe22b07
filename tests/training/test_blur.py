"""``augment.blur``: augmented images blurred by a random Gaussian, labels kept (deepatlas.training.blur)."""

import pytest
import torch

from deepatlas.config import Config
from deepatlas.training.blur import random_blur
from tests.conftest import augmented_at, augmenting_trainer


def edge_image(batch: int = 1) -> torch.Tensor:
    """``batch x 1 x 12 x 12 x 12``: dark below plane 6 of the first axis, bright from it on."""
    image = torch.zeros(batch, 1, 12, 12, 12)
    image[:, :, 6:] = 1.0
    return image


def test_zero_leaves_images_and_the_random_stream_as_they_were():
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    images = edge_image(2)
    assert random_blur(images, 0.0, generator) is images
    assert torch.equal(generator.get_state(), state)


def test_a_blur_softens_an_edge_keeps_the_mean_and_draws_a_sigma_per_image():
    images = edge_image(2)
    generator = torch.Generator().manual_seed(0)
    blurred = random_blur(images, 2.0, generator)
    assert blurred.shape == images.shape and blurred.dtype == images.dtype
    assert torch.allclose(blurred.mean(), images.mean(), atol=1e-6)  # repeated edges, normalised kernel
    steps = blurred.diff(dim=2).amax(dim=(1, 2, 3, 4))
    assert (steps < 0.9).all()  # the step from 0 to 1 is spread over several planes
    assert not torch.allclose(blurred[0], blurred[1])  # each image its own sigma
    assert torch.equal(random_blur(torch.ones(1, 1, 5, 5, 5), 2.0, generator), torch.ones(1, 1, 5, 5, 5))


def test_blur_is_checked_in_the_config():
    config = Config()
    config.augment.blur = -0.5
    with pytest.raises(ValueError, match="augment.blur must be >= 0"):
        config.validate()


def test_training_blurs_augmented_images_and_keeps_their_labels(phantoms_3d):
    trainer = augmenting_trainer(phantoms_3d)
    images, labels, out = augmented_at(trainer, "blur", (0.0, 1.5))
    assert torch.allclose(out[0.0][0], images, atol=1e-5)
    assert torch.equal(out[1.5][1], labels) and torch.equal(out[0.0][1], labels)
    sharpness = {blur: out[blur][0].diff(dim=2).abs().mean() for blur in out}
    assert sharpness[1.5] < 0.9 * sharpness[0.0]
