"""The batch's summary: ``summary.json`` (schema ``reports/summary.schema.json``) and
``summary.md``, and re-rendering reports from their JSON (``onnx2fx report``).

``summary.json`` is the record; ``summary.md`` and every model's ``report.md``/``report.html``
are rendered from JSON alone, so they can be regenerated after the renderers change without
running anything again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_folder import is_staging_name
from ..errors import BatchError
from ..reports import regenerate, write_atomic
from .records import STATUSES, ModelResult, read_json, tool_version, utc_timestamp

SUMMARY_SCHEMA_VERSION = "1.1"  # 1.1: task metrics (`evaluation`, and each model's `evaluation`)
SUMMARY_SCHEMA_PATH = Path(__file__).parent.parent / "reports" / "summary.schema.json"

__all__ = [
    "SUMMARY_SCHEMA_PATH",
    "SUMMARY_SCHEMA_VERSION",
    "BatchSummary",
    "regenerate_folder",
    "render_summary_markdown",
    "summary_schema",
    "write_summary",
]


@dataclass
class BatchSummary:
    """What :func:`run_batch` did; ``to_dict()`` is the content of ``summary.json``."""

    models_dir: str
    output_dir: str
    results: list[ModelResult]
    seconds: float = 0.0
    jobs: int = 1
    ptq: bool = False
    qft: bool = False
    evaluation: bool = False  # some model was evaluated on a dataset
    warnings: list[str] = field(default_factory=list)
    removed_leftovers: list[str] = field(default_factory=list)
    generated_at: str = field(default_factory=utc_timestamp)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            counts[result.status] += 1
        return counts

    @property
    def passed(self) -> bool:
        """No model failed or crashed, in this run or (for up-to-date models) in the run that made it."""
        return all(r.passed is not False for r in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "tool": {"name": "onnx2fx", "version": tool_version()},
            "generated_at": self.generated_at,
            "models_dir": self.models_dir,
            "output_dir": self.output_dir,
            "jobs": self.jobs,
            "seconds": round(self.seconds, 3),
            "ptq": self.ptq,
            "qft": self.qft,
            "evaluation": self.evaluation,
            "passed": self.passed,
            "counts": self.counts,
            "warnings": list(self.warnings),
            "models": [r.to_dict() for r in self.results],
        }


def summary_schema() -> dict[str, Any]:
    """The JSON schema ``summary.json`` follows."""
    return json.loads(SUMMARY_SCHEMA_PATH.read_text())


def write_summary(summary: Mapping[str, Any], output_dir: Path) -> None:
    """Write ``summary.json`` and ``summary.md`` (each atomically) into ``output_dir``."""
    write_atomic(output_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    write_atomic(output_dir / "summary.md", render_summary_markdown(summary))


def render_summary_markdown(summary: Mapping[str, Any]) -> str:
    """``summary.md``: the counts, the notes on quantization and warnings, one table row per model."""
    counts = summary["counts"]
    lines = ["# Batch summary", "",
             f"onnx2fx {summary['tool']['version']}, {summary['generated_at']}: {len(summary['models'])} models "
             f"from `{summary['models_dir']}` in {summary['seconds']:.1f} s with {summary['jobs']} workers.", "",
             f"**{'Passed' if summary['passed'] else 'FAILED'}**: " + ", ".join(
                 f"{counts.get(s, 0)} {s}" for s in STATUSES) + ".", ""]
    if summary.get("ptq"):
        lines += ["PTQ requested: each converted model's quantized results are in its `ptq/` folder.", ""]
    if summary.get("qft"):
        lines += ["QFT requested: fine-tuned results are in each model's `qft/` folder (models with "
                  "`calibration` data in the config; others record why they were skipped).", ""]
    for warning in summary.get("warnings", []):
        lines.append(f"- warning: {warning}")
    if summary.get("warnings"):
        lines.append("")
    lines += ["| model | status | passed | rel. error % | conversion s | error |", "|---|---|---|---|---|---|"]
    for m in summary["models"]:
        name = f"[{m['path']}]({m['output']}/report.md)" if m["status"] != "skipped" else m["path"]
        passed = {True: "yes", False: "no", None: "—"}[m["passed"]]
        rel = "—" if m["relative_error"] is None else f"{m['relative_error']:.3g}"
        conv = "—" if m["conversion_seconds"] is None else f"{m['conversion_seconds']:.2f}"
        error = "" if not m["error"] else f"`{m['error']['type']}`: {m['error']['message']}"
        error = error.replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {m['status']} | {passed} | {rel} | {conv} | {error} |")
    lines += _task_metrics_markdown(summary)
    return "\n".join(lines) + "\n"


def _task_metrics_markdown(summary: Mapping[str, Any]) -> list[str]:
    """One table per task (detection, classification): each evaluated form's headline metrics and
    grade against its float model; then the evaluations that failed or did not run."""
    from ..evaluation.comparison import HEADLINE_METRICS

    evaluated = [m for m in summary["models"] if m.get("evaluation")]
    if not evaluated:
        return []
    lines = ["", "## Task metrics", "",
             "Each model's forms on its dataset; grades compare each form with the model's float ONNX "
             "(|difference| < 0.001 excellent, < 0.01 good, else warning; the worst headline metric counts).", ""]
    for task, names in HEADLINE_METRICS.items():
        rows = [(m, e) for m in evaluated if (e := m["evaluation"])["task"] == task and e["forms"]]
        if not rows:
            continue
        lines += [f"| model | dataset | form | runtime | {' | '.join(names)} | grade |",
                  "|---|---|---|---|" + "---:|" * len(names) + "---|"]
        for m, e in rows:
            link = f"[{m['path']}]({e['folder']}/comparison.md)" if e["folder"] and len(
                [f for f in e["forms"] if f["metrics"]]) > 1 else m["path"]
            for form in e["forms"]:
                values = " | ".join("—" if not form["metrics"] else f"{form['metrics'].get(n, float('nan')):.4f}"
                                    for n in names)
                grade = form["grade"] or ("failed" if form["error"] else "—")
                lines.append(f"| {link} | {e['dataset']} ({e['images']}) | {form['label']} ({form['role']}) | "
                             f"{form['runtime']} | {values} | {grade} |")
        lines.append("")
    for m in evaluated:
        e = m["evaluation"]
        if e["status"] == "failed":
            error = e["error"] or {}
            lines.append(f"- {m['path']}: evaluation failed: `{error.get('type', '')}`: "
                         f"{str(error.get('message', '')).replace(chr(10), ' ')}")
        elif e["status"] == "not_run":
            lines.append(f"- {m['path']}: evaluation not run: {e['message']}")
    return lines


def regenerate_folder(folder: str | os.PathLike[str]) -> list[Path]:
    """Re-render reports from their JSON: one model folder (``report.json``), or a batch output
    folder (``summary.json``: ``summary.md`` and every model folder's report). Returns the files
    written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise (NotADirectoryError if folder.exists() else FileNotFoundError)(f"{folder} is not a folder")
    if (folder / "report.json").is_file():
        return [_regenerate_one(folder)]
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{folder} has neither report.json (a model folder) nor summary.json "
                                "(a batch output folder)")
    summary = read_json(summary_path)
    if not isinstance(summary, dict):
        raise BatchError(f"{summary_path} is not valid JSON")
    written: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_staging_name(d))
        if "report.json" in filenames:
            written.append(_regenerate_one(Path(dirpath)))
    try:
        text = render_summary_markdown(summary)
    except (KeyError, TypeError, ValueError) as exc:
        raise BatchError(f"{summary_path} is not an onnx2fx batch summary ({type(exc).__name__}: {exc})") from None
    write_atomic(folder / "summary.md", text)
    return written + [folder / "summary.md"]


def _regenerate_one(folder: Path) -> Path:
    try:
        regenerate(folder)
    except (KeyError, TypeError, ValueError) as exc:
        raise BatchError(f"{folder / 'report.json'} is not a valid onnx2fx report ({type(exc).__name__}: {exc})") \
            from None
    return folder / "report.md"
