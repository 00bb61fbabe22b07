"""``deepatlas report``: one HTML page with the figures and numbers of a trained run.

The page embeds its PNG figures (base64), so ``index.html`` alone can be mailed or
archived; the PNGs are also left beside it for slides.

:func:`report_content` chooses and computes what the page shows (the example pair and its
figures, the training curves, the evaluation of the split asked for) as a :class:`ReportContent`;
:func:`render_html` lays it out.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepatlas.data import DataError
from deepatlas.data.io import Volume, load_labelled
from deepatlas.data.subjects import Subject
from deepatlas.evaluation.evaluate_run import evaluate_run, labelled_subjects
from deepatlas.evaluation.metrics import folded_fraction
from deepatlas.files import atomic_write_text
from deepatlas.inference.apply import Registration, register_volumes, segment_volume
from deepatlas.inference.outputs import check_free
from deepatlas.inference.run import TrainedRun
from deepatlas.run_folder import RunFolder
from deepatlas.visualization import figures


@dataclass(frozen=True)
class ExamplePair:
    """The pair the report shows: moving registered to fixed, and the seg net's labels of fixed."""

    moving_id: str
    fixed_id: str
    moving: Volume
    fixed: Volume
    moving_labels: Volume
    fixed_labels: Volume
    registration: Registration
    predicted: np.ndarray


@dataclass(frozen=True)
class ReportContent:
    """What the page shows, chosen and computed; :func:`render_html` only lays it out.

    Attributes:
        checkpoint, step: the checkpoint file's name and its training step.
        example: the ids of the example pair (moving, fixed) and its fraction of folded voxels.
        figures: title -> PNG, in page order.
        summary, source: the evaluation of ``split`` (``summary.json``) and where it came from.
    """

    run_dir: Path
    checkpoint: str
    step: int
    dataset: Path
    split: str | None
    example: tuple[str, str, float]
    figures: dict[str, Path]
    summary: dict
    source: str


def _example_pair(run: TrainedRun, dataset: Path, split: str | None):
    splits_file = Path(run.config.data.splits) if run.config.data.splits else dataset / "splits.json"
    subjects = labelled_subjects(dataset, split if splits_file.exists() else None, splits_file)
    if len(subjects) < 2:
        raise DataError(f"{dataset}: the report needs two labelled subjects (split {split!r})")
    return subjects[0], subjects[1], splits_file if splits_file.exists() else None


def register_example(run: TrainedRun, moving: Subject, fixed: Subject) -> ExamplePair:
    """Load the example pair, register it and segment its fixed image."""
    (moving_image, moving_labels), (fixed_image, fixed_labels) = (
        load_labelled(s.image, s.label) for s in (moving, fixed)
    )
    registration = register_volumes(run, moving_image, fixed_image, moving_labels)
    predicted = segment_volume(run, fixed_image, align="off")  # a pair of the run's own dataset
    return ExamplePair(
        moving.id, fixed.id, moving_image, fixed_image, moving_labels, fixed_labels, registration, predicted
    )


def _labels_figure(run: TrainedRun, pair: ExamplePair, path: Path) -> Path:
    scheme, unknown = run.scheme, run.config.data.unknown_labels

    def classes(codes, source):
        return scheme.encode(codes, source=source, unknown=unknown)

    fixed, moving = pair.fixed.array, pair.moving.array
    return figures.slices_figure(
        {n: fixed if n != "moving" else moving for n in ("fixed", "moving", "warped", "seg net")},
        path,
        labels={
            "fixed": classes(pair.fixed_labels.array, str(pair.fixed_labels.path)),
            "moving": classes(pair.moving_labels.array, str(pair.moving_labels.path)),
            "warped": classes(pair.registration.warped_labels, "warped labels"),
            "seg net": classes(pair.predicted, "prediction"),
        },
        num_classes=scheme.num_classes,
    )


