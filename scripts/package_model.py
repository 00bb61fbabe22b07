"""Package a trained run as a slim, shippable run folder (what ``models/brain-2mm`` is).

Usage:
    python scripts/package_model.py RUN OUT [--checkpoint best] [--refine KEY=VALUE ...] [--seg-from RUN2 ...]
        [--set SECTION.KEY=VALUE ...]

Keeps what inference needs: both networks' weights, the configuration (with the refinement
settings of this deepatlas version, or the given overrides), the label scheme, the grid, and
the training record (data.json, summary, the validation lines of metrics.jsonl). Drops the
optimiser states and RNG states that only resuming needs (2-3x the size). The result loads
with ``weights_only=True`` like any run folder, and every command takes it as RUN.

``--seg-from RUN2`` takes the segmentation net (weights and ``seg_net`` settings) from another
run's checkpoint instead. Meant for runs in which every training image is labelled: there the
two nets never teach each other (every pair is "both labelled": the reg net's anatomy loss
uses the manual labels, and the seg net's anatomy loss is not used), so a reg net and a seg
net from two such runs make the same model as one run would. The label schemes and grids must match.
``--seg-from RUN2 RUN3 ...``: the average of those runs' seg-net weights (runs with the same settings, trained
from one start with different seeds: one training draw's luck is averaged out; docs/results.md, "Labels that
move by a fraction of a voxel").

``--set SECTION.KEY=VALUE`` sets an inference setting chosen for the packaged model on its validation
brains (e.g. ``seg_net.atlas_vote=3``), as ``train`` takes overrides; applied last.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

from deepatlas.checkpoint import average_weights, load_checkpoint, save_checkpoint
from deepatlas.config import Config, RefineConfig
from deepatlas.config_parse import apply_overrides
from deepatlas.files import atomic_write_text
from deepatlas.run_folder import RunFolder

KEEP = (
    "step",
    "best_score",
    "elapsed_s",
    "reg_net",
    "seg_net",
    "config",
    "label_scheme",
    "spatial_dims",
    "num_classes",
    "grid_shape",
    "grid_affine",
)


def take_seg_net(slim: dict, config: Config, others: list[Path]) -> dict:
    """The ``seg_net`` weights and settings of the best checkpoint of run ``others[0]`` into ``slim``/``config``;
    of several runs: their weights' average, the runs trained alike (same ``seg_net`` settings) from one start."""
    paths = [RunFolder(other).checkpoint("best") for other in others]
    states = [load_checkpoint(path) for path in paths]
    for path, state in zip(paths, states):
        for key in ("label_scheme", "grid_shape", "num_classes", "spatial_dims"):
            if json.dumps(state[key], default=str) != json.dumps(slim[key], default=str):
                raise SystemExit(f"{path}: {key} differs from the packaged run's; cannot combine")
    settings = [Config.from_saved(state["config"]).seg_net for state in states]
    for path, setting in zip(paths[1:], settings[1:]):
        if setting != settings[0]:
            raise SystemExit(f"{path}: its seg_net settings differ from {paths[0]}'s; cannot average the two")
    try:
        slim["seg_net"] = average_weights([state["seg_net"] for state in states], [str(p) for p in paths])
    except ValueError as err:
        raise SystemExit(str(err)) from None
    config.seg_net = settings[0]
    origin = {"seg_net_from": [str(p) for p in paths], "seg_net_step": [int(s["step"]) for s in states]}
    return {k: v[0] for k, v in origin.items()} if len(paths) == 1 else origin  # one run: as before


def package(
    run: Path,
    out: Path,
    checkpoint: str = "best",
    refine: list[str] | None = None,
    seg_from: list[Path] | None = None,
    settings: list[str] | None = None,
) -> Path:
    run, out = RunFolder(run), RunFolder(out)
    source = run.checkpoint(checkpoint)
    state = load_checkpoint(source)
    config = Config.from_saved(state["config"])
    config.refine = RefineConfig().with_overrides(refine or [])
    slim = {k: state[k] for k in KEEP if k in state}
    origin = take_seg_net(slim, config, seg_from) if seg_from else {}
    if settings:
        config = Config.from_dict(apply_overrides(config.to_dict(), settings))
        config.validate()
    slim["config"] = config.to_dict()
    save_checkpoint(slim, out.checkpoint("best"))
    config.save(out.config)
    for name in ("labels", "data", "summary"):
        if getattr(run, name).exists():
            shutil.copyfile(getattr(run, name), getattr(out, name))
    if run.metrics.exists():
        lines = [line for line in run.metrics.read_text().splitlines() if '"validation"' in line]
        atomic_write_text(out.root / "validation.jsonl", "\n".join(lines) + "\n")
    atomic_write_text(
        out.root / "checkpoint.json",
        json.dumps(
            {"source": str(source), "step": int(state["step"]), "best_score": float(state["best_score"])}
            | origin
            | ({"settings": settings} if settings else {}),
            indent=1,
        ),
    )
    return out.root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"])
    parser.add_argument("--refine", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--seg-from", type=Path, nargs="+", metavar="RUN2", help="take the seg net from this run, or several's average"
    )
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="settings")
    args = parser.parse_args()
    out = package(args.run, args.out, args.checkpoint, args.refine, args.seg_from, args.settings)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    settings = yaml.safe_dump(RefineConfig().with_overrides(args.refine).__dict__, default_flow_style=True)
    print(f"{out}: {size:.1f} MB; refine settings: {settings.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
