"""The ``onnx2fx`` command line.

Exit codes: 0 success, 1 the model converted but failed validation, 2 bad input (a one-line
error; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="onnx2fx",
    help="Convert ONNX models into readable, FX-traceable PyTorch and check them against onnxruntime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()

ShapeOption = Annotated[
    list[str] | None,
    typer.Option("--shape", "-s", help="Sizes for an input's dynamic dims: NAME=1,3,224,224, or just "
                 "1,3,224,224 for a single-input model. Repeat for several inputs."),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]


def parse_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    """``["x=1,3,8,8", "1,3"]`` -> {"x": [1, 3, 8, 8], "": [1, 3]} ("" = the only input)."""
    shapes: dict[str, list[int]] = {}
    for spec in specs or []:
        name, _, dims = spec.rpartition("=") if "=" in spec else ("", "", spec)
        try:
            shapes[name] = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            raise typer.BadParameter(f"--shape {spec!r}: sizes must be integers like 1,3,224,224") from None
    return shapes


def _resolve_unnamed(shapes: dict[str, list[int]], input_names: list[str]) -> dict[str, list[int]]:
    if "" not in shapes:
        return shapes
    if len(input_names) != 1:
        raise typer.BadParameter(f"the model has inputs {input_names}: name them as --shape NAME=...")
    return {input_names[0]: shapes[""], **{k: v for k, v in shapes.items() if k}}


@contextmanager
def _errors(debug: bool) -> Iterator[None]:
    from .errors import Onnx2FxError

    try:
        yield
    except (Onnx2FxError, FileNotFoundError, NotADirectoryError, typer.BadParameter) as exc:
        if debug:
            console.print_exception()
        message = exc.format_message() if isinstance(exc, typer.BadParameter) else str(exc)
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {message}", highlight=False)
        raise typer.Exit(2) from None


def _graph_input_names(model_path: Path) -> list[str]:
    from . import _core

    model = _core.load_model(str(model_path), run_passes=False)
    initializers = {t.name for t in model.graph.initializers}
    return [v.name for v in model.graph.inputs if v.name not in initializers]


def _with_status(message: str, fn: Callable[[], Any]) -> Any:
    with console.status(message, spinner="dots"):
        return fn()


@app.command()
def convert(
    model: Annotated[Path, typer.Argument(help="The ONNX model to convert.", exists=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("output"),
    shape: ShapeOption = None,
    debug: DebugOption = False,
) -> None:
    """Convert MODEL into OUTPUT/model.py, weights.safetensors, model_full.pt and conversion.json."""
    from .converter import OnnxToFxConverter

    with _errors(debug):
        if not model.is_file():
            raise FileNotFoundError(f"model file {model} does not exist")
        shapes = _resolve_unnamed(parse_shapes(shape), _graph_input_names(model) if shape else [])
        converter = OnnxToFxConverter(model, input_shapes=shapes)
        _with_status(f"converting {model.name}", converter.convert)
        paths = _with_status(f"writing {output}", lambda: converter.save(output))
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


@app.command()
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
    debug: DebugOption = False,
) -> None:
    """Run MODEL in onnxruntime and CONVERTED in torch on the same inputs and compare the outputs."""
    from .validator import AccuracyValidator

    with _errors(debug):
        for path in (model, converted):
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist")
        shapes = _resolve_unnamed(parse_shapes(shape), _graph_input_names(model) if shape else [])
        validator = AccuracyValidator(model, converted, tolerance=tolerance, num_samples=samples, seed=seed,
                                      input_shapes=shapes, inputs=inputs)
        metrics = _with_status("running onnxruntime and torch", validator.validate)
        layers = None
        if per_layer:
            from .layer_compare import compare_layers

            feed = validator.input_sets(validator.session())[0]
            layers = _with_status("comparing every layer", lambda: compare_layers(
                model, validator.model, feed, tolerance=tolerance))
    table = Table(title=f"{model.name}: torch vs onnxruntime ({metrics.num_samples} input sets)")
    for column in ("output", "shape", "max abs", "mean abs", "rel. error %", "cosine", "result"):
        table.add_column(column)
    for o in metrics.outputs:
        table.add_row(o.name, str(o.shape), f"{o.max_abs_error:.3g}", f"{o.mean_abs_error:.3g}",
                      f"{o.relative_error:.3g}", f"{o.cosine_similarity:.6f}",
                      "[green]pass[/]" if o.passed else f"[red]FAIL[/] {o.note}")
    out_console.print(table)
    out_console.print(f"Relative error: {metrics.relative_error:.6f}% (tolerance {tolerance}%)  "
                      f"Passed: {metrics.passed}")
    if layers is not None:
        from .layer_compare import format_report

        for line in format_report(layers):
            out_console.print(line, highlight=False)
    if json_out is not None:
        record = metrics.to_dict()
        if layers is not None:
            record["per_layer"] = layers.to_dict()
        json_out.write_text(json.dumps(record, indent=2) + "\n")
    if not metrics.passed or (layers is not None and layers.first_divergence is not None):
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
