import pytest

from deepatlas.config import ScheduleConfig
from deepatlas.training import Schedule


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
