"""The README is a front door: short, the set-up commands on its first screen, and every figure it
quotes equal to the committed result file it comes from (issue 37).

Each quoted figure has one entry in FIGURES: the README's words around it, with ``{}`` where the
value goes, and the result file and key it is read from, rounded as the README prints it. A
decimal number in the README's prose that no entry covers fails the test: a new figure needs a
source here, so the README cannot drift from the measurements it quotes.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
REGISTRATION = RESULTS / "registration" / "results.json"
SEEDS = RESULTS / "experiment-seeds" / "summary.md"
SEEDS_JSON = RESULTS / "experiment-seeds" / "summary.json"
AUGMENT_N1 = RESULTS / "tuning" / "amd-epyc" / "n1-augment.md"
AUGMENT_N5 = RESULTS / "tuning" / "amd-epyc-zen3" / "n5-augment.md"
HEADS = RESULTS / "raw_scans" / "heads.json"
MIRROR = RESULTS / "mirror_average" / "results.json"
SYNTHESIS_N1 = RESULTS / "tuning" / "intel-xeon-amx" / "synthesis.md"
SYNTHESIS, SYNTHESIS_ALONE = "synthesis,n=1,intel", "seg-only,augment,n=1,45min,intel"
SYNTHESIS_N5, SYNTHESIS_ALONE_N5 = "synthesis,n=5,intel", "seg-only,augment,n=5,45min,intel,batch=1"

# decimal numbers in the README that are not measurements (the Python version)
NOT_FIGURES = {"3.10"}


@cache
def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@cache
def _table(path: Path) -> list[dict[str, str]]:
    """The rows of the first markdown table in a result file, keyed by its header."""
    rows = [line for line in path.read_text().splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    header, body = cells[0], [c for c in cells[1:] if not set("".join(c)) <= set("- ")]
    return [dict(zip(header, row)) for row in body]


def _first_number(text: str) -> float:
    return float(re.search(r"[-+]?\d+\.\d+", text).group())


def _registration(method: str, key: str) -> float:
    return _json(REGISTRATION)["methods"][method][key]


def _seeds(method: str, n: int) -> float:
    """A mean over seeds of summary.md's table: 'seg Dice: mean (sd over seeds)'."""
    (row,) = [r for r in _table(SEEDS) if r["method"] == method and r["N"] == str(n)]
    return _first_number(row["seg Dice: mean (sd over seeds)"])


def _gain(n: int) -> float:
    """The joint seg net minus the seg net alone, mean over seeds, in Dice points."""
    return 100 * _json(SEEDS_JSON)["paired"]["DeepAtlas suggested recipe (seg net) - seg-only"][str(n)]["mean"]


def _sweep(path: Path, variant: str) -> float:
    (row,) = [r for r in _table(path) if r["variant"] == variant]
    return _first_number(row["seg Dice, best checkpoint (step)"])


def _head(key: str) -> float:
    """The IXI head of ixi-heads (the one with labels)."""
    (head,) = _json(HEADS)["heads"]
    return head[key]


def _mirror_gain() -> float:
    """Mirrored inference's test Dice gain, in points: the mean over brains of mirrored minus one pass."""
    rows = _json(MIRROR)["rows"]["test"]
    return 100 * sum(r["on"]["dice"] - r["off"]["dice"] for r in rows) / len(rows)


def _budget_minutes() -> str:
    return re.search(r"budget per training: (\d+) min", SEEDS.read_text()).group(1)


NET, DEFAULT = "net alone", "net + refine (default: 2x 20 + full 5 steps)"
CLI, GREEDY, FIREANTS = (
    "deepatlas register (command line, default)",
    "PICSL greedy (NCC 2x2x2, 100x50x10, deformable only)",
    "FireANTs greedy (CC 5, 200/100/50 at 4x/2x/1x, deformable only, CPU)",
)
JOINT, ALONE = "DeepAtlas suggested recipe (seg net)", "seg-only"
BOTH = "DeepAtlas suggested recipe (seg net + reg net + atlas)"

