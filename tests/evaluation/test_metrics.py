import math

import pytest
import torch

from deepatlas.evaluation import dice_per_class, fold_fraction, jacobian_determinant


def test_dice_hand_case():
    pred = torch.tensor([0, 1, 1, 2, 2, 0])
    target = torch.tensor([0, 1, 2, 2, 2, 1])
    dice = dice_per_class(pred, target, 4)
    # class 1: |P|=2, |T|=2, overlap 1 -> 0.5; class 2: |P|=2, |T|=3, overlap 2 -> 0.8; class 3 absent -> NaN
    assert dice[0] == pytest.approx(0.5)
    assert dice[1] == pytest.approx(0.8)
    assert math.isnan(dice[2])


def test_jacobian_of_an_affine_field():
    # x -> x + u(x) with u = (A - I) x has Jacobian determinant det(A) everywhere
    A = torch.tensor([[1.2, 0.1, 0.0], [0.0, 0.9, 0.0], [0.05, 0.0, 1.1]], dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in (6, 7, 8)], indexing="ij"))
    u = torch.einsum("ij,j...->i...", A - torch.eye(3, dtype=torch.float64), grid)[None]
    det = jacobian_determinant(u)
    assert torch.allclose(det, torch.full_like(det, float(torch.det(A))), atol=1e-5)


def test_folds_on_a_field_with_a_known_fold():
    # along axis 0, u_0 = -1.5 x on a slab: d(x+u)/dx = -0.5 < 0 there -> folded
    u = torch.zeros(1, 2, 20, 10)
    x = torch.arange(20, dtype=torch.float32)
    u[0, 0] = torch.where((x >= 5) & (x < 10), -1.5 * (x - 5), torch.where(x >= 10, torch.tensor(-7.5), 0 * x))[:, None]
    det = jacobian_determinant(u)
    # phi(x) = x + u_0; central difference at row r is (phi(r+1) - phi(r-1)) / 2:
    # r=5: (4.5 - 4)/2 = 0.25; r=6..9: (2 - 3)/2 = -0.5; r=10: (3.5 - 3)/2 = 0.25
    folded_rows = (det[0] <= 0).all(dim=1).nonzero().flatten().tolist()
    assert folded_rows == [6, 7, 8, 9]
    assert det[0, 7, 0] == pytest.approx(-0.5)
    assert fold_fraction(u) == pytest.approx(4 / 20)
    assert fold_fraction(torch.zeros(1, 2, 20, 10)) == 0.0


def test_hd95_hand_case_and_monai_agreement():
    import numpy as np
    from monai.metrics import compute_hausdorff_distance

    from deepatlas.evaluation import hausdorff95

    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b[5:10, 8:13] = True  # the same square shifted by 3 voxels along axis 1
    # every surface voxel of a is 0 or 3 voxels from b's surface; 95th percentile: 3 voxels = 6 mm at 2 mm
    assert hausdorff95(a, b, (2.0, 2.0)) == pytest.approx(6.0)
    rng = np.random.default_rng(0)
    p = np.zeros((24, 22, 20), bool)
    t = np.zeros_like(p)
    p[4:15, 3:18, 5:12] = True
    t[6:17, 5:16, 4:14] = True
    p &= rng.random(p.shape) > 0.1
    ours = hausdorff95(p, t, (1.0, 1.5, 2.0))
    monai = compute_hausdorff_distance(
        torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None], percentile=95, spacing=(1.0, 1.5, 2.0)
    )
    assert ours == pytest.approx(float(monai), rel=1e-5)
    assert math.isnan(hausdorff95(np.zeros((4, 4), bool), np.zeros((4, 4), bool), (1, 1)))
    assert hausdorff95(a, np.zeros_like(a), (1, 1)) == float("inf")


def test_sd_log_jacobian():
    import numpy as np

    from deepatlas.evaluation import sd_log_jacobian

    assert sd_log_jacobian(np.ones((4, 4))) == 0.0
    jac = np.array([np.e, 1 / np.e])  # log J = +1, -1 -> std 1
    assert sd_log_jacobian(jac) == pytest.approx(1.0)
    assert sd_log_jacobian(np.array([np.e, 1 / np.e, 5.0]), mask=np.array([True, True, False])) == pytest.approx(1.0)


def test_folds_of_a_non_finite_field_are_nan_not_zero():
    import math

    import torch

    from deepatlas.evaluation.metrics import fold_fraction, folded_fraction

    field = torch.zeros(1, 3, 6, 6, 6)
    assert fold_fraction(field) == 0.0
    field[0, 0, 2, 2, 2] = float("nan")
    assert math.isnan(fold_fraction(field))
    assert math.isnan(folded_fraction(torch.tensor([1.0, float("inf")])))
    assert folded_fraction(torch.tensor([1.0, -0.5])) == 0.5
