"""The experiment's one command still runs end to end (its smoke variant, shortened; real data)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IXI

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI} (shared/data/ixi-2mm)"
)
SHIPPED = ROOT / "models" / "brain-2mm" / "checkpoints" / "best.pt"


def run_benchmark(module: str, *args, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m benchmarks.<module> ARGS`` from the repository root; the test fails, with the command's
    stderr, unless it exits with 0."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *map(str, args)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_experiment_smoke_writes_tables_and_figures(tmp_path):
    out = tmp_path / "experiment"
    command = ["--smoke", "--no-ants", "--budget-minutes", "0.15", "--data", IXI, "--out", out]
    run_benchmark("experiment", *command)
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["cpu"] and results["machine"]["commit"]
    methods = [r["method"] for r in results["rows"]]
    assert methods == [
        "seg-only",
        "reg-only + atlas",
        "DeepAtlas (seg net)",
        "DeepAtlas (reg net + atlas)",
        "DeepAtlas (seg net + reg net + atlas)",
    ]
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
    # the run folders are not committed: a later sitting without them finds every training,
    # evaluation and example panel in the committed files and only rewrites the report
    shutil.rmtree(out / "runs")
    assert json.loads((out / "trainings" / "reg-only.json").read_text())["steps"] > 0
    again = run_benchmark("experiment", *command, timeout=300)
    assert "training" not in again.stdout.split("# DeepAtlas")[0] and not (out / "runs").exists()
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["rows"] == results["rows"] and rerun["trainings"] == results["trainings"]
    assert (out / "example.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "example").glob("*.npz"))) == 4  # reference, seg-only, reg-only, DeepAtlas
    # an evaluation added after a training whose run folder is gone is left out, not retrained for
    fused = next(r["eval"] for r in results["rows"] if r["method"] == "DeepAtlas (seg net + reg net + atlas)")
    shutil.rmtree(out / "eval" / fused)
    third = run_benchmark("experiment", *command, timeout=300)
    assert "training" not in third.stdout.split("# DeepAtlas")[0], third.stderr[-2000:]
    assert len(json.loads((out / "results.json").read_text())["rows"]) == len(results["rows"]) - 1


def test_experiment_over_seeds_shares_reg_only_and_summarises(tmp_path):
    out = tmp_path / "seeds"
    command = ["--smoke", "--no-ants", "--seeds", "0", "1", "--budget-minutes", "0.1", "--data", IXI]
    run_benchmark("experiment_seeds", *command, "--out", out)
    # reg-only sees no labels: seed 1 segments with its own atlases but seed 0's trained net,
    # packaged into seed 0's committed models folder
    assert (out / "seed-1" / "runs" / "reg-only").resolve() == (out / "seed-0" / "models" / "reg-only").resolve()
    first, second = (json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1))
    assert first["labelled"] != second["labelled"]  # another draw
    assert "ceiling" in first["trainings"] and "ceiling" not in second["trainings"]
    assert second["trainings"]["reg-only"]["steps"] == first["trainings"]["reg-only"]["steps"]  # the same run
    ceiling = first["rows"][-1]
    assert ceiling["method"].endswith("(ceiling)") and ceiling["n"] == len(
        json.loads((IXI / "splits.json").read_text())["train"]
    )
    assert all(r["eval"].endswith("-weighted") for r in first["rows"] if "atlas" in r["method"])
    assert first["trainings"]["ceiling"]["machines"] == first["trainings"]["seg-only-n1"]["machines"] != []
    summary = json.loads((out / "summary.json").read_text())
    gain = summary["joint_vs_seg_only"]["1"]
    assert len(gain["per_seed"]) == 2 and len(gain["subjects"]) == 10  # 5 test subjects x 2 seeds
    joint = [r for res in (first, second) for r in res["rows"] if r["method"] == "DeepAtlas suggested recipe (seg net)"]
    seg = [r for res in (first, second) for r in res["rows"] if r["method"] == "seg-only"]
    assert gain["per_seed"] == pytest.approx([a["seg_dice"] - b["seg_dice"] for a, b in zip(joint, seg)])
    table = (out / "summary.md").read_text()
    assert "| DeepAtlas suggested recipe (seg net) | 1 |" in table and "more than one CPU model" not in table
    # both of the joint run's nets voting, against reg-only's atlases; and the figure
    assert "## DeepAtlas suggested recipe (seg net + reg net + atlas) against reg-only + atlas" in table
    assert len(summary["paired"]["DeepAtlas suggested recipe (seg net) - seg-only"]["1"]["subjects"]) == 10
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not SHIPPED.exists(), reason="the shipped model is not in this checkout")
def test_registration_benchmark_runs_every_method_on_one_pair(tmp_path):
    out = tmp_path / "registration"
    run_benchmark("registration", "--pairs", 1, "--ants", "--data", IXI, "--split", "validation", "--out", out)
    results = json.loads((out / "results.json").read_text())
    methods = results["methods"]
    assert results["num_pairs"] == 1 and results["machine"]["cpu"]
    assert "deepatlas register (command line, default)" in methods and "identity" in methods
    for name, row in methods.items():
        assert 0 < row["dice"] <= 1, name
    assert methods["net + refine (default: 2x 20 + full 5 steps)"]["dice"] > methods["identity"]["dice"]
    assert (out / "dice_vs_time.png").stat().st_size > 10_000 and (out / "results.md").exists()


def test_fusion_weight_benchmark_scores_every_weight(trained_2d, phantoms_2d, tmp_path):
    """The seg net weight sweep on phantoms: weight 0 is the atlases alone, a huge weight the seg net alone."""
    out = tmp_path / "fusion"
    command = [trained_2d, "--data", phantoms_2d, "--weights", "0", "1", "1e9", "inf"]
    run_benchmark("fusion_weight", *command, "--out", out, "--per-structure", timeout=600)
    record = json.loads((out / "fusion_weight.json").read_text())
    mean = record["runs"][str(trained_2d)]["mean"]
    assert set(mean) == {"0.0", "1.0", "1000000000.0", "inf"}
    assert record["machine"]["cpu"] and record["machine"]["commit"]
    assert mean["1000000000.0"] == pytest.approx(mean["inf"])
    assert all(0 < v <= 1 for v in mean.values())
    assert "seg net alone" in (out / "fusion_weight.md").read_text()
    # leave one subject out: every subject scored with weights chosen on the others, one per structure
    run = record["runs"][str(trained_2d)]
    loo = run["leave_one_out"]
    assert set(loo["per structure"]["per_subject"]) == set(run["per_subject"]) and 0 < loo["per structure"]["mean"] <= 1
    assert len(run["structure_weights"]) == len(next(iter(run["per_class"].values()))["0.0"])
    assert "a weight per structure, chosen" in (out / "fusion_weight.md").read_text()


@pytest.mark.skipif(not SHIPPED.exists(), reason="the shipped model is not in this checkout")
def test_label_interpolation_benchmark_scores_both_resamplings_on_one_pair(tmp_path):
    run_benchmark("label_interpolation", "--limit", 2, "--atlases", 1, "--data", IXI, "--out", tmp_path)
    result = json.loads((tmp_path / "label_interpolation_validation.json").read_text())
    assert len(result["pairs"]) == 1 and len(result["fusion"]) == 2 and len(result["atlases"]) == 1
    dice = result["summary"]["pair_dice"]
    assert 0.5 < dice["nearest"] < 1 and 0.5 < dice["interpolated"] < 1
    assert "1-atlas fusion" in (tmp_path / "label_interpolation_validation.md").read_text()


def test_teacher_quality_from_zero_scores_every_pair_schedule(tmp_path):
    atlas = "IXI067-HH-1356"  # the protocol's one labelled image at N=1
    command = ["--from-zero", "--labelled-ids", atlas, "--targets", 1, "--data", IXI, "--out", tmp_path]
    run_benchmark("teacher_quality", *command)
    result = json.loads((tmp_path / "teacher_quality_from_zero.json").read_text())
    schedules = [key for key in result if key.startswith(("Adam", "greedy"))]
    assert len(schedules) == 5 and result["atlases"] == [atlas] and result["machine"]["cpu"]
    # registered from the identity: a real overlap, short of a perfect warp
    assert all(0.5 < result[key]["dice"] < 0.95 and result[key]["seconds_per_teacher"] > 0 for key in schedules)
    assert "registration from the identity" in (tmp_path / "teacher_quality_from_zero.md").read_text()


def test_ventricle_range_enlarges_a_real_brain_and_counts_the_flags():
    """The benchmark's brain is enlarged by what it says (the truth doubles at +100 %), the shipped seg net
    reads it near the truth, the summary counts a flag only where the model flagged it, and the structures around
    the ventricles read about as in the original brain."""
    from benchmarks.ventricle_range import VENTRICLES, measure, neighbours, summarize
    from deepatlas.inference import load_run

    data = IXI
    subject = json.loads((data / "splits.json").read_text())["validation"][1]
    models = {"shipped": load_run("brain-2mm")}
    rows = measure(models, data, [subject], [0.0, 1.0])
    for side in VENTRICLES:
        assert abs(rows[1]["true"][side] / rows[0]["true"][side] - 2) < 0.05
        assert 0.8 < rows[1]["shipped"][side]["mm3"] / rows[1]["true"][side] < 1.2
    # a bound between the two true volumes: only the enlarged brain's truth lies beyond it
    bound = {"structures": {s: {"high_mm3": (rows[0]["true"][s] + rows[1]["true"][s]) / 2} for s in VENTRICLES}}
    for row in rows:
        for side in VENTRICLES:
            row["shipped"][side]["flag"] = "above_training" if row["change"] else ""
    summary = summarize(rows, {"shipped": bound})["shipped"]["LateralVentricle-L"]
    assert summary["1.0"]["beyond_range"] == 1 and summary["1.0"]["flagged_beyond"] == 1
    assert summary["0.0"]["beyond_range"] == 0 and summary["0.0"]["flagged_within"] == 0
    assert summary["0.0"]["ratio"] > 0.8 and 0.8 < summary["1.0"]["recovered"] < 1.2
    around = neighbours(rows, "shipped")["1.0"]  # the 29 other structures, pushed aside, still read as they are
    assert len(around["drift"]) == 29 and around["median_abs_drift"] < 0.05, around["worst"]


def test_atlas_atrophy_reads_each_arm_as_atlases_and_as_log_jacobian_maps(tmp_path):
    """One validation brain doubled in ventricle size: the atlas path and the log-Jacobian readings (over atlas labels,
    and voxel by voxel against the deformation's own growth) each report a recovered share of the change."""
    out = tmp_path / "out"
    args = ["--subjects", "1", "--levels", "3", "--arms", "default", "--jacobian", "--out", out]
    run_benchmark("atlas_atrophy", *args, "--cache", tmp_path / "cache.jsonl")
    result = json.loads((out / "results.json").read_text())
    arm = result["arms"]["default"]
    for reading in (arm, arm["jacobian"]):
        recovered = reading["atrophy"]["LateralVentricle-L"]["levels"][0]["recovered"]
        assert 0.2 < recovered < 1.3, recovered
    maps = arm["jacobian"]["maps"]["3"]  # register's settings read a brain's own doubling, voxel by voxel
    assert 0.6 < maps["recovered"] < 1.3 and 0 < maps["noise"] < 0.15, maps
    assert "log-Jacobian maps" in (out / "results.md").read_text()


def test_a_recovered_fraction_carries_its_interval_over_the_brains():
    """A change read exactly in proportion has no spread; a noisy one an interval around its ratio that widens with
    the noise; one brain has none to give."""
    import numpy as np

    from benchmarks.morphometry import bootstrap_ratio

    true = np.linspace(800.0, 1600.0, 20)
    assert np.allclose(bootstrap_ratio(0.9 * true, true), [0.9, 0.9])
    noise = np.random.default_rng(1).normal(0, 200, true.size)
    low, high = bootstrap_ratio(0.9 * true + noise, true)
    wide_low, wide_high = bootstrap_ratio(0.9 * true + 3 * noise, true)
    ratio = (0.9 * true + noise).mean() / true.mean()
    assert low < ratio < high and high - low < 0.2
    assert wide_high - wide_low > 2 * (high - low)
    assert all(x != x for x in bootstrap_ratio(true[:1], true[:1]))


def test_wm_hypointensity_darkens_only_the_white_matter_beside_the_ventricles():
    """The benchmark's lesions: white matter within the width of the lateral ventricles, as dark as cortex at depth
    1 in their core, nothing else touched; a model's change is read against its own reading of the original."""
    import numpy as np
    from scipy import ndimage

    from benchmarks.morphometry import labelled
    from benchmarks.wm_hypointensity import darkened, summarize
    from deepatlas.data.labels import LabelScheme

    image, labels = labelled(IXI, "IXI012-HH-1211")
    scheme = LabelScheme.from_file(IXI / "brain31.json")
    dark, lesion_ml = darkened(image, labels, scheme, 4.0, 1.0)
    classes = scheme.encode(np.asarray(labels.array), unknown="background")
    white = np.isin(classes, [scheme.names.index(n) for n in ("CerebralWM-L", "CerebralWM-R")])
    ventricles = np.isin(classes, [scheme.names.index(n) for n in ("LateralVentricle-L", "LateralVentricle-R")])
    difference = np.asarray(image.array, dtype=np.float32) - np.asarray(dark.array)
    changed = np.abs(difference) > 0.01 * np.median(np.asarray(image.array)[white])
    near = ndimage.distance_transform_edt(~ventricles, sampling=image.spacing) <= 4.0 + 2 * 2.0  # + the soft edge
    assert difference.min() >= 0 and not np.any(difference[~white])
    assert np.all(white[changed]) and np.all(near[changed]) and 10 < lesion_ml < 60
    cortex = np.median(np.asarray(image.array)[np.isin(classes, [1, 2])])
    core = white & (ndimage.distance_transform_edt(~ventricles, sampling=image.spacing) <= 2.0)
    assert abs(np.median(np.asarray(dark.array)[core]) - cortex) < 0.2 * cortex
    rows = [
        {"subject": "a", "width_mm": 0.0, "depth": 0.0, "lesion_ml": 0.0, "m": {"x": 100.0, "y": 10.0}},
        {"subject": "a", "width_mm": 4.0, "depth": 1.0, "lesion_ml": 20.0, "m": {"x": 150.0, "y": 10.0}},
    ]
    block = summarize(rows, ["m"])["m"]["4 mm, depth 1"]
    assert block["change"] == {"x": 0.5, "y": 0.0} and block["median_abs_change"] == 0.25
