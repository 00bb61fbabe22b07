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
