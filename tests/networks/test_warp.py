import pytest
import torch

from deepatlas.networks import warp_image, warp_labels, warp_probabilities


def test_constant_shift_moves_content_the_documented_way():
    image = torch.arange(10, dtype=torch.float32).reshape(1, 1, 10, 1, 1).expand(1, 1, 10, 4, 4).contiguous()
    ddf = torch.zeros(1, 3, 10, 4, 4)
    ddf[:, 0] = 2.0
    warped = warp_image(image, ddf)
    # warped[i] = image[i + 2]; beyond the border the last value repeats
    assert torch.allclose(warped[0, 0, :8, 0, 0], torch.arange(2, 10, dtype=torch.float32))
    assert torch.allclose(warped[0, 0, 8:, 0, 0], torch.tensor([9.0, 9.0]))


def test_shift_along_second_axis_in_2d():
    image = torch.zeros(1, 1, 6, 8)
    image[0, 0, :, 5] = 1.0
    ddf = torch.zeros(1, 2, 6, 8)
    ddf[:, 1] = 1.0  # warped[:, j] = image[:, j + 1]
    assert torch.equal(warp_image(image, ddf)[0, 0, :, 4], torch.ones(6))


def test_half_voxel_shift_interpolates_linearly():
    image = torch.arange(6, dtype=torch.float32).reshape(1, 1, 6, 1)
    ddf = torch.zeros(1, 2, 6, 1)
    ddf[:, 0] = 0.5
    assert torch.allclose(warp_image(image, ddf)[0, 0, :5, 0], torch.arange(5) + 0.5)


def test_label_warping_keeps_label_values():
    torch.manual_seed(0)
    labels = torch.tensor([0, 3, 17, 255], dtype=torch.int16)[torch.randint(0, 4, (1, 1, 9, 10, 11))]
    ddf = torch.randn(1, 3, 9, 10, 11) * 1.7
    warped = warp_labels(labels, ddf)
    assert warped.dtype == labels.dtype
    assert set(warped.unique().tolist()) <= {0, 3, 17, 255}
    assert torch.equal(warp_labels(labels, torch.zeros_like(ddf)), labels)


def test_warped_probabilities_still_sum_to_one_and_carry_gradient():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 4, 8, 8, 8), 1)
    ddf = (torch.randn(2, 3, 8, 8, 8) * 2).requires_grad_()
    warped = warp_probabilities(probs, ddf)
    assert torch.allclose(warped.sum(1), torch.ones(2, 8, 8, 8), atol=1e-5)
    warped[:, 1].sum().backward()
    assert ddf.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(2, 3, 9, 11, 7), (1, 2, 12, 10), (1, 1, 1, 6, 5)])
def test_warps_match_monai_warp_values_and_gradients(shape):
    """The grid_sample warp replaces MONAI's Warp (same convention, one cached grid per shape)."""
    from monai.networks.blocks import Warp

    torch.manual_seed(0)
    dims = len(shape) - 2
    image = torch.rand(shape, requires_grad=True)
    ddf = (3 * torch.randn(shape[0], dims, *shape[2:])).requires_grad_()
    ours = warp_image(image, ddf)
    theirs_image, theirs_ddf = image.detach().clone().requires_grad_(), ddf.detach().clone().requires_grad_()
    theirs = Warp(mode="bilinear", padding_mode="border")(theirs_image, theirs_ddf)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    weights = torch.rand_like(ours)
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    torch.testing.assert_close(image.grad, theirs_image.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ddf.grad, theirs_ddf.grad, atol=1e-4, rtol=1e-4)
    labels = torch.randint(0, 5, (shape[0], 1, *shape[2:]))
    nearest = Warp(mode="nearest", padding_mode="border")(labels.float(), ddf.detach()).round().long()
    assert torch.equal(warp_labels(labels, ddf.detach()), nearest)


def test_warp_refuses_a_field_of_another_shape_in_one_line():
    with pytest.raises(ValueError, match="needs a displacement field of shape"):
        warp_image(torch.rand(1, 1, 8, 8, 8), torch.zeros(1, 3, 8, 8, 7))
