"""The validation sweeps' data files (benchmarks/sweeps, run by benchmarks.tune_defaults): every
sweep loads and every variant is a valid config. No data, no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import tune_defaults
from deepatlas.config import load_config
from deepatlas.options import UNTIL_BUDGET
from deepatlas.recipes import recipe_overrides


@pytest.mark.parametrize("sweep", tune_defaults.sweep_names())
def test_every_variant_of_every_sweep_is_a_valid_config(sweep):
    variants = tune_defaults.sweep_variants(sweep)
    assert variants, sweep
    for name, overrides in variants.items():
        config = load_config(None, tune_defaults.base_overrides() + overrides)
        assert config.schedule.val_every >= 0, name


def test_a_variant_is_its_recipe_then_its_shared_lists_then_its_own_overrides():
    shared = {"protocol": ["seed=1", "schedule.cycles=UNTIL_BUDGET"]}
    variant = {"recipe": "seg-only", "use": ["protocol"], "overrides": ["seed=2"]}
    overrides = tune_defaults.variant_overrides("v", variant, shared)
    assert overrides == [*recipe_overrides("seg-only"), "seed=1", f"schedule.cycles={UNTIL_BUDGET}", "seed=2"]
    with pytest.raises(ValueError, match="no list"):
        tune_defaults.variant_overrides("v", {"use": ["protocol_n9"]}, shared)
    with pytest.raises(ValueError, match="not one of the keys"):
        tune_defaults.variant_overrides("v", {"override": ["seed=2"]}, shared)


def test_sweeps_that_runs_resume_keep_their_variant_names():
    # a run folder and the sweep's .jsonl rows are named after the variant: every variant a
    # committed record names is still in its sweep, so a resumed sweep finds its runs
    results = Path(tune_defaults.__file__).parent / "results" / "tuning"
    checked = 0
    for record in sorted(results.glob("**/*.jsonl")):
        if record.stem not in tune_defaults.sweep_names():
            continue
        variants = tune_defaults.sweep_variants(record.stem)
        for row in map(json.loads, record.read_text().splitlines()):
            if any(item.startswith("run ") for item in row["overrides"]):
                continue  # a finished run folder scored (`--score`), not a variant
            assert row["variant"] in variants, (record, row["variant"])
            checked += 1
    assert checked >= 13  # the synthesis records alone
    assert list(tune_defaults.sweep_variants("resize"))[:2] == ["finetune,augment", "finetune,augment,resize=1"]