def example_figures(run: TrainedRun, pair: ExamplePair, folder: Path) -> dict[str, Path]:
    """The figures of the example pair, written into ``folder``: title -> PNG."""
    fixed, result = pair.fixed, pair.registration
    dims = fixed.array.ndim
    return {
        "Fixed, moving and warped moving image": figures.slices_figure(
            {"fixed": fixed.array, "moving": pair.moving.array, "warped": result.warped}, folder / "images.png"
        ),
        "Labels: fixed (manual), moving (manual), moving warped to fixed, seg net on fixed": _labels_figure(
            run, pair, folder / "labels.png"
        ),
        "Deformation: a regular grid pulled through the displacement field": figures.grid_figure(
            np.einsum("ij,j...->i...", np.linalg.inv(fixed.affine[:dims, :dims]), result.displacement),
            fixed.array,
            folder / "grid.png",
        ),
        "Jacobian determinant (folds, J <= 0, in red)": figures.jacobian_figure(
            result.jacobian, folder / "jacobian.png"
        ),
    }


def split_evaluation(
    run: TrainedRun, folder: RunFolder, dataset: Path, split: str | None, splits_file: Path | None
) -> tuple[dict, str]:
    """The evaluation of the split asked for, never another split's: the run folder's
    ``evaluation-<split>/summary.json``, made (and kept there) when missing; and where it came from."""
    evaluation = folder.evaluation(split) / "summary.json"
    if evaluation.exists():
        return json.loads(evaluation.read_text()), evaluation.parent.name
    summary = evaluate_run(
        run,
        dataset,
        split if splits_file else None,
        splits_file,
        "next",
        output=folder.evaluation(split),
        progress=False,
    )
    return summary, f"evaluation-{split} (made for this report)"


def report_content(
    run: TrainedRun, run_dir: Path, output: Path, dataset: str | Path | None = None, split: str | None = None
) -> ReportContent:
    """Choose and compute what the report of ``run`` shows; its figures are written to ``output/figures``."""
    dataset = Path(dataset or run.config.data.dataset or "")
    split = split or run.config.data.val_split
    moving, fixed, splits_file = _example_pair(run, dataset, split)
    pair = register_example(run, moving, fixed)
    made = example_figures(run, pair, output / "figures")
    folder = RunFolder(run_dir)
    if folder.metrics.exists():
        made["Training curves"] = figures.curves_figure(folder.metrics, output / "figures" / "curves.png")
    summary, source = split_evaluation(run, folder, dataset, split, splits_file)
    folds = folded_fraction(pair.registration.jacobian)
    return ReportContent(
        run_dir, run.path.name, run.step, dataset, split, (pair.moving_id, pair.fixed_id, folds), made, summary, source
    )


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


def _figure(title: str, png: Path) -> str:
    """A section with the PNG embedded (base64), so the page stands alone."""
    data = base64.b64encode(png.read_bytes()).decode()
    return f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"


def render_html(content: ReportContent) -> str:
    """The page of ``content``: one self-contained HTML document."""
    summary = content.summary
    moving_id, fixed_id, folds = content.example
    dataset, split = html.escape(str(content.dataset)), html.escape(str(content.split))
    return f"""<!doctype html><html><head><meta charset='utf-8'><title>deepatlas report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
img{{max-width:100%}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>deepatlas report</h1>
<p>Run <code>{html.escape(str(content.run_dir))}</code>, checkpoint <code>{html.escape(content.checkpoint)}</code>
at step {content.step}. Example pair from <code>{dataset}</code> split {split}:
moving <b>{html.escape(moving_id)}</b> registered to fixed <b>{html.escape(fixed_id)}</b>:
{100 * folds:.3f}% folded voxels.</p>
{"".join(_figure(title, png) for title, png in content.figures.items())}
<h2>Per-structure Dice ({html.escape(content.source)})</h2>
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
    atomic_write_text(page, render_html(report_content(run, run_dir, output, dataset, split)))
    return page
