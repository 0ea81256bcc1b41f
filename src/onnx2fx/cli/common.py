"""What every command shares: the typer app, the consoles, the common options, and the mapping of
typed errors to a one-line message and exit code 2.

Exit codes: 0 success, 1 the model converted but failed validation, 2 bad input (a one-line
error; ``--debug`` shows the traceback).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(
    name="onnx2fx",
    help="Convert ONNX models into readable, FX-traceable PyTorch and check them against onnxruntime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()

FormatOption = Annotated[list[str] | None, typer.Option(
    "--format", help="Quantized ONNX form to write: qdq (default), qoperator (QLinearConv, ...) or fixed-point "
    "(integer operators only); repeat the option for several.")]
FloatIslandsOption = Annotated[bool, typer.Option(
    "--float-islands", help="In the qoperator / fixed-point forms, keep nodes that have no integer form in float "
    "(listed in the report) instead of failing.")]
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


def resolve_unnamed(shapes: dict[str, list[int]], input_names: list[str]) -> dict[str, list[int]]:
    """``shapes`` with the unnamed entry (``--shape 1,3,8,8``) given to the model's only input."""
    if "" not in shapes:
        return shapes
    if len(input_names) != 1:
        raise typer.BadParameter(f"the model has inputs {input_names}: name them as --shape NAME=...")
    return {input_names[0]: shapes[""], **{k: v for k, v in shapes.items() if k}}


@contextmanager
def reported_errors(debug: bool) -> Iterator[None]:
    """Inside the block, a typed error, an unreadable path or a bad parameter becomes one line on
    standard error (the traceback too with ``--debug``) and exit code 2."""
    from ..errors import Onnx2FxError

    try:
        yield
    except (Onnx2FxError, OSError, typer.BadParameter) as exc:  # OSError: unreadable paths, full disks
        if debug:
            console.print_exception()
        message = exc.format_message() if isinstance(exc, typer.BadParameter) else str(exc)
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def require_model_file(model: Path) -> None:
    """A clear error before any work for a model path that is missing or not a regular file
    (a folder, a FIFO or a device would otherwise fail deep inside reading, or block)."""
    if not model.exists():
        raise FileNotFoundError(f"model file {model} does not exist")
    if model.is_dir():
        raise IsADirectoryError(f"model file {model} is a folder; give the .onnx file inside it")
    if not model.is_file():
        raise OSError(f"model file {model} is not a regular file (a FIFO, socket or device)")


def graph_input_names(model_path: Path) -> list[str]:
    """The model's inputs that are not initializers, read without running the graph passes."""
    from .. import _core

    model = _core.load_model(str(model_path), run_passes=False)
    initializers = {t.name for t in model.graph.initializers}
    return [v.name for v in model.graph.inputs if v.name not in initializers]


def with_status(message: str, fn: Callable[[], Any]) -> Any:
    """``fn()`` while a spinner shows ``message`` on standard error."""
    with console.status(message, spinner="dots"):
        return fn()
