"""``deepatlas report``: one HTML page with the figures and numbers of a trained run.

The page embeds its PNG figures (base64), so ``index.html`` alone can be mailed or
archived; the PNGs are also left beside it for slides.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from deepatlas.checkpoint import atomic_write_text
from deepatlas.data import DataError, find_subjects, load_splits
from deepatlas.data.io import load_image, load_label_codes
from deepatlas.data.prepare import select_split
from deepatlas.evaluation.evaluate_run import evaluate_run
from deepatlas.inference.apply import register_volumes, segment_volume
from deepatlas.inference.outputs import check_free
from deepatlas.inference.run import TrainedRun
from deepatlas.run_folder import RunFolder
from deepatlas.visualization import figures


def _example_pair(run: TrainedRun, dataset: Path, split: str | None):
    subjects = [s for s in find_subjects(dataset) if s.label is not None]
    splits_file = Path(run.config.data.splits) if run.config.data.splits else dataset / "splits.json"
    if split is not None and splits_file.exists():
        subjects = [
            s
            for s in select_split(find_subjects(dataset), load_splits(splits_file), split, str(splits_file))
            if s.label is not None
        ]
    if len(subjects) < 2:
        raise DataError(f"{dataset}: the report needs two labelled subjects (split {split!r})")
    return subjects[0], subjects[1], splits_file if splits_file.exists() else None


def _table(summary: dict) -> str:
    reg = summary.get("reg_dice_per_structure", {})
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{d:.3f}</td><td>{summary['seg_hd95_per_structure'][n]:.2f}</td>"
        f"<td>{reg.get(n, float('nan')):.3f}</td></tr>"
        for n, d in summary["seg_dice_per_structure"].items()
    )
    return (
        "<table><tr><th>structure</th><th>seg Dice</th><th>seg HD95 (mm)</th><th>reg Dice</th></tr>"
        f"{rows}<tr><th>mean</th><th>{summary['seg_dice']:.3f}</th><th>{summary['seg_hd95_mm']:.2f}</th>"
        f"<th>{summary.get('reg_dice', float('nan')):.3f}</th></tr></table>"
    )


def build_report(
    run: TrainedRun,
    run_dir: Path,
    output: Path,
    dataset: str | Path | None = None,
    split: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Render the report of ``run`` (loaded from ``run_dir``) into ``output/index.html``."""
    page = output / "index.html"
    check_free([page], overwrite)
    dataset = Path(dataset or run.config.data.dataset or "")
    split = split or run.config.data.val_split
    moving_s, fixed_s, splits_file = _example_pair(run, dataset, split)
    moving, fixed = load_image(moving_s.image), load_image(fixed_s.image)
    moving_lab, fixed_lab = load_label_codes(moving_s.label), load_label_codes(fixed_s.label)
    result = register_volumes(run, moving, fixed, moving_lab)
    predicted = segment_volume(run, fixed)
    scheme = run.scheme
    unknown = run.config.data.unknown_labels

    def classes(codes, source):
        return scheme.encode(codes, source=source, unknown=unknown)

    figs = output / "figures"
    made = {
        "Fixed, moving and warped moving image": figures.slices_figure(
            {"fixed": fixed.array, "moving": moving.array, "warped": result.warped}, figs / "images.png"
        ),
        "Labels: fixed (manual), moving (manual), moving warped to fixed, seg net on fixed": figures.slices_figure(
            {n: fixed.array if n != "moving" else moving.array for n in ("fixed", "moving", "warped", "seg net")},
            figs / "labels.png",
            labels={
                "fixed": classes(fixed_lab.array, str(fixed_lab.path)),
                "moving": classes(moving_lab.array, str(moving_lab.path)),
                "warped": classes(result.warped_labels, "warped labels"),
                "seg net": classes(predicted, "prediction"),
            },
            num_classes=scheme.num_classes,
        ),
        "Deformation: a regular grid pulled through the displacement field": figures.grid_figure(
            np.einsum(
                "ij,j...->i...",
                np.linalg.inv(fixed.affine[: fixed.array.ndim, : fixed.array.ndim]),
                result.displacement,
            ),
            fixed.array,
            figs / "grid.png",
        ),
        "Jacobian determinant (folds, J <= 0, in red)": figures.jacobian_figure(result.jacobian, figs / "jacobian.png"),
    }
    folder = RunFolder(run_dir)
    metrics = folder.metrics
    if metrics.exists():
        made["Training curves"] = figures.curves_figure(metrics, figs / "curves.png")

    # the evaluation of the split asked for, never another split's
    evaluation = folder.evaluation(split) / "summary.json"
    if evaluation.exists():
        summary = json.loads(evaluation.read_text())
        source = evaluation.parent.name
    else:
        summary = evaluate_run(
            run,
            dataset,
            split if splits_file else None,
            splits_file,
            "next",
            output=folder.evaluation(split),
            progress=False,
        )
        source = f"evaluation-{split} (made for this report)"

    sections = []
    for title, png in made.items():
        data = base64.b64encode(png.read_bytes()).decode()
        sections.append(
            f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
        )
    body = f"""<!doctype html><html><head><meta charset='utf-8'><title>deepatlas report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
img{{max-width:100%}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>deepatlas report</h1>
<p>Run <code>{html.escape(str(run_dir))}</code>, checkpoint <code>{html.escape(run.path.name)}</code>
at step {run.step}. Example pair from <code>{html.escape(str(dataset))}</code> split {html.escape(str(split))}:
moving <b>{html.escape(moving_s.id)}</b> registered to fixed <b>{html.escape(fixed_s.id)}</b>:
{100 * float((result.jacobian <= 0).mean()):.3f}% folded voxels.</p>
{"".join(sections)}
<h2>Per-structure Dice ({html.escape(source)})</h2>
<p>{summary["subjects"]} subjects, {summary["pair_count"]} pairs ({html.escape(str(summary["pairs"]))});
registration Dice {summary.get("reg_dice", float("nan")):.3f}
(before {summary.get("reg_dice_before", float("nan")):.3f}),
folds {100 * summary.get("folds", float("nan")):.3f}%, SDlogJ {summary.get("sdlogj", float("nan")):.3f}.</p>
{_table(summary)}
<p>Displacements are in mm along the NIfTI (RAS) world axes; the moving point matching fixed point p is p + u(p).
Jacobian determinants by central differences (one-sided at the border); a fold is a voxel with J &le; 0.</p>
<script>window.addEventListener('load',()=>{{const im=[...document.images];
document.body.dataset.images=im.length;document.body.dataset.imagesLoaded=im.filter(i=>i.complete&&i.naturalWidth>0).length;}});</script>
</body></html>"""
    atomic_write_text(page, body)
    return page
