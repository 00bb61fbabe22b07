"""Writing files so that no reader ever sees half of one: every writer in deepatlas goes through here.

A file is written to a temporary name beside its destination and renamed over it in one
step, so a killed writer (SIGKILL, full disk, power loss) leaves the old file, or none,
never a torn one; what it may leave is a hidden temporary file, which
:func:`remove_orphans` deletes when the run resumes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from pathlib import Path


def default_file_mode() -> int:
    """What ``open()`` would give a new file (mkstemp makes private 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A reader never sees a half-written file, and a killed writer leaves the old
    file (if any) intact. ``suffix`` lets writers that choose a format by file
    name (nibabel, matplotlib) see the right extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: Path, write) -> Path:
    """Call ``write(handle)`` on a binary handle of a temporary file that then replaces ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(Path(path), lambda h: h.write(text.encode()))


def atomic_write_csv(path: Path, rows: list[dict]) -> Path:
    """Rows of one shape (the first row's keys are the columns) as a CSV file with a header."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return atomic_write_text(path, out.getvalue())


def remove_orphans(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in ``folder``.

    :func:`atomic_path` names them ``.<final name>.<random><suffix>``; only this process
    writes the folder, so any that exist now belong to a writer that is gone.
    """
    folder = Path(folder)
    orphans = [p for p in folder.glob(".*.tmp*") if p.is_file()] if folder.is_dir() else []
    for path in orphans:
        path.unlink(missing_ok=True)
    return orphans
