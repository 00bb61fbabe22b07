"""Short real training runs: the losses go down, in 2D and 3D."""

import json

import numpy as np
import pytest
import torch

from deepatlas.training.run import train
from tests.conftest import tiny_config


def _records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.mark.parametrize("fixture", ["phantoms_2d", "phantoms_3d"])
def test_short_run_losses_go_down(request, tmp_path, fixture):
    dataset = request.getfixturevalue(fixture)
    config = tiny_config(dataset, seg_pretrain_steps=30, reg_pretrain_steps=30, cycles=0)
    config.schedule.reg_lr = config.schedule.seg_lr = 3e-3
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["finished"]
    seg = [r["loss"] for r in _records(tmp_path / "run", "seg_pretrain")]
    reg = [r["loss"] for r in _records(tmp_path / "run", "reg_pretrain")]
    assert len(seg) == 30 and len(reg) == 30
    assert np.mean(seg[-5:]) < 0.8 * np.mean(seg[:5])
    assert np.mean(reg[-5:]) < np.mean(reg[:5])


def test_joint_run_writes_the_run_folder(tmp_path, phantoms_3d):
    config = tiny_config(phantoms_3d)
    summary = train(config, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "labels.json",
        "data.json",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "best_validation.json",
    ):
        assert (run / name).exists(), name
    assert any((run / "tensorboard").iterdir())
    kinds = {r["kind"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    assert kinds == {"seg_pretrain", "reg_pretrain", "reg", "seg", "validation"}
    data = json.loads((run / "data.json").read_text())
    assert len(data["labelled"]) == 2 and len(data["unlabelled"]) == 4
    validations = [
        r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "validation"
    ]
    last = summary["last_validation"]
    assert 0 < last["seg_dice"] <= 1 and 0 < last["reg_dice"] <= 1
    # the summary reports the run's last validation, as logged
    assert last["seg_dice"] == pytest.approx(validations[-1]["seg_dice"])
    assert last["reg_dice"] == pytest.approx(validations[-1]["reg_dice"])


def test_a_bf16_autocast_run_trains_on_cpu(tmp_path, phantoms_2d):
    """Every other phantom run is float32 (``amp=off``): this one takes the mixed-precision path that
    ``amp=auto`` picks on CPUs with native bf16 (AMX), forced on here (emulated where not native)."""
    from deepatlas.data.io import load_image
    from deepatlas.inference import load_run
    from deepatlas.inference.apply import segment_volume

    config = tiny_config(phantoms_2d, seg_pretrain_steps=20, reg_pretrain_steps=20, cycles=1)
    config.amp = "on"
    config.schedule.reg_lr = config.schedule.seg_lr = 3e-3
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["finished"] and summary["amp"] == "torch.bfloat16"
    for kind in ("seg_pretrain", "reg_pretrain"):
        losses = [r["loss"] for r in _records(tmp_path / "run", kind)]
        assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5]), kind
    assert np.isfinite([r["loss"] for r in _records(tmp_path / "run", "seg")]).all()
    run = load_run(tmp_path / "run")
    assert all(p.dtype == torch.float32 and p.isfinite().all() for p in run.seg_net.parameters())
    image = load_image(sorted((phantoms_2d / "images").iterdir())[0])
    assert (segment_volume(run, image) > 0).mean() > 0.1  # the checkpoint segments: not all background
