"""Progress bars for the long steps of quantization (calibration, AdaRound, fine-tuning).

Both are shapes of the one progress bar every long loop uses (:class:`onnx2fx.progress.LiveProgress`):
a count with its unit, and the steps of each epoch with the running mean loss. They draw on standard
error and do nothing when disabled, so the steps call them the same way whether or not anyone is
watching.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..progress import LiveProgress


def show_progress(progress: bool | None) -> bool:
    """Whether to draw progress bars: as asked, or by default when standard error is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


class CountProgress:
    """A bar over calibration samples, or another count; ``with`` gives the function that advances it."""

    def __init__(self, enabled: bool, total: int, label: str = "calibrating", unit: str = "samples") -> None:
        self.bar = LiveProgress(enabled, label, total, after_count=unit, remaining=True)

    def __enter__(self) -> Callable[[int], None]:
        self.bar.__enter__()
        return self.bar.advance

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)


class EpochProgress:
    """A bar over the steps of each epoch (one line per epoch) with the running mean loss."""

    def __init__(self, enabled: bool, steps: int | None) -> None:
        self.steps = steps
        self.epochs_started = 0
        self.bar = LiveProgress(enabled, "fine-tuning", steps, after_count="steps  loss {task.fields[loss]}",
                                remaining=True, loss="—")

    def __enter__(self) -> EpochProgress:
        self.bar.__enter__()
        return self

    def start_epoch(self, epoch: int, epochs: int) -> None:
        description = f"fine-tuning epoch {epoch + 1}/{epochs}"
        if self.epochs_started:
            self.bar.restart(description, self.steps, loss="—")
        else:
            self.bar.update(description=description)
        self.epochs_started += 1

    def advance(self, running_loss: float) -> None:
        self.bar.advance(1, loss=f"{running_loss:.5g}")

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)
