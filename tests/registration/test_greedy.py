"""The greedy-class refinement (``refine.method=greedy``): its pieces on known fields, then a real pair."""

import pytest
import torch

from deepatlas.config import Config, RefineConfig
from deepatlas.evaluation.metrics import dice_per_class, finite_mean, fold_fraction
from deepatlas.losses.similarity import LocalNCCLoss
from deepatlas.registration import GreedyOptimizer, InstanceOptimizer, build_pipeline
from deepatlas.registration.fields import warp
from deepatlas.registration.greedy import compose_step, gaussian_kernel, gaussian_smooth
from deepatlas.registration.refine import Deformation
from tests.conftest import IXI
from tests.registration.conftest import pair_dice

needs_data = pytest.mark.skipif(not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI}")
SHAPE = (12, 14, 10)


def _translation(*shift):
    return torch.tensor(shift, dtype=torch.float32).view(1, 3, 1, 1, 1).expand(1, 3, *SHAPE).contiguous()


def test_a_translation_composed_twice_is_twice_the_translation():
    t = _translation(1.5, -0.75, 0.25)
    assert torch.allclose(compose_step(t, t), 2 * t, atol=1e-5)


def test_the_step_is_applied_before_the_field():
    """``phi o (id + step)``: the field is read where the step lands, ``u(x + step(x))``."""
    ramp = torch.arange(SHAPE[0], dtype=torch.float32).view(1, 1, -1, 1, 1).expand(1, 1, *SHAPE)
    field = torch.cat([0.1 * ramp, torch.zeros(1, 2, *SHAPE)], 1)  # u_0(x) = 0.1 x_0
    step = _translation(2.0, 0.0, 0.0)
    composed = compose_step(field, step)
    inside = composed[0, 0, : SHAPE[0] - 2]  # x_0 + 2 still on the grid
    assert torch.allclose(inside, 2.0 + 0.1 * (ramp[0, 0, : SHAPE[0] - 2] + 2.0), atol=1e-5)


def test_gaussian_smoothing_keeps_constants_and_has_its_sigma():
    t = _translation(1.5, -0.75, 0.25)
    assert torch.allclose(gaussian_smooth(t, 1.732), t, atol=1e-5)
    delta = torch.zeros(1, 1, 21, 21, 21)
    delta[0, 0, 10, 10, 10] = 1.0
    blurred = gaussian_smooth(delta, 1.5)
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5)
    profile = blurred[0, 0, :, 10, 10] / blurred[0, 0, :, 10, 10].sum()
    offsets = torch.arange(-10, 11, dtype=torch.float32)
    assert float((profile * offsets**2).sum()) == pytest.approx(1.5**2, rel=0.05)
    assert len(gaussian_kernel(0.7071)) == 7


def test_settings_are_checked_and_select_the_optimiser():
    with pytest.raises(ValueError, match="refine.method"):
        RefineConfig(method="lbfgs").validate()
    with pytest.raises(ValueError, match="refine.anatomy_weight"):
        RefineConfig(method="greedy", anatomy_weight=1.0).validate()
    with pytest.raises(ValueError, match="refine.greedy_levels"):
        RefineConfig(greedy_levels=[4, 2], greedy_iterations=[1, 2, 3]).validate()
    with pytest.raises(ValueError, match="refine.greedy_epsilon"):
        RefineConfig(greedy_epsilon=0).validate()
    assert RefineConfig().method == "adam"  # the default stays until measured better
    config = Config()
    greedy = build_pipeline(config, None, refine=RefineConfig(method="greedy"))
    assert isinstance(greedy.stages[-1].optimizer, GreedyOptimizer)
    assert isinstance(build_pipeline(config, None).stages[-1].optimizer, InstanceOptimizer)


