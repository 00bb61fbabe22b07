import numpy as np
import pytest
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

from deepatlas.losses import LocalNCCLoss, MSELoss, make_similarity
from deepatlas.losses.similarity import (
    LocalNCCToFixed,
    MINDToFixed,
    _LNCCToFixed,
    box_filter,
    local_ncc_map,
    mind_ssc,
)


def brute_force_lncc(p: np.ndarray, t: np.ndarray, w: int, eps: float = 1e-5) -> float:
    """The definition, voxel by voxel, with zero padding."""
    h = w // 2
    pp, tp = np.pad(p, h), np.pad(t, h)
    values = []
    for idx in np.ndindex(p.shape):
        window = tuple(slice(i, i + w) for i in idx)
        a, b = pp[window].ravel(), tp[window].ravel()
        cross = (a * b).sum() - a.sum() * b.sum() / a.size
        va = max((a * a).sum() - a.sum() ** 2 / a.size, eps)
        vb = max((b * b).sum() - b.sum() ** 2 / b.size, eps)
        values.append(cross * cross / (va * vb))
    return -float(np.mean(values))


@pytest.mark.parametrize("shape", [(6, 5, 7), (9, 8)])
def test_lncc_matches_definition(shape):
    rng = np.random.default_rng(0)
    p, t = rng.random(shape), rng.random(shape)
    loss = LocalNCCLoss(window=3)(torch.tensor(p)[None, None], torch.tensor(t)[None, None])
    assert float(loss) == pytest.approx(brute_force_lncc(p, t, 3), rel=1e-4)


def test_lncc_matches_monai_rectangular_kernel():
    torch.manual_seed(0)
    p, t = torch.rand(2, 1, 12, 10, 14), torch.rand(2, 1, 12, 10, 14)
    ours = LocalNCCLoss(window=5)(p, t)
    monai = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=5, kernel_type="rectangular")(p, t)
    assert float(ours) == pytest.approx(float(monai), rel=1e-4)


def test_lncc_is_minus_one_for_a_contrast_change():
    # zero padding at the border is also scaled, so a pure gain is a local linear change everywhere
    torch.manual_seed(0)
    image = torch.rand(1, 1, 10, 10, 10)
    assert float(LocalNCCLoss(5)(image, 3 * image)) == pytest.approx(-1.0, abs=1e-4)


def test_lncc_gradient_improves_alignment():
    torch.manual_seed(0)
    target = torch.rand(1, 1, 12, 12)
    pred = (target + 0.5 * torch.rand(1, 1, 12, 12)).requires_grad_()
    loss = LocalNCCLoss(5)(pred, target)
    loss.backward()
    with torch.no_grad():
        better = LocalNCCLoss(5)(pred - 0.1 * pred.grad / pred.grad.abs().max(), target)
    assert better < loss


def test_lncc_rejects_even_window():
    with pytest.raises(ValueError, match="odd"):
        LocalNCCLoss(window=4)


def test_mse_hand_value():
    a = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    b = torch.zeros_like(a)
    assert float(MSELoss()(a, b)) == pytest.approx((0 + 1 + 4 + 9) / 4)


def test_make_similarity_names():
    assert isinstance(make_similarity("mse"), MSELoss)
    with pytest.raises(ValueError, match="similarity: .* is not one of"):
        make_similarity("mi")


@pytest.mark.parametrize("shape", [(1, 1, 12, 10, 9), (2, 1, 9, 11)])
def test_lncc_to_fixed_has_the_gradient_of_its_definition(shape):
    """The closed-form backward of LocalNCCToFixed equals autograd through the plain formula,
    flat (variance-floored) regions of both images included."""
    torch.manual_seed(0)
    fixed, pred = torch.rand(shape, dtype=torch.float64), torch.rand(shape, dtype=torch.float64)
    fixed[..., :3], pred[..., -2:] = 0.0, 0.5
    pred.requires_grad_(True)
    ours = LocalNCCToFixed(fixed, window=5)
    ours.fixed, ours.t_mean, ours.t_var = _double_statistics(fixed, 5, ours.n, ours.eps)
    value = _LNCCToFixed.apply(pred, ours)
    (grad,) = torch.autograd.grad(value, pred)
    pred_ref = pred.detach().clone().requires_grad_(True)
    reference = -local_ncc_map(pred_ref.double(), fixed, 5).mean()
    (grad_ref,) = torch.autograd.grad(reference, pred_ref)
    assert float(value) == pytest.approx(float(reference), rel=1e-5)
    assert torch.allclose(grad, grad_ref, rtol=1e-4, atol=1e-9)


def _double_statistics(fixed, window, n, eps):
    """The fixed image's windowed mean and variance in float64 (the loss keeps float32 ones)."""
    t_mean, tt = torch.chunk(box_filter(torch.cat([fixed, fixed * fixed], 1), window), 2, dim=1)
    return fixed, t_mean, torch.clamp((tt - t_mean * t_mean) * n, min=eps)


@pytest.mark.parametrize("window", [3, 5, 11])
def test_box_filter_is_a_zero_padded_mean(window):
    x = torch.rand(1, 2, 9, 8, 7, dtype=torch.float64)
    kernel = torch.full((2, 1, window, window, window), 1.0 / window**3, dtype=torch.float64)
    expected = torch.nn.functional.conv3d(x, kernel, padding=window // 2, groups=2)
    assert torch.allclose(box_filter(x, window), expected)


@pytest.mark.parametrize("shape, channels", [((1, 1, 12, 14, 10), 12), ((2, 1, 16, 12), 4)])
def test_mind_descriptors_follow_structure_not_intensity(shape, channels):
    generator = torch.Generator().manual_seed(0)
    image = box_filter(torch.rand(shape, generator=generator), 3)
    described = mind_ssc(image)
    assert described.shape == (shape[0], channels, *shape[2:])
    assert float(described.min()) > 0 and float(described.max()) <= 1
    # an affine intensity change, inversion included (another contrast's simplest model), keeps them
    torch.testing.assert_close(mind_ssc(0.2 - 3 * image), described, rtol=1e-3, atol=1e-4)
    # a shifted image does not
    assert float((mind_ssc(image.roll(2, -1)) - described).abs().mean()) > 0.05


def test_mind_to_fixed_is_zero_at_alignment_and_warps_prepared_descriptors():
    generator = torch.Generator().manual_seed(1)
    fixed = box_filter(torch.rand(1, 1, 12, 14, 10, generator=generator), 3)
    loss = MINDToFixed(fixed)
    assert float(loss(loss.to_warp(1 - fixed))) < 1e-6
    assert float(loss(loss.to_warp(fixed.roll(2, -1)))) > 1e-3
