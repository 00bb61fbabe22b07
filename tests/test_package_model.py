"""scripts/package_model.py: a slim run folder, with a seg net taken from other runs or averaged over them."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from deepatlas.checkpoint import load_checkpoint
from deepatlas.inference.run import load_run
from deepatlas.training.run import train
from tests.conftest import tiny_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "package_model.py"


def _script():
    spec = importlib.util.spec_from_file_location("package_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_seg_net_of_several_runs_is_their_weights_average(tmp_path, phantoms_2d):
    runs = []
    for seed in (0, 1):
        config = tiny_config(phantoms_2d)
        config.seed = seed
        train(config, tmp_path / f"seed-{seed}", progress=False, max_steps=5)
        runs.append(tmp_path / f"seed-{seed}")
    package = _script().package
    out = package(runs[0], tmp_path / "averaged", seg_from=runs)
    states = [load_checkpoint(run / "checkpoints" / "best.pt") for run in runs]
    packed = load_checkpoint(out / "checkpoints" / "best.pt")
    name = next(k for k, t in packed["seg_net"].items() if t.is_floating_point() and t.numel() > 1)
    one, two = (s["seg_net"][name] for s in states)
    assert not torch.equal(one, two)  # two draws, so the average is not either of them
    assert torch.allclose(packed["seg_net"][name], (one + two) / 2, atol=1e-6)
    assert all(torch.equal(t, states[0]["reg_net"][k]) for k, t in packed["reg_net"].items())  # the first run's
    assert load_run(out).seg_net is not None  # loads like any run folder
    single = package(runs[0], tmp_path / "taken", seg_from=[runs[1]])  # one run: its seg net as it is
    taken = load_checkpoint(single / "checkpoints" / "best.pt")["seg_net"]
    assert all(torch.equal(t, states[1]["seg_net"][k]) for k, t in taken.items())
    assert json.loads((single / "checkpoint.json").read_text())["seg_net_from"].endswith("best.pt")

    other = tiny_config(phantoms_2d)
    other.seg_net.channels = [8, 16, 32]
    train(other, tmp_path / "wider", progress=False, max_steps=5)
    with pytest.raises(SystemExit, match="seg_net settings differ"):
        package(runs[0], tmp_path / "refused", seg_from=[runs[0], tmp_path / "wider"])
    assert not (tmp_path / "refused" / "checkpoints" / "best.pt").exists()
