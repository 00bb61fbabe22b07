"""Many files, several worker processes: each loads the run once and takes jobs from a queue.

Worth it where one process leaves cores idle (a many-core CPU: a registration uses ~2-4 cores
well; several GPUs are used one per run instead). Each worker gets an equal share of the
threads, so ``--workers 4`` on 16 cores runs 4 jobs of 4 threads.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

_RUN = None  # the worker's run, loaded once by _start


def run_jobs(
    args: argparse.Namespace, jobs: Sequence[Any], work: Callable[[Any, Any], Any], load_run, desc: str
) -> list[Any]:
    """Call ``work(run, job)`` for every job: here, or in ``args.workers`` processes; returns what
    the calls returned (in the order they finished), so messages count what was done.

    ``work`` and the jobs must be picklable (module-level functions, paths); an error in a
    worker ends the command with that error, as it would in one process.
    """
    workers = min(getattr(args, "workers", 1) or 1, len(jobs))
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if workers == 1:
        run = load_run(args)
        return [work(run, job) for job in tqdm(jobs, desc=desc, disable=len(jobs) < 2)]
    import torch

    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with context.Pool(workers, initializer=_start, initargs=(load_run, args, threads)) as pool:
        calls = [(work, job) for job in jobs]
        return list(tqdm(pool.imap_unordered(_call, calls), total=len(jobs), desc=desc))


def _start(load_run, args: argparse.Namespace, threads: int) -> None:
    global _RUN
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    warnings.filterwarnings("ignore", message=".*Using PyTorch native grid_sample.*")
    _RUN = load_run(args)


def _call(item: tuple[Callable[[Any, Any], Any], Any]) -> Any:
    work, job = item
    return work(_RUN, job)
