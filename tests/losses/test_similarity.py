import numpy as np
import pytest
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

from deepatlas.losses import LocalNCCLoss, MSELoss, make_similarity


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
