import pytest

from deepatlas.config import Config, ScheduleConfig
from deepatlas.training import Schedule
from deepatlas.training.schedule import lr_scale


def test_phases_follow_pretraining_then_alternation():
    s = Schedule.from_config(
        ScheduleConfig(
            seg_pretrain_steps=2, reg_pretrain_steps=1, cycles=2, reg_steps_per_cycle=3, seg_steps_per_cycle=1
        )
    )
    assert s.total == 2 + 1 + 2 * 4
    assert [s.phase_at(i) for i in range(s.total)] == (
        ["seg_pretrain"] * 2 + ["reg_pretrain"] + (["reg"] * 3 + ["seg"]) * 2
    )
    with pytest.raises(IndexError):
        s.phase_at(s.total)


def test_negative_counts_are_refused():
    with pytest.raises(ValueError):
        Schedule.from_config(ScheduleConfig(cycles=-1))


def test_learning_rate_decays_linearly_over_the_end_of_the_run():
    assert [lr_scale(p, 0.0) for p in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]
    assert lr_scale(0.0, 0.2) == 1.0 and lr_scale(0.8, 0.2) == pytest.approx(1.0)
    assert lr_scale(0.9, 0.2) == pytest.approx(0.5)
    assert lr_scale(1.0, 0.2) == 0.0 and lr_scale(1.5, 0.2) == 0.0  # a run past its budget
    assert lr_scale(0.5, 1.0) == pytest.approx(0.5)


def test_learning_rate_decay_outside_0_1_is_refused():
    config = Config()
    config.schedule.lr_decay = 1.5
    with pytest.raises(ValueError, match="schedule.lr_decay"):
        config.validate()


def test_with_a_time_budget_the_learning_rates_follow_the_clock(phantoms_2d):
    from deepatlas.data import load_training_data
    from deepatlas.training import Trainer
    from tests.conftest import tiny_config

    config = tiny_config(phantoms_2d, time_budget_minutes=10.0, lr_decay=0.2, cycles=1000, reg_lr=2e-3)
    trainer = Trainer(config, load_training_data(config.data, progress=False).train, progress=False)
    trainer.elapsed = 0.9 * 600  # 90 % of the budget spent, a few steps into a long schedule
    phase, losses = trainer.train_step()
    assert losses["lr_scale"] == pytest.approx(0.5)
    assert trainer.reg_opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert trainer.seg_opt.param_groups[0]["lr"] == pytest.approx(0.5e-3)
