"""``onnx2fx analyze``: which operators of a model convert, without converting it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import (
    DebugOption,
    ShapeOption,
    graph_input_names,
    out_console,
    parse_shapes,
    reported_errors,
    require_model_file,
    resolve_unnamed,
    with_status,
)


def analyze(
    model: Annotated[Path, typer.Argument(help="The ONNX model to analyse (it is not converted).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Markdown report.")] = Path("operator_report.md"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON.")] = None,
    shape: ShapeOption = None,
    debug: DebugOption = False,
) -> None:
    """Operator gap analysis: which nodes of MODEL convert, and the reason for each one that does not.

    Exit code 0 even when operators are unsupported (the report says which); 2 when MODEL cannot be read.
    """
    from ..coverage import scan_onnx_operators, write_report

    with reported_errors(debug):
        require_model_file(model)
        shapes = resolve_unnamed(parse_shapes(shape), graph_input_names(model) if shape else [])
        result = with_status(f"analysing {model.name}", lambda: scan_onnx_operators(model, input_shapes=shapes))
        write_report(result, output, json_out)
    table = Table(title=f"{model.name}: {result.supported_nodes}/{result.total_nodes} nodes convert "
                  f"({result.coverage_percent:.1f} %)")
    for column in ("operator", "nodes", "status", "reason"):
        table.add_column(column, overflow="fold")
    styles = {"supported": "green", "supported with caveat": "yellow", "unsupported": "red"}
    for s in result.operators:
        reason = next(iter(s.reasons), "")
        table.add_row(s.key, str(s.count), f"[{styles[s.status]}]{s.status}[/]",
                      reason if len(reason) <= 120 else reason[:117] + "...")
    out_console.print(table)
    written = ", ".join(str(p) for p in (output, json_out) if p is not None)
    out_console.print(f"Report: {written}", highlight=False)
