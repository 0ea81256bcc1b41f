"""The fine-tuning learning-rate schedule: linear warm-up, then cosine decay.

A quantized model starts close to a good solution (the PTQ result), so fine-tuning should first
take small steps while Adam's moment estimates settle (warm-up: the rate rises linearly from 0 to
its peak over the first ``warmup`` share of the steps), then anneal (a half cosine from the peak to
``final`` times the peak), ending in a point the last steps do not kick out of a rounding bucket
again. Every parameter group has its own peak; the schedule scales them all by the same factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class LrSchedule:
    """``factor(step)`` multiplies each group's peak learning rate at optimizer step ``step`` (0-based)."""

    kind: str = "cosine"
    total_steps: int = 1
    warmup: float = 0.1  # share of the steps spent warming up
    final: float = 0.0  # the last step's factor (cosine)

    @property
    def warmup_steps(self) -> int:
        return 0 if self.kind == "constant" else int(math.ceil(self.warmup * self.total_steps))

    def factor(self, step: int) -> float:
        if self.kind == "constant":
            return 1.0
        warm = self.warmup_steps
        if step < warm:
            return (step + 1) / warm
        span = max(self.total_steps - warm - 1, 1)
        progress = min(max(step - warm, 0) / span, 1.0)
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, peaks: Sequence[float], step: int) -> None:
        """Set every group's learning rate for ``step``."""
        factor = self.factor(step)
        for group, peak in zip(optimizer.param_groups, peaks):
            group["lr"] = peak * factor

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "final_factor": self.final if self.kind == "cosine" else 1.0}
