"""The report, rendered in a real browser (headless Chromium) with every figure loaded."""

import os
import re
import shutil
import subprocess

import pytest

from deepatlas.cli.main import main
from deepatlas.visualization import save_panels

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(page):
    """The DOM after load, as headless Chromium sees it."""
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={page.parent / '.chromium'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed (CI installs it)")
@pytest.mark.parametrize("which", ["trained_2d", "trained_3d"])
def test_report_renders_in_chromium_with_all_images(request, which, tmp_path):
    assert CHROMIUM is not None, "CI must install Debian's chromium (see .ci/run)"
    run = request.getfixturevalue(which)
    out = tmp_path / "report"
    assert main(["report", str(run), "-o", str(out)]) == 0
    dom = render(out / "index.html")
    total = int(re.search(r'data-images="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    assert total == 5 and loaded == total
    assert "Per-structure Dice" in dom and "WhiteMatter" in dom
    for name in ("images", "labels", "grid", "jacobian", "curves"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", str(run), "-o", str(out)]) == 2  # no silent overwrite


def test_panels_png(tmp_path):
    import numpy as np

    path = save_panels(
        [("a", np.random.rand(8, 9, 10), np.random.randint(0, 3, (8, 9, 10))), ("b", np.random.rand(8, 9), None)],
        tmp_path / "p.png",
    )
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_render_html_lays_out_the_content_it_is_given(tmp_path):
    import numpy as np

    from deepatlas.visualization.report import ReportContent, render_html

    png = save_panels([("a", np.random.rand(8, 9), None)], tmp_path / "a.png")
    summary = {
        "subjects": 3,
        "pair_count": 0,
        "pairs": "none",
        "seg_dice": 0.5,
        "seg_hd95_mm": 2.0,
        "seg_dice_per_structure": {"Cortex": 0.5},
        "seg_hd95_per_structure": {"Cortex": 2.0},
    }
    content = ReportContent(
        tmp_path / "run", "best.pt", 7, tmp_path / "data", "test", ("m<1>", "f", 0.25), {"A & B": png}, summary, "here"
    )
    page = render_html(content)
    assert "m&lt;1&gt;" in page and "<h2>A &amp; B</h2>" in page and "25.000% folded voxels" in page
    assert page.count("data:image/png;base64,") == 1 and "split test" in page and "at step 7" in page
    assert "<td>Cortex</td><td>0.500</td><td>2.00</td><td>nan</td>" in page
