import pytest
import torch

from deepatlas.networks import warp_image, warp_labels, warp_probabilities
from deepatlas.networks.warp import interpolate_labels


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


def _blobs(size: int = 12, classes: int = 6, seed: int = 0) -> torch.Tensor:
    """A smooth random label map: a smoothed noise field cut at its quantiles."""
    generator = torch.Generator().manual_seed(seed)
    field = torch.randn((1, 1, size, size, size), generator=generator)
    for _ in range(3):
        field = torch.nn.functional.avg_pool3d(field, 3, 1, 1)
    cuts = torch.quantile(field.flatten(), torch.linspace(0, 1, classes + 1)[1:-1])
    return torch.bucketize(field[0, 0], cuts).to(torch.int32)


def _voxel_grid(shape) -> torch.Tensor:
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(len(shape), -1)


def test_interpolate_labels_keeps_labels_on_voxel_centres_and_integer_shifts():
    labels = _blobs()
    grid = _voxel_grid(labels.shape)
    assert torch.equal(interpolate_labels(labels, grid).reshape(labels.shape), labels)
    shifted = interpolate_labels(labels, grid + torch.tensor([[2.0], [0.0], [-1.0]])).reshape(labels.shape)
    assert torch.equal(shifted[:-2, :, 1:], labels[2:, :, :-1])
    assert (shifted[-2:] == 0).all()  # outside the grid: background


def test_interpolate_labels_is_the_largest_linearly_interpolated_indicator():
    """Between voxels, the label whose indicator, interpolated linearly (one map per label here, the
    slow way), is largest at the point wins, where nearest neighbour misses about one point in ten."""
    labels = _blobs()
    points = torch.rand((3, 3000), generator=torch.Generator().manual_seed(1)) * 13 - 1  # some outside
    one_hot = torch.nn.functional.one_hot(labels.long(), 6).permute(3, 0, 1, 2)[None].float()
    grid = (points.flip(0).T * (2 / 11) - 1).reshape(1, 1, 1, -1, 3)
    maps = torch.nn.functional.grid_sample(one_hot, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    maps = maps.reshape(6, -1)
    maps[0] += 1 - maps.sum(0)  # outside the grid is background
    reference = maps.argmax(0)
    voted = interpolate_labels(labels, points).long()
    nearest = interpolate_labels(labels, points, linear=False).long()
    assert (voted == reference).float().mean() > 0.99
    assert (nearest == reference).float().mean() < 0.95
    centres = points.round().long()
    kept = ((centres >= 0) & (centres <= 11)).all(0)
    assert torch.equal(nearest[kept], labels.reshape(-1)[_flat(centres[:, kept], labels.shape)].long())


def _flat(index: torch.Tensor, shape) -> torch.Tensor:
    return (index[0] * shape[1] + index[1]) * shape[2] + index[2]


def test_warp_labels_linear_is_label_interpolation_with_the_border_repeated():
    """``warp_labels(..., linear=True)`` agrees with nearest neighbour on whole-voxel shifts (the
    border repeated, as the image warp does) and with :func:`interpolate_labels` between voxels."""
    labels = _blobs()[None, None]
    shift = torch.zeros(1, 3, *labels.shape[2:])
    shift[:, 0] = 2.0
    assert torch.equal(warp_labels(labels, shift, linear=True), warp_labels(labels, shift))
    field = torch.randn((1, 3, *labels.shape[2:]), generator=torch.Generator().manual_seed(2)) * 0.6
    points = (_voxel_grid(labels.shape[2:]) + field[0].reshape(3, -1)).clamp(0, 11)
    expected = interpolate_labels(labels[0, 0], points).reshape(labels.shape)
    warped = warp_labels(labels, field, linear=True)
    assert torch.equal(warped, expected) and warped.dtype == labels.dtype
    assert not torch.equal(warped, warp_labels(labels, field))  # between voxels the two differ
    with pytest.raises(ValueError, match="displacement field of shape"):
        warp_labels(labels, field[:, :2], linear=True)
