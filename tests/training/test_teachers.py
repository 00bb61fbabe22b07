"""Teachers: refined atlas labels for unlabelled images, on a real ixi-2mm pair and in a training run."""

import json

import numpy as np
import pytest
import torch

from deepatlas.checkpoint import load_checkpoint
from deepatlas.config import Config
from deepatlas.data import load_training_data
from deepatlas.evaluation.metrics import dice_per_class, finite_mean
from deepatlas.networks import RegistrationNet
from deepatlas.networks.warp import warp_labels
from deepatlas.registration import build_pipeline
from deepatlas.training import Trainer
from deepatlas.training.run import train
from deepatlas.training.teachers import TeacherCache, seg_net_labels
from tests.conftest import real_brains_4mm, refine_only, tiny_config


@pytest.fixture(scope="module")
def brains(ixi):
    """Five real brains at 4 mm (40x48x40) with their brain31 classes."""
    return real_brains_4mm(5)


def _dice(a, b, scheme):
    return finite_mean(dice_per_class(a[0], b[0], scheme.num_classes))


def test_teacher_beats_the_unregistered_atlas_and_follows_refresh(brains):
    images, labels, scheme = brains
    calls = []

    def pipeline():
        calls.append(1)
        return refine_only([30, 15])()

    cache = TeacherCache(images, labels, [0], pipeline, refresh_steps=10)
    teacher = cache.labels_for([1, 2], step=0)
    assert teacher.shape == (2, 1, 40, 48, 40) and teacher.dtype == torch.long
    unregistered = np.mean([_dice(labels[0], labels[t], scheme) for t in (1, 2)])
    taught = np.mean([_dice(teacher[k], labels[t], scheme) for k, t in enumerate((1, 2))])
    assert taught > unregistered + 0.04  # measured 0.705 against 0.631
    assert len(calls) == 2 and cache.atlas == {1: [0], 2: [0]} and cache.seconds > 0
    cache.labels_for([1], step=9)  # fresh: kept
    assert len(calls) == 2
    cache.labels_for([1], step=10)  # stale: recomputed, with the pipeline of now
    assert len(calls) == 3 and cache.made_at[1] == 10


def test_teachers_come_from_the_current_reg_net(brains):
    """A teacher is the atlas labels warped by the pipeline of the moment (here: the net alone), by
    label interpolation."""
    images, labels, _ = brains
    torch.manual_seed(0)
    net = RegistrationNet(spatial_dims=3, channels=[8, 16, 16], strides=[2, 2]).eval()
    with torch.no_grad():  # a new net predicts the identity (zero last layer): perturb it
        for weights in net.parameters():
            weights.add_(0.2 * torch.randn_like(weights))
    config = Config()
    config.refine.enabled = False
    cache = TeacherCache(images, labels, [0], lambda: build_pipeline(config, net), refresh_steps=1)
    field = build_pipeline(config, net)(images[:1], images[1:2]).field
    assert float(field.abs().max()) > 0.5  # a random net moves voxels: the test can tell warps apart
    assert torch.equal(cache.labels_for([1], step=0), warp_labels(labels[:1], field, linear=True))


def test_fused_teachers_beat_a_single_atlas(brains):
    images, labels, scheme = brains
    atlases, target, fixed = [0, 1, 2, 3], 4, images[4:5]
    single = TeacherCache(images, labels, atlases, refine_only([30, 15]), refresh_steps=10)
    one = [_dice(single._warp(a, fixed)[0][0], labels[target], scheme) for a in atlases]
    fused = TeacherCache(images, labels, atlases, refine_only([30, 15]), refresh_steps=10, atlases=9)
    teacher = fused.labels_for([target], step=0)
    assert fused.atlases == 4 and sorted(fused.atlas[target]) == atlases  # capped at the labelled images
    assert _dice(teacher[0], labels[target], scheme) > max(one) + 0.02  # measured 0.779 against 0.727 (4 mm)


