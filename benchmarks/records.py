"""What benchmarks keep: results files written whole, and per-item caches that let a run resume.

- :func:`write_results`: ``<name>.json`` (atomically) and the markdown table beside it, printed;
- :class:`JsonlCache`: results by key, each appended to a jsonl file as it is computed, read back
  by the next run of the same command, so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from deepatlas.files import atomic_write_text


def write_results(
    result: dict, out: Path, write_markdown: Callable[[dict, Path], object], name: str = "results"
) -> Path:
    """``out/<name>.json`` and ``out/<name>.md`` (``write_markdown(result, path)``), the table printed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps(result, indent=1))
    table = out / f"{name}.md"
    write_markdown(result, table)
    print(table.read_text())
    return table


class JsonlCache:
    """Results by key, appended to the jsonl file ``path`` as they are computed (an interrupted run resumes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.values: dict = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                self.values[row["key"]] = row["value"]

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, compute: Callable[[], object]):
        """The value of ``key``, computed (timed, printed, appended) when not yet known."""
        if key not in self.values:
            started = time.perf_counter()
            self.values[key] = compute()
            print(f"{key}: {time.perf_counter() - started:.1f} s", flush=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps({"key": key, "value": self.values[key]}) + "\n")
        return self.values[key]