@needs_data
def test_greedy_lowers_the_loss_raises_dice_and_does_not_fold(pair):
    """Default greedy settings from the identity (its levels, at 4 mm, on 10 x 12 x 10 to 40 x 48 x 40)."""
    (moving, fixed), labels, scheme = pair
    optimizer = GreedyOptimizer(RefineConfig(method="greedy"))
    field = optimizer(moving, fixed).field
    lncc = LocalNCCLoss(window=5)
    assert float(lncc(warp(moving, field), fixed)) < float(lncc(moving, fixed)) - 0.05
    assert pair_dice(field, labels, scheme) > pair_dice(torch.zeros_like(field), labels, scheme) + 0.05
    assert fold_fraction(field) < 0.0005  # 0.05 % of the voxels
    finest = optimizer.losses[-RefineConfig().greedy_iterations[-1] :]
    assert finest[-1] < finest[0]


@needs_data
def test_greedy_improves_on_its_start_in_either_form(pair):
    """From a deformation (as from the net's field), both forms keep it and add to it."""
    (moving, fixed), labels, scheme = pair
    start = GreedyOptimizer(RefineConfig(greedy_levels=[4], greedy_iterations=[15]))(moving, fixed)
    before = pair_dice(start.field, labels, scheme)
    for residual in (False, True):
        settings = RefineConfig(greedy_levels=[2, 1], greedy_iterations=[15, 5], greedy_residual=residual)
        refined = GreedyOptimizer(settings)(moving, fixed, Deformation(start.field))
        assert pair_dice(refined.field, labels, scheme) > before + 0.01
        assert fold_fraction(refined.field) < 0.0005


@needs_data
def test_from_the_shipped_net_greedy_raises_dice_without_folds():
    """A validation pair at 2 mm, the shipped net's field refined with the mode's defaults."""
    from pathlib import Path

    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.data.labels import LabelScheme
    from deepatlas.data.splits import load_splits
    from deepatlas.inference import load_run
    from deepatlas.inference.apply import register_volumes

    run = load_run(Path(__file__).resolve().parents[2] / "models" / "brain-2mm")
    scheme = LabelScheme.from_file(IXI / "brain31.json")
    moving_id, fixed_id = load_splits(IXI / "splits.json")["validation"][:2]
    moving, fixed = (load_image(IXI / "images" / f"{i}.nii.gz") for i in (moving_id, fixed_id))
    labels = load_label_codes(IXI / "labels" / f"{moving_id}.nii.gz")
    truth = load_label_codes(IXI / "labels" / f"{fixed_id}.nii.gz").array
    truth = torch.from_numpy(scheme.encode(truth, unknown="background"))
    scores = {}
    for name, overrides in (("net", ["enabled=false"]), ("greedy", ["method=greedy"])):
        pipeline = build_pipeline(run.config, run.reg_net, run.seg_net, run.config.refine.with_overrides(overrides))
        result = register_volumes(run, moving, fixed, labels, pipeline=pipeline)
        warped = torch.from_numpy(scheme.encode(result.warped_labels, unknown="background"))
        scores[name] = finite_mean(dice_per_class(warped, truth, scheme.num_classes))
        brain = truth.numpy() > 0
        assert float((result.jacobian[brain] <= 0).mean()) < 0.0005  # 0.05 % of the brain
    assert scores["greedy"] > scores["net"] + 0.01


def test_gaussian_smoothing_takes_one_sigma_per_axis_and_refuses_a_wrong_count():
    delta = torch.zeros(1, 1, 15, 15, 15)
    delta[0, 0, 7, 7, 7] = 1.0
    blurred = gaussian_smooth(delta, [1.5, 0.0, 1.5])[0, 0]
    assert float(blurred[7, 6].abs().max()) == 0.0  # the second axis unsmoothed
    assert torch.allclose(blurred, gaussian_smooth(gaussian_smooth(delta, [1.5, 0, 0]), [0, 0, 1.5])[0, 0])
    with pytest.raises(ValueError, match="2 sigmas for 3 spatial axes"):
        gaussian_smooth(delta, [1.0, 1.0])