def test_a_cache_refuses_no_atlas_and_round_trips_empty_and_old_states(brains):
    images, labels, _ = brains
    with pytest.raises(ValueError, match="at least one atlas"):
        TeacherCache(images, labels, [0], refine_only([1, 1]), refresh_steps=10, atlases=0)
    empty = TeacherCache(images, labels, [0, 1], refine_only([1, 1]), refresh_steps=10, atlases=2)
    state = empty.state_dict()
    assert state["atlas"].shape == (0, 2)
    empty.load_state_dict(state)
    assert empty.teachers == {} and empty.atlas == {}
    # a checkpoint from before fused teachers: one atlas per teacher, a flat tensor
    old = TeacherCache(images, labels, [0], refine_only([1, 1]), refresh_steps=10)
    old.labels_for([2, 3], step=4)
    state = old.state_dict()
    state["atlas"] = state["atlas"].flatten()
    restored = TeacherCache(images, labels, [0], refine_only([1, 1]), refresh_steps=10)
    restored.load_state_dict(state)
    assert restored.atlas == {2: [0], 3: [0]} and restored.made_at == {2: 4, 3: 4}
    assert torch.equal(restored.labels_for([2], step=5), old.labels_for([2], step=5))


def test_past_their_share_of_the_time_teachers_teach_the_images_that_have_one(brains):
    images, labels, _ = brains
    cache = TeacherCache(images, labels, [0], refine_only([2, 1]), refresh_steps=5, max_share=0.25)
    assert cache.teachable([1, 2], elapsed=0.0) == [1, 2]  # none made yet: the first one is always made
    cache.labels_for([1], step=0, elapsed=0.0)
    spent = cache.seconds
    assert cache.teachable([2, 3], elapsed=8 * spent) == [2, 3]  # within a quarter of the time
    assert cache.teachable([2, 3, 1], elapsed=2 * spent) == [1, 1, 1]  # over it: only image 1 has one
    cache.labels_for([1], step=9, elapsed=2 * spent)  # stale, but over the share: kept
    assert cache.made_at[1] == 0
    cache.labels_for([1], step=9, elapsed=8 * spent)  # within it: remade
    assert cache.made_at[1] == 9


