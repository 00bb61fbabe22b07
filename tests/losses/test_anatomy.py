import pytest
import torch
import torch.nn.functional as F

from deepatlas.losses import AnatomyLoss, soft_dice_loss
from deepatlas.losses.downsample import downsample_maps, label_fractions


def onehot(labels, k):
    return F.one_hot(labels[:, 0].long(), k).movedim(-1, 1).float()


def test_soft_dice_hand_case():
    # class 1: pred 1 on 2 voxels, target 1 on 1 of them -> Dice 2*1/(2+1) = 2/3
    pred = torch.tensor([[[0.0, 0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0, 0.0]]]).reshape(1, 2, 4)
    target = torch.tensor([[[0.0, 1.0, 1.0, 1.0]], [[1.0, 0.0, 0.0, 0.0]]]).reshape(1, 2, 4)
    pred = torch.stack([1 - pred[:, 1], pred[:, 1]], 1).unsqueeze(-1)
    target = torch.stack([1 - target[:, 1], target[:, 1]], 1).unsqueeze(-1)
    assert float(soft_dice_loss(pred, target)) == pytest.approx(1 - 2 / 3, abs=1e-5)


def test_soft_dice_identical_and_disjoint():
    labels = torch.randint(0, 4, (2, 1, 6, 6, 6))
    assert float(soft_dice_loss(onehot(labels, 4), onehot(labels, 4))) == pytest.approx(0.0, abs=1e-6)
    a = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    a[..., :2] = 1
    b = torch.zeros_like(a)
    b[..., 2:] = 1
    assert float(soft_dice_loss(onehot(a, 2), onehot(b, 2))) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("shape", [(8, 6, 10), (7, 9, 5), (9, 11)])
def test_label_fractions_equal_pooled_one_hot(shape):
    labels = torch.randint(0, 5, (2, 1) + shape)
    expected = downsample_maps(onehot(labels, 5), 2)
    assert torch.allclose(label_fractions(labels, 5, 2), expected, atol=1e-6)


def test_anatomy_loss_is_zero_for_the_shift_that_aligns_labels():
    fixed = torch.zeros(1, 1, 16, 12, 12, dtype=torch.long)
    fixed[:, :, 4:10, 3:9, 3:9] = 1
    moving = torch.roll(fixed, shifts=2, dims=2)  # structure 2 voxels further along axis 0
    loss = AnatomyLoss(downsample=1)
    right = torch.zeros(1, 3, 16, 12, 12)
    right[:, 0] = 2.0  # warped(x) = moving(x + 2) = fixed(x)
    wrong = -right
    lr = loss(onehot(moving, 2), onehot(fixed, 2), right)
    lw = loss(onehot(moving, 2), onehot(fixed, 2), wrong)
    l0 = loss(onehot(moving, 2), onehot(fixed, 2), torch.zeros_like(right))
    assert float(lr) == pytest.approx(0.0, abs=1e-5)
    assert float(lw) > float(l0) > float(lr)


def test_anatomy_loss_downsampled_accepts_labels_and_gives_gradient():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 1, 8, 8, 8))
    loss = AnatomyLoss(downsample=2)
    ddf = torch.zeros(2, 3, 8, 8, 8, requires_grad=True)
    value = loss(loss.from_labels(labels, 3), loss.from_labels(labels.flip(2), 3), ddf)
    value.backward()
    assert ddf.grad.abs().sum() > 0
