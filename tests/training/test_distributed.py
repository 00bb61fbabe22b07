"""Two training processes under torchrun (gloo, CPU) train the model one process trains."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import tiny_config


def _train_command(config_path, out, nproc: int) -> list[str]:
    cli = ["-m", "deepatlas", "train", str(config_path), "-o", str(out), "--no-progress", "--max-steps", "2"]
    if nproc == 1:
        return [sys.executable, *cli]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return launcher + cli


@pytest.mark.slow
def test_two_processes_take_the_single_process_step(tmp_path, phantoms_3d):
    # step 1 trains the seg net, step 2 the reg net, each on a global batch of 2 pairs:
    # one pair per process under torchrun, both pairs in one process without it
    config = tiny_config(phantoms_3d, seg_pretrain_steps=1, reg_pretrain_steps=1, batch_size=2)
    config.threads = 1
    config.save(tmp_path / "config.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"run{nproc}"
        done = subprocess.run(
            _train_command(tmp_path / "config.yaml", out, nproc), capture_output=True, text=True, env=env
        )
        # the ranks' own lines first (torchrun's summary, at the end, names only the signal)
        why = [line for line in done.stderr.splitlines() if "elastic" not in line and line.strip()]
        assert done.returncode == 0, "\n".join(why[:40]) + "\n...\n" + done.stderr[-1500:]
        runs[nproc] = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert json.loads((tmp_path / "run2" / "summary.json").read_text())["world_size"] == 2
    assert json.loads((tmp_path / "run1" / "summary.json").read_text())["world_size"] == 1
    # Adam's first moment after one step is 0.1 x the gradient: the averaged gradients agree
    # (up to float rounding: biases before instance norm get gradients of ~1e-9, pure noise).
    # (Weights are not compared: Adam's first step divides near-zero gradients of biases before
    # instance norm by their own magnitude, which turns float rounding into a full step.)
    for opt in ("seg_opt", "reg_opt"):
        one, two = runs[1][opt]["state"], runs[2][opt]["state"]
        assert one.keys() == two.keys() and one
        for key in one:
            torch.testing.assert_close(two[key]["exp_avg"], one[key]["exp_avg"], rtol=1e-3, atol=1e-7)
    # and a run started on two processes resumes on one
    out = tmp_path / "run2"
    done = subprocess.run(
        [sys.executable, "-m", "deepatlas", "train", "-o", str(out), "--resume", "--no-progress", "--max-steps", "1"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 3


def test_the_global_batch_must_split_evenly():
    from deepatlas.training.distributed import World

    assert World(rank=1, size=2).local_slice(4) == slice(2, 4)
    try:
        World(rank=0, size=2).local_slice(3)
    except ValueError as err:
        assert "schedule.batch_size" in str(err)
    else:
        raise AssertionError("an uneven split was accepted")


def _max_of_ranks(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from deepatlas.training.distributed import World

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    world = World(rank=rank, size=2)
    result = [world.max(0.25 + rank), world.any(rank == 1), world.any(False)]
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as handle:
        json.dump(result, handle)


def test_processes_agree_on_the_largest_value(tmp_path):
    # what every process must agree on (the decayed learning rate, stopping) is the same on each
    torch.multiprocessing.spawn(
        _max_of_ranks, args=(f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "r")), nprocs=2
    )
    for rank in (0, 1):
        assert json.loads((tmp_path / f"r.{rank}").read_text()) == [1.25, True, False]
