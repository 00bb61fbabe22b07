"""The experiment's one command still runs end to end (its smoke variant, shortened; real data)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IXI

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI} (shared/data/ixi-2mm)"
)


def test_experiment_smoke_writes_tables_and_figures(tmp_path):
    out = tmp_path / "experiment"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "experiment.py"),
            "--smoke",
            "--no-ants",
            "--budget-minutes",
            "0.15",
            "--data",
            str(IXI),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in results["rows"]]
    assert methods == ["seg-only", "reg-only + atlas", "DeepAtlas (seg net)", "DeepAtlas (reg net + atlas)"]
    assert results["labelled"] == {"1": [results["labelled"]["1"][0]]} and len(results["test_subjects"]) == 5
    for name, training in results["trainings"].items():
        assert training["stopped_by"] == "time budget" and training["steps"] > 0, name
        assert training["minutes"] >= 0.15, name
    for row in results["rows"]:
        assert 0.0 <= row["seg_dice"] <= 1.0 and len(row["seg_dice_per_subject"]) == 5
    # registration is scored once per method: each test subject to the next
    reg = {r["method"]: r for r in results["rows"] if r["reg_dice"] is not None}
    assert set(reg) == {"reg-only + atlas", "DeepAtlas (seg net)"}
    assert all(len(list((out / "eval" / r["eval"]).glob("*.csv"))) == 3 for r in results["rows"])
    table = (out / "results.md").read_text()
    assert "| DeepAtlas (seg net) | 1 |" in table and "--budget-minutes 0.15" in table
    for figure in ("dice_vs_n.png", "validation_curves.png", "example.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG", figure
    # a second call finds everything done and only rewrites the report
    again = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "experiment.py"),
            "--smoke",
            "--no-ants",
            "--budget-minutes",
            "0.15",
            "--data",
            str(IXI),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and "training" not in again.stdout.split("# DeepAtlas")[0]


@pytest.mark.skipif(
    not (ROOT / "models" / "brain-2mm" / "checkpoints" / "best.pt").exists(),
    reason="the shipped model is not in this checkout",
)
def test_registration_benchmark_runs_every_method_on_one_pair(tmp_path):
    out = tmp_path / "registration"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "registration.py"),
            "--pairs",
            "1",
            "--ants",
            "--data",
            str(IXI),
            "--split",
            "validation",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    methods = results["methods"]
    assert results["num_pairs"] == 1 and results["machine"]["cpu"]
    assert "deepatlas register (command line, default)" in methods and "identity" in methods
    for name, row in methods.items():
        assert 0 < row["dice"] <= 1, name
    assert methods["net + refine (default: 2x 20 + full 5 steps)"]["dice"] > methods["identity"]["dice"]
    assert (out / "dice_vs_time.png").stat().st_size > 10_000 and (out / "results.md").exists()
