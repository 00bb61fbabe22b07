"""The training schedule: optional pre-training, then alternating phases.

Steps are numbered globally from 0; the phase of any step is a pure function of
the schedule, so a resumed run knows where it is from the step count alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepatlas.config import ScheduleConfig


@dataclass(frozen=True)
class Schedule:
    seg_pretrain: int
    reg_pretrain: int
    cycles: int
    reg_steps: int
    seg_steps: int

    @classmethod
    def from_config(cls, cfg: ScheduleConfig) -> Schedule:
        values = (
            cfg.seg_pretrain_steps,
            cfg.reg_pretrain_steps,
            cfg.cycles,
            cfg.reg_steps_per_cycle,
            cfg.seg_steps_per_cycle,
        )
        if any(v < 0 for v in values):
            raise ValueError(f"schedule step counts must be >= 0, got {values}")
        return cls(*values)

    @property
    def total(self) -> int:
        return self.seg_pretrain + self.reg_pretrain + self.cycles * (self.reg_steps + self.seg_steps)

    def phase_at(self, step: int) -> str:
        """Phase of global step ``step`` (``0 <= step < total``)."""
        if not 0 <= step < self.total:
            raise IndexError(f"step {step} outside the schedule of {self.total} steps")
        if step < self.seg_pretrain:
            return "seg_pretrain"
        step -= self.seg_pretrain
        if step < self.reg_pretrain:
            return "reg_pretrain"
        step -= self.reg_pretrain
        return "reg" if step % (self.reg_steps + self.seg_steps) < self.reg_steps else "seg"


def lr_scale(progress: float, decay: float) -> float:
    """Factor on the learning rates at ``progress`` through the run (0 at its start, 1 at its end):
    1, then falling linearly to 0 over the last ``decay`` of the run (0: constant rates).

    A constant rate for most of the run and a short decay at its end (warmup-stable-decay) suits a
    time budget: the end is known, and a run resumed with a longer budget decays later instead of
    having spent its rate early, as a cosine over a fixed step count would.
    """
    if decay <= 0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - progress) / decay))
