"""The segmentation step's objective: each labelled image once, the reg net only when it is needed."""

import pytest
import torch

from deepatlas.config import LossConfig
from deepatlas.data.pairs import PairBatch
from deepatlas.losses import soft_dice_loss
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
    twice = objectives.supervised(objectives.seg_net(labelled), labels)
    assert losses["supervised"].item() == pytest.approx(twice.item(), rel=1e-5)
    for a, b in zip(torch.autograd.grad(losses["supervised"], params), torch.autograd.grad(twice, params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # the anatomy term: the labelled side's labels and the unlabelled side's prediction, through the reg net
    anatomy = objectives.anatomy
    known = anatomy.from_labels(labels, CLASSES)
    predicted = anatomy.from_logits(objectives.seg_net(unlabelled))
    with torch.no_grad():
        ddf = objectives.reg_net(batch.moving, batch.fixed)
    pair = (known, predicted) if group == "moving" else (predicted, known)
    assert losses["anatomy"].item() == pytest.approx(anatomy(*pair, ddf).item(), rel=1e-5)
    assert losses["loss"].item() == pytest.approx((losses["supervised"] + losses["anatomy"]).item(), rel=1e-6)


def test_teachers_replace_the_reg_net_and_no_anatomy_weight_skips_the_unlabelled_side():
    objectives = _objectives()
    batch, labels = _one_shot_batch()
    calls = []
    objectives.reg_net.register_forward_hook(lambda *args: calls.append(1))
    teachers = labels[[1, 2]]
    losses, inputs = _seg_net_inputs(objectives, batch, teachers=teachers)
    assert calls == [] and torch.equal(inputs[1], batch.fixed)
    anatomy = objectives.anatomy
    expected = soft_dice_loss(
        anatomy.from_logits(objectives.seg_net(batch.fixed)),
        anatomy.from_labels(teachers, CLASSES),
        anatomy.include_background,
    )
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
    expected = full.supervised(full.seg_net(batch.fixed), teachers)
    assert losses["anatomy"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses["anatomy"].item() != pytest.approx(coarse.segmentation(batch, teachers)["anatomy"].item(), rel=1e-3)
    # one voxel of the teacher counts
    moved = teachers.clone()
    moved[..., 0, 0] = (moved[..., 0, 0] + 1) % CLASSES
    assert full.segmentation(batch, moved)["anatomy"].item() != pytest.approx(losses["anatomy"].item(), rel=1e-6)
