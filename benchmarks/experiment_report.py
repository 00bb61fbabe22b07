"""Tables and figures of ``benchmarks/experiment.py``: results.json, results.md and PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.provenance import provenance_line
from deepatlas.files import atomic_write, atomic_write_text
from deepatlas.run_folder import RunFolder
from deepatlas.visualization.figures import pyplot


def _fmt(value, spec: str = ".3f", scale: float = 1.0) -> str:
    return "-" if value is None or value != value else format(value * scale, spec)


def training_record(summary: dict, run_dir: Path, machines: list[str]) -> dict:
    """What the report needs of a finished training, kept in a small committed file
    (``<out>/trainings/<name>.json``) so that the report outlives the run folder: the run's
    ``summary.json`` (as ``train`` returned it), its model selection, the CPUs it ran on, and
    its validation history as ``[minutes, seg Dice, reg Dice]``."""
    best = RunFolder(run_dir).best_validation
    best = json.loads(best.read_text()) if best.exists() else {}
    return {
        **summary,
        "steps": summary["steps_done"],
        "minutes": summary.get("training_seconds", 0) / 60,
        "best_step": best.get("step"),
        "best_val_seg_dice": best.get("seg_dice"),
        "best_val_reg_dice": best.get("reg_dice"),
        "machines": machines,
        "history": [[round(m, 3), r.get("seg_dice"), r.get("reg_dice")] for m, r in validation_history(run_dir)],
    }


def validation_history(run_dir: Path) -> list[tuple[float, dict]]:
    """(training minutes, validation record) pairs; minutes from the logged step times."""
    metrics = RunFolder(run_dir).metrics
    clock, out = 0.0, []
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        record = json.loads(line)
        if record["kind"] == "validation":
            out.append((clock / 60, record))
        else:
            clock += record.get("seconds", 0.0)
    return out


CEILING = "seg-only, every training label (ceiling)"


def dice_vs_n_figure(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for r in (r for r in rows if r["method"] == CEILING):  # one N far off the axis: a line
        ax.axhline(r["seg_dice"], color="k", linestyle="--", linewidth=1, label=f"{CEILING}, N={r['n']}")
    rows = [r for r in rows if r["method"] != CEILING]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n"])
        ns = [r["n"] for r in mine]
        mean = np.array([r["seg_dice"] for r in mine])
        # error bars: standard error over test subjects
        sem = np.array([r["seg_dice_sd"] / np.sqrt(max(1, len(r["seg_dice_per_subject"]))) for r in mine])
        ax.errorbar(ns, mean, yerr=sem, marker="o", capsize=3, label=method)
    ns = sorted({r["n"] for r in rows})
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.set_xlabel("labelled training subjects N")
    ax.set_ylabel("test segmentation Dice (31 structures)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_figure(trainings: dict[str, dict], path: Path) -> None:
    """Validation seg and reg Dice against training minutes, from the trainings' records."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, record) in enumerate(trainings.items()):
        history = record.get("history") or []
        if not history:
            continue
        minutes, style = [h[0] for h in history], dict(marker=".", label=name, color=colours[k % len(colours)])
        if not name.startswith("reg-only"):  # one colour per training in both panels
            left.plot(minutes, [h[1] for h in history], **style)
        if not name.startswith(("seg-only", "ceiling")):  # no reg net trained: a flat line
            right.plot(minutes, [h[2] for h in history], **style)
    for ax, what in ((left, "segmentation"), (right, "registration")):
        ax.set_xlabel("training minutes (step time only)")
        ax.set_ylabel(f"validation {what} Dice")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def example_file(out: Path, panel: str) -> Path:
    """Where one panel of the example figure keeps its label codes (``<out>/example/``, committed):
    made while the model is on disk, drawn from the file after the run folder is gone."""
    return out / "example" / (panel.replace(" ", "_").replace("=", "").replace("+", "plus") + ".npz")


def save_example(out: Path, panel: str, codes: np.ndarray) -> None:
    # atomic: a killed run leaves no half-written panel
    atomic_write(example_file(out, panel), lambda handle: np.savez_compressed(handle, codes=codes.astype(np.int32)))


def example_figure(out: Path, image, panels: list[str], scheme) -> None:
    """One test subject's middle slices: each saved panel's labels (those not saved are left out)."""
    from deepatlas.visualization.figures import slices_figure

    codes = {p: np.load(example_file(out, p))["codes"] for p in panels if example_file(out, p).exists()}
    labels = {k: scheme.encode(v, unknown="background") for k, v in codes.items()}
    slices_figure({k: image.array for k in labels}, out / "example.png", labels, scheme.num_classes)


