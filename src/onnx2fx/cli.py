"""The ``onnx2fx`` command line.

Exit codes: 0 success, 1 the model converted but failed validation, 2 bad input (a one-line
error; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
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
    except (Onnx2FxError, OSError, typer.BadParameter) as exc:  # OSError: unreadable paths, full disks
        if debug:
            console.print_exception()
        message = exc.format_message() if isinstance(exc, typer.BadParameter) else str(exc)
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _require_model_file(model: Path) -> None:
    """A clear error before any work for a model path that is missing or not a regular file
    (a folder, a FIFO or a device would otherwise fail deep inside reading, or block)."""
    if not model.exists():
        raise FileNotFoundError(f"model file {model} does not exist")
    if model.is_dir():
        raise IsADirectoryError(f"model file {model} is a folder; give the .onnx file inside it")
    if not model.is_file():
        raise OSError(f"model file {model} is not a regular file (a FIFO, socket or device)")


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
        _require_model_file(model)
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
    sweep: Annotated[bool, typer.Option("--sweep", help="Also run every dynamic dimension at several sizes "
                                        "(1, a small prime, the base size, a large size that is no multiple of "
                                        "the usual strides), each against onnxruntime; a size onnxruntime "
                                        "itself rejects is reported as such, not as a failure.")] = False,
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
                                      input_shapes=shapes, inputs=inputs, sweep=sweep)
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
    if metrics.sweep is not None:
        out_console.print(_sweep_table(metrics.sweep, model.name))
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


@app.command()
def batch(
    models_dir: Annotated[Path, typer.Argument(help="Folder searched recursively for .onnx files.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: each model gets "
                                         "OUTPUT/<its path under MODELS_DIR without .onnx>/ (converted model, "
                                         "report.json/.md/.html, batch.json); summary.json and summary.md go "
                                         "in OUTPUT.")],
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Models processed in parallel, each in "
                                             "its own process. Default: the number of CPU cores.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML file: `defaults:` for every model "
                                                "and `models:` entries keyed by path (relative to MODELS_DIR) or "
                                                "file stem, with input_shapes, tolerance, samples, inputs, skip, "
                                                "per_layer, sweep, timeout, calibration, formats, dataset, task, "
                                                "eval_limit, eval_batch_size.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Also redo models whose output folder is up to date "
                                        "(same file, onnx2fx version and options).")] = False,
    ptq: Annotated[bool, typer.Option("--ptq", help="Also quantize each converted model (W8A8 PTQ) into its "
                                      "ptq/ folder; calibration data from the config's `calibration`, else random "
                                      "data (recorded as a warning).")] = False,
    qft: Annotated[bool, typer.Option("--qft", help="Also fine-tune each quantized model for one epoch (QFT, "
                                      "distillation on the config's `calibration` data) into its qft/ "
                                      "folder.")] = False,
    tolerance: Annotated[float | None, typer.Option("--tolerance", "-t", min=0, help="Largest relative error "
                                                    "allowed, in percent; overrides the config's defaults, not "
                                                    "its per-model entries. Default 1.0.")] = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Also compare every intermediate tensor and "
                                            "report the first node that diverges.")] = False,
    sweep: Annotated[bool, typer.Option("--sweep", help="Also validate every dynamic dimension at several sizes "
                                        "(see `onnx2fx validate --help`); a failing size fails the model.")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="Also check that each model works with "
                                           "torch.compile (slow).")] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds one model may take; a worker past "
                                                  "it is killed and the model recorded as crashed.")] = None,
    dataset: Annotated[Path | None, typer.Option("--dataset", "-d", help="Also evaluate every converted model "
                                                 "on this dataset (COCO .json or folder, dataset.jsonl folder, "
                                                 "ImageFolder, .npz): the float ONNX, the converted model and the "
                                                 "PTQ/QFT forms, into each model's evaluation/ folder.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Task config YAML/JSON for the evaluation, or a preset "
                                             "(reference004, torchvision, yolo, logits); the config's per-model "
                                             "`task` entries win.")] = None,
    eval_limit: Annotated[int | None, typer.Option("--eval-limit", min=1, help="Evaluate the first N images "
                                                   "only.")] = None,
    eval_batch_size: Annotated[int | None, typer.Option("--eval-batch-size", min=1, help="Images per model call "
                                                        "when evaluating (default 8; 1 for a model whose batch "
                                                        "size is fixed at 1).")] = None,
    debug: DebugOption = False,
) -> None:
    """Convert, validate and report every model under MODELS_DIR, each in its own worker process.

    Up-to-date models are skipped, so an interrupted run can simply be started again.

    A worker that crashes or exceeds its timeout is recorded as crashed; the others go on.

    With --dataset, each model's forms are also scored with task metrics (COCO mAP, top-1/top-5) and
    graded against the float model; an evaluation's result does not change the exit code.

    Exit code: 0 every model passed or was skipped by the config, 1 some failed or crashed, 2 bad input.
    """
    from rich.markup import escape

    from .batch import BatchConfig, load_config, run_batch
    from .batch.display import results_table
    from .pipeline import PipelineOptions

    with _errors(debug):
        settings = load_config(config) if config is not None else BatchConfig()
        settings = settings.with_defaults(tolerance=tolerance, per_layer=True if per_layer else None,
                                          sweep=True if sweep else None, timeout=timeout, dataset=dataset,
                                          task=task, eval_limit=eval_limit, eval_batch_size=eval_batch_size)
        summary = run_batch(models_dir, output, PipelineOptions(compile=compile_), settings, jobs=jobs,
                            force=force, ptq=ptq, qft=qft, console=console)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    out_console.print(results_table(summary, models_dir))
    counts = ", ".join(f"{n} {s}" for s, n in summary.counts.items())
    out_console.print(f"{'Passed' if summary.passed else 'FAILED'}: {counts} in {summary.seconds:.1f} s. "
                      f"Summary: {output / 'summary.md'}", highlight=False)
    raise typer.Exit(summary.exit_code)


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="A model folder (with report.json) or a batch output folder "
                                           "(with summary.json).")],
    debug: DebugOption = False,
) -> None:
    """Regenerate report.md and report.html from report.json.

    For a batch output folder: every model folder's report, and summary.md from summary.json.
    """
    from .batch import regenerate_folder

    with _errors(debug):
        written = regenerate_folder(folder)
    for path in written:
        out_console.print(f"wrote {path}", highlight=False)


@app.command()
def ptq(
    model: Annotated[Path, typer.Argument(help="The converted model_full.pt.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: model_ptq.pt, encodings.json, "
                                         "model_ptq.onnx, report.json and report.md.")] = Path("quantized"),
    shape: ShapeOption = None,
    calib_data: Annotated[Path | None, typer.Option("--calib-data", help="Calibration data: a folder of .npy/.npz "
                                                    "files or images, or one .npy/.npz file.")] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="Calibration samples to use at most.")] = 512,
    scheme: Annotated[str | None, typer.Option("--scheme", help="Activation range calibration: minmax, percentile "
                                               "(the config's percentile, default 99.999 as in onnxruntime), mse "
                                               "(which also searches each weight channel's range for the smallest "
                                               "output error) or entropy (default: the config's, else minmax).")]
    = None,
    w_bits: Annotated[int | None, typer.Option("--w-bits", help="Weight bit width: 4, 8 or 16.")] = None,
    a_bits: Annotated[int | None, typer.Option("--a-bits", help="Activation bit width: 4, 8 or 16.")] = None,
    per_channel: Annotated[bool | None, typer.Option("--per-channel/--per-tensor", help="Weight encodings per "
                                                     "output channel (default) or per tensor.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Quantization config (YAML or JSON): bit "
                                                "widths, symmetry, fused patterns, float ops and nodes.")] = None,
    encoding_version: Annotated[str, typer.Option("--encoding-version", help="AIMET encodings format: 0.6.1, "
                                                  "1.0.0 or 2.0.0.")] = "1.0.0",
    onnx: Annotated[Path | None, typer.Option("--onnx", help="The source ONNX model, when the one recorded at "
                                              "conversion has moved.")] = None,
    random_calibration: Annotated[bool, typer.Option("--random-calibration", help="Calibrate on random data when "
                                                     "no data is given (the report carries a warning).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Calibration batch size.")] = 16,
    image_mean: Annotated[str | None, typer.Option("--image-mean", help="Per-channel mean subtracted from images "
                                                   "scaled to [0, 1], e.g. 0.485,0.456,0.406.")] = None,
    image_std: Annotated[str | None, typer.Option("--image-std", help="Per-channel std images are divided by.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of random calibration data.")] = 0,
    cle: Annotated[bool | None, typer.Option("--cle/--no-cle", help="Cross-layer equalization of consecutive "
                                             "convolutions before calibration (default: the config's, else "
                                             "off).")] = None,
    bias_correction: Annotated[bool | None, typer.Option("--bias-correction/--no-bias-correction", help="Empirical "
                                                         "bias correction after calibration (default: the config's, "
                                                         "else off).")] = None,
    adaround: Annotated[bool | None, typer.Option("--adaround/--no-adaround", help="AdaRound: learn whether each "
                                                  "weight rounds up or down to best reconstruct its layer's output, "
                                                  "after calibration (default: the config's, else off).")] = None,
    adaround_iterations: Annotated[int | None, typer.Option("--adaround-iterations", min=1, help="AdaRound "
                                                            "optimisation steps per layer (default: the config's, "
                                                            "else 500).")] = None,
    formats: FormatOption = None,
    float_islands: FloatIslandsOption = False,
    debug: DebugOption = False,
) -> None:
    """Post-training quantization of a converted model: calibrate, simulate, export encodings and QDQ ONNX."""
    from .quantization import ptq as run_ptq
    from .quantization.data import ImageOptions

    with _errors(debug):
        _require_model_file(model)
        shapes = parse_shapes(shape)
        images = ImageOptions(mean=_floats(image_mean, "--image-mean") or (0.0,),
                              std=_floats(image_std, "--image-std") or (1.0,))
        result = run_ptq(model, calib_data, output_dir=output, onnx_path=onnx, input_shapes=shapes, config=config,
                         scheme=scheme, weight_bits=w_bits, activation_bits=a_bits, per_channel=per_channel,
                         samples=samples, batch_size=batch_size, encoding_version=encoding_version,
                         random_calibration=random_calibration, seed=seed, image_options=images, progress=True,
                         cle=cle, bias_correction=bias_correction, adaround=adaround,
                         adaround_iterations=adaround_iterations, formats=formats or ["qdq"],
                         float_islands=float_islands)
    info = result.report
    table = Table(title=f"{model.name} quantized", show_header=False)
    settings = info["settings"]
    table.add_row("scheme", f"W{settings['weights']['bits']}A{settings['activations']['bits']}, "
                  f"{info['calibration']['scheme']} on {info['calibration']['samples']} samples")
    if info.get("equalization") is not None:
        table.add_row("equalization", f"{len(info['equalization']['pairs'])} convolution pair(s)")
    if info.get("adaround") is not None:
        rounded = info["adaround"]
        table.add_row("AdaRound", f"{len(rounded['initializers'])} of {len(rounded['layers'])} layer(s), "
                      f"{rounded['iterations']} iterations each, {rounded['seconds']:.1f} s")
    if info.get("bias_correction") is not None:
        table.add_row("bias correction", f"{len(info['bias_correction']['layers'])} layer(s)")
    for o in info["outputs"]:
        sqnr = "exact" if o.get("sqnr_db") is None else f"{o['sqnr_db']:.2f} dB"
        agreement = f", argmax agreement {o['argmax_agreement']:.4f}" if "argmax_agreement" in o else ""
        table.add_row(f"output {o['name']}", f"SQNR {sqnr}{agreement}")
    qdq = info.get("qdq") or {}
    if qdq.get("status") == "ok":
        table.add_row("QDQ vs simulation", f"{qdq['within_one_step']:.4%} of output elements within one step")
    _integer_rows(table, info)
    for name, path in result.files.items():
        table.add_row(name, str(path))
    out_console.print(table)
    for warning in info["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _integer_rows(table: Table, info: dict) -> None:
    """Rows for the fixed-point / QOperator models of a PTQ or QFT report section."""
    for key, label in (("fixed_point", "fixed-point"), ("qoperator", "QOperator")):
        section = info.get(key) or {}
        if section.get("status") != "ok":
            continue
        equal = section.get("equal_to_simulation")
        text = f"{equal:.4%} of output elements equal to the integer simulation" if equal is not None \
            else f"no integer simulation ({section.get('simulation_error', 'unavailable')})"
        islands = section["writer"].get("float_islands") or []
        table.add_row(f"{label} ONNX", text + (f"; float islands: {', '.join(islands)}" if islands else ""))


@app.command()
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
    from .coverage import scan_onnx_operators, write_report

    with _errors(debug):
        _require_model_file(model)
        shapes = _resolve_unnamed(parse_shapes(shape), _graph_input_names(model) if shape else [])
        result = _with_status(f"analysing {model.name}", lambda: scan_onnx_operators(model, input_shapes=shapes))
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


@app.command()
def qft(
    model: Annotated[Path, typer.Argument(help="The converted model_full.pt (the float teacher).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: model_qft.pt, encodings.json, "
                                         "model_qft.onnx, report.json/.md/.html, checkpoint.pt.")] = Path("qft_output"),
    train_data: Annotated[Path | None, typer.Option("--train-data", help="Training inputs: a folder of .npy/.npz "
                                                    "files or one .npy/.npz file (memory-mapped).")] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="One class index per training sample (.npy, in "
                                                "file order for a folder): train with cross-entropy instead of "
                                                "distillation.")] = None,
    from_ptq: Annotated[Path | None, typer.Option("--from", help="Start from this `onnx2fx ptq` output folder "
                                                  "(default: run PTQ first with the options below).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs over the training data.")] = 1,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak Adam learning rate of weights, biases and "
                                             "normalization parameters (default 1e-4).")] = None,
    range_learning: Annotated[bool, typer.Option("--range-learning", help="Also train the activation quantizers' "
                                                 "scales and offsets (weight scales always train).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Samples per step and process.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the data order and of everything random.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT/checkpoint.pt (same settings).")]
    = False,
    eval_data: Annotated[Path | None, typer.Option("--eval-data", help="Held-out inputs for the before/after "
                                                   "figures (default: the first training samples).")] = None,
    eval_labels: Annotated[Path | None, typer.Option("--eval-labels", help="Labels of --eval-data (.npy), for "
                                                     "accuracy.")] = None,
    eval_samples: Annotated[int, typer.Option("--eval-samples", min=1, help="Evaluation samples at most.")] = 256,
    shape: ShapeOption = None,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="PTQ calibration samples (without "
                                         "--from).")] = 512,
    scheme: Annotated[str | None, typer.Option("--scheme", help="PTQ activation calibration (without --from): "
                                               "minmax, percentile, mse or entropy.")] = None,
    w_bits: Annotated[int | None, typer.Option("--w-bits", help="Weight bit width (without --from): 4, 8 or 16.")]
    = None,
    a_bits: Annotated[int | None, typer.Option("--a-bits", help="Activation bit width (without --from).")] = None,
    per_channel: Annotated[bool | None, typer.Option("--per-channel/--per-tensor", help="Weight encodings per "
                                                     "output channel or per tensor (without --from).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Quantization config (YAML or JSON), "
                                                "without --from.")] = None,
    encoding_version: Annotated[str | None, typer.Option("--encoding-version", help="AIMET encodings format: "
                                                         "0.6.1, 1.0.0 or 2.0.0 (default: the PTQ's).")] = None,
    int4_storage: Annotated[str, typer.Option("--int4-storage", help="4-bit weights in the QDQ ONNX: int4 "
                                              "(opset 21), int8 (8-bit initializers holding 4-bit values) or auto "
                                              "(int4 from opset 21 on).")] = "auto",
    onnx: Annotated[Path | None, typer.Option("--onnx", help="The source ONNX model, when the one recorded at "
                                              "conversion has moved.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="Where to train: cpu, cuda, cuda:1 (default: "
                                               "the process's GPU when there is one).")] = None,
    formats: FormatOption = None,
    float_islands: FloatIslandsOption = False,
    debug: DebugOption = False,
) -> None:
    """Quantization-aware fine-tuning: train the quantized model through its fake-quant ops, export like PTQ.

    Without --labels the objective is distillation from the float model.

    Several processes: torchrun --nproc-per-node N --no-python onnx2fx qft ... (process 0 writes OUTPUT).
    """
    from .quantization import qft as run_qft

    with _errors(debug):
        _require_model_file(model)
        result = run_qft(model, train_data, output_dir=output, from_ptq=from_ptq, labels=labels, epochs=epochs, lr=lr,
                         range_learning=range_learning or None, batch_size=batch_size, seed=seed, resume=resume,
                         eval_data=eval_data, eval_labels=eval_labels, eval_samples=eval_samples, onnx_path=onnx,
                         input_shapes=parse_shapes(shape), config=config, scheme=scheme, weight_bits=w_bits,
                         activation_bits=a_bits, per_channel=per_channel, calibration_samples=samples,
                         encoding_version=encoding_version, int4_storage=int4_storage, device=device, progress=True,
                         formats=formats or ["qdq"], float_islands=float_islands)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    info = result.report
    table = Table(title=f"{model.name} fine-tuned", show_header=False)
    settings, loss, sqnr = info["settings"], info["loss"], info["sqnr_db"]
    table.add_row("scheme", f"W{settings['weights']['bits']}A{settings['activations']['bits']}, "
                  f"{settings['epochs']} epoch(s), lr {settings['lr']:g}, {info['objective']['kind']}"
                  f", range learning: {settings['range_learning']}, {settings['world_size']} process(es)")
    if loss.get("steps"):
        table.add_row("loss", f"{loss['first']:.5g} -> {loss['last']:.5g} ({loss['steps']} steps)")
    table.add_row("output SQNR", " -> ".join("exact" if v is None else f"{v:.2f} dB"
                                             for v in (sqnr["before"], sqnr["after"])))
    accuracy = info.get("accuracy")
    if accuracy:
        table.add_row("accuracy", f"float {accuracy['float']:.4f}, PTQ {accuracy['ptq']:.4f}, QFT {accuracy['qft']:.4f}"
                      + (f", QDQ ONNX {accuracy['qdq_onnxruntime']:.4f}" if "qdq_onnxruntime" in accuracy else ""))
    qdq = info.get("qdq") or {}
    if qdq.get("status") == "ok":
        table.add_row("QDQ vs fine-tuned", f"{qdq['within_one_step']:.4%} of output elements within one step")
    _integer_rows(table, info)
    for name, path in result.files.items():
        table.add_row(name, str(path))
    out_console.print(table)
    for warning in info["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


@app.command()
def evaluate(
    models: Annotated[list[Path], typer.Argument(help="Model forms: a float or quantized .onnx (onnxruntime), a "
                                                 "model_full.pt or converted folder (torch), a PTQ/QFT output "
                                                 "folder (its torch simulation and its ONNX files).")],
    dataset: Annotated[Path, typer.Option("--dataset", "-d", help="COCO .json (+ images), a folder with "
                                          "dataset.jsonl + data/, ImageFolder class folders, or an .npz with "
                                          "inputs and labels.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder (default: "
                                                "eval_<dataset>_<model form>, or eval_<dataset> for several).")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task config YAML/JSON, or a preset: "
                                             "reference004, torchvision, yolo, logits.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="Evaluate the first N images only.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per model call.")] = 8,
    image_root: Annotated[Path | None, typer.Option("--image-root", help="Folder of a COCO file's images "
                                                    "(default: images/ beside it, or its own folder).")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="A per-model report folder (from onnx2fx batch) "
                                                "that gains a task-metrics section.")] = None,
    debug: DebugOption = False,
) -> None:
    """Task metrics (COCO mAP, top-1/top-5) of model forms on a dataset; several forms are compared."""
    from .evaluation import evaluate as run_evaluation
    from .evaluation import load_dataset, model_forms
    from .evaluation.report_section import attach_to_report

    with _errors(debug):
        data = load_dataset(dataset, image_root)
        if output is None:
            forms = [f for m in models for f in model_forms(m)]
            output = Path(f"eval_{data.name}" + (f"_{forms[0].label}" if len(forms) == 1 else ""))
        if report is not None and not (report / "report.json").is_file():
            raise FileNotFoundError(f"{report / 'report.json'} does not exist: --report takes a folder written by "
                                    "onnx2fx batch")
        run = run_evaluation(models, data, task=task, output_dir=output, limit=limit, batch_size=batch_size,
                             progress=True)
        if report is not None:
            attach_to_report(run, report)
    table = Table(title=f"{run.results[0].dataset.name}: {len(run.results[0].dataset.samples)} images")
    table.add_column("metric")
    for result in run.results:
        table.add_column(result.label, justify="right")
    for name in run.results[0].metrics:
        table.add_row(name, *[f"{r.metrics[name]:.4f}" for r in run.results])
    table.add_row("seconds", *[f"{r.seconds['total']:.2f}" for r in run.results])
    out_console.print(table)
    _print_comparison(run.comparison)
    out_console.print(f"wrote {output}", highlight=False)


@app.command()
def compare(
    evaluations: Annotated[list[Path], typer.Argument(help="Evaluation folders (or evaluation.json files) "
                                                      "written by onnx2fx evaluate; the first is the reference.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The comparison file to write.")] =
    Path("comparison.json"),
    debug: DebugOption = False,
) -> None:
    """Compare evaluations: metric differences graded excellent (< 0.001), good (< 0.01) or warning.

    Exits with 1 when a grade is warning (a difference of 0.01 or more, or different images)."""
    from .evaluation import compare_evaluations, load_evaluation, write_comparison

    with _errors(debug):
        document = compare_evaluations([load_evaluation(e) for e in evaluations])
        write_comparison(document, output)
    _print_comparison(document)
    out_console.print(f"wrote {output}", highlight=False)
    if document["grade"] == "warning":
        raise typer.Exit(1)


def _print_comparison(document: dict[str, Any] | None) -> None:
    if document is None:
        return
    reference = document["reference"]["label"]
    for candidate in document["candidates"]:
        table = Table(title=f"{candidate['label']} vs {reference}: {candidate['grade']}")
        for column in ("metric", reference, candidate["label"], "difference", "grade"):
            table.add_column(column)
        for name in document["headline_metrics"]:
            m = candidate["metrics"].get(name)
            if m is not None:
                table.add_row(name, f"{m['reference']:.4f}", f"{m['value']:.4f}", f"{m['difference']:+.4f}", m["grade"])
        out_console.print(table)
        for problem in candidate["dataset_consistency"]["problems"]:
            console.print(f"[yellow]warning:[/] dataset mismatch: {problem}", highlight=False)


@app.command("export")
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
    from .export import export_onnx

    with _errors(debug):
        shapes = parse_shapes(shape)
        if "" in shapes:
            raise typer.BadParameter("name the input: --shape NAME=...")
        result = _with_status(f"exporting {converted}", lambda: export_onnx(
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


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} {text!r}: expected numbers like 0.485,0.456,0.406") from None


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
