"""The house rule of docs/architecture.md: imports go downward only, in the layers' listed order."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "deepatlas"
SETTINGS = {"options", "config", "config_parse", "recipes", "files", "checkpoint", "device", "run_folder"}
# docs/architecture.md's table, bottom to top
ORDER = ["settings", "data", "networks", "losses", "registration", "inference", "evaluation", "training"]
ORDER += ["visualization", "cli"]
# data.synthetic makes its phantoms' ground-truth fields with the nets' own warp (documented there)
ALLOWED = {("data.synthetic", "networks")}


def layer(module: str) -> str:
    """``deepatlas.training.trainer`` -> ``training``; the top-level settings modules -> ``settings``."""
    if module == "deepatlas":  # ``from deepatlas import __version__``: the package's own __init__, a string
        return "settings"
    top = module.split(".")[1]
    if top in SETTINGS:
        return "settings"
    if top == "__init__":
        return "settings"
    return "cli" if top in {"demo", "__main__"} else top


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deepatlas"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("deepatlas.")}
    return found


def test_every_layer_imports_only_itself_and_the_layers_below():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "deepatlas." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        here = layer(module)
        assert here in ORDER, f"{module}: a layer docs/architecture.md does not list"
        for target in imports(path):
            there = layer(target)
            short = module.removeprefix("deepatlas.")
            if ORDER.index(there) > ORDER.index(here) and (short, there) not in ALLOWED:
                upward.append(f"{short} -> {target}")
    assert not upward, "imports from a layer listed later in docs/architecture.md: " + ", ".join(upward)


def test_the_rule_sees_an_upward_import(tmp_path):
    # the checker itself: a training module imported by the data layer is reported
    bad = tmp_path / "bad.py"
    bad.write_text("from deepatlas.training.trainer import Trainer\n")
    assert ORDER.index(layer(next(iter(imports(bad))))) > ORDER.index(layer("deepatlas.data.bad"))
