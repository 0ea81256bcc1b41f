"""``onnx2fx convert``, ``onnx2fx validate`` and ``onnx2fx export``: ONNX to PyTorch, checked against onnxruntime,
and back to ONNX."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import (
    DebugOption,
    ShapeOption,
    console,
    graph_input_names,
    out_console,
    parse_shapes,
    reported_errors,
    require_model_file,
    resolve_unnamed,
    with_status,
)


def convert(
    model: Annotated[Path, typer.Argument(help="The ONNX model to convert.", exists=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("output"),
    shape: ShapeOption = None,
    debug: DebugOption = False,
    idioms: Annotated[bool, typer.Option("--idioms/--no-idioms", help="Write exporters' decompositions of GELU, "
                                         "SiLU, HardSwish, LayerNorm, RMSNorm and attention as one call each.")] = True,
) -> None:
    """Convert MODEL into OUTPUT/model.py, weights.safetensors, model_full.pt and conversion.json."""
    from ..converter import OnnxToFxConverter

    with reported_errors(debug):
        require_model_file(model)
        shapes = resolve_unnamed(parse_shapes(shape), graph_input_names(model) if shape else [])
        converter = OnnxToFxConverter(model, input_shapes=shapes, idioms=idioms)
        with_status(f"converting {model.name}", converter.convert)
        paths = with_status(f"writing {output}", lambda: converter.save(output))
        info = converter.conversion_record()
        table = Table(title=f"{model.name} converted", show_header=False)
        table.add_row("nodes", str(info["node_count"]))
        table.add_row("opset", str(info["opset_imports"].get("", "?")))
        table.add_row("parameters", str(sum(t.numel() for t in converter.result.module.parameters())))
        table.add_row("time", f"{info['conversion_seconds']:.2f} s")
        for name, path in paths.items():
            table.add_row(name, str(path))
        out_console.print(table)
        for warning in info["warnings"]:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def validate(
    model: Annotated[Path, typer.Argument(help="The original ONNX model.")],
    converted: Annotated[Path, typer.Argument(help="The converted model_full.pt.")],
    tolerance: Annotated[float, typer.Option("--tolerance", "-t", help="Largest relative error allowed, "
                                             "in percent of each output's largest magnitude.")] = 1.0,
    samples: Annotated[int, typer.Option("--samples", "-n", help="Random input sets to compare.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    inputs: Annotated[Path | None, typer.Option("--inputs", "-i", help="Real inputs: .npy (one input) "
                                                "or .npz (keys = input names).")] = None,
    shape: ShapeOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the metrics as JSON.")] = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Also compare every intermediate tensor "
                                            "and name the first node whose error exceeds the tolerance.")] = False,
    sweep: Annotated[bool, typer.Option("--sweep", help="Also run every dynamic dimension at several sizes "
                                        "(1, a small prime, the base size, a large size that is no multiple of "
                                        "the usual strides), each against onnxruntime; a size onnxruntime "
                                        "itself rejects is reported as such, not as a failure.")] = False,
    debug: DebugOption = False,
) -> None:
    """Run MODEL in onnxruntime and CONVERTED in torch on the same inputs and compare the outputs."""
    from ..validator import AccuracyValidator

    with reported_errors(debug):
        for path in (model, converted):
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist")
        shapes = resolve_unnamed(parse_shapes(shape), graph_input_names(model) if shape else [])
        validator = AccuracyValidator(model, converted, tolerance=tolerance, num_samples=samples, seed=seed,
                                      input_shapes=shapes, inputs=inputs, sweep=sweep)
        metrics = with_status("running onnxruntime and torch", validator.validate)
        layers = None
        if per_layer:
            from ..layer_compare import compare_layers

            feed = validator.input_sets(validator.session())[0]
            layers = with_status("comparing every layer", lambda: compare_layers(
                model, validator.model, feed, tolerance=tolerance))
    table = Table(title=f"{model.name}: torch vs onnxruntime ({metrics.num_samples} input sets)")
    for column in ("output", "shape", "max abs", "mean abs", "rel. error %", "cosine", "result"):
        table.add_column(column)
    for o in metrics.outputs:
        table.add_row(o.name, str(o.shape), f"{o.max_abs_error:.3g}", f"{o.mean_abs_error:.3g}",
                      f"{o.relative_error:.3g}", f"{o.cosine_similarity:.6f}",
                      "[green]pass[/]" if o.passed else f"[red]FAIL[/] {o.note}")
    out_console.print(table)
    if metrics.sweep is not None:
        out_console.print(_sweep_table(metrics.sweep, model.name))
    out_console.print(f"Relative error: {metrics.relative_error:.6f}% (tolerance {tolerance}%)  "
                      f"Passed: {metrics.passed}")
    if layers is not None:
        from ..layer_compare import format_report

        for line in format_report(layers):
            out_console.print(line, highlight=False)
    if json_out is not None:
        record = metrics.to_dict()
        if layers is not None:
            record["per_layer"] = layers.to_dict()
        json_out.write_text(json.dumps(record, indent=2) + "\n")
    if not metrics.passed or (layers is not None and layers.first_divergence is not None):
        raise typer.Exit(1)


def _sweep_table(points: list[Any], title: str) -> Table:
    """One row per swept size: the dimension, its size, the input shapes and the outcome."""
    table = Table(title=f"{title}: size sweep ({len(points)} sizes besides the base)")
    for column in ("dimension", "size", "input shapes", "rel. error %", "result"):
        table.add_column(column)
    if not points:
        table.add_row("—", "—", "no dynamic dimensions", "—", "—")
    styles = {"passed": "[green]pass[/]", "failed": "[red]FAIL[/]", "error": "[red]ERROR[/]",
              "onnxruntime_rejects": "[yellow]onnxruntime rejects this size[/]"}
    for p in points:
        shapes = ", ".join(f"{k} {v}" for k, v in p.input_shapes.items())
        error = "—" if p.relative_error is None else f"{p.relative_error:.3g}"
        result = styles[p.status] + (f" {escape(p.note)}" if p.note else "")
        table.add_row(p.dimension, str(p.size), shapes, error, result)
    return table


def export_command(
    converted: Annotated[Path, typer.Argument(help="A convert output folder (model_full.pt, conversion.json).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The ONNX file to write.")] = Path("model.onnx"),
    source: Annotated[Path | None, typer.Option("--source", help="The ONNX model it was converted from "
                                                "(default: the one recorded at conversion).")] = None,
    opset: Annotated[int | None, typer.Option(help="Opset of the exported model (default: the exporter's).")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", "-t", help="Largest relative error allowed against "
                                             "the source, in percent.")] = 1e-3,
    no_dynamo: Annotated[bool, typer.Option("--no-dynamo", help="Use the TorchScript exporter only.")] = False,
    shape: ShapeOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON.")] = None,
    debug: DebugOption = False,
) -> None:
    """Export CONVERTED back to ONNX with torch.onnx.export (dynamo, else TorchScript), keeping the source's
    input/output names and dynamic dimensions, and compare it with the source in onnxruntime at the base sizes
    and at a second size of every dynamic dimension."""
    from ..export import export_onnx

    with reported_errors(debug):
        shapes = parse_shapes(shape)
        if "" in shapes:
            raise typer.BadParameter("name the input: --shape NAME=...")
        result = with_status(f"exporting {converted}", lambda: export_onnx(
            converted, output, source=source, input_shapes=shapes, opset=opset, dynamo=not no_dynamo))
    table = Table(title=f"{result.path} ({result.exporter} exporter) vs {result.source.name} in onnxruntime")
    for column in ("sizes", "inputs", "rel. error %", "result"):
        table.add_column(column)
    for check in result.checks:
        error = check.relative_error
        verdict = "[yellow]skipped[/]" if error is None else "[green]pass[/]" if error <= tolerance else "[red]FAIL[/]"
        table.add_row(check.label, json.dumps(check.shapes), "-" if error is None else f"{error:.3g}",
                      f"{verdict} {check.note}".strip())
    out_console.print(table)
    if result.fallback_reason:
        console.print(f"[yellow]dynamo exporter not used:[/] {result.fallback_reason}", highlight=False)
    out_console.print(f"Relative error: {result.relative_error:.6g}% (tolerance {tolerance}%)")
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if result.relative_error > tolerance:
        raise typer.Exit(1)
