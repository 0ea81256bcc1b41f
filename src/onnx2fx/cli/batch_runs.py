"""``onnx2fx batch`` and ``onnx2fx report``: many models, each in its own worker process, and their reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DebugOption, console, out_console, reported_errors


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

    from ..batch import BatchConfig, load_config, run_batch
    from ..batch.display import results_table
    from ..pipeline import PipelineOptions

    with reported_errors(debug):
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


def report(
    folder: Annotated[Path, typer.Argument(help="A model folder (with report.json) or a batch output folder "
                                           "(with summary.json).")],
    debug: DebugOption = False,
) -> None:
    """Regenerate report.md and report.html from report.json.

    For a batch output folder: every model folder's report, and summary.md from summary.json.
    """
    from ..batch import regenerate_folder

    with reported_errors(debug):
        written = regenerate_folder(folder)
    for path in written:
        out_console.print(f"wrote {path}", highlight=False)
