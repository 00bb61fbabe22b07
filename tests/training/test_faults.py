"""Faults: SIGKILL at random moments, kills during checkpoint writes, NaN losses, damaged logs."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deepatlas.checkpoint import load_checkpoint
from deepatlas.cli.main import main
from deepatlas.files import remove_orphans
from deepatlas.training.logger import MetricsLogger
from deepatlas.training.run import train
from tests.conftest import tiny_config


def _kill_test_config(dataset: Path):
    config = tiny_config(dataset, seg_pretrain_steps=6, reg_pretrain_steps=6, cycles=4, checkpoint_every=1)
    config.schedule.val_every = 9
    config.threads = 1  # one thread in every process: the same float order, so bitwise-equal results
    return config


def _records(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _start(config_path: Path, run: Path) -> subprocess.Popen:
    resume = ["--resume"] if (run / "checkpoints" / "last.pt").exists() else [str(config_path)]
    cmd = [sys.executable, "-m", "deepatlas", "train", "-o", str(run), "--no-progress", *resume]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(process: subprocess.Popen, run: Path, records: int, rng: random.Random) -> bool:
    """SIGKILL ``process`` a random moment after ``metrics.jsonl`` holds ``records`` lines; False if it ended first."""
    while _records(run) < records:
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.08))
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, phantoms_3d):
    config = _kill_test_config(phantoms_3d)
    reference = tmp_path / "reference"
    train(config, reference, progress=False)
    config.save(tmp_path / "config.yaml")
    run, rng, kills = tmp_path / "killed", random.Random(13), 0
    for records in sorted(rng.sample(range(2, 24), 3)):
        kills += _kill_when(_start(tmp_path / "config.yaml", run), run, records, rng)
        for name in ("last", "best"):  # never an unreadable checkpoint, whenever the kill came
            if (run / "checkpoints" / f"{name}.pt").exists():
                load_checkpoint(run / "checkpoints" / f"{name}.pt")
    assert kills >= 2
    final = _start(tmp_path / "config.yaml", run)
    assert final.wait() == 0, final.stderr.read()
    done, expected = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (run, reference))
    assert done["step"] == expected["step"]
    for net in ("reg_net", "seg_net"):
        for key, value in expected[net].items():
            assert torch.equal(done[net][key], value), f"{net}.{key} differs after kill and resume"
    assert not [p.name for p in run.rglob(".*.tmp*")], "orphan temporary files left behind"
    steps = [
        r["step"]
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if r["kind"] != "validation"
    ]
    assert steps == list(range(1, expected["step"] + 1)), "metrics.jsonl must hold each step once"


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    target = tmp_path / "checkpoints" / "last.pt"
    writer = (
        "import sys, torch\n"
        "from deepatlas.checkpoint import save_checkpoint\n"
        "state = {'step': 0, 'w': torch.ones(20_000_000)}\n"
        "for step in range(1000):\n"
        "    state['step'] = step\n"
        "    save_checkpoint(state, sys.argv[1])\n"
    )
    process = subprocess.Popen([sys.executable, "-c", writer, str(target)])
    deadline = time.time() + 120
    while not (target.exists() and list(target.parent.glob(".last.pt.*"))) and time.time() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    orphans = list(target.parent.glob(".last.pt.*"))
    assert orphans, "the kill did not land during a write (timing); nothing was tested"
    state = load_checkpoint(target)  # the previous complete checkpoint, not half of the new one
    assert torch.equal(state["w"], torch.ones(20_000_000))
    assert remove_orphans(target.parent) == orphans and not list(target.parent.glob(".last.pt.*"))


def test_a_nan_loss_stops_the_run_with_the_step_and_keeps_it_resumable(tmp_path, phantoms_3d, capsys):
    config = tiny_config(phantoms_3d, seg_pretrain_steps=4)
    config.save(tmp_path / "config.yaml")
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "config.yaml"), "-o", str(run), "--no-progress", "--max-steps", "4"]) == 0
    capsys.readouterr()
    # registration steps with an absurd learning rate (no checkpoint due before the end)
    code = main(
        ["train", "-o", str(run), "--resume", "--no-progress", "schedule.reg_lr=1e8", "schedule.checkpoint_every=100"]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert "not finite" in err[0] and "->" in err[0] and "(step 4) is kept" in err[0], err[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by"] == "non-finite loss" and not summary["finished"]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    # the same run goes on from step 4 with a sane learning rate, and finishes
    assert main(["train", "-o", str(run), "--resume", "--no-progress", "schedule.reg_lr=1e-3"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["last_validation"]["reg_dice"] > 0


def test_a_cut_last_metrics_line_is_dropped_a_damaged_one_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "kind": "reg"}\n{"step": 2, "kind": "reg"}\n{"step": 3, "ki')
    MetricsLogger(tmp_path, resume_step=2, tensorboard=False).close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2"):
        MetricsLogger(tmp_path, resume_step=2, tensorboard=False)
