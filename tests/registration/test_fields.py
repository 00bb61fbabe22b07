import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepatlas.networks.warp import warp_image
from deepatlas.registration.fields import (
    compose,
    diffusion_energy,
    integrate_velocity,
    pool_image,
    resize_field,
    smooth,
    warp,
)


@pytest.mark.parametrize("shape", [(12, 10, 9), (14, 11)])
def test_warp_matches_monai_warp(shape):
    torch.manual_seed(0)
    image = torch.rand(2, 3, *shape)
    field = torch.randn(2, len(shape), *shape) * 2
    assert torch.allclose(warp(image, field), warp_image(image, field), atol=1e-5)


def test_warp_convention_shifts_content_towards_lower_indices():
    image = torch.arange(10.0).view(1, 1, 10, 1, 1).expand(1, 1, 10, 3, 3).contiguous()
    field = torch.zeros(1, 3, 10, 3, 3)
    field[:, 0] = 2
    assert torch.allclose(warp(image, field)[0, 0, :8, 1, 1], torch.arange(2.0, 10.0), atol=1e-5)


@pytest.mark.parametrize("old, new", [((5, 6, 4), (10, 12, 8)), ((5, 6, 4), (9, 13, 7)), ((6, 5), (12, 10))])
def test_resize_field_keeps_a_physical_translation(old, new):
    """A constant shift of 1.5 coarse voxels is 1.5 * (new / old) fine voxels."""
    field = torch.full((1, len(old), *old), 1.5)
    resized = resize_field(field, new)
    for axis, (n_old, n_new) in enumerate(zip(old, new)):
        assert torch.allclose(resized[0, axis], torch.full(new, 1.5 * n_new / n_old))


def test_resize_field_doubling_equals_interpolate():
    field = torch.randn(1, 3, 7, 6, 5)
    fast = resize_field(field, (14, 12, 10))
    reference = F.interpolate(field, size=(14, 12, 10), mode="trilinear", align_corners=False) * 2
    assert torch.allclose(fast, reference, atol=1e-5)


def test_smooth_keeps_constants_inside_and_damps_noise():
    constant = torch.full((1, 3, 9, 10, 8), 0.7)
    assert torch.allclose(smooth(constant, 2)[:, :, 2:-2, 2:-2, 2:-2], constant[:, :, 2:-2, 2:-2, 2:-2])
    assert float(smooth(constant, 2)[0, 0, 0, 0, 0]) < 0.7  # tapers off at the border
    noise = torch.randn(1, 3, 16, 16, 16)
    assert smooth(noise, 2).std() < 0.5 * noise.std()
    reference = noise
    for _ in range(2):
        reference = F.avg_pool3d(reference, 3, stride=1, padding=1, count_include_pad=True)
    assert torch.allclose(smooth(noise, 2), reference, atol=1e-5)


def test_integrate_velocity_of_a_constant_is_that_translation():
    velocity = torch.zeros(1, 3, 8, 8, 8)
    velocity[:, 1] = 0.8
    assert torch.allclose(
        integrate_velocity(velocity, 6)[:, :, 2:-2, 2:-2, 2:-2], velocity[:, :, 2:-2, 2:-2, 2:-2], atol=1e-5
    )


def test_compose_with_identity_and_energy_of_translation():
    field = smooth(torch.randn(1, 3, 8, 8, 8), 2)
    zero = torch.zeros_like(field)
    assert torch.allclose(compose(field, zero), field, atol=1e-5)
    assert torch.allclose(compose(zero, field), field, atol=1e-5)
    assert float(diffusion_energy(torch.full((1, 3, 5, 5, 5), 3.0))) == 0.0
    assert float(diffusion_energy(field)) > 0


def test_pool_image_averages():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(pool_image(image, 2), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert pool_image(image, 1) is image


@pytest.mark.parametrize("shape", [(1, 3, 6, 5, 4), (2, 2, 7, 5), (1, 3, 1, 5, 4)])
def test_diffusion_energy_gradient_matches_its_definition(shape):
    """The written-out Laplacian backward equals autograd through the mean squared differences;
    a flat axis adds nothing (rather than a NaN mean of no differences)."""
    torch.manual_seed(0)
    field = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    reference = sum(torch.diff(field, dim=a).pow(2).mean() for a in range(2, field.ndim) if field.shape[a] > 1)
    value = diffusion_energy(field)
    assert float(value) == pytest.approx(float(reference))
    assert torch.allclose(torch.autograd.grad(value, field)[0], torch.autograd.grad(reference, field)[0])


def test_constant_shifts_sample_the_image_at_x_plus_the_shift():
    from deepatlas.registration.fields import resample_cubic, shift_cubic, shift_linear

    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in (12, 14, 10)), indexing="ij")
    ramp = (2.0 * z - 0.5 * y + 3.0 * x).astype(np.float32)
    moved = shift_linear(torch.from_numpy(ramp)[None], (0.25, -0.75, 1.5))[0].numpy()
    inside = (slice(1, -2), slice(1, -2), slice(1, -2))  # away from the replicated edges
    expected = 2.0 * (z + 0.25) - 0.5 * (y - 0.75) + 3.0 * (x + 1.5)
    assert np.allclose(moved[inside], expected[inside], atol=1e-4)
    smooth = np.sin(z / 3.0) * np.cos(y / 4.0) + 0.1 * x  # a cubic spline follows a smooth image closely
    cubic = shift_cubic(smooth, (0.25, 0.25, -0.25))
    truth = np.sin((z + 0.25) / 3.0) * np.cos((y + 0.25) / 4.0) + 0.1 * (x - 0.25)
    core = (slice(3, -3),) * 3
    assert np.abs(cubic[core] - truth[core]).max() < 2e-3
    field = torch.stack([torch.full(smooth.shape, s) for s in (0.25, 0.25, -0.25)])
    assert np.allclose(cubic, resample_cubic(smooth, field), atol=1e-4)  # the constant field's special case
    assert np.array_equal(shift_cubic(smooth, (1.0, 0.0, 0.0))[:-1], smooth[1:].astype(np.float32))
