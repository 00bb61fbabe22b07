"""The label term of refinement: the moving image's labels against the fixed image's probabilities."""

import pytest
import torch

from deepatlas.cli.main import main
from deepatlas.config import Config, RefineConfig
from deepatlas.evaluation.metrics import dice_per_class, finite_mean
from deepatlas.losses.downsample import label_fractions
from deepatlas.networks import RegistrationNet, SegmentationNet
from deepatlas.registration import Anatomy, InstanceOptimizer, build_pipeline
from deepatlas.registration.fields import warp
from deepatlas.registration.refine import label_class_weights, label_loss
from tests.conftest import IXI, real_brains_4mm

real_data = pytest.mark.skipif(not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI}")


def test_class_weights_are_count_to_the_minus_0_3_normalised_over_present_classes():
    labels = torch.tensor([0] * 1000 + [1] * 100 + [3] * 10).view(1, 1, -1)
    weights = label_class_weights(labels, 5)[0].double()
    raw = torch.tensor([1000.0, 100.0, 10.0], dtype=torch.float64).pow(-0.3)
    expected = raw / raw.mean()
    assert torch.allclose(weights[[0, 1, 3]], expected, rtol=1e-6)
    assert weights[2] == 0 and weights[4] == 0  # absent classes weigh nothing
    assert weights[[0, 1, 3]].mean() == pytest.approx(1.0)
    assert weights[3] > weights[1] > weights[0]  # small structures count more per voxel


def test_label_loss_is_the_class_weighted_squared_difference():
    warped, fixed = torch.rand(2, 3, 4, 5, 6), torch.rand(2, 3, 4, 5, 6)
    weights = torch.tensor([[0.5, 1.0, 1.5], [1.0, 1.0, 1.0]])
    expected = sum(weights[:, c, None, None, None] * (warped[:, c] - fixed[:, c]) ** 2 for c in range(3)).mean()
    assert float(label_loss(warped, fixed, weights)) == pytest.approx(float(expected), rel=1e-5)
    assert float(label_loss(fixed, fixed, weights)) == 0


def _settings(**kw):
    return RefineConfig(**{"levels": [2, 1], "iterations": [30, 15], **kw})


def _dice(field, moving_labels, fixed_labels, classes):
    warped = warp(moving_labels.double(), field.double(), mode="nearest").round().long()
    return finite_mean(dice_per_class(warped[0, 0], fixed_labels[0, 0], classes))


@real_data
def test_label_term_lowers_its_loss_and_raises_dice_on_a_real_pair():
    """Moving = a labelled brain; the fixed side's 'probabilities' are its true labels (the oracle of
    the issue's probe): the label term must pull the warped labels onto them."""
    images, labels, scheme = real_brains_4mm(2)
    moving, fixed, classes = images[:1], images[1:], scheme.num_classes
    anatomy = Anatomy(None, label_fractions(labels[1:], classes, 1), 1).with_labels(labels[:1])
    plain = InstanceOptimizer(_settings(label_weight=0.0))(moving, fixed, None, anatomy).field
    guided = InstanceOptimizer(_settings(label_weight=5.0))(moving, fixed, None, anatomy).field

    def term(field):
        return float(label_loss(warp(anatomy.moving_labels, field), anatomy.fixed, anatomy.label_weights))

    assert term(guided) < term(plain) * 0.9
    assert _dice(guided, labels[:1], labels[1:], classes) > _dice(plain, labels[:1], labels[1:], classes) + 0.01


def _tiny_pipeline_parts():
    torch.manual_seed(0)
    config = Config()
    config.reg_net.channels, config.reg_net.strides = [4, 8, 8], [2, 2]
    reg_net = RegistrationNet(3, [4, 8, 8], [2, 2]).eval()
    seg_net = SegmentationNet(3, 3, (4, 8, 8), (2, 2)).eval()
    moving, fixed = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    labels = (moving * 3).long().clamp(max=2)
    return config, reg_net, seg_net, moving, fixed, labels


def test_the_term_is_used_only_when_moving_labels_are_given():
    config, reg_net, seg_net, moving, fixed, labels = _tiny_pipeline_parts()
    refine = _settings(levels=[1], iterations=[5], label_weight=5.0)
    with_term = build_pipeline(config, reg_net, seg_net, refine)
    without = build_pipeline(config, reg_net, seg_net, _settings(levels=[1], iterations=[5], label_weight=0.0))
    today = without(moving, fixed).field
    assert torch.equal(with_term(moving, fixed).field, today)  # no labels: today's refinement exactly
    assert torch.equal(without(moving, fixed, labels).field, today)  # weight 0: labels ignored
    assert not torch.allclose(with_term(moving, fixed, labels).field, today)
    # the seg net sees the fixed image alone (no anatomy term), and greedy has no label term
    anatomy = with_term._anatomy(moving, fixed, labels)
    assert anatomy.moving is None and anatomy.moving_labels.shape == anatomy.fixed.shape
    greedy = build_pipeline(config, reg_net, seg_net, RefineConfig(method="greedy", greedy_iterations=[2, 1]))
    assert greedy.seg_net is None and torch.equal(greedy(moving, fixed, labels).field, greedy(moving, fixed).field)


def test_negative_label_weight_is_refused():
    with pytest.raises(ValueError, match="refine.label_weight"):
        RefineConfig().with_overrides(["label_weight=-1"])


def test_register_label_term_uses_the_labels_and_needs_them(trained_3d, phantoms_3d, tmp_path, capsys):
    import nibabel as nib

    images = sorted((phantoms_3d / "images").iterdir())
    labels = sorted((phantoms_3d / "labels").iterdir())
    base = ["register", str(trained_3d), "--moving", str(images[0]), "--fixed", str(images[1])]
    assert main(base + ["-o", str(tmp_path / "none"), "--label-term"]) == 2
    assert "--label-term needs the moving labels" in capsys.readouterr().err
    fields = {}
    for name, extra in (("plain", []), ("term", ["--label-term"])):
        out = tmp_path / name
        assert main(base + ["--moving-labels", str(labels[0]), "-o", str(out), *extra]) == 0
        (field,) = [p for p in out.iterdir() if p.name.endswith("_displacement.nii.gz")]
        fields[name] = nib.load(field).get_fdata()
    assert not (fields["plain"] == fields["term"]).all()
