"""Progress bars for the long steps of quantization (calibration, AdaRound, fine-tuning).

They draw with rich on standard error and do nothing when disabled, so the steps call them the
same way whether or not anyone is watching.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def show_progress(progress: bool | None) -> bool:
    """Whether to draw progress bars: as asked, or by default when standard error is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


class CountProgress:
    """A rich progress bar over calibration samples, or another count (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, label: str = "calibrating", unit: str = "samples") -> None:
        self.enabled, self.total, self.label, self.unit = enabled, total, label, unit
        self.bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(SpinnerColumn(), TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn(self.unit), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=False)
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


class EpochProgress:
    """A rich progress bar over the steps of each epoch with the running mean loss (no-op when off)."""

    def __init__(self, enabled: bool, steps: int | None) -> None:
        self.enabled, self.steps = enabled, steps
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> EpochProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("steps  loss {task.fields[loss]}"),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
            self.bar.start()
        return self

    def start_epoch(self, epoch: int, epochs: int) -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.stop_task(self.task)
            self.task = self.bar.add_task(f"fine-tuning epoch {epoch + 1}/{epochs}", total=self.steps, loss="—")

    def advance(self, running_loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=f"{running_loss:.5g}")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
