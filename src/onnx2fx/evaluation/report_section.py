"""The task-metrics section of a per-model report (``report.json/md/html``).

``onnx2fx evaluate ... --report FOLDER`` adds it to the report in FOLDER (written by ``onnx2fx
batch`` or the pipeline) and re-renders the Markdown and HTML, which then show each form's headline
metrics, the comparison grades and the pictures, linked relative to the report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import EvaluationError
from .comparison import HEADLINE_METRICS
from .evaluator import EvaluationRun


def task_metrics_section(run: EvaluationRun, report_dir: Path) -> dict[str, Any]:
    """What the report records: forms with their metrics, grades, the evaluation folder and pictures."""
    first = run.results[0]
    pictures = []
    for result in run.results:
        folder = run.files.get(result.label)
        if folder is not None and (folder / "visualizations").is_dir():
            pictures += [os.path.relpath(p, report_dir) for p in sorted((folder / "visualizations").glob("*.png"))[:4]]
    comparison = None
    if run.comparison is not None:
        comparison = {"reference": run.comparison["reference"]["label"],
                      "grades": {c["label"]: c["grade"] for c in run.comparison["candidates"]}}
    return {"task": first.config.task,
            "dataset": {k: first.document()["dataset"][k] for k in ("name", "source", "layout", "count")},
            "forms": [{"label": r.label, "runtime": r.form.runtime, "model": r.form.recorded, "metrics": r.metrics,
                       "seconds": r.seconds["total"]} for r in run.results],
            "headline_metrics": list(HEADLINE_METRICS[first.config.task]),
            "grade": None if run.comparison is None else run.comparison["grade"], "comparison": comparison,
            "folder": os.path.relpath(run.output_dir, report_dir), "pictures": pictures}


def attach_to_report(run: EvaluationRun, report_dir: str | os.PathLike[str]) -> Path:
    """Add the section to ``report_dir/report.json`` and re-render ``report.md`` and ``report.html``."""
    from ..reports import write_report

    folder = Path(report_dir)
    source = folder / "report.json"
    if not source.is_file():
        raise EvaluationError(f"{source} does not exist: --report takes a folder written by onnx2fx batch")
    if run.output_dir is None:
        raise EvaluationError("the evaluation was not written to a folder: give output_dir to link it from a report")
    report = json.loads(source.read_text())
    report["task_metrics"] = task_metrics_section(run, folder.resolve())
    write_report(report, folder)
    return source
