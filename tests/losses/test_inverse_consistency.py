import pytest
import torch

from deepatlas.losses.inverse_consistency import (
    consistency_residual,
    inverse_consistency_error,
    inverse_consistency_loss,
)
from deepatlas.registration.fields import smooth


def test_a_translation_and_its_inverse_are_consistent():
    forward = torch.zeros(1, 3, 10, 10, 10)
    forward[:, 0] = 1.5
    assert inverse_consistency_error(forward, -forward) < 1e-5
    assert inverse_consistency_error(forward, forward) == pytest.approx(3.0, abs=1e-4)
    for kind in ("icon", "gradicon"):
        assert float(inverse_consistency_loss(forward, -forward, kind)) < 1e-8


def test_gradicon_ignores_a_constant_offset_icon_does_not():
    forward = torch.zeros(1, 3, 8, 8, 8)
    backward = torch.full_like(forward, 0.5)
    assert float(inverse_consistency_loss(forward, backward, "icon")) > 0.2
    assert float(inverse_consistency_loss(forward, backward, "gradicon")) < 1e-8


def test_residual_is_differentiable_and_unknown_kind_is_refused():
    forward = smooth(torch.randn(1, 2, 12, 12), 2).requires_grad_(True)
    consistency_residual(forward, smooth(torch.randn(1, 2, 12, 12), 2)).pow(2).mean().backward()
    assert forward.grad is not None and forward.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="inverse-consistency"):
        inverse_consistency_loss(forward, forward, "nope")


@pytest.mark.slow
def test_training_with_the_icon_loss_lowers_the_inverse_consistency_error(phantoms_3d, tmp_path):
    from deepatlas.data import load_training_data
    from deepatlas.inference import load_run
    from deepatlas.training.run import train
    from tests.conftest import tiny_config

    errors = {}
    for weight in (0.0, 5.0):
        config = tiny_config(phantoms_3d, seg_pretrain_steps=0, reg_pretrain_steps=40, cycles=0)
        config.loss.regularizer_weight = 0.1  # a loosely regularised net, so there is something to fix
        config.loss.inverse_consistency_weight = weight
        data = load_training_data(config.data, progress=False)
        train(config, tmp_path / f"icon{weight}", progress=False, data=data)
        net = load_run(tmp_path / f"icon{weight}", "last").reg_net
        images = data.validation.images
        with torch.no_grad():
            errors[weight] = inverse_consistency_error(net(images[:1], images[1:2]), net(images[1:2], images[:1]))
    assert errors[5.0] < 0.8 * errors[0.0], errors
