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
