import pytest
import torch

from deepatlas.losses import make_regularizer


def _coords(shape):
    return torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")


def test_bending_energy_of_a_quadratic_field():
    # u_0 = a x^2: the only second derivative is d2u_0/dx2 = 2a, so the energy per
    # voxel is (2a)^2 for component 0 and 0 for the two others; mean over components.
    a = 0.3
    x, _, _ = _coords((8, 9, 10))
    ddf = torch.zeros(1, 3, 8, 9, 10, dtype=torch.float64)
    ddf[0, 0] = a * x**2
    assert float(make_regularizer("bending")(ddf)) == pytest.approx((2 * a) ** 2 / 3, rel=1e-6)


def test_bending_energy_ignores_affine_fields():
    x, y, z = _coords((8, 9, 10))
    ddf = torch.stack([0.1 * x + 0.2 * y + 3, -0.3 * z, 0.05 * x])[None]
    assert float(make_regularizer("bending")(ddf)) == pytest.approx(0.0, abs=1e-12)


def test_diffusion_of_a_linear_field():
    # u_1 = b y: du_1/dy = b everywhere; the others are 0.
    b = 0.4
    _, y, _ = _coords((8, 9, 10))
    ddf = torch.zeros(1, 3, 8, 9, 10, dtype=torch.float64)
    ddf[0, 1] = b * y
    assert float(make_regularizer("diffusion")(ddf)) == pytest.approx(b**2 / 3, rel=1e-6)


def test_unknown_regularizer():
    with pytest.raises(ValueError, match="regularizer: .* is not one of"):
        make_regularizer("tv")
