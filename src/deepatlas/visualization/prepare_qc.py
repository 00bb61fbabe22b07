"""The QC page of a prepared dataset: one row per subject, worst first, with the reason.

Each row: the state (ok / poor / failed), the alignment score, the reason, and a PNG of the
prepared image's middle slices (axial, coronal, sagittal) with the template's outline drawn over
them in red, so a misalignment shows as brain outside the line or a gap inside it.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np

from deepatlas.files import atomic_write_text
from deepatlas.visualization.figures import planes, pyplot
from deepatlas.visualization.slices import save_figure

OUTLINE_LEVEL = 0.15
"""The template's outline is its iso-line at this intensity (0..1): the edge of the brain."""


def qc_figure(image: np.ndarray, template: np.ndarray, title: str, path: Path, mask: np.ndarray | None = None) -> Path:
    """Middle slices of ``image`` (on the template grid, 0..1) with the template's outline in red and,
    for a scan that was brain-extracted, the brain mask's outline in cyan: a PNG."""
    plt = pyplot()
    shown, outline = planes(image), planes(template)
    masks = planes(mask.astype(np.float32)) if mask is not None else {}
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 2.9), squeeze=False)
    for ax, name in zip(axes[0], shown):
        ax.imshow(shown[name], cmap="gray", origin="lower", vmin=0, vmax=1)
        ax.contour(outline[name], levels=[OUTLINE_LEVEL], colors="red", linewidths=0.8, origin="lower")
        if name in masks and masks[name].any():
            ax.contour(masks[name], levels=[0.5], colors="cyan", linewidths=0.6, origin="lower")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def _order(record: dict) -> tuple:
    """Failed first, then by ascending score: what needs a look comes first."""
    return ({"failed": 0, "poor": 1, "ok": 2}[record["status"]], record.get("score") or 0.0, record["id"])


def _row(record: dict, page: Path, images: dict[str, Path]) -> str:
    png = images.get(record["id"])
    picture = f'<img src="{html.escape(os.path.relpath(png, page.parent))}">' if png and png.exists() else ""
    score = f"{record['score']:.3f}" if record.get("score") is not None else "-"
    cells = [record["id"], record["status"], score, record.get("reason") or "", record["source"]]
    text = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
    return f'<tr class="{record["status"]}">{text}<td>{picture}</td></tr>'


def qc_page(records: list[dict], images: dict[str, Path], page: Path, min_score: float) -> Path:
    """The HTML page: a summary line, then one row per subject (``images``: id -> QC PNG)."""
    counts = {state: sum(r["status"] == state for r in records) for state in ("ok", "poor", "failed")}
    rows = "\n".join(_row(r, page, images) for r in sorted(records, key=_order))
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>deepatlas prepare: QC</title>
<style>body{{font-family:sans-serif}} td{{padding:4px 8px;vertical-align:middle}} .failed{{background:#fdd}}
.poor{{background:#ffe9c7}} img{{height:170px}}</style></head><body>
<h1>Prepared dataset: quality control</h1>
<p>{counts["ok"]} ok (in <code>images/</code>), {counts["poor"]} rejected for an alignment score below {min_score}
(in <code>rejected/</code>), {counts["failed"]} failed. Score: global correlation with the template, both pooled
to 4 mm (1 = identical up to intensity scale). Red: the template's outline; cyan: the brain mask of a
whole-head scan that was brain-extracted first (<code>masks/</code>).</p>
<table><tr><th>subject</th><th>state</th><th>score</th><th>reason</th><th>source</th><th>mid slices</th></tr>
{rows}
</table></body></html>"""
    return atomic_write_text(page, body)
