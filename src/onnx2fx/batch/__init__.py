"""Many models at once: ``onnx2fx batch MODELS_DIR -o OUTPUT``.

Every ``.onnx`` file under the models folder (searched recursively) gets the output folder
``OUTPUT/<relative path without .onnx>/`` with what :func:`onnx2fx.pipeline.run_model` writes,
plus ``batch.json`` (the options it was produced with) and ``worker.log`` (what the worker
printed, when it printed anything).

Isolation: each model runs in its own process (``spawn``), at most ``jobs`` at a time. A worker
that dies (segfault, out-of-memory kill, ``os._exit``) or runs past its timeout is recorded as
*crashed* with the reason and does not disturb the others.

Atomicity: a worker writes into a staging folder beside the final one
(``OUTPUT/a/.b.partial-XXXX/b``); the parent moves it into place once it is complete, replacing
the older folder only then. An interrupted run therefore leaves either the previous complete
folder or none, plus a ``.partial-`` folder that the next run removes first.

Resume: a model whose folder holds a report for the same file (sha256), the same onnx2fx version
and the same options is *up to date* and not run again (unless ``force``); crashed models are
always retried. Their recorded outcome still counts: a model that failed before fails the batch.

Task metrics: with a ``dataset`` (``--dataset``, or the config's ``dataset`` key), each model that
converts is then evaluated on it in its worker: the float ONNX, the converted model and the PTQ
and QFT forms the run produced, scored with the model's ``task`` config and graded against the
float model (:mod:`.evaluation`). Datasets and task configs are checked before any model runs.

The parts, one module each: :mod:`.config` (``batch.yaml``), :mod:`.discovery` (which models,
which folders), :mod:`.worker` (what a worker does), :mod:`.supervisor` (running workers:
spawn, timeout, kill, crash capture), :mod:`.staging` (leftovers and the output lock; the
folders themselves go through :mod:`onnx2fx.atomic_folder`), :mod:`.records` (each model's
result and ``batch.json``), :mod:`.evaluation` (task metrics on a dataset), :mod:`.summary`
(``summary.json``/``summary.md``, ``onnx2fx report``) and :mod:`.display` (progress and the
results table).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BatchError
from ..pipeline import PipelineOptions
from ..reports import file_sha256
from .config import CONFIG_KEYS, BatchConfig, load_config, parse_config
from .discovery import check_output_names, find_models, output_name
from .display import BatchDisplay
from .evaluation import EVALUATION_FOLDER, EvaluationPlanner, EvaluationTask, not_run_record
from .records import (
    BATCH_RECORD_VERSION,
    STATUSES,
    ModelResult,
    fingerprint,
    quantization_results,
    result_from_report,
    up_to_date,
)
from .staging import LOCK_NAME, STAGING_MARK, output_lock, remove_leftovers
from .summary import (
    SUMMARY_SCHEMA_PATH,
    SUMMARY_SCHEMA_VERSION,
    BatchSummary,
    regenerate_folder,
    render_summary_markdown,
    summary_schema,
    write_summary,
)
from .supervisor import Job, cpu_count, run_jobs, sigterm_as_interrupt
from .worker import Worker, WorkerTask, run_ptq, run_qft, run_worker

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "BATCH_RECORD_VERSION",
    "CONFIG_KEYS",
    "LOCK_NAME",
    "STAGING_MARK",
    "STATUSES",
    "SUMMARY_SCHEMA_PATH",
    "SUMMARY_SCHEMA_VERSION",
    "BatchConfig",
    "BatchSummary",
    "EVALUATION_FOLDER",
    "EvaluationTask",
    "ModelResult",
    "Worker",
    "WorkerTask",
    "find_models",
    "load_config",
    "parse_config",
    "quantization_results",
    "regenerate_folder",
    "remove_leftovers",
    "render_summary_markdown",
    "run_batch",
    "run_ptq",
    "run_qft",
    "run_worker",
    "summary_schema",
    "write_summary",
]


def run_batch(
    models_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    options: PipelineOptions | None = None,
    config: BatchConfig | str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    force: bool = False,
    ptq: bool = False,
    qft: bool = False,
    *,
    timeout: float | None = None,
    dataset: str | os.PathLike[str] | None = None,
    task: str | os.PathLike[str] | None = None,
    eval_limit: int | None = None,
    worker: Worker | None = None,
    console: Console | None = None,
) -> BatchSummary:
    """Convert, validate and report every ``.onnx`` under ``models_dir`` into ``output_dir``.

    ``options`` are the base pipeline options; the config's ``defaults`` and then its per-model
    entries override them. ``timeout`` (seconds) is the default per-model limit. ``dataset``,
    ``task`` (a task config file or preset) and ``eval_limit`` turn on task metrics for every
    model, overriding the config's ``defaults`` as command-line options do. ``worker`` runs
    inside each worker process (default :func:`run_worker`; it must be a module-level function).
    ``console``: show live progress there. Writes ``summary.json`` and ``summary.md`` and returns
    the summary; raises :class:`BatchError`, :class:`~onnx2fx.errors.DatasetError`,
    ``FileNotFoundError`` or ``NotADirectoryError`` for bad input before any model runs.
    """
    started_at = time.monotonic()
    models_dir, output_dir = Path(models_dir), Path(output_dir)
    if not models_dir.exists():
        raise FileNotFoundError(f"models folder {models_dir} does not exist")
    if not models_dir.is_dir():
        raise NotADirectoryError(f"{models_dir} is not a folder")
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output path {output_dir} exists and is not a folder")
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    config = (config or BatchConfig()).with_defaults(dataset=dataset, task=task, eval_limit=eval_limit)
    if jobs is not None and jobs < 1:
        raise BatchError(f"jobs must be at least 1, got {jobs}")
    if timeout is not None and timeout <= 0:
        raise BatchError(f"timeout must be positive, got {timeout}")
    worker = worker or run_worker  # looked up here, so that replacing onnx2fx.batch.run_worker takes effect

    rels = find_models(models_dir, output_dir)
    check_output_names(rels)
    warnings = [f"config entry {k!r} matches no model under {models_dir}" for k in config.unmatched(rels)]
    if not rels:
        warnings.append(f"no .onnx files under {models_dir}")
    evaluations = _plan_evaluations(rels, config, warnings)

    with output_lock(output_dir), sigterm_as_interrupt():
        removed = remove_leftovers(output_dir)
        results, to_run = _plan(rels, models_dir, output_dir, config, options or PipelineOptions(), force, ptq, qft,
                                timeout, evaluations)
        workers = max(1, min(jobs or cpu_count(), len(to_run) or 1))
        threads = max(1, cpu_count() // workers)
        with BatchDisplay(console, len(rels)) as display:
            for rel in rels:
                if rel in results:
                    display.finished(results[rel])
            for result in run_jobs(to_run, workers, worker, ptq, qft, threads, display):
                results[result.path] = result

    summary = BatchSummary(models_dir=str(models_dir), output_dir=str(output_dir),
                           results=[results[rel] for rel in rels], jobs=workers, ptq=ptq, qft=qft,
                           evaluation=bool(evaluations),
                           warnings=warnings, removed_leftovers=[str(p) for p in removed])
    summary.seconds = time.monotonic() - started_at
    write_summary(summary.to_dict(), output_dir)
    return summary


def _plan_evaluations(rels: list[str], config: BatchConfig, warnings: list[str]) -> dict[str, EvaluationTask]:
    """The evaluation of every model that has a dataset (and is not skipped), with each dataset
    and task config checked: a problem is an error here, before any model runs."""
    planner = EvaluationPlanner()
    evaluations: dict[str, EvaluationTask] = {}
    without_dataset = []
    for rel in rels:
        settings = config.settings_for(rel)
        if settings.get("skip"):
            continue
        evaluation = planner.task_for(rel, settings)
        if evaluation is not None:
            evaluations[rel] = evaluation
        elif any(k in settings for k in ("task", "eval_limit", "eval_batch_size")):
            without_dataset.append(rel)
    if without_dataset:
        warnings.append(f"evaluation settings but no dataset for {', '.join(without_dataset)}: not evaluated "
                        "(give --dataset or a `dataset` in the config)")
    return evaluations


def _plan(rels: list[str], models_dir: Path, output_dir: Path, config: BatchConfig, base: PipelineOptions,
          force: bool, ptq: bool, qft: bool, timeout: float | None,
          evaluations: dict[str, EvaluationTask]) -> tuple[dict[str, ModelResult], list[Job]]:
    """Results of the models that need no run (skipped by the config, or up to date), and the jobs
    of the others, each with its options: ``base`` overridden by the config."""
    results: dict[str, ModelResult] = {}
    to_run: list[Job] = []
    hashes: dict[str, str] = {}
    quantization = quantization_results(ptq, qft)
    for rel in rels:
        settings = config.settings_for(rel)
        out = output_name(rel)
        evaluation = evaluations.get(rel)
        if settings.get("skip"):
            skipped = not_run_record("the model was skipped by the config") if settings.get("dataset") else None
            results[rel] = ModelResult(path=rel, output=out, status="skipped", quantization=quantization,
                                       evaluation=skipped)
            continue
        fields = {k: settings[k] for k in ("input_shapes", "tolerance", "samples", "inputs", "per_layer",
                                            "sweep", "calibration", "formats") if k in settings}
        job_options = dataclasses.replace(base, **fields)
        job = Job(rel=rel, out=out, model_path=models_dir / rel, final=output_dir / out, options=job_options,
                  fingerprint=fingerprint(job_options, ptq, qft, hashes, evaluation),
                  timeout=settings.get("timeout", timeout), evaluation=evaluation)
        if not force:
            try:
                sha256 = file_sha256(job.model_path)
            except OSError:
                sha256 = ""
            report = up_to_date(job.final, sha256, job.fingerprint) if sha256 else None
            if report is not None:
                results[rel] = result_from_report(rel, out, report, status="up-to-date",
                                                  evaluation=evaluation is not None)
                continue
        to_run.append(job)
    return results, to_run
