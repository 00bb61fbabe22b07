"""The segmentation step's objective: each labelled image once, the reg net only when it is needed."""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.blocks import Warp

from deepatlas.config import LossConfig
from deepatlas.data.pairs import PairBatch
from deepatlas.networks import RegistrationNet, SegmentationNet
from deepatlas.training.objectives import DeepAtlasObjectives

CLASSES = 4


def _objectives(anatomy_weight_seg=1.0, teacher_loss="anatomy"):
    torch.manual_seed(0)
    reg_net = RegistrationNet(2, (8, 16), (2,))
    with torch.no_grad():  # a new reg net predicts zero: perturb it so that warps differ
        for weights in reg_net.parameters():
            weights.add_(0.1 * torch.randn_like(weights))
    seg_net = SegmentationNet(2, CLASSES, (8, 16), (2,))
    return DeepAtlasObjectives(
        reg_net, seg_net, CLASSES, LossConfig(anatomy_weight_seg=anatomy_weight_seg), teacher_loss=teacher_loss
    )


def _one_shot_batch(group="moving"):
    """Two pairs between one labelled image (position 0) and two unlabelled ones (1, 2)."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(3, 1, 16, 16, generator=generator)
    labels = torch.randint(CLASSES, (3, 1, 16, 16), generator=generator)
    if group == "moving":
        return PairBatch("moving", images[[0, 0]], images[[1, 2]], labels[[0, 0]], None, [0, 0], [1, 2]), labels
    return PairBatch("fixed", images[[1, 2]], images[[0, 0]], None, labels[[0, 0]], [1, 2], [0, 0]), labels


# independent references: MONAI's losses and warp, and the anatomy loss's definition on a 16x16
# grid pooled 2x (LossConfig's anatomy_downsample): labels one-hot and averaged per 2x2 block,
# logits averaged and then soft-maxed, the field averaged and halved into coarse voxels
def _dice_ce(logits, labels):
    """The supervised loss as MONAI computes it: foreground Dice + cross-entropy."""
    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)(logits, labels)


def _coarse_labels(labels):
    return F.avg_pool2d(F.one_hot(labels[:, 0], CLASSES).movedim(-1, 1).float(), 2)


def _coarse_prediction(logits):
    return torch.softmax(F.avg_pool2d(logits, 2), dim=1)


def _soft_dice_loss(pred, target):
    """1 - mean foreground soft Dice, per image and class, smoothed by 1e-5 (absent classes: 1)."""
    intersection, total = (pred * target)[:, 1:].sum((2, 3)), (pred + target)[:, 1:].sum((2, 3))
    return 1 - ((2 * intersection + 1e-5) / (total + 1e-5)).mean()


def _anatomy(moving_seg, fixed_seg, ddf):
    warped = Warp(mode="bilinear", padding_mode="border")(moving_seg, F.avg_pool2d(ddf, 2) / 2)
    return _soft_dice_loss(warped, fixed_seg)


def _seg_net_inputs(objectives, batch, **kwargs):
    inputs = []
    hook = objectives.seg_net.register_forward_hook(lambda m, inp, out: inputs.append(inp[0]))
    losses = objectives.segmentation(batch, **kwargs)
    hook.remove()
    return losses, inputs


def test_distinct_labelled_keeps_each_labelled_image_once():
    batch, labels = _one_shot_batch()
    images, kept = batch.distinct_labelled()
    assert images.shape[0] == 1 and torch.equal(images[0], batch.moving[0]) and torch.equal(kept[0], labels[0])
    both = PairBatch("both", batch.moving, batch.moving.flip(0), labels[[0, 0]], labels[[0, 0]], [0, 4], [4, 0])
    assert both.distinct_labelled()[0].shape[0] == 2
    unlabelled = PairBatch("neither", batch.moving, batch.fixed, None, None, [0, 0], [1, 2])
    with pytest.raises(ValueError, match="no labelled image"):
        unlabelled.distinct_labelled()


@pytest.mark.parametrize("group", ["moving", "fixed"])
def test_one_shot_step_runs_the_seg_net_on_three_volumes_with_the_loss_of_four(group):
    objectives = _objectives()
    batch, _ = _one_shot_batch(group)
    losses, inputs = _seg_net_inputs(objectives, batch)
    labelled, unlabelled = (batch.moving, batch.fixed) if group == "moving" else (batch.fixed, batch.moving)
    labels = batch.moving_labels if group == "moving" else batch.fixed_labels
    assert len(inputs) == 2 and torch.equal(inputs[0], labelled[:1]) and torch.equal(inputs[1], unlabelled)
    # the supervised term on the repeated image equals the term on one copy, as does its gradient
    params = list(objectives.seg_net.parameters())
    twice = _dice_ce(objectives.seg_net(labelled), labels)
    assert losses["supervised"].item() == pytest.approx(twice.item(), rel=1e-5)
    for a, b in zip(torch.autograd.grad(losses["supervised"], params), torch.autograd.grad(twice, params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # the anatomy term: the labelled side's labels and the unlabelled side's prediction, through the reg net
    known, predicted = _coarse_labels(labels), _coarse_prediction(objectives.seg_net(unlabelled))
    with torch.no_grad():
        ddf = objectives.reg_net(batch.moving, batch.fixed)
    assert ddf.abs().max() > 0.5  # warps that matter
    pair = (known, predicted) if group == "moving" else (predicted, known)
    assert losses["anatomy"].item() == pytest.approx(_anatomy(*pair, ddf).item(), rel=1e-5)
    assert losses["loss"].item() == pytest.approx((losses["supervised"] + losses["anatomy"]).item(), rel=1e-6)


def test_teachers_replace_the_reg_net_and_no_anatomy_weight_skips_the_unlabelled_side():
    objectives = _objectives()
    batch, labels = _one_shot_batch()
    calls = []
    objectives.reg_net.register_forward_hook(lambda *args: calls.append(1))
    teachers = labels[[1, 2]]
    losses, inputs = _seg_net_inputs(objectives, batch, teachers=teachers)
    assert calls == [] and torch.equal(inputs[1], batch.fixed)
    expected = _soft_dice_loss(_coarse_prediction(objectives.seg_net(batch.fixed)), _coarse_labels(teachers))
    assert losses["anatomy"].item() == pytest.approx(expected.item(), rel=1e-5)
    objectives.segmentation(batch)
    assert calls == [1]  # without teachers the frozen reg net warps the labels
    quiet = _objectives(anatomy_weight_seg=0.0)
    quiet.reg_net.register_forward_hook(lambda *args: calls.append(2))
    losses, inputs = _seg_net_inputs(quiet, batch)
    assert len(inputs) == 1 and set(losses) == {"supervised", "loss"} and calls == [1]


def test_supervised_teachers_are_taken_as_manual_labels_at_full_resolution():
    batch, labels = _one_shot_batch()
    teachers = labels[[1, 2]]
    coarse = _objectives()
    full = _objectives(teacher_loss="supervised")
    losses = full.segmentation(batch, teachers)
    expected = _dice_ce(full.seg_net(batch.fixed), teachers)
    assert losses["anatomy"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses["anatomy"].item() != pytest.approx(coarse.segmentation(batch, teachers)["anatomy"].item(), rel=1e-3)
    # one voxel of the teacher counts
    moved = teachers.clone()
    moved[..., 0, 0] = (moved[..., 0, 0] + 1) % CLASSES
    assert full.segmentation(batch, moved)["anatomy"].item() != pytest.approx(losses["anatomy"].item(), rel=1e-6)


def test_the_soft_dice_share_of_the_supervised_loss_is_a_checked_setting():
    from deepatlas.config import Config
    from deepatlas.losses.segmentation import SupervisedSegLoss

    config = Config()
    config.loss.supervised_dice_weight = -1.0
    with pytest.raises(ValueError, match="loss.supervised_dice_weight"):
        config.validate()
    logits = torch.randn(1, 3, 6, 6, 6)
    labels = torch.randint(0, 3, (1, 1, 6, 6, 6))
    ce_only = SupervisedSegLoss(dice_weight=0.0)(logits, labels)
    expected = torch.nn.functional.cross_entropy(logits, labels[:, 0])
    assert torch.allclose(ce_only, expected, atol=1e-5)
    config.loss.supervised_dice_weight = 0.25
    objectives = DeepAtlasObjectives(torch.nn.Identity(), torch.nn.Identity(), 3, config.loss)
    assert objectives.supervised.dice_weight == 0.25 and objectives.supervised.ce_weight == 1.0
