"""What one worker process does: the pipeline for one model, then the requested quantization,
then the task metrics on a dataset.

:func:`run_worker` is the default; :func:`onnx2fx.batch.run_batch` accepts another (a module-level
function, since it is sent to a spawned process). The worker writes the model folder it is given
(inside a staging folder); :mod:`.supervisor` runs it in its own process and turns what it left
behind into the model's result. The worker says what it is doing in a small progress file
(:class:`ProgressFile`) that the parent reads to show it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..pipeline import PipelineOptions, run_model
from ..reports import write_report
from .evaluation import EvaluationTask, evaluate_model
from .records import quantization_results

__all__ = ["EVALUATION_STAGE", "ProgressFile", "Worker", "WorkerTask", "run_ptq", "run_qft", "run_worker"]

EVALUATION_STAGE = "evaluation"


@dataclass
class WorkerTask:
    """What one worker process is asked to do (sent to the process, so it must pickle)."""

    model_path: str
    out_dir: str  # the model folder to create; it lies inside the staging folder
    options: PipelineOptions
    ptq: bool = False
    qft: bool = False
    threads: int | None = None  # torch threads in the worker, so parallel workers do not oversubscribe
    evaluation: EvaluationTask | None = None  # task metrics on a dataset, after conversion and quantization
    final_dir: str | None = None  # where the parent installs out_dir: the paths that records name
    progress_file: str | None = None  # where the worker says what it is doing (outside out_dir)


Worker = Callable[[WorkerTask], None]


class ProgressFile:
    """The worker's stage and a line of progress, as a small JSON file the parent polls.

    Each write replaces the file whole, so the parent never reads half of one. Without a path
    (a worker run outside a batch) it does nothing.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)

    def __call__(self, stage: str, text: str) -> None:
        if self.path is None:
            return
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            partial.write_text(json.dumps({"stage": stage, "text": text}))
            os.replace(partial, self.path)
        except OSError:  # progress is a courtesy: never let it stop the work
            pass

    @staticmethod
    def read(path: str | os.PathLike[str]) -> dict[str, str] | None:
        """The last stage and text written to ``path``, or ``None``."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def run_worker(task: WorkerTask) -> None:
    """The default worker: the whole pipeline for one model, then the quantization record."""
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    out = Path(task.out_dir)
    progress = ProgressFile(task.progress_file)
    progress("pipeline", "converting and validating")
    report = run_model(Path(task.model_path), out, task.options)
    quantization = quantization_results(task.ptq, task.qft)
    converted = report["conversion"]["status"] == "ok"
    if task.ptq and converted:
        progress("ptq", "PTQ")
        quantization["ptq"] = run_ptq(out, task.options)
    if task.qft and converted:
        progress("qft", "QFT")
        ptq_ok = (quantization.get("ptq") or {}).get("status") == "ok"
        quantization["qft"] = run_qft(out, task.options, from_ptq=out / "ptq" if ptq_ok else None)
    if report.get("quantization") != quantization:
        report["quantization"] = quantization
        write_report(report, out)
    if task.evaluation is not None and converted:
        # The report is complete on disk from here on: if the evaluation crashes or times out, the
        # parent keeps it and records the evaluation as failed.
        progress(EVALUATION_STAGE, "evaluating")
        report["task_metrics"] = evaluate_model(
            Path(task.model_path), out, task.evaluation, quantization,
            final=Path(task.final_dir) if task.final_dir else None,
            progress=lambda text: progress(EVALUATION_STAGE, text))
        write_report(report, out)


def run_qft(model_folder: Path, options: PipelineOptions, from_ptq: Path | None) -> dict[str, Any]:
    """One epoch of QFT into ``<folder>/qft``, distilling from the float model on the config's
    ``calibration`` data (unlabeled). Without data it is skipped: fine-tuning on random inputs
    would only teach the model noise."""
    if options.calibration is None:
        return {"requested": True, "status": "skipped",
                "message": "QFT needs training data: set `calibration` for this model in the batch config"}
    from ..quantization import qft

    try:
        result = qft(model_folder / "model_full.pt", options.calibration, output_dir=model_folder / "qft",
                     from_ptq=from_ptq, input_shapes=dict(options.input_shapes) or None, seed=options.seed,
                     progress=False, device="cpu", formats=options.formats)
    except Exception as exc:
        return {"requested": True, "status": "failed", "error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"requested": True, "status": "ok", "folder": "qft", **result.report}


def run_ptq(model_folder: Path, options: PipelineOptions) -> dict[str, Any]:
    """PTQ of a converted model folder into ``<folder>/ptq``; the report's ``quantization.ptq``.

    Without calibration data in the config, a batch calibrates on random data: the result says
    so in its warnings, because ranges from random inputs rarely match real ones.
    """
    from ..quantization import ptq

    try:
        result = ptq(model_folder / "model_full.pt", options.calibration, output_dir=model_folder / "ptq",
                     input_shapes=dict(options.input_shapes) or None, random_calibration=options.calibration is None,
                     seed=options.seed, progress=False, formats=options.formats)
    except Exception as exc:
        return {"requested": True, "status": "failed", "error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"requested": True, "status": "ok", "folder": "ptq", **result.report}

