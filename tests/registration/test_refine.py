"""Instance optimisation on a real pair of ixi-2mm brains (pooled to 4 mm to stay fast)."""

import pytest
import torch

from deepatlas.config import Config, RefineConfig
from deepatlas.evaluation.metrics import fold_fraction
from deepatlas.losses.similarity import LocalNCCLoss
from deepatlas.networks import RegistrationNet
from deepatlas.registration import InstanceOptimizer, build_pipeline
from deepatlas.registration.fields import warp
from deepatlas.registration.refine import Deformation
from tests.registration.conftest import pair_dice


def _settings(**kw):
    return RefineConfig(**{"levels": [2, 1], "iterations": [30, 15], "control_spacing": 1, **kw})


def test_refinement_lowers_the_loss_and_raises_dice(pair):
    (moving, fixed), labels, scheme = pair
    field = InstanceOptimizer(_settings())(moving, fixed).field
    lncc = LocalNCCLoss(window=5)
    assert float(lncc(warp(moving, field), fixed)) < float(lncc(moving, fixed)) - 0.05
    before = pair_dice(torch.zeros_like(field), labels, scheme)
    assert pair_dice(field, labels, scheme) > before + 0.05
    assert fold_fraction(field) < 0.001


def test_refinement_improves_on_its_start(pair):
    """Starting from a deformation, refinement keeps what it gets and adds to it."""
    (moving, fixed), labels, scheme = pair
    coarse = InstanceOptimizer(_settings(levels=[2], iterations=[20]))(moving, fixed)
    refined = InstanceOptimizer(_settings(levels=[1], iterations=[20]))(moving, fixed, coarse)
    assert pair_dice(refined.field, labels, scheme) > pair_dice(coarse.field, labels, scheme)


def test_diffeomorphic_refinement_does_not_fold(pair):
    (moving, fixed), labels, scheme = pair
    result = InstanceOptimizer(_settings(regularizer_weight=0.1, lr=1.0), diffeomorphic=True)(moving, fixed)
    assert result.velocity is not None
    assert fold_fraction(result.field) < 1e-4
    # the velocity lives on a grid 2x coarser than these (already 4 mm) images: a smaller gain
    assert pair_dice(result.field, labels, scheme) > pair_dice(torch.zeros_like(result.field), labels, scheme) + 0.03


@pytest.mark.parametrize("form", ["compose", "flow"])
def test_composed_refinement_keeps_its_start_and_adds_to_it(pair, form):
    """``refine.form`` compose / flow: a residual after the start's deformation, penalised alone; the flow
    (a diffeomorphism) adds no folds to its start's, even at a weak penalty."""
    (moving, fixed), labels, scheme = pair
    start = InstanceOptimizer(_settings(levels=[2], iterations=[20]))(moving, fixed)
    settings = _settings(levels=[2, 1], iterations=[10, 20], form=form, regularizer_weight=0.1)
    refined = InstanceOptimizer(settings)(moving, fixed, start)
    assert refined.velocity is None  # a composition has no single velocity: inverted by fixed point
    assert pair_dice(refined.field, labels, scheme) > pair_dice(start.field, labels, scheme) + 0.01
    if form == "flow":
        assert fold_fraction(refined.field) <= fold_fraction(start.field) + 1e-4


def test_composed_refinement_does_not_pull_its_start_back(pair):
    """Moving = fixed seen through a known smooth deformation, refined from that deformation under a strong
    penalty: the additive form's penalty on the total field pulls the start back toward the identity; the
    composed forms penalise only their own residual, so the start stays."""
    (_, fixed), _, _ = pair
    grid = torch.stack(torch.meshgrid(*[torch.linspace(0, 3.14, n) for n in fixed.shape[2:]], indexing="ij"))
    known = (1.5 * torch.sin(grid) * torch.cos(grid.roll(1, 0)))[None]
    moving = warp(fixed, -known)  # approximately: moving(x + known(x)) = fixed(x)

    def drift(form: str) -> float:
        settings = _settings(levels=[1], iterations=[10], form=form, regularizer_weight=50.0)
        refined = InstanceOptimizer(settings)(moving, fixed, Deformation(known.clone()))
        return float((refined.field - known).abs().mean())

    added = drift("add")
    assert added > 0.25 * float(known.abs().mean())
    assert drift("compose") < 0.5 * added and drift("flow") < 0.6 * added


def test_anatomy_term_pulls_segmentations_together(pair):
    """With the true labels as the 'segmentations', the anatomy term must raise label overlap.

    (At this test's 4 mm the maps must stay at the images' resolution: pooled once more, the
    soft Dice rewards fields that avoid interpolating the maps more than it rewards overlap.)"""
    from deepatlas.losses.downsample import label_fractions
    from deepatlas.registration import Anatomy

    (moving, fixed), labels, scheme = pair
    anatomy = Anatomy(
        label_fractions(labels[0], scheme.num_classes, 1), label_fractions(labels[1], scheme.num_classes, 1), 1
    )
    plain = InstanceOptimizer(_settings())(moving, fixed).field
    guided = InstanceOptimizer(_settings(anatomy_weight=2.0))(moving, fixed, None, anatomy).field
    assert pair_dice(guided, labels, scheme) > pair_dice(plain, labels, scheme) + 0.01


