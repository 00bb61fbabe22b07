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


def _bending_by_autograd(field):
    """The bending energy from its definition, written independently of the module: each second
    derivative by torch's own finite differences (``torch.diff`` twice along one axis, the compact
    ``[1, -2, 1]``; ``torch.gradient``, central, along each of two axes for a mixed one), kept on
    the voxels interior along every axis, differentiated by autograd."""
    dims = field.ndim - 2
    axes = [2 + d for d in range(dims)]

    def interior(t, skip=()):
        return t[(slice(None), slice(None), *(slice(None) if a in skip else slice(1, -1) for a in axes))]

    pure = [interior(torch.diff(field, n=2, dim=a), skip=(a,)) for a in axes]
    mixed = [
        interior(torch.gradient(torch.gradient(field, dim=a)[0], dim=b)[0])
        for i, a in enumerate(axes)
        for b in axes[i + 1 :]
    ]
    # u_ab and u_ba: each mixed derivative twice
    return (sum(t.square().sum() for t in pure) + 2 * sum(t.square().sum() for t in mixed)) / pure[0].numel()


@pytest.mark.parametrize("shape", [(2, 3, 9, 7, 8), (3, 2, 6, 11), (1, 3, 3, 4, 3)])
def test_bending_energy_backward_equals_autograds(shape):
    """Its backward is written out by hand (3x faster): the same gradient as autograd's."""
    torch.manual_seed(0)
    ours_field = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    reference_field = ours_field.detach().clone().requires_grad_()
    ours, reference = make_regularizer("bending")(ours_field), _bending_by_autograd(reference_field)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-12)
    (3 * ours).backward()
    (3 * reference).backward()
    torch.testing.assert_close(ours_field.grad, reference_field.grad, rtol=1e-10, atol=1e-12)
    small = ours_field.detach()[:1, :, :5, :5].clone().requires_grad_()
    assert torch.autograd.gradcheck(make_regularizer("bending"), (small,))


@pytest.mark.skipif(
    tuple(int(v) for v in __import__("monai").__version__.split(".")[:2]) < (1, 6),
    reason="MONAI's bending energy uses compact stencils from 1.6 on",
)
def test_bending_energy_is_monais():
    from monai.losses import BendingEnergyLoss

    torch.manual_seed(0)
    field = torch.randn(2, 3, 9, 7, 8, dtype=torch.float64)
    assert make_regularizer("bending")(field).item() == pytest.approx(BendingEnergyLoss()(field).item(), rel=1e-12)


def test_bending_energy_refuses_fields_it_cannot_differentiate():
    with pytest.raises(ValueError, match="every spatial size > 2"):
        make_regularizer("bending")(torch.zeros(1, 3, 8, 2, 8))
    with pytest.raises(ValueError, match="needs a field B x 3 x spatial"):
        make_regularizer("bending")(torch.zeros(1, 2, 8, 8, 8))
