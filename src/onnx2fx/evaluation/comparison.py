"""Comparing evaluations of model forms: metric differences graded with reference 004's thresholds.

``comparison.json`` holds, for each candidate against the reference (the first evaluation), every
metric's two values, their difference (candidate - reference) and its grade:

- ``excellent``: |difference| < 0.001, the forms produce nearly identical results;
- ``good``: |difference| < 0.01, very similar results;
- ``warning``: |difference| >= 0.01, significant differences.

A candidate's overall grade is the worst grade among the headline metrics (reference 004's AP, AP50,
AP75 and AR100 for detection; top-1 and top-5 for classification), and ``warning`` whenever the two
evaluations did not see the same images (the dataset-consistency check: same count, same image ids
in the same order, same ground truth).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import EvaluationError

EXCELLENT_BELOW = 0.001
GOOD_BELOW = 0.01
GRADES = ("excellent", "good", "warning")
HEADLINE_METRICS = {"detection": ("AP", "AP50", "AP75", "AR100"), "classification": ("top1", "top5")}


def grade(difference: float) -> str:
    """Reference 004's acceptability of one metric difference."""
    size = abs(difference)
    if size < EXCELLENT_BELOW:
        return "excellent"
    if size < GOOD_BELOW:
        return "good"
    return "warning"


def _worst(grades: Sequence[str]) -> str:
    return max(grades, key=GRADES.index) if grades else "excellent"


def load_evaluation(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An ``evaluation.json`` document, from the file or the evaluation folder holding it."""
    path = Path(path)
    file = path / "evaluation.json" if path.is_dir() else path
    if not file.is_file():
        raise EvaluationError(f"{path} is not an evaluation: no evaluation.json (write one with onnx2fx evaluate)")
    try:
        document = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{file} is not valid JSON: {exc}") from None
    for key in ("label", "task", "metrics", "dataset"):
        if key not in document:
            raise EvaluationError(f"{file} has no {key!r}: not an onnx2fx evaluation")
    return document


def dataset_consistency(reference: Mapping[str, Any], candidate: Mapping[str, Any]) -> dict[str, Any]:
    """Whether two evaluations scored the same images against the same answers."""
    a, b = reference["dataset"], candidate["dataset"]
    problems = []
    if a["count"] != b["count"]:
        problems.append(f"{a['count']} images against {b['count']}")
    if a["image_ids"] != b["image_ids"]:
        problems.append("different image ids")
    if a.get("ground_truth_sha256") != b.get("ground_truth_sha256"):
        problems.append("different ground truth")
    return {"consistent": not problems, "image_count": {"reference": a["count"], "candidate": b["count"]},
            "same_image_ids": a["image_ids"] == b["image_ids"], "problems": problems}


def compare_evaluations(evaluations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``comparison.json`` document: each later evaluation against the first."""
    if len(evaluations) < 2:
        raise EvaluationError("a comparison needs at least two evaluations")
    reference = evaluations[0]
    tasks = {e["task"] for e in evaluations}
    if len(tasks) > 1:
        raise EvaluationError(f"cannot compare evaluations of different tasks: {', '.join(sorted(tasks))}")
    headline = HEADLINE_METRICS[reference["task"]]
    candidates = []
    for candidate in evaluations[1:]:
        metrics = {}
        for name, ref_value in reference["metrics"].items():
            if name not in candidate["metrics"]:
                continue
            value = candidate["metrics"][name]
            difference = value - ref_value
            metrics[name] = {"reference": ref_value, "value": value, "difference": difference,
                             "grade": grade(difference)}
        consistency = dataset_consistency(reference, candidate)
        overall = _worst([metrics[m]["grade"] for m in headline if m in metrics])
        if not consistency["consistent"]:
            overall = "warning"
        candidates.append({"label": candidate["label"], "model": candidate.get("model"),
                           "runtime": candidate.get("runtime"), "grade": overall, "metrics": metrics,
                           "dataset_consistency": consistency, "notes": list(candidate.get("notes", []))})
    return {
        "format_version": 1,
        "task": reference["task"],
        "dataset": {k: reference["dataset"].get(k) for k in ("name", "source", "layout", "count")},
        "reference": {"label": reference["label"], "model": reference.get("model"),
                      "runtime": reference.get("runtime"), "metrics": dict(reference["metrics"])},
        "thresholds": {"excellent": f"|difference| < {EXCELLENT_BELOW}", "good": f"|difference| < {GOOD_BELOW}",
                       "warning": f"|difference| >= {GOOD_BELOW}"},
        "headline_metrics": list(headline),
        "candidates": candidates,
        "grade": _worst([c["grade"] for c in candidates]),
    }


def write_comparison(document: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``comparison.json`` through a temporary file, so a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)
    return path


def comparison_markdown(document: Mapping[str, Any]) -> str:
    """A table per candidate: metric, reference, candidate, difference, grade."""
    ref = document["reference"]
    lines = [f"Reference: `{ref['label']}`; dataset {document['dataset']['name']} "
             f"({document['dataset']['count']} images). Overall grade: **{document['grade']}**.", ""]
    for c in document["candidates"]:
        lines += [f"`{c['label']}`: **{c['grade']}**"
                  + ("" if c["dataset_consistency"]["consistent"] else
                     f" (dataset mismatch: {'; '.join(c['dataset_consistency']['problems'])})"), "",
                  f"| metric | {ref['label']} | {c['label']} | difference | grade |", "|---|---:|---:|---:|---|"]
        for name, m in c["metrics"].items():
            lines.append(f"| {name} | {m['reference']:.4f} | {m['value']:.4f} | {m['difference']:+.4f} "
                         f"| {m['grade']} |")
        lines.append("")
        for note in c.get("notes", []):
            lines += [f"Note: {note}.", ""]
    return "\n".join(lines)
