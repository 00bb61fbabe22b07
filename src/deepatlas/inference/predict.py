"""Forward passes of the networks alone on tensors: segment images, register pairs (no gradients,
batched). The command line's ``segment`` and ``register`` (:mod:`deepatlas.inference.apply`) add
the affine stage, refinement and resampling to each volume's own grid."""

from __future__ import annotations

import torch
from torch import nn

from deepatlas.device import autocast


@torch.no_grad()
def segment_with_net(
    seg_net: nn.Module, images: torch.Tensor, batch_size: int = 2, amp: torch.dtype | None = None
) -> torch.Tensor:
    """Class-index maps ``Nx1xHxW[xD]`` (uint8/int16 like the labels) for images ``Nx1xHxW[xD]``."""
    device = next(seg_net.parameters()).device
    was_training = seg_net.training
    seg_net.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device)
        with autocast(device, amp):
            logits = seg_net(batch)
        out.append(logits.argmax(1, keepdim=True).cpu())
    seg_net.train(was_training)
    return torch.cat(out).to(torch.int16)


@torch.no_grad()
def register_with_net(
    reg_net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor, batch_size: int = 2, amp: torch.dtype | None = None
) -> torch.Tensor:
    """Displacement fields ``N x dims x HxW[xD]`` (voxels, float32) taking each moving image onto its fixed one."""
    device = next(reg_net.parameters()).device
    was_training = reg_net.training
    reg_net.eval()
    out = []
    for start in range(0, moving.shape[0], batch_size):
        with autocast(device, amp):
            ddf = reg_net(moving[start : start + batch_size].to(device), fixed[start : start + batch_size].to(device))
        out.append(ddf.float().cpu())
    reg_net.train(was_training)
    return torch.cat(out)


# the names before segment_with_net / register_with_net, kept for one release (docs/usage.md)
segment = segment_with_net
register = register_with_net
