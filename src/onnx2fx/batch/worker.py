"""What one worker process does: the pipeline for one model, then the requested quantization.

:func:`run_worker` is the default; :func:`onnx2fx.batch.run_batch` accepts another (a module-level
function, since it is sent to a spawned process). The worker writes the model folder it is given
(inside a staging folder); :mod:`.supervisor` runs it in its own process and turns what it left
behind into the model's result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..pipeline import PipelineOptions, run_model
from ..reports import write_report
from .records import quantization_results

__all__ = ["Worker", "WorkerTask", "run_ptq", "run_qft", "run_worker"]


@dataclass
class WorkerTask:
    """What one worker process is asked to do (sent to the process, so it must pickle)."""

    model_path: str
    out_dir: str  # the model folder to create; it lies inside the staging folder
    options: PipelineOptions
    ptq: bool = False
    qft: bool = False
    threads: int | None = None  # torch threads in the worker, so parallel workers do not oversubscribe


Worker = Callable[[WorkerTask], None]


def run_worker(task: WorkerTask) -> None:
    """The default worker: the whole pipeline for one model, then the quantization record."""
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    out = Path(task.out_dir)
    report = run_model(Path(task.model_path), out, task.options)
    quantization = quantization_results(task.ptq, task.qft)
    if task.ptq and report["conversion"]["status"] == "ok":
        quantization["ptq"] = run_ptq(out, task.options)
    if task.qft and report["conversion"]["status"] == "ok":
        ptq_ok = (quantization.get("ptq") or {}).get("status") == "ok"
        quantization["qft"] = run_qft(out, task.options, from_ptq=out / "ptq" if ptq_ok else None)
    if report.get("quantization") != quantization:
        report["quantization"] = quantization
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

