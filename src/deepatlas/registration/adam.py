"""Adam for registration's per-pair optimisers (refinement, the affine stage), without ``torch.optim``."""

from __future__ import annotations

import math

import torch


class AdamSteps:
    """Adam (Kingma and Ba; as ``torch.optim.Adam`` without weight decay or amsgrad) on one tensor,
    written out: ``torch.optim``'s first use in a process imports ``torch._dynamo``, a second or two
    of the start of every command that registers, for a handful of tensor operations per step. The
    moments live beside the tensor, on its device; ``lr`` may be changed between steps (a schedule)."""

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.eps, self.betas, self.steps = param, lr, eps, betas, 0
        self.mean = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.square = torch.zeros_like(param, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self) -> None:
        """One update from ``param.grad``: moments, their bias corrections, the step."""
        (beta1, beta2), grad = self.betas, self.param.grad
        self.steps += 1
        self.mean.lerp_(grad, 1 - beta1)
        self.square.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denominator = (self.square.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(self.eps)
        self.param.addcdiv_(self.mean, denominator, value=-self.lr / (1 - beta1**self.steps))
