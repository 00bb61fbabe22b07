"""The README's Python API paragraph names only what its packages export."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def named_exports() -> dict[str, list[str]]:
    """``deepatlas.pkg`` -> the names in the parentheses after it, in "The pieces are separate" paragraph."""
    text = README.read_text()
    start = text.index("The pieces are separate:")
    paragraph = text[start : text.index("\n\n", start)]
    found = {}
    for package, names in re.findall(r"`(deepatlas\.\w+)`\s*\(([^)]*)\)", paragraph):
        found[package] = [n for n in re.findall(r"`(\w+)`", names)]
    return found


def test_every_name_in_the_readme_api_paragraph_imports_from_its_package():
    exports = named_exports()
    assert len(exports) >= 5 and sum(map(len, exports.values())) >= 15  # the paragraph was found and read
    missing = [f"{p}.{n}" for p, names in exports.items() for n in names if not hasattr(importlib.import_module(p), n)]
    assert not missing, f"README names these, but their packages do not export them: {missing}"
