"""What a batch shows on the terminal: live progress while it runs, a table of results at the end.

The progress line counts outcomes as they arrive (an up-to-date model that failed when it ran
counts as failed) and names the models running now with what each is doing (converting, PTQ,
QFT, evaluating a form: images done of all); each model that runs gets one line with its outcome
above it, and its evaluation's grade or failure (up-to-date and skipped models get none).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from ..progress import LiveProgress
from .records import STATUSES, ModelResult

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from .summary import BatchSummary

__all__ = ["BatchDisplay", "evaluation_note", "results_table", "task_metrics_cell"]

STATUS_STYLES = {"ok": "green", "failed": "red", "crashed": "magenta", "skipped": "dim", "up-to-date": "cyan"}


class BatchDisplay:
    """Live progress on ``console`` (nothing when it is ``None``)."""

    def __init__(self, console: Console | None, total: int) -> None:
        self.counts = dict.fromkeys(STATUSES, 0)
        self.failed_before = 0
        self.running: list[str] = []
        self.doing: dict[str, str] = {}
        self.bar = LiveProgress(console, "batch", total, trailing=("{task.fields[counts]}",
                                                                   "[dim]{task.fields[running]}"),
                                counts=self._counts(), running="")

    def __enter__(self) -> BatchDisplay:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def _counts(self) -> str:
        c = self.counts
        passed = c["ok"] + c["up-to-date"] - self.failed_before
        return (f"[green]{passed} passed[/] [red]{c['failed'] + self.failed_before} failed[/] "
                f"[magenta]{c['crashed']} crashed[/] {c['skipped']} skipped")

    def _update(self, advance: int = 0) -> None:
        if self.bar.shown:
            running = ", ".join(f"{rel} ({self.doing[rel]})" if self.doing.get(rel) else rel
                                for rel in self.running[:4])
            running += f" +{len(self.running) - 4}" if len(self.running) > 4 else ""
            self.bar.advance(advance, counts=self._counts(), running=f"running: {escape(running)}" if running else "")

    def started(self, rel: str) -> None:
        self.running.append(rel)
        self._update()

    def progress(self, rel: str, text: str) -> None:
        self.doing[rel] = text
        self._update()

    def finished(self, result: ModelResult) -> None:
        if result.path in self.running:
            self.running.remove(result.path)
        self.doing.pop(result.path, None)
        self.counts[result.status] += 1
        if result.status == "up-to-date" and result.passed is False:
            self.failed_before += 1
        if self.bar.shown and result.status not in ("up-to-date", "skipped"):
            style = STATUS_STYLES[result.status]
            detail = f": {result.error['type']}: {result.error['message']}" if result.error else ""
            if len(detail) > 160:
                detail = detail[:157] + "..."
            self.bar.print(f"[{style}]{result.status:>7}[/] {escape(result.path + detail)}"
                           f"{escape(evaluation_note(result.evaluation))}")
        self._update(advance=1)


def evaluation_note(evaluation: dict[str, Any] | None) -> str:
    """What a model's line says about its evaluation ("" when none was requested or it did not run)."""
    if evaluation is None or evaluation["status"] == "not_run":
        return ""
    if evaluation["status"] == "ok":
        grade = evaluation["grade"] or "one form, nothing to compare"
        return f" — task metrics on {evaluation['images']} images: {grade}"
    error = evaluation["error"] or {}
    note = f" — evaluation failed: {error.get('type', '')}: {error.get('message', '')}"
    return note if len(note) <= 200 else note[:197] + "..."


def task_metrics_cell(evaluation: dict[str, Any] | None) -> str:
    """The results table's cell: the float model's first headline metric and the worst grade."""
    if evaluation is None:
        return "—"
    if evaluation["status"] == "not_run":
        return "not run"
    done = [f for f in evaluation["forms"] if f["metrics"]]
    text = ""
    if done:
        name, value = next(iter(done[0]["metrics"].items()))
        text = f"{name} {value:.4f}"
        if evaluation["grade"]:
            text += f", {evaluation['grade']}"
    if evaluation["status"] == "failed":
        failed = sum(1 for f in evaluation["forms"] if f["error"]) or "all"
        text = (text + "; " if text else "") + f"[red]failed ({failed} forms)[/]"
    return text


def results_table(summary: BatchSummary, models_dir: str | os.PathLike[str]) -> Table:
    """One row per model: status, relative error, conversion time, task metrics when evaluated,
    and error (``onnx2fx batch``)."""
    from rich.table import Table

    evaluated = any(r.evaluation is not None for r in summary.results)
    table = Table(title=f"{len(summary.results)} models from {models_dir}")
    for column in ("model", "status", "rel. error %", "conversion") + (("task metrics",) if evaluated else ()):
        table.add_column(column, no_wrap=True)
    table.add_column("error", overflow="fold")
    for r in summary.results:
        status = r.status if r.passed is not False or r.status != "up-to-date" else "up-to-date (failed)"
        error = f"{r.error['type']}: {r.error['message']}" if r.error else ""
        cells = [escape(r.path), f"[{STATUS_STYLES[r.status]}]{status}[/]",
                 "—" if r.relative_error is None else f"{r.relative_error:.3g}",
                 "—" if r.conversion_seconds is None else f"{r.conversion_seconds:.2f} s"]
        if evaluated:
            cells.append(task_metrics_cell(r.evaluation))
        table.add_row(*cells, escape(error if len(error) <= 200 else error[:197] + "..."))
    return table
