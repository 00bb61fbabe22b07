"""Data-parallel training over processes started by ``torchrun`` (gloo on CPU, NCCL on GPUs).

Every rank holds both nets and the same random state; each step every rank draws the same
global batch of pairs and trains on its own slice of it, and the gradients are averaged by
one all-reduce before the optimiser steps, so all ranks keep identical weights and a run
can be resumed with another number of processes. This is what ``DistributedDataParallel``
does, done by hand because DeepAtlas freezes one net while the other trains and DDP does
not allow ``requires_grad`` to change after wrapping. Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, logs and summaries."""
        return self.rank == 0

    def local_slice(self, global_batch: int) -> slice:
        """This rank's part of a global batch of ``global_batch`` items."""
        if global_batch % self.size:
            raise ValueError(
                f"config schedule.batch_size ({global_batch}) must be divisible by the number of "
                f"processes ({self.size}): it is the batch of all processes together"
            )
        per_rank = global_batch // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def sum_(self, buffer: torch.Tensor) -> torch.Tensor:
        """Sum ``buffer`` over all ranks, in place."""
        if self.size > 1:
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        return buffer

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any (decisions such as stopping must agree)."""
        return self.max(float(flag)) > 0

    def max(self, value: float) -> float:
        """The largest ``value`` of all ranks, on every rank: for what all must agree on, such as a
        learning rate that follows each process's own clock."""
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def world_from_env(device: str = "auto") -> World:
    """The world ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``, ...).

    Starts the process group (NCCL when the run is on CUDA, gloo otherwise) the first time;
    without ``torchrun`` this is one process and nothing is started.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return World(rank, size, local_rank)


def rank_device(device: str, world: World) -> str:
    """The device of this rank: with several processes on CUDA, one GPU each (``cuda:LOCAL_RANK``)."""
    if world.size > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
