"""Stopping a run whose losses or gradients stop being numbers, before they reach the weights."""

from __future__ import annotations

import math

import torch


class NonFiniteLoss(ValueError):
    """A loss term or gradient became NaN or infinite; the step was not applied.

    Attributes:
        step: the step (1-based, as in ``metrics.jsonl``) that failed.
        phase: its schedule phase.
        term: the first non-finite loss term (``gradient`` if only the gradients were).
        pairs: the images of the step, as ``moving -> fixed`` ids.
        advice: what the user can do (set by whoever knows: the run knows its checkpoints).
    """

    def __init__(self, step: int, phase: str, term: str, pairs: str) -> None:
        self.step, self.phase, self.term, self.pairs = step, phase, term, pairs
        self.advice = ""
        super().__init__(step, phase, term, pairs)

    def __str__(self) -> str:
        text = f"step {self.step} ({self.phase}): loss term {self.term!r} is not finite on {self.pairs}"
        return f"{text}; {self.advice}" if self.advice else text


def first_nonfinite(losses: dict[str, float]) -> str | None:
    """The name of the first loss term that is NaN or infinite (the total ``loss`` last), or None."""
    names = [k for k in losses if k != "loss"] + (["loss"] if "loss" in losses else [])
    for name in names:
        value = losses[name]
        if isinstance(value, float) and not math.isfinite(value):
            return name
    return None


def gradient_buffer(params: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """The gradients of ``params`` and the loss in one flat float32 buffer (one all-reduce, one check)."""
    parts = [p.grad.reshape(-1).float() for p in params if p.grad is not None]
    return torch.cat(parts + [loss.detach().reshape(1).float()])


def unflatten_into_grads(params: list[torch.nn.Parameter], buffer: torch.Tensor) -> None:
    """Write the (averaged) gradients of ``buffer`` back into ``params``' ``.grad``."""
    offset = 0
    for p in params:
        if p.grad is None:
            continue
        n = p.grad.numel()
        p.grad.copy_(buffer[offset : offset + n].view_as(p.grad))
        offset += n