def _protocol_lines(results: dict) -> list[str]:
    p, machine = results["protocol"], results["machine"]
    return [
        f"# DeepAtlas experiment on ixi-2mm ({results['preset']})",
        "",
        f"- command: `{results['command']}`",
        f"- {provenance_line(machine)} {machine['cpu_count']} CPU cores, {machine['platform']}.",
        f"- training budget per method: {p['budget_minutes']:g} min wall clock (validation included), "
        f"best validation checkpoint"
        + ("; every seg net trained with augmentation (`augment.enabled=on`)" if p.get("augment") else ""),
        f"- labelled subjects (seed {results['seed']}): "
        + "; ".join(f"N={n}: {', '.join(ids)}" for n, ids in results["labelled"].items()),
        f"- test subjects: {len(results['test_subjects'])}; registration pairs: each test subject to the next",
        "",
    ]


def _row_lines(rows: list[dict]) -> list[str]:
    lines = [
        "| method | N | seg Dice (sd over subjects) | seg HD95 mm | reg Dice (before) | folds % | SDlogJ "
        "| s / pair | s / image |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        reg = f"{_fmt(r['reg_dice'])} ({_fmt(r['reg_dice_before'])})" if r["reg_dice"] is not None else "-"
        lines.append(
            f"| {r['method']} | {r['n']} | {_fmt(r['seg_dice'])} ({_fmt(r['seg_dice_sd'])}) | "
            f"{_fmt(r['seg_hd95_mm'], '.2f')} | {reg} | {_fmt(r['folds'], '.3f', 100)} | "
            f"{_fmt(r['sdlogj'])} | {_fmt(r['reg_seconds_per_pair'], '.2f')} | "
            f"{_fmt(r['seg_seconds_per_image'], '.2f')} |"
        )
    return lines + [
        "",
        "Seconds per pair and per image: median, in process, 2 CPU cores; atlas rows include one "
        "registration per atlas.",
        "",
    ]


def _paired_lines(rows: list[dict]) -> list[str]:
    lines = [
        "## Paired: DeepAtlas seg nets vs seg-only, per test subject",
        "",
        "| DeepAtlas | N | mean Dice difference | subjects improved |",
        "| --- | --- | --- | --- |",
    ]
    for a in (r for r in rows if r["method"].startswith("DeepAtlas") and r["method"].endswith("(seg net)")):
        b = next((r for r in rows if r["n"] == a["n"] and r["method"] == "seg-only"), None)
        if b:
            diff = [a["seg_dice_per_subject"][s] - b["seg_dice_per_subject"][s] for s in a["seg_dice_per_subject"]]
            lines.append(
                f"| {a['method']} | {a['n']} | {np.mean(diff):+.3f} | {sum(d > 0 for d in diff)} / {len(diff)} |"
            )
    return lines


def _training_lines(trainings: dict) -> list[str]:
    lines = [
        "",
        "## Trainings (model selection on the validation split)",
        "",
        "| run | steps | training min | stopped by | best validation step | its validation seg Dice "
        "| its validation reg Dice | trained on |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, t in trainings.items():
        lines.append(
            f"| {name} | {t['steps']} | {t['minutes']:.1f} | {t['stopped_by']} | {t['best_step']} | "
            f"{_fmt(t['best_val_seg_dice'])} | {_fmt(t['best_val_reg_dice'])} | "
            f"{'; '.join(t.get('machines', [])) or '-'} |"
        )
    return lines


def write_report(results: dict, out: Path) -> None:
    """``results.json``, ``results.md`` (protocol, rows, paired wins, trainings) and the figures."""
    out = Path(out)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    rows, trainings = results["rows"], results["trainings"]
    lines = _protocol_lines(results) + _row_lines(rows) + _paired_lines(rows) + _training_lines(trainings)
    lines += [
        "",
        "![Dice against N](dice_vs_n.png)",
        "",
        "![validation during training](validation_curves.png)",
        "",
        "![one test subject](example.png)",
        "",
    ]
    atomic_write_text(out / "results.md", "\n".join(lines))
    dice_vs_n_figure(rows, out / "dice_vs_n.png")
    curves_figure(trainings, out / "validation_curves.png")


def _short(method: str) -> str:
    """A method's label wrapped for an x axis ("DeepAtlas suggested recipe (seg net)" -> 3 lines)."""
    import textwrap

    return "\n".join(textwrap.wrap(method.replace("DeepAtlas suggested recipe", "DeepAtlas"), 11))


SEED_MARKERS = "osD^v"


def _methods_panel(ax, rows: list[dict], n: int) -> None:
    """One N: a marker per seed (its shape the seed) for every method, a bar at the mean of seeds;
    a method scored on one seed only gets no bar and says so."""
    methods = list(dict.fromkeys(r["method"] for r in rows if r["n"] == n and r["method"] != CEILING))
    for x, method in enumerate(methods):
        mine = [r for r in rows if r["n"] == n and r["method"] == method]
        for r in mine:
            ax.plot(x, r["seg_dice"], SEED_MARKERS[r["seed"] % len(SEED_MARKERS)], color=f"C{x}", alpha=0.8)
        mean = float(np.mean([r["seg_dice"] for r in mine]))
        if len(mine) > 1:
            ax.hlines(mean, x - 0.3, x + 0.3, color="k")
        if len(mine) > 1:
            ax.annotate(f"{mean:.3f}", (x + 0.3, mean), textcoords="offset points", xytext=(2, -3), fontsize=7)
        else:  # no mean to show: the value, and whose it is, below the marker
            label = f"{mean:.3f}\nseed {mine[0]['seed']} only"
            ax.annotate(label, (x, mean), textcoords="offset points", xytext=(0, -8), ha="center", va="top", fontsize=7)
    ceiling = [r["seg_dice"] for r in rows if r["method"] == CEILING]
    if ceiling:
        ax.axhline(float(np.mean(ceiling)), color="k", linestyle="--", linewidth=1)
    ax.set_xlim(-0.6, len(methods) - 0.1)  # room right of the last bar for its mean's label
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([_short(m) for m in methods], fontsize=6.5)
    ax.set_title(f"N = {n} labelled (bar: mean over seeds; dashed: all training labels)", fontsize=8)
    ax.set_ylabel("test segmentation Dice")
    ax.grid(alpha=0.3, axis="y")


def _gain_panel(ax, rows: list[dict], joint: str, ns: list[int]) -> None:
    """``joint`` minus seg-only per test subject of every seed (pairs within a seed), per N."""
    for k, n in enumerate(ns):
        mine = {r["seed"]: r["seg_dice_per_subject"] for r in rows if r["n"] == n and r["method"] == joint}
        base = {r["seed"]: r["seg_dice_per_subject"] for r in rows if r["n"] == n and r["method"] == "seg-only"}
        for seed in sorted(set(mine) & set(base)):
            diff = 100 * np.array([v - base[seed][s] for s, v in mine[seed].items() if s in base[seed]])
            jitter = np.random.default_rng(seed).uniform(-0.15, 0.15, diff.size)
            ax.plot(k + jitter, diff, SEED_MARKERS[seed % len(SEED_MARKERS)], color="0.4", alpha=0.5, markersize=3)
        pooled = [v - base[seed][s] for seed in set(mine) & set(base) for s, v in mine[seed].items() if s in base[seed]]
        if pooled:
            ax.hlines(100 * np.mean(pooled), k - 0.3, k + 0.3, color="k")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xticks(range(len(ns)))
    ax.set_xticklabels([f"N = {n}" for n in ns])
    ax.set_ylabel("Dice points, per test subject")
    ax.set_title(f"{joint}\nminus seg-only, every seed's test subjects", fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def seeds_figure(per_seed: dict[int, dict], joint: str, path: Path) -> None:
    """Test seg Dice of every method over seeds (a panel per N) and, last panel, ``joint`` minus
    seg-only per test subject; a legend says which marker is which seed."""
    plt = pyplot()
    rows = [dict(r, seed=s) for s, res in per_seed.items() for r in res["rows"]]
    ns = sorted({r["n"] for r in rows if r["method"] != CEILING})
    fig, axes = plt.subplots(1, len(ns) + 1, figsize=(6.4 * len(ns) + 3.4, 4.8), squeeze=False)
    for ax, n in zip(axes[0], ns):
        _methods_panel(ax, rows, n)
    _gain_panel(axes[0][-1], rows, joint, ns)
    handles = [
        plt.Line2D([], [], marker=SEED_MARKERS[s % len(SEED_MARKERS)], color="0.3", linestyle="", label=f"seed {s}")
        for s in per_seed
    ]
    fig.legend(handles=handles, loc="upper right", ncol=len(handles), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)
