"""The ``onnx2fx`` command line: one typer app whose commands live in one module per group.

Exit codes: 0 success, 1 the model converted but failed validation, 2 bad input (a one-line
error; ``--debug`` shows the traceback).

Commands are registered here, in the order ``onnx2fx --help`` lists them; each calls the Python
API and maps its typed errors through :func:`.common.reported_errors`.
"""

from __future__ import annotations

import sys

from .analysis import analyze
from .batch_runs import batch, report
from .common import app, console, parse_shapes
from .conversion import convert, export_command, validate
from .evaluation import compare, evaluate
from .quantization import ptq, qft

__all__ = ["app", "main", "parse_shapes"]

app.command()(convert)
app.command()(validate)
app.command()(batch)
app.command()(report)
app.command()(ptq)
app.command()(analyze)
app.command()(qft)
app.command()(evaluate)
app.command()(compare)
app.command("export")(export_command)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
