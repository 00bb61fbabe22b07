"""The house rule of docs/architecture.md: imports go downward only, in the layers' listed order."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "deepatlas"
SETTINGS = {"options", "config", "config_parse", "recipes", "files", "checkpoint", "device", "run_folder"}
# docs/architecture.md's table, bottom to top
ORDER = ["settings", "data", "networks", "losses", "registration", "inference", "evaluation", "training"]
ORDER += ["visualization", "cli"]
# data.synthetic makes its phantoms' ground-truth fields with the nets' own warp (documented there)
ALLOWED = {("data.synthetic", "deepatlas.networks.warp")}


def layer(module: str) -> str:
    """``deepatlas.training.trainer`` -> ``training``; the top-level settings modules -> ``settings``."""
    if module == "deepatlas":  # ``from deepatlas import __version__``: the package's own __init__, a string
        return "settings"
    top = module.split(".")[1]
    if top in SETTINGS:
        return "settings"
    if top in {"__init__", "__version__"}:
        return "settings"
    return "cli" if top in {"demo", "__main__"} else top


def imports(path: Path, module: str) -> set[str]:
    """Every deepatlas module ``path`` (module ``module``) imports, wherever in the file: relative
    imports resolved, ``from deepatlas import x`` read as ``deepatlas.x``."""
    found = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base == "deepatlas":
                found |= {f"deepatlas.{a.name}" for a in node.names}
            elif base.startswith("deepatlas."):
                found.add(base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("deepatlas.")}
    return found


def test_every_layer_imports_only_itself_and_the_layers_below():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50  # the package was found
    upward = [f for path in modules for f in upward_imports(path, module_name(path))]
    assert not upward, "imports from a layer listed later in docs/architecture.md: " + ", ".join(upward)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("deepatlas",) + (parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts))


def upward_imports(path: Path, module: str) -> list[str]:
    here = layer(module)
    assert here in ORDER, f"{module}: a layer docs/architecture.md does not list"
    short = module.removeprefix("deepatlas.")
    return [
        f"{short} -> {target}"
        for target in sorted(imports(path, module))
        if ORDER.index(layer(target)) > ORDER.index(here) and (short, target) not in ALLOWED
    ]


@pytest.mark.parametrize(
    "source",
    [
        "from deepatlas.training.trainer import Trainer",
        "import deepatlas.training.trainer as t",
        "from deepatlas import training",
        "from ..training import trainer",
        "def f():\n    from deepatlas.inference.run import load_run",
    ],
)
def test_the_rule_sees_every_form_of_an_upward_import(tmp_path, source):
    bad = tmp_path / "bad.py"  # read as the module deepatlas.data.bad
    bad.write_text(source + "\n")
    assert upward_imports(bad, "deepatlas.data.bad"), source
    bad.write_text("from deepatlas.options import FUSION\nfrom . import io\n")  # downward and sideways: fine
    assert upward_imports(bad, "deepatlas.data.bad") == []


MAX_FUNCTION_LINES = 60
"""The house rule (docs/architecture.md): no function over 60 lines, in the package and its benchmarks."""


def long_functions(path: Path) -> list[str]:
    """``file:line name (n lines)`` for each function or method of ``path`` longer than the rule allows."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{path}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_the_house_rule(tmp_path):
    roots = [PACKAGE, PACKAGE.parents[1] / "benchmarks", PACKAGE.parents[1] / "scripts"]
    found = [f for root in roots for path in sorted(root.rglob("*.py")) for f in long_functions(path)]
    assert found == [], "split these:\n" + "\n".join(found)
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    assert long_functions(long) == [f"{long}:1 f ({MAX_FUNCTION_LINES + 1} lines)"]
