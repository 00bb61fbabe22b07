"""The Python API paragraph of docs/usage.md (where the README points for the API) names only what its
packages export."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

USAGE = Path(__file__).resolve().parents[1] / "docs" / "usage.md"


def api_paragraph() -> str:
    text = USAGE.read_text()
    start = text.index("The pieces are separate:")
    return text[start : text.index("\n\n", start)]


def named_exports(paragraph: str) -> dict[str, list[str]]:
    """``deepatlas.pkg`` -> the backticked names after it, up to the next package."""
    found, package = {}, None
    for name in re.findall(r"`([\w.]+)`", paragraph):
        if name.startswith("deepatlas."):
            found.setdefault(name, [])
            package = name
        elif package is not None:
            found[package].append(name)
    return found


def test_every_name_in_the_api_paragraph_of_usage_imports_from_its_package():
    paragraph = api_paragraph()
    exports = named_exports(paragraph)
    assert set(exports) == {f"deepatlas.{p}" for p in ("networks", "registration", "losses", "data", "evaluation")}
    assert all(len(names) >= 3 for names in exports.values()), exports  # each package's list was read
    # a name must be an object the package exports, not a submodule that happens to be loaded
    # (a missing name reads as the default, the module `inspect`: flagged too)
    missing = [
        f"{p}.{n}"
        for p, names in exports.items()
        for n in names
        if inspect.ismodule(getattr(importlib.import_module(p), n, inspect))
    ]
    assert not missing, f"docs/usage.md names these, but their packages do not export them: {missing}"
