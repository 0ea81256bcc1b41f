"""``onnx2fx ptq`` and ``onnx2fx qft``: post-training quantization and quantization-aware fine-tuning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import (
    DebugOption,
    FloatIslandsOption,
    FormatOption,
    ShapeOption,
    console,
    out_console,
    parse_shapes,
    reported_errors,
    require_model_file,
)


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
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Per-layer sensitivity: output SQNR with only "
                                              "each weight layer quantized and with all but it (report table and "
                                              "plot).")] = False,
    mixed_precision: Annotated[float | None, typer.Option("--mixed-precision", metavar="TARGET_SQNR", help="Promote "
                                                          "the most sensitive layers (weights to 8 bits, then outputs "
                                                          "to 16) until the output SQNR reaches this many dB.")] = None,
    debug: DebugOption = False,
) -> None:
    """Post-training quantization of a converted model: calibrate, simulate, export encodings and QDQ ONNX."""
    from ..quantization import ptq as run_ptq
    from ..quantization.data import ImageOptions

    with reported_errors(debug):
        require_model_file(model)
        shapes = parse_shapes(shape)
        images = ImageOptions(mean=_floats(image_mean, "--image-mean") or (0.0,),
                              std=_floats(image_std, "--image-std") or (1.0,))
        result = run_ptq(model, calib_data, output_dir=output, onnx_path=onnx, input_shapes=shapes, config=config,
                         scheme=scheme, weight_bits=w_bits, activation_bits=a_bits, per_channel=per_channel,
                         samples=samples, batch_size=batch_size, encoding_version=encoding_version,
                         random_calibration=random_calibration, seed=seed, image_options=images, progress=True,
                         cle=cle, bias_correction=bias_correction, adaround=adaround,
                         adaround_iterations=adaround_iterations, formats=formats or ["qdq"],
                         float_islands=float_islands, sensitivity=sensitivity,
                         mixed_precision_target_db=mixed_precision)
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
    if (mixed := info.get("mixed_precision")) is not None:
        table.add_row("mixed precision", f"{len(mixed['promoted'])} of {mixed['layers']} layer(s) promoted: SQNR "
                      f"{mixed['sqnr_db_before']} -> {mixed['sqnr_db_after']} dB (target {mixed['target_db']} dB), "
                      f"weights {mixed['weight_bytes']['chosen']} bytes")
    if info.get("sensitivity") is not None:
        table.add_row("sensitivity", f"{len(info['sensitivity']['layers'])} layer(s): see report.md")
    for o in info["outputs"]:
        sqnr = "exact" if o.get("sqnr_db") is None else f"{o['sqnr_db']:.2f} dB"
        agreement = f", argmax agreement {o['argmax_agreement']:.4f}" if "argmax_agreement" in o else ""
        table.add_row(f"output {o['name']}", f"SQNR {sqnr}{agreement}")
    _print_outcome(table, info, result.files, "QDQ vs simulation")


def _print_outcome(table: Table, info: dict, files: dict, qdq_label: str) -> None:
    """The rows a PTQ and a QFT run share (the QDQ check, the integer models, the files written),
    then the table and the run's warnings."""
    qdq = info.get("qdq") or {}
    if qdq.get("status") == "ok":
        table.add_row(qdq_label, f"{qdq['within_one_step']:.4%} of output elements within one step")
    _integer_rows(table, info)
    for name, path in files.items():
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
                                             "normalization parameters (default 3e-5).")] = None,
    range_learning: Annotated[bool, typer.Option("--range-learning", help="Also train the activation quantizers' "
                                                 "scales and offsets (weight scales always train).")] = False,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", min=1, help="Samples per step and "
                                                   "process (default 32, or 16 or 8 where that leaves an epoch "
                                                   "fewer than 100 steps).")] = None,
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
    from ..quantization import qft as run_qft

    with reported_errors(debug):
        require_model_file(model)
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
    _print_outcome(table, info, result.files, "QDQ vs fine-tuned")


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} {text!r}: expected numbers like 0.485,0.456,0.406") from None