def test_pipeline_starts_from_the_net_and_net_only_matches_the_net(pair):
    (moving, fixed), _, _ = pair
    config = Config()
    config.reg_net.channels, config.reg_net.strides = [4, 8, 8], [2, 2]
    net = RegistrationNet(3, [4, 8, 8], [2, 2]).eval()
    torch.nn.init.normal_(net.head.weight, std=0.01)
    with torch.no_grad():
        expected = net(moving, fixed)
    config.refine.enabled = False
    assert torch.allclose(build_pipeline(config, net)(moving, fixed).field, expected)
    config.refine = _settings(levels=[1], iterations=[5])
    refined = build_pipeline(config, net)(moving, fixed).field
    assert not torch.allclose(refined, expected)


@pytest.mark.parametrize(
    "override, message",
    [
        ("iterations=[0,20]", "refine.iterations"),
        ("regularizer_weight=-1", "refine.regularizer_weight"),
        ("anatomy_weight=-0.5", "refine.anatomy_weight"),
        ("adam_eps=-0.1", "refine.adam_eps"),
        ("levels=[2]", "same, non-zero number"),
        ("lr=0", "refine.lr"),
        ("lncc_window=4", "refine.lncc_window"),
        ("iterations=fast", "refine.iterations"),
        ("form=sum", "refine.form"),
        ("method=greedy;form=flow", "refine.form=flow is a form of refine.method=adam"),
    ],
)
def test_bad_settings_name_the_setting(override, message):
    with pytest.raises(ValueError, match=message):
        RefineConfig().with_overrides(override.split(";"))


def test_mutual_information_registers_a_remapped_contrast(pair):
    """The moving brain with a non-monotonic intensity remapping (no linear relation to the
    fixed one, as between contrasts): MI refinement still aligns the labels."""
    (moving, fixed), labels, scheme = pair
    remapped = torch.where(moving > 0.05, 0.5 + 0.45 * torch.sin(3 * torch.pi * moving), torch.zeros_like(moving))
    field = InstanceOptimizer(_settings(similarity="mi", iterations=[40, 20]))(remapped, fixed).field
    before = pair_dice(torch.zeros_like(field), labels, scheme)
    assert pair_dice(field, labels, scheme) > before + 0.04
    assert fold_fraction(field) < 0.001


def test_mind_registers_an_inverted_contrast(pair):
    """The moving brain with its intensities inverted inside the brain (dark white matter, as
    in T2): MIND-SSC descriptors do not see the inversion, so refinement still aligns labels."""
    (moving, fixed), labels, scheme = pair
    inverted = torch.where(moving > 0.05, 1.05 - moving, torch.zeros_like(moving))
    field = InstanceOptimizer(_settings(similarity="mind", regularizer_weight=0.1))(inverted, fixed).field
    before = pair_dice(torch.zeros_like(field), labels, scheme)
    assert pair_dice(field, labels, scheme) > before + 0.05
    assert fold_fraction(field) < 0.001


def test_pipeline_refines_the_velocity_of_a_diffeomorphic_net(pair):
    (moving, fixed), labels, scheme = pair
    config = Config()
    config.reg_net.diffeomorphic = True
    net = RegistrationNet(3, [4, 8, 8], [2, 2], diffeomorphic=True).eval()
    config.refine = _settings(levels=[2, 1], iterations=[20, 5])
    result = build_pipeline(config, net)(moving, fixed)
    assert result.velocity is not None and result.field.shape == (1, 3, 40, 48, 40)
    assert fold_fraction(result.field) < 1e-4
    assert pair_dice(result.field, labels, scheme) > pair_dice(torch.zeros_like(result.field), labels, scheme) + 0.02


def test_adam_steps_are_torch_adams_and_refinement_does_not_import_dynamo():
    """The refinement's written-out Adam takes torch.optim.Adam's steps exactly, and a refinement run
    leaves ``torch._dynamo`` unimported (torch.optim's first use imports it: seconds of every command)."""
    import subprocess
    import sys

    from deepatlas.registration.adam import AdamSteps

    torch.manual_seed(0)
    mine = torch.randn(2, 3, 5, 6, requires_grad=True)
    theirs = mine.detach().clone().requires_grad_(True)
    target = torch.randn(2, 3, 5, 6)
    steps, adam = AdamSteps(mine, lr=0.1, eps=1e-3), torch.optim.Adam([theirs], lr=0.1, eps=1e-3)
    for _ in range(30):
        for param, optimizer in ((mine, steps), (theirs, adam)):
            param.grad = None
            ((param - target) ** 4).sum().backward()
            optimizer.step()
    assert torch.allclose(mine, theirs, atol=1e-6) and float((mine - target).abs().mean()) < 0.5
    script = (
        "import sys, torch\n"
        "from deepatlas.config import RefineConfig\n"
        "from deepatlas.registration import InstanceOptimizer\n"
        "cfg = RefineConfig(levels=[2, 1], iterations=[3, 2])\n"
        "a, b = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)\n"
        "InstanceOptimizer(cfg)(a, b)\n"
        "assert 'torch._dynamo' not in sys.modules, 'refinement imported torch._dynamo'\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
