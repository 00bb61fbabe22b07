import pytest
import torch
from monai.losses import DiceCELoss

from deepatlas.losses import SupervisedSegLoss
from deepatlas.losses.segmentation import dice_ce_loss


@pytest.mark.parametrize("shape", [(2, 5, 6, 7, 8), (3, 4, 9, 9)])
def test_dice_ce_equals_monai(shape):
    torch.manual_seed(0)
    logits = torch.randn(shape)
    labels = torch.randint(0, shape[1], (shape[0], 1) + shape[2:])
    monai = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)(logits, labels)
    assert float(dice_ce_loss(logits, labels)) == pytest.approx(float(monai), rel=1e-5)


def test_confident_correct_logits_give_small_loss():
    labels = torch.randint(0, 3, (1, 1, 6, 6, 6))
    logits = 20 * torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    assert float(SupervisedSegLoss()(logits, labels)) < 1e-3
    assert float(SupervisedSegLoss()(-logits, labels)) > 1.0


def test_dice_ce_hand_case():
    # 2 voxels, 2 classes; logits give p(class 1) = sigmoid(l1 - l0): voxel A 0.5 (labelled 1), voxel B 0.2 (labelled 0)
    import math

    pb = 0.2
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(pb / (1 - pb))]]]).permute(0, 2, 1).reshape(1, 2, 2)
    labels = torch.tensor([[[1, 0]]])
    ce = -(math.log(0.5) + math.log(1 - pb)) / 2
    dice1 = 2 * 0.5 / (0.5 + pb + 1)  # foreground only: overlap 0.5, sum p = 0.7, sum t = 1
    expected = (1 - dice1) + ce
    assert float(dice_ce_loss(logits, labels)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("shape", [(2, 5, 6, 7, 8), (3, 4, 9, 9), (1, 2, 30)])
def test_dice_ce_gradient_equals_monai(shape):
    """The gradient is written out by hand (fewer passes over the map): it must be MONAI's."""
    torch.manual_seed(1)
    logits = (3 * torch.randn(shape, dtype=torch.float64)).requires_grad_()
    theirs = logits.detach().clone().requires_grad_()
    labels = torch.randint(0, shape[1], (shape[0], 1) + shape[2:])
    labels.view(-1)[0] = shape[1] - 1  # every class can be absent from some images, but not all
    ours = dice_ce_loss(logits, labels, dice_weight=0.7, ce_weight=1.3)
    reference = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, lambda_dice=0.7, lambda_ce=1.3)
    expected = reference(theirs, labels)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-9)
    (2.5 * ours).backward()
    (2.5 * expected).backward()
    torch.testing.assert_close(logits.grad, theirs.grad, rtol=1e-8, atol=1e-12)
