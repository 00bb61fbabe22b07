"""What a benchmark's figures were measured on: the CPU, the code, torch, threads and date. Every
results file the benchmarks write records it (a ``machine`` key in json, a line in markdown), so a
number can be traced to the machine and commit that gave it."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.paths import REPO


def cpu_model() -> str:
    """The CPU's name, family/model and whether it has native bf16: virtual machines often report
    a bare "AMD EPYC", which hides a Zen 3 (no bf16, slower steps) from a Zen 5."""
    info = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    if "model name" not in info:
        return platform.processor() or "unknown"
    flags = set(info.get("flags", "").split())
    bf16 = "bf16" if flags & {"avx512_bf16", "amx_bf16"} else "no bf16"
    return f"{info['model name']} (family {info.get('cpu family', '?')} model {info.get('model', '?')}, {bf16})"


def git_commit() -> str:
    """The checkout's short commit, ``+dirty`` when tracked files differ from it; "unknown" outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def provenance() -> dict:
    """This machine and checkout now: CPU model, commit, torch version, torch's thread count, the
    platform and the date (UTC, ISO 8601); the ``machine`` key of a results file."""
    import torch

    return {
        "cpu": cpu_model(),
        "commit": git_commit(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def provenance_line(machine: dict) -> str:
    """One markdown line of a ``provenance()`` record (older records' missing keys left out)."""
    parts = [f"Machine: {machine.get('cpu', 'unknown CPU')}"]
    parts += [f"{machine['threads']} thread{'s' * (machine['threads'] != 1)}"] if "threads" in machine else []
    parts += [f"commit {machine['commit']}"] if "commit" in machine else []
    parts += [f"torch {machine['torch']}"] if "torch" in machine else []
    parts += [machine["date"]] if "date" in machine else []
    return ", ".join(parts) + "."


def command_line() -> str:
    """This process's command as typed from the repository root: ``python -m benchmarks.NAME ARGS``."""
    script = Path(sys.argv[0])
    head = f"python -m benchmarks.{script.stem}" if script.parent == REPO / "benchmarks" else f"python {script}"
    return " ".join([head, *sys.argv[1:]])
