"""``onnx2fx evaluate`` and ``onnx2fx compare``: task metrics of model forms on a dataset, and their comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import DebugOption, console, out_console, reported_errors


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
    from ..evaluation import evaluate as run_evaluation
    from ..evaluation import load_dataset, model_forms
    from ..evaluation.report_section import attach_to_report

    with reported_errors(debug):
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


def compare(
    evaluations: Annotated[list[Path], typer.Argument(help="Evaluation folders (or evaluation.json files) "
                                                      "written by onnx2fx evaluate; the first is the reference.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The comparison file to write.")] =
    Path("comparison.json"),
    debug: DebugOption = False,
) -> None:
    """Compare evaluations: metric differences graded excellent (< 0.001), good (< 0.01) or warning.

    Exits with 1 when a grade is warning (a difference of 0.01 or more, or different images)."""
    from ..evaluation import compare_evaluations, load_evaluation, write_comparison

    with reported_errors(debug):
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