def test_a_joint_run_with_teachers_logs_them(tmp_path, phantoms_3d):
    config = tiny_config(phantoms_3d, seg_pretrain_steps=2, reg_pretrain_steps=2, cycles=2)
    config.teachers.enabled = "on"
    config.refine.iterations = [3, 2]
    train(config, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    seg = [r for r in records if r["kind"] == "seg"]
    assert seg and all("teacher_seconds" in r for r in seg)
    assert seg[0]["teacher_seconds"] > 0  # the first step draws images without a teacher
    assert max(r["teachers"] for r in seg) >= 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["teachers"]["images"] >= 2 and summary["teachers"]["seconds"] > 0
    # a share of the time no teacher fits in: every step after the first trains on its taught images
    config.teachers.max_share = 1e-9
    train(config, tmp_path / "capped", progress=False)
    capped = json.loads((tmp_path / "capped" / "summary.json").read_text())["teachers"]["images"]
    assert capped <= config.schedule.batch_size < summary["teachers"]["images"]  # the first step's only


def test_a_resumed_run_keeps_its_teachers_and_ends_as_an_uninterrupted_one(tmp_path, phantoms_3d):
    config = tiny_config(phantoms_3d, checkpoint_every=1)
    # steps 7-8 and 12-13 are seg steps, 9-11 reg steps: the teachers made before the stop are used
    # after it, when the reg net has changed, so only restored ones give the uninterrupted result
    config.teachers.enabled, config.teachers.refresh_steps, config.teachers.atlases = "on", 100, 2
    config.refine.iterations = [3, 2]
    train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "stopped", progress=False, max_steps=9)
    saved = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["teachers"]
    assert len(saved["positions"]) >= 1 and saved["labels"].dtype == torch.uint8
    assert saved["atlas"].shape == (len(saved["positions"]), 2)  # both labelled images, fused
    train(config, tmp_path / "stopped", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    for key in a["seg_net"]:
        assert torch.allclose(a["seg_net"][key], b["seg_net"][key], atol=1e-6), key
    assert torch.equal(a["teachers"]["labels"], b["teachers"]["labels"])
    assert torch.equal(a["teachers"]["made_at"], b["teachers"]["made_at"])
    assert torch.equal(a["teachers"]["atlas"], b["teachers"]["atlas"])
    assert "teachers" not in load_checkpoint(tmp_path / "straight" / "checkpoints" / "best.pt")


@pytest.mark.parametrize("labelled, wanted", [(2, True), (3, False)])
def test_a_trainer_gets_teachers_by_default_with_few_labelled_images(phantoms_3d, labelled, wanted):
    config = tiny_config(phantoms_3d)
    config.teachers.enabled, config.data.num_labelled = "auto", labelled
    trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
    assert (trainer.teachers is not None) == wanted


def test_auto_turns_teachers_on_for_few_labelled_images():
    auto = Config().teachers
    assert auto.enabled == "auto" and auto.active(1) and auto.active(2) and not auto.active(5)
    on = Config.from_dict({"teachers": {"enabled": True}}).teachers  # YAML's true reads as on
    assert on.enabled == "on" and on.active(50)
    assert not Config.from_dict({"teachers": {"enabled": False}}).teachers.active(1)


def test_teacher_settings_are_checked():
    with pytest.raises(ValueError, match="teachers.refresh_steps"):
        Config.from_dict({"teachers": {"refresh_steps": 0}})
    with pytest.raises(ValueError, match="teachers.atlases"):
        Config.from_dict({"teachers": {"atlases": 0}})
    for share in (0, 1.5, "half"):
        with pytest.raises(ValueError, match="teachers.max_share"):
            Config.from_dict({"teachers": {"max_share": share}})
    assert Config().teachers.max_share == 1.0  # no cap by default: seeded runs stay reproducible
    with pytest.raises(ValueError, match="teachers.enabled"):
        Config.from_dict({"teachers": {"enabled": "sometimes"}})


def test_a_distil_step_trains_on_a_labelled_and_a_taught_image_with_its_teacher(phantoms_3d):
    config = tiny_config(phantoms_3d, seg_pretrain_steps=0, reg_pretrain_steps=0, cycles=2)
    config.teachers.enabled, config.teachers.loss = "on", "distil"
    config.refine.iterations = [3, 2]
    trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
    inputs, targets = [], []
    trainer.seg_net.register_forward_hook(lambda module, args, out: inputs.append(args[0]))
    trainer.objectives.supervised.register_forward_hook(lambda module, args, out: targets.append(args[1]))
    trainer.step = 3  # a seg step of the first cycle
    losses = trainer.seg_step()
    # one pass of the seg net over two images (the pair step runs it on 2 + 2): the labelled
    # image with its labels, then an unlabelled one with its teacher
    assert len(inputs) == 1 and inputs[0].shape[0] == 2 and len(targets) == 1
    (taught,) = trainer.teachers.teachers
    assert taught in trainer.unlabelled and losses["teachers"] == 1 and losses["teacher_seconds"] > 0
    images = trainer.train_set.images
    assert any(torch.equal(inputs[0][0].cpu(), images[i]) for i in trainer.labelled)
    assert torch.equal(inputs[0][1].cpu(), images[taught])
    assert torch.equal(targets[0][1].cpu(), trainer.teachers.teachers[taught].long())
    assert set(losses) >= {"supervised", "loss"} and "anatomy" not in losses


def test_teachers_register_with_their_own_levels_and_the_run_keeps_its_own(phantoms_3d):
    config = tiny_config(phantoms_3d)
    config.teachers.enabled, config.teachers.refine_levels, config.teachers.refine_iterations = "on", [4, 1], [7, 3]
    trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
    optimizer = trainer.teachers.pipeline().stages[-1].optimizer
    assert optimizer.config.levels == [4, 1] and optimizer.config.iterations == [7, 3]
    assert optimizer.config.lr == config.refine.lr  # the rest of refinement is the run's
    assert config.refine.levels == [2, 1] and config.refine.iterations == [20, 5]
    with pytest.raises(ValueError, match="teachers.refine_levels and teachers.refine_iterations"):
        Config.from_dict({"teachers": {"refine_levels": [4, 2, 1]}})  # 3 levels, the run's 2 iterations
    with pytest.raises(ValueError, match="teachers.refine_iterations"):
        Config.from_dict({"teachers": {"refine_levels": [2, 1], "refine_iterations": [0, 5]}})


@pytest.mark.parametrize("guide", [False, True])
def test_guided_registration_reads_teachers_instead_of_the_seg_net(phantoms_3d, guide):
    config = tiny_config(phantoms_3d)
    config.teachers.enabled, config.teachers.guide_registration = "on", guide
    config.refine.iterations = [3, 2]
    trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
    trainer.teachers.labels_for(trainer.unlabelled, trainer.step)  # every unlabelled image taught
    passes = []
    trainer.seg_net.register_forward_hook(lambda module, args, out: passes.append(args[0].shape[0]))
    targets = []
    trainer.objectives.anatomy.register_forward_hook(lambda module, args, out: targets.append(args[:2]))
    losses = trainer.reg_step(group="neither")
    assert "anatomy" in losses and len(targets) == 1
    # guided: both sides' targets are the teachers' one-hot label fractions, no seg-net pass
    assert len(passes) == (0 if guide else 2)
    anatomy, classes = trainer.objectives.anatomy, trainer.num_classes
    taught = [anatomy.from_labels(t[None].long(), classes)[0] for t in trainer.teachers.teachers.values()]
    for target in targets[0][0]:  # the moving side, each pair
        assert any(torch.allclose(target, t) for t in taught) == guide


@pytest.mark.parametrize("size", [1, 2, 3])
def test_the_taught_share_sets_how_many_of_a_distilled_batch_are_taught(phantoms_3d, size):
    config = tiny_config(phantoms_3d)
    config.schedule.batch_size = size
    trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
    drawer, labelled = trainer.batches, set(trainer.labelled)

    def taught_counts(share: float) -> list[int]:
        counts = []
        for step in range(8):
            chosen, taught = drawer.distil_batch(step, lambda indices: indices, share)
            assert len(chosen) == size and taught == chosen[size - len(taught) :]  # taught ones last
            assert labelled.isdisjoint(taught) and labelled.issuperset(chosen[: size - len(taught)])
            counts.append(len(taught))
        return counts

    assert taught_counts(0.5) == [(size + step % 2) // 2 for step in range(8)]  # half each, odd halves in turn
    assert sum(taught_counts(0.75)) == 6 * size and sum(taught_counts(0.25)) == 2 * size
    assert taught_counts(1.0) == [size] * 8 and taught_counts(0.0) == [0] * 8
    if size == 1:  # one image a step: three taught steps in four, the labelled one in between
        assert taught_counts(0.75) == [0, 1, 1, 1] * 2
    for share in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="teachers.taught_share"):
            Config.from_dict({"teachers": {"taught_share": share}})


def test_past_its_time_a_teacher_is_remade_once_from_the_seg_nets_prediction(brains):
    """``self_teacher`` replaces a registered teacher when its image is next drawn after ``self_teach_from``
    seconds, once (until stale), keeps the synthesised pair the registration made, and survives a resume."""
    images, labels, _ = brains
    calls = []

    def predict(image):
        calls.append(image.shape)
        return torch.full(image.shape[:1] + image.shape[2:], 7, dtype=torch.long)

    make = dict(refresh_steps=100, synthesise=True, self_teacher=predict, self_teach_from=60.0)
    cache = TeacherCache(images, labels, [0], refine_only([2, 1]), **make)
    registered = cache.labels_for([1], step=0, elapsed=10.0)
    synthetic = cache.synthetic_for([1])
    assert not calls and not bool((registered == 7).all())
    taught = cache.labels_for([1, 2], step=5, elapsed=61.0)  # image 2 registered first (its pair), then taught
    assert len(calls) == 2 and bool((taught == 7).all()) and cache.self_taught == {1, 2}
    assert all(torch.equal(a, b) for a, b in zip(cache.synthetic_for([1]), synthetic))
    cache.labels_for([1], step=50, elapsed=90.0)  # fresh: kept
    assert len(calls) == 2
    cache.labels_for([1], step=105, elapsed=95.0)  # stale: predicted again, not registered
    assert len(calls) == 3 and cache.made_at[1] == 105 and bool((cache.teachers[1] == 7).all())
    restored = TeacherCache(images, labels, [0], refine_only([2, 1]), **make)
    restored.load_state_dict(cache.state_dict())
    assert restored.self_taught == {1, 2}
    restored.labels_for([2], step=60, elapsed=96.0)
    assert len(calls) == 3  # a resumed cache does not predict its self-taught teachers again


def test_seg_net_labels_read_a_mirrored_pass_through_the_class_twins():
    """With mirroring, the prediction of a seg net that sees only one side of the array is completed by the
    mirrored pass, whose classes are read from their twins' rows; without it that side stays unlabelled."""

    class LeftHalf(torch.nn.Module):  # class 1 ("left") where the image is bright in the first half of axis 0
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
            half = x.shape[2] // 2
            logits[:, 1, :half] = 10 * x[:, 0, :half]
            return logits

    image = torch.ones(1, 1, 6, 4, 4)
    single = seg_net_labels(LeftHalf(), image)
    assert bool((single[0, :3] == 1).all()) and bool((single[0, 3:] == 0).all())
    mirrored = seg_net_labels(LeftHalf(), image, mirroring=(0, [0, 2, 1]))
    assert bool((mirrored[0, :3] == 1).all()) and bool((mirrored[0, 3:] == 2).all())


def test_self_teaching_needs_a_time_budget_and_a_share():
    with pytest.raises(ValueError, match="teachers.self_teach_after"):
        Config.from_dict({"teachers": {"self_teach_after": 1.5}})
    with pytest.raises(ValueError, match="schedule.time_budget_minutes"):
        Config.from_dict({"teachers": {"self_teach_after": 0.5}})
    config = Config.from_dict({"teachers": {"self_teach_after": 0.5}, "schedule": {"time_budget_minutes": 10}})
    assert config.teachers.self_teach_after == 0.5


def test_a_distil_step_past_the_self_teaching_time_trains_on_the_seg_nets_own_labels(phantoms_3d):
    config = tiny_config(phantoms_3d, seg_pretrain_steps=0, reg_pretrain_steps=0, cycles=2)
    config.teachers.enabled, config.teachers.loss = "on", "distil"
    config.teachers.self_teach_after, config.schedule.time_budget_minutes = 0.5, 10.0
    config.refine.iterations = [3, 2]
    trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
    assert trainer.teachers.self_teach_from == 300.0
    trainer.step = 3
    trainer.seg_step()  # before: a registered teacher
    (first,) = trainer.teachers.teachers
    assert not trainer.teachers.self_taught
    trainer.elapsed = 301.0
    for step in range(4, 12):
        trainer.step = step
        trainer.seg_step()
    assert trainer.teachers.self_taught and trainer.teachers.self_taught <= set(trainer.teachers.teachers)
    taught = sorted(trainer.teachers.self_taught)[0]
    image = trainer.train_set.images[taught : taught + 1]
    again = seg_net_labels(trainer.seg_net, image)
    assert trainer.teachers.teachers[taught].shape == again.shape  # 1 x *spatial, as a registered one
