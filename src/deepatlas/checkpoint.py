"""Checkpoints: written atomically (:mod:`deepatlas.files`), read safely.

A checkpoint is data, not code: it holds tensors, numbers, strings and nested
dicts/lists only, and is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from deepatlas.files import atomic_write

CHECKPOINT_FORMAT = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` via a temp file and rename, so a kill never leaves half a checkpoint."""
    return atomic_write(Path(path), lambda h: torch.save({"format": CHECKPOINT_FORMAT, **state}, h))


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


def average_weights(states: list[dict[str, torch.Tensor]], sources: list[str]) -> dict[str, torch.Tensor]:
    """The uniform average of several state dicts of one network (a weight average of runs trained from one
    start, which lands between their minima rather than on a random one of them). Floating tensors are
    averaged in float64 and cast back; integer buffers (batch-norm step counts) are the first state's. The
    states must hold the same tensors with the same shapes; ``sources`` names them in the error."""
    first = states[0]
    for state, source in zip(states[1:], sources[1:]):
        if state.keys() != first.keys():
            raise ValueError(f"{source}: its network has other layers than {sources[0]}'s; cannot average them")
        bad = [k for k in first if state[k].shape != first[k].shape]
        if bad:
            raise ValueError(
                f"{source}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, not "
                f"{tuple(first[bad[0]].shape)} as in {sources[0]}; cannot average them"
            )
    return {
        k: torch.stack([s[k].double() for s in states]).mean(0).to(t.dtype) if t.is_floating_point() else t.clone()
        for k, t in first.items()
    }
