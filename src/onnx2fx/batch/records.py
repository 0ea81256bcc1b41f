"""What a batch records about each model: its line of the summary, and its ``batch.json``.

A model's outcome is read back from its ``report.json`` (:func:`result_from_report`), so a
model that is up to date counts with the outcome it had when it ran. ``batch.json`` records the
options the folder was produced with (:func:`fingerprint`); a later run compares them, the model
file's hash and the onnx2fx version to decide whether a model is up to date (:func:`up_to_date`).
A worker that produced no report (it crashed, or raised outside a pipeline stage) gets one that
says why (:func:`fallback_report`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..pipeline import PipelineOptions, report_passed
from ..reports import file_sha256, new_report
from .evaluation import EvaluationTask, evaluation_record

STATUSES = ("ok", "failed", "crashed", "skipped", "up-to-date")
BATCH_RECORD_VERSION = 1

__all__ = [
    "BATCH_RECORD_VERSION",
    "STATUSES",
    "ModelResult",
    "batch_record",
    "fallback_report",
    "fingerprint",
    "quantization_results",
    "result_from_report",
    "up_to_date",
]


def tool_version() -> str:
    """The running onnx2fx version, as reports and records write it."""
    from .. import __version__

    return __version__


def utc_timestamp() -> str:
    """The current time, as reports and records write it."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path) -> Any:
    """The parsed JSON file, or ``None`` when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def quantization_results(ptq: bool, qft: bool) -> dict[str, dict[str, Any] | None]:
    """The ``quantization`` section for a model whose quantization stages did not run (skipped,
    crashed, or not converted): each requested stage is recorded as requested and not run."""

    def not_run(what: str) -> dict[str, Any]:
        return {"requested": True, "status": "not_run", "message": f"{what} was requested but did not run"}

    return {"ptq": not_run("post-training quantization (PTQ)") if ptq else None,
            "qft": not_run("quantization-aware fine-tuning (QFT)") if qft else None}


@dataclass
class ModelResult:
    """One line of the summary."""

    path: str  # relative to the models folder
    output: str  # relative to the output folder
    status: str  # one of STATUSES
    passed: bool | None = None  # None: not run (skipped by config)
    relative_error: float | None = None  # percent; None when not measured or not finite
    conversion_seconds: float | None = None
    seconds: float | None = None  # worker wall time in this run
    error: dict[str, str] | None = None
    unsupported_ops: list[str] = field(default_factory=list)
    quantization: dict[str, Any] = field(default_factory=lambda: {"ptq": None, "qft": None})
    evaluation: dict[str, Any] | None = None  # task metrics and grades; None when no dataset was given

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def result_from_report(rel: str, out: str, report: Mapping[str, Any], status: str | None = None,
                       seconds: float | None = None, evaluation: bool = False) -> ModelResult:
    """The summary line of a model from its report; ``evaluation``: whether task metrics were
    requested for it (then the line records them, or why they did not run)."""
    conversion = report.get("conversion") or {}
    accuracy = report.get("accuracy") or {}
    passed = report_passed(report)
    error = conversion.get("error") or accuracy.get("error")
    if error is None and not passed and accuracy:
        error = {"type": "ToleranceExceeded",
                 "message": f"relative error {accuracy.get('relative_error', float('nan')):.3g} % exceeds the "
                            f"tolerance of {accuracy.get('tolerance_percent')} %"}
    status = status or ("ok" if passed else "failed")
    return ModelResult(
        path=rel, output=out, status=status, passed=passed,
        relative_error=finite(accuracy.get("relative_error")), conversion_seconds=finite(conversion.get("seconds")),
        seconds=None if seconds is None else round(seconds, 3),
        error=None if error is None else {"type": str(error.get("type", "")), "message": str(error.get("message", ""))},
        unsupported_ops=list(conversion.get("unsupported_ops") or []),
        quantization=dict(report.get("quantization") or {"ptq": None, "qft": None}),
        evaluation=evaluation_record(report.get("task_metrics"), out, status) if evaluation else None)


def fallback_report(model_path: Path, error: dict[str, str], quantization: dict[str, Any]) -> dict[str, Any]:
    """The report of a model whose worker produced none (it crashed, or raised outside a stage)."""
    try:
        report = new_report(model_path)
    except OSError:  # the model file went away meanwhile
        report = {"schema_version": "1.0", "tool": {"name": "onnx2fx", "version": tool_version()},
                  "generated_at": utc_timestamp(),
                  "model": {"name": model_path.stem, "path": str(model_path), "sha256": "0" * 64, "size_bytes": 0,
                            "opset": None, "ir_version": None, "producer": None},
                  "conversion": {}, "accuracy": None, "traceability": None, "quantization": {}}
    report["conversion"] = {"status": "failed", "error": dict(error), "seconds": 0.0}
    report["quantization"] = quantization
    return report


def fingerprint(options: PipelineOptions, ptq: bool, qft: bool, hashes: dict[str, str],
                evaluation: EvaluationTask | None = None) -> dict[str, Any]:
    """The options a model folder was produced with, as recorded in its ``batch.json``."""
    record = dataclasses.asdict(options)
    record["input_shapes"] = {k: [int(d) for d in v] for k, v in sorted(dict(options.input_shapes).items())}
    if options.inputs:  # the content matters, not where the file lies
        path = str(Path(options.inputs).absolute())
        if path not in hashes:
            hashes[path] = file_sha256(Path(path))
        record["inputs"] = {"name": Path(path).name, "sha256": hashes[path]}
    if tuple(options.formats) == ("qdq",):  # the default: folders written before the option keep their record
        del record["formats"]
    record.update(ptq=ptq, qft=qft)
    if evaluation is not None:  # folders written without an evaluation keep their record
        record["evaluation"] = evaluation.fingerprint()
    return json.loads(json.dumps(record))


def up_to_date(final: Path, sha256: str, fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The saved report when ``final`` already holds this model's result for these options."""
    report = read_json(final / "report.json")
    record = read_json(final / "batch.json")
    if not isinstance(report, dict) or not isinstance(record, dict):
        return None
    try:
        same = (report["model"]["sha256"] == sha256 and report["tool"]["version"] == tool_version()
                and record.get("options") == fingerprint and record.get("outcome") in ("ok", "failed"))
    except (KeyError, TypeError):
        return None
    return report if same else None


def batch_record(rel: str, report: Mapping[str, Any], options: Mapping[str, Any], result: ModelResult,
                 seconds: float) -> dict[str, Any]:
    """The content of a model folder's ``batch.json``."""
    return {"format_version": BATCH_RECORD_VERSION, "model": rel, "tool_version": tool_version(),
            "sha256": report["model"]["sha256"], "options": options, "outcome": result.status,
            "error": result.error, "seconds": round(seconds, 3), "finished_at": utc_timestamp()}
