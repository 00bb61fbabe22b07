"""A run stopped part-way and resumed ends in the same state as an uninterrupted one."""

import pytest
import torch

from deepatlas.checkpoint import load_checkpoint
from deepatlas.training.run import train
from deepatlas.training.schedule import lr_scale
from tests.conftest import tiny_config


@pytest.mark.parametrize("lr_decay, augment", [(0.0, False), (0.5, False), (0.0, True)])
def test_resume_gives_the_same_state(tmp_path, phantoms_3d, lr_decay, augment):
    # with a decaying learning rate the resumed run must pick up the rate where the stopped one was,
    # with augmentation draw the same random changes
    config = tiny_config(phantoms_3d, checkpoint_every=1, lr_decay=lr_decay)
    config.augment.enabled = augment
    train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "stopped", progress=False, max_steps=7)  # stops mid-cycle
    assert load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["step"] == 7
    summary = train(config, tmp_path / "stopped", resume=True, progress=False)
    assert summary["finished"] and summary["steps_this_session"] == 7
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 14
    for net in ("reg_net", "seg_net"):
        for key in a[net]:
            assert torch.allclose(a[net][key], b[net][key], atol=1e-6), (net, key)
    assert torch.equal(a["generator"], b["generator"])
    # the last step (13 of 14) ran at the rate the decay prescribes, in both runs
    for state in (a, b):
        for opt, lr in (("seg_opt", config.schedule.seg_lr), ("reg_opt", config.schedule.reg_lr)):
            assert state[opt]["param_groups"][0]["lr"] == pytest.approx(lr * lr_scale(13 / 14, lr_decay))
    # the metrics file holds one history: no duplicated steps after the resume
    steps = [
        line for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines() if '"validation"' not in line
    ]
    assert len(steps) == 14


def test_seeded_runs_are_reproducible(tmp_path, phantoms_2d):
    config = tiny_config(phantoms_2d)
    train(config, tmp_path / "a", progress=False)
    train(config, tmp_path / "b", progress=False)
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert all(torch.equal(a["seg_net"][k], b["seg_net"][k]) for k in a["seg_net"])


def test_resume_refuses_a_different_config_and_a_started_run(tmp_path, phantoms_2d):
    config = tiny_config(phantoms_2d)
    train(config, tmp_path / "run", progress=False, max_steps=3)
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, tmp_path / "run", progress=False)
    config.loss.regularizer_weight = 5.0
    with pytest.raises(ValueError, match="differs"):
        train(config, tmp_path / "run", resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(config, tmp_path / "new", resume=True, progress=False)


def test_checkpoints_load_with_weights_only(tmp_path, phantoms_2d):
    train(tiny_config(phantoms_2d), tmp_path / "run", progress=False, max_steps=2)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_time_budget_ends_the_run_and_survives_a_resume(tmp_path, phantoms_2d):
    # a schedule far longer than the budget: the clock, not the step count, ends the run
    config = tiny_config(phantoms_2d, cycles=100000, time_budget_minutes=0.05)
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["stopped_by"] == "time budget" and summary["finished"]
    assert 3.0 <= summary["training_seconds"] < 20.0
    assert 0 < summary["steps_done"] < summary["steps_total"]
    # the budget's last state was validated, so best.pt can be the final state
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == summary["steps_done"] and state["elapsed_s"] >= 3.0
    # the budget is summed over resumes: a resumed run that has spent it does not train on
    again = train(config, tmp_path / "run", resume=True, progress=False)
    assert again["steps_this_session"] == 0 and again["stopped_by"] == "time budget"


def test_time_budget_must_be_positive(phantoms_2d):
    with pytest.raises(ValueError, match="time_budget_minutes"):
        tiny_config(phantoms_2d).from_dict({"schedule": {"time_budget_minutes": 0}})
    config = tiny_config(phantoms_2d).from_dict({"schedule": {"time_budget_minutes": "1.5"}})
    assert config.schedule.time_budget_minutes == 1.5
