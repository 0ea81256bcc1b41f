"""One live progress bar for every long loop (batch, calibration, fine-tuning, evaluation).

:class:`LiveProgress` draws a rich progress bar, or does nothing at all when it is switched off,
so a loop calls ``advance`` without asking whether anyone is watching. rich is imported only
when a bar is shown. The columns are always, in this order: a spinner (optional), the bold
description, the bar, ``done/total``, a text after the count (a unit, or a field such as a
running loss), the elapsed time, the remaining time (optional), then further text columns.
Text columns are rich format strings: ``{task.fields[NAME]}`` shows a field given to
:meth:`LiveProgress.update`, :meth:`LiveProgress.advance` or :meth:`LiveProgress.restart`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["LiveProgress"]


class LiveProgress:
    """A progress bar over one count, shown on ``console`` while the ``with`` block runs.

    ``console``: a rich console, ``True`` for a new console on stderr, or ``None``/``False`` for
    no bar (every method is then a no-op). ``after_count``: the text column after
    ``done/total``; ``trailing``: text columns after the times; ``fields``: the initial values of
    the fields those columns show.
    """

    def __init__(self, console: Console | bool | None, description: str, total: int | None, *,
                 after_count: str | None = None, trailing: Sequence[str] = (), spinner: bool = True,
                 remaining: bool = False, **fields: Any) -> None:
        self.progress: Any = None
        self.task: Any = None
        if console is None or console is False:
            return
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

        columns: list[Any] = [SpinnerColumn()] if spinner else []
        columns += [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
        if after_count is not None:
            columns.append(TextColumn(after_count))
        columns.append(TimeElapsedColumn())
        if remaining:
            columns.append(TimeRemainingColumn())
        columns += [TextColumn(text) for text in trailing]
        self.progress = Progress(*columns, console=Console(stderr=True) if console is True else console)
        self.task = self.progress.add_task(description, total=total, **fields)

    @property
    def shown(self) -> bool:
        """Whether a bar is drawn (callers skip work that only feeds the display)."""
        return self.progress is not None

    def __enter__(self) -> LiveProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, count: int = 1, **fields: Any) -> None:
        """Count ``count`` more done, and show new values of ``fields``."""
        if self.progress is not None:
            self.progress.update(self.task, advance=count, **fields)

    def update(self, **fields: Any) -> None:
        """Show new values of ``fields`` without counting anything."""
        if self.progress is not None:
            self.progress.update(self.task, **fields)

    def restart(self, description: str, total: int | None, **fields: Any) -> None:
        """Finish the current count and start a new one below it (the next epoch, say)."""
        if self.progress is not None:
            self.progress.stop_task(self.task)
            self.task = self.progress.add_task(description, total=total, **fields)

    def print(self, text: str) -> None:
        """Print a line above the bar (markup allowed; no automatic highlighting)."""
        if self.progress is not None:
            self.progress.console.print(text, highlight=False)
