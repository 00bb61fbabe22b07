"""Atomic writes and safe checkpoint loading.

A checkpoint is data, not code: it holds tensors, numbers, strings and nested
dicts/lists only, and is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = 1


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


def _atomic(path: Path, write) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return _atomic(Path(path), lambda h: h.write(text.encode()))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` via a temp file and rename, so a kill never leaves half a checkpoint."""
    return _atomic(Path(path), lambda h: torch.save({"format": CHECKPOINT_FORMAT, **state}, h))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        # torch's own message runs over several lines; one says it all
        text = str(err)
        blocked = "GLOBAL" in text or "Unsupported global" in text
        why = "it holds Python objects, which could run code: refused" if blocked else "not a torch file, or damaged"
        raise ValueError(f"{path}: not a readable deepatlas checkpoint ({why})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: checkpoint format {state.get('format') if isinstance(state, dict) else None!r} "
            f"is not {CHECKPOINT_FORMAT}; it was written by an incompatible deepatlas version"
        )
    return state


def check_finite_weights(state: dict[str, Any], keys: tuple[str, ...], path: str | Path) -> None:
    """Refuse a state whose networks hold NaN or infinite weights (a run that diverged)."""
    for key in keys:
        bad = [name for name, t in state.get(key, {}).items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise ValueError(
                f"{path}: the {key} weights are not finite (NaN or inf in {bad[0]}"
                f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); the run diverged at or before "
                f"this checkpoint: use an earlier checkpoint, or train again with a smaller learning rate"
            )


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