# (README words with {} for each value, the values as the README prints them)
FIGURES = [
    ("On the {} consecutive test pairs", lambda: [str(_json(REGISTRATION)["num_pairs"])]),
    (
        "the net alone reaches Dice {} in {} s a pair",
        lambda: [f"{_registration(NET, 'dice'):.3f}", f"{_registration(NET, 'seconds_per_pair'):.2f}"],
    ),
    (
        "net + refinement (the default) {} in {} s",
        lambda: [f"{_registration(DEFAULT, 'dice'):.3f}", f"{_registration(DEFAULT, 'seconds_per_pair'):.2f}"],
    ),
    ("({} s a pair through the command line", lambda: [f"{_registration(CLI, 'seconds_per_pair'):.2f}"]),
    ("against {} unregistered", lambda: [f"{_registration('identity', 'dice'):.3f}"]),
    (
        "PICSL greedy {} in {} s and FireANTs {} in {} s",
        lambda: [
            f"{_registration(peer, key):{form}}"
            for peer in (GREEDY, FIREANTS)
            for key, form in (("dice", ".3f"), ("seconds_per_pair", ".2f"))
        ],
    ),
    ("Joint training, {} minutes on 2 CPU cores", lambda: [_budget_minutes()]),
    (
        "means over {} draws of the labelled subjects",
        lambda: [str(len(_json(SEEDS_JSON)["seeds"]))],
    ),
    (
        "the DeepAtlas seg net reaches test Dice {} against {} for the same seg net trained alone",
        lambda: [f"{_seeds(JOINT, 1):.3f}", f"{_seeds(ALONE, 1):.3f}"],
    ),
    ("without augmentation ({} points)", lambda: [f"{_gain(1):+.1f}"]),
    (
        "with five {} against {} ({})",
        lambda: [f"{_seeds(JOINT, 5):.3f}", f"{_seeds(ALONE, 5):.3f}", f"{_gain(5):+.1f}"],
    ),
    (
        "reach {} and {} (`atlas-segment --seg-net-weight 1`)",
        lambda: [f"{_seeds(BOTH, 1):.3f}", f"{_seeds(BOTH, 5):.3f}"],
    ),
    (
        "the seg net trained on all {} training label maps, {}.",
        lambda: ["150", f"{_seeds('seg-only, every training label (ceiling)', 150):.3f}"],
    ),
    (
        "{} alone against {} joint with one labelled subject",
        lambda: [f"{_sweep(AUGMENT_N1, 'seg-only,augment'):.3f}", f"{_sweep(AUGMENT_N1, 'suggested,augment'):.3f}"],
    ),
    (
        "{} alone against {} joint with five",
        lambda: [f"{_sweep(AUGMENT_N5, 'seg-only,augment'):.3f}", f"{_sweep(AUGMENT_N5, 'suggested,augment'):.3f}"],
    ),
    (
        "reaches Dice {} against its own labels, {} without stripping",
        lambda: [f"{_head('seg_dice_default'):.3f}", f"{_head('seg_dice_unstripped'):.3f}"],
    ),
    ("the two averaged ({} Dice on the test split", lambda: [f"{_mirror_gain():+.1f}"]),
    (
        "does beat it with one: {} against {} for the augmented seg net alone",
        lambda: [f"{_sweep(SYNTHESIS_N1, SYNTHESIS):.3f}", f"{_sweep(SYNTHESIS_N1, SYNTHESIS_ALONE):.3f}"],
    ),
    (
        "45 minutes each, at once on one machine), {} points",
        lambda: [f"{100 * (_sweep(SYNTHESIS_N1, SYNTHESIS) - _sweep(SYNTHESIS_N1, SYNTHESIS_ALONE)):+.1f}"],
    ),
    (
        "with five, {} against {} for the seg net alone given the same steps of one image, level",
        lambda: [f"{_sweep(SYNTHESIS_N1, SYNTHESIS_N5):.3f}", f"{_sweep(SYNTHESIS_N1, SYNTHESIS_ALONE_N5):.3f}"],
    ),
]


def prose() -> str:
    """The README without its code blocks, whitespace (line breaks) made single spaces."""
    text = re.sub(r"```.*?```", " ", README.read_text(), flags=re.DOTALL)
    return " ".join(text.split())


def test_every_figure_the_readme_quotes_equals_its_result_file():
    text = prose()
    wrong = []
    for words, values in FIGURES:
        expected = words.format(*values())
        if expected not in text:
            wrong.append(expected)
    assert not wrong, "README should say (from benchmarks/results/):\n" + "\n".join(wrong)


def test_the_readme_quotes_no_figure_without_a_source():
    text = prose()
    covered = []
    for words, values in FIGURES:
        start = text.find(words.format(*values()))
        if start >= 0:
            covered.append(range(start, start + len(words.format(*values()))))
    unsourced = [
        m.group()
        for m in re.finditer(r"[-+]?\d+\.\d+", text)
        if m.group() not in NOT_FIGURES and not any(m.start() in span for span in covered)
    ]
    assert not unsourced, f"README figures with no entry in FIGURES (give each its result file): {unsourced}"


def test_the_readme_is_short_and_starts_with_the_set_up_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README has {len(lines)} lines; details belong in docs/"
    first_screen = [line.split("#")[0].strip() for line in lines[:40]]
    for command in ("bash scripts/demo.sh", "bash scripts/test.sh"):
        assert command in first_screen, f"{command} not within the README's first 40 lines"
        assert (ROOT / command.split()[1]).exists()


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_links_to_files_and_headings_that_exist():
    for target in re.findall(r"\]\(([^)\s]+)\)", README.read_text()):
        if target.startswith("http"):
            continue
        path, _, anchor = target.partition("#")
        assert (ROOT / path).exists(), f"README links to {path}, which does not exist"
        if anchor:
            assert anchor in _anchors(ROOT / path), f"README links to {target}: no such heading"
