"""The protocol's summary over seeds (benchmarks.experiment_seeds.summarise) on hand-made results:
seeds that lack a row, subjects paired within their own seed. No data, no training."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from benchmarks import experiment_seeds

JOINT = "DeepAtlas suggested recipe (seg net)"
FUSED = "DeepAtlas suggested recipe (seg net + reg net + atlas)"


def _row(method: str, per_subject: dict[str, float], reg: float | None = None) -> dict:
    mean = sum(per_subject.values()) / len(per_subject)
    return {"method": method, "n": 1, "seg_dice": mean, "seg_dice_per_subject": per_subject, "reg_dice": reg}


def _results(seed: int, rows: list[dict]) -> dict:
    trainings = {"seg-only-n1": {"machines": ["cpu A"]}}
    return {"protocol": {"budget_minutes": 45}, "labelled": {"1": [f"s{seed}"]}, "trainings": trainings, "rows": rows}


@pytest.fixture
def two_seeds(tmp_path):
    # the same subject ids in both seeds, with different values: a pairing across seeds would mix them
    seeds = {
        0: [
            _row("seg-only", {"a": 0.60, "b": 0.70}),
            _row(JOINT, {"a": 0.70, "b": 0.72}, reg=0.73),
            _row("reg-only + atlas", {"a": 0.74, "b": 0.76}, reg=0.74),
            _row(FUSED, {"a": 0.75, "b": 0.75}),
        ],
        1: [  # no fused row (scored later), and a method seed 0 lacks
            _row("seg-only", {"a": 0.50, "b": 0.80}),
            _row(JOINT, {"a": 0.55, "b": 0.79}, reg=0.72),
            _row("reg-only + atlas", {"a": 0.70, "b": 0.70}, reg=0.74),
            _row("ANTs SyN + atlas", {"a": 0.71, "b": 0.71}),
        ],
    }
    for seed, rows in seeds.items():
        (tmp_path / f"seed-{seed}").mkdir()
        (tmp_path / f"seed-{seed}" / "results.json").write_text(json.dumps(_results(seed, rows)))
    return tmp_path


def test_summary_pairs_subjects_within_seeds_and_keeps_rows_of_some_seeds(two_seeds):
    summary = experiment_seeds.summarise(two_seeds, [0, 1])
    gain = summary["joint_vs_seg_only"][1]
    assert gain["seeds"] == [0, 1] and gain["per_seed"] == pytest.approx([0.06, 0.02])
    # per subject: seed 0 a +0.10, b +0.02; seed 1 a +0.05, b -0.01 (never seed 0's a against seed 1's a)
    assert sorted(gain["subjects"]) == pytest.approx([-0.01, 0.02, 0.05, 0.10])
    fused = summary["paired"][f"{FUSED} - reg-only + atlas"][1]
    assert fused["seeds"] == [0] and fused["per_seed"] == pytest.approx([0.0])
    assert summary["joint_vs_reg_only"][1]["per_seed"] == pytest.approx([-0.01, -0.02])
    table = (two_seeds / "summary.md").read_text()
    assert "| ANTs SyN + atlas | 1 | 0.710 (one seed) | s1 0.710 |" in table  # a method the first seed lacks
    assert f"| {FUSED} | 1 | 0.750 (one seed) | s0 0.750 |" in table
    assert "| 1 | +4.0 | s0 +6.0, s1 +2.0 | 2 / 2 | 3 / 4 |" in table
    assert (two_seeds / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_summary_warns_when_trainings_ran_on_different_cpus(two_seeds):
    results = json.loads((two_seeds / "seed-1" / "results.json").read_text())
    results["trainings"]["seg-only-n1"]["machines"] = ["cpu B"]
    (two_seeds / "seed-1" / "results.json").write_text(json.dumps(results))
    experiment_seeds.summarise(two_seeds, [0, 1])
    assert "more than one CPU model" in (two_seeds / "summary.md").read_text()


def test_per_structure_averages_subjects_then_finished_seeds(tmp_path, monkeypatch):
    from benchmarks import per_structure

    values = {  # seed -> evaluation folder -> (structure A, structure B) Dice of its two test subjects
        0: {"seg-only-n1": ((0.5, 0.7), (0.8, 0.8)), "suggested-n1": ((0.7, 0.9), (0.8, 0.8))},
        1: {"seg-only-n1": ((0.4, 0.4), (0.6, 0.6)), "suggested-n1": ((0.6, 0.6), (0.7, 0.7))},
        2: {"seg-only-n1": ((0.0, 0.0), (0.0, 0.0))},  # still training: no results.json, left out
    }
    for seed, evals in values.items():
        if seed < 2:
            (tmp_path / f"seed-{seed}").mkdir()
            (tmp_path / f"seed-{seed}" / "results.json").write_text("{}")
        for folder, (a, b) in evals.items():
            rows = ["subject,structure,dice,hd95_mm"]
            rows += [f"s{i},A,{a[i]},1" for i in range(2)] + [f"s{i},B,{b[i]},1" for i in range(2)]
            (tmp_path / f"seed-{seed}" / "eval" / folder).mkdir(parents=True)
            (tmp_path / f"seed-{seed}" / "eval" / folder / "segmentation.csv").write_text("\n".join(rows) + "\n")
    table = per_structure.method_table(tmp_path, [0, 1], 1)
    assert table["seg-only"] == pytest.approx({"A": 0.5, "B": 0.7})  # (0.6 + 0.4) / 2, (0.8 + 0.6) / 2
    assert table["DeepAtlas seg net"] == pytest.approx({"A": 0.7, "B": 0.75})
    monkeypatch.setattr(sys, "argv", ["per_structure.py", "--out", str(tmp_path), "--labelled", "1"])
    assert per_structure.main() == 0
    text = (tmp_path / "per_structure.md").read_text()
    assert "mean over seeds 0, 1" in text and text.index("| B |") < text.index("| A |")  # sorted by gain
    assert "| A | 0.500 | 0.700 | +20.0 | - |" in text
    assert (tmp_path / "per_structure.png").read_bytes()[:4] == b"\x89PNG"


def test_structure_weights_pick_each_structures_best_weight_over_subjects():
    from benchmarks import fusion_weight

    nan = float("nan")
    per_class = {  # subject -> weight -> Dice of structures 1, 2, 3 (3 absent everywhere)
        "a": {"0": [0.9, 0.5, nan], "1": [0.8, 0.7, nan], "inf": [0.7, 0.6, nan]},
        "b": {"0": [0.7, 0.5, nan], "1": [0.8, 0.6, nan], "inf": [0.6, 0.9, nan]},
    }
    # structure 1: 0.80 / 0.80 / 0.65 -> the first best, 0; structure 2: 0.5 / 0.65 / 0.75 -> inf
    assert fusion_weight.structure_weights(per_class, ["0", "1", "inf"], ["a", "b"]) == ["0", "inf", "0"]
    assert fusion_weight.structure_weights(per_class, ["0", "1", "inf"], ["b"]) == ["1", "inf", "0"]


def _seed_args(**changes) -> argparse.Namespace:
    args = dict(data=Path("ixi"), seeds=[0, 1], variant="suggested", no_ceiling=False, reg_only_run=None)
    args.update(budget_minutes=None, labelled=None, no_ants=False, smoke=False, augment=False)
    return argparse.Namespace(**{**args, **changes})


def test_augmented_protocol_reaches_every_seg_net_and_not_reg_only(tmp_path):
    from benchmarks import experiment
    from deepatlas.config import load_config

    # experiment_seeds hands --augment on to each seed; the first trains the ceiling unless told not to
    first, second = (experiment_seeds.seed_command(_seed_args(augment=True), s, tmp_path) for s in (0, 1))
    assert "--augment" in first and "--augment" in second and "--ceiling" in first
    assert second[second.index("--reg-only-run") + 1] == str(tmp_path / "seed-0" / "models" / "reg-only")
    shared = tmp_path / "other" / "reg-only"  # another protocol's reg-only serves every seed, the first too
    first = experiment_seeds.seed_command(_seed_args(reg_only_run=shared, no_ceiling=True), 0, tmp_path)
    assert first[first.index("--reg-only-run") + 1] == str(shared) and "--ceiling" not in first
    assert "--augment" not in first
    # benchmarks.experiment: the seg nets' configs augment, reg-only's and an unaugmented protocol's do not
    preset = dict(experiment.PRESETS["smoke"], augment=True)
    for method in ("seg-only", "suggested", "ceiling"):
        overrides = experiment.method_overrides(method, preset) + experiment.seg_net_flags(method, preset)
        overrides += [f"schedule.time_budget_minutes={preset['budget_minutes']}"]  # as train_method adds it
        assert load_config(None, overrides).augment.active(150), method  # on at any N
    assert experiment.seg_net_flags("reg-only", preset) == []  # it trains as in any protocol
    plain = experiment.PRESETS["smoke"]  # the unaugmented protocol: off, whatever the default
    assert not load_config(None, experiment.seg_net_flags("seg-only", plain)).augment.active(1)
