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
import json
import os
import socket
import tempfile
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, folders go unlocked
    fcntl = None

LOCK_NAME = ".deepatlas.lock"
"""The lock file of a folder a command writes into (:func:`folder_lock`)."""


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


class FolderBusyError(FileExistsError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str):
    """Hold ``folder`` for this process while the block runs; another process asking for it meanwhile
    gets :class:`FolderBusyError` naming the holder (pid, host, command, since when).

    An OS advisory lock (``flock``) on ``<folder>/.deepatlas.lock``: the kernel releases it when the
    holder ends, killed or not, so a stale lock never blocks anyone; the file itself is removed on
    release. A folder the lock had to create is removed again if nothing was written into it.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = _acquire(path, folder, command) if fcntl is not None else None
    try:
        yield path
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)  # before the unlock: a waiter that opened it sees it gone and retries
            os.close(fd)  # releases the lock
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty


def _acquire(path: Path, folder: Path, command: str) -> int:
    """The locked descriptor of ``path``, holding this process's description."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0))
            os.close(fd)
            raise FolderBusyError(
                f"{folder}: in use by {holder}; wait for it to end, or choose another folder"
            ) from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            since = time.strftime("%Y-%m-%d %H:%M:%S")
            info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": since}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            return fd
        os.close(fd)  # the holder removed that file between our open and our lock: take the new one


def _holder(text: bytes) -> str:
    """``pid 12 on host (deepatlas segment, since ...)`` from a lock file's contents."""
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']} ({info['command']}, since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process (it has not said which yet)"
