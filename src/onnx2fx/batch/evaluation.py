"""Task metrics in a batch (``onnx2fx batch --dataset``): every form a model's run produced,
scored on a dataset with the evaluation package, graded, and recorded.

The parent plans (:class:`EvaluationPlanner`): each dataset is read and checked completely once,
each task config is read with the preset the dataset calls for, and a task config meant for
another kind of dataset is refused, all before any model runs. A model to evaluate gets an
:class:`EvaluationTask`, which travels to its worker and into its fingerprint (a change of
dataset, task config or limit makes the model run again).

The worker (:func:`evaluate_model`) scores the float ONNX (onnxruntime), the converted
``model_full.pt`` (torch) and the PTQ and QFT forms that the run produced (each stage's torch
simulation and ONNX files), in that order, so the float model is the comparison's reference. It
writes them through :func:`onnx2fx.evaluation.write_run` into ``<model folder>/evaluation/`` (one
folder per form, ``comparison.json``, ``comparison.md``) and returns the report's
``task_metrics`` section. A form that fails is recorded with its error and the others go on; an
evaluation that fails as a whole (or crashes, or runs past the timeout) is recorded as failed and
the model keeps its other results.

:func:`evaluation_record` turns that section into the model's ``evaluation`` entry of
``summary.json``; :func:`not_run_record` is the entry of a model whose evaluation did not run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BatchError, EvaluationError

if TYPE_CHECKING:  # the evaluation package (numpy, Pillow, pycocotools) loads only when a batch evaluates
    from ..evaluation import TaskConfig

__all__ = [
    "EVALUATION_FOLDER",
    "EvaluationPlanner",
    "EvaluationTask",
    "evaluate_model",
    "evaluation_record",
    "failed_section",
    "not_run_record",
]

EVALUATION_FOLDER = "evaluation"
ROLES = ("float", "converted", "ptq", "qft")


@dataclass(frozen=True)
class EvaluationTask:
    """What a worker evaluates a model on (sent to the worker process, so it must pickle)."""

    dataset: str  # absolute path, read again in the worker
    task: TaskConfig  # resolved with the dataset's default preset
    task_source: str  # the preset name or the task config file, as the config gave it
    dataset_record: Mapping[str, Any] = field(default_factory=dict)  # name, source, layout, count (after limit)
    ground_truth_sha256: str = ""
    limit: int | None = None
    batch_size: int = 8

    def fingerprint(self) -> dict[str, Any]:
        """What ``batch.json`` records, so that a folder evaluated otherwise is not up to date. The
        dataset counts by its content (name, layout, the images' ids and answers), not where it lies."""
        return json.loads(json.dumps({
            "dataset": {"name": self.dataset_record.get("name"), "layout": self.dataset_record.get("layout"),
                        "images": self.dataset_record.get("count"), "ground_truth_sha256": self.ground_truth_sha256},
            "task": self.task.to_dict(), "limit": self.limit, "batch_size": self.batch_size}))


class EvaluationPlanner:
    """The parent's side: each dataset and task config read and checked once, before any model runs."""

    def __init__(self) -> None:
        self._datasets: dict[str, Any] = {}

    def _dataset(self, path: str) -> Any:
        from ..evaluation import load_dataset

        if path not in self._datasets:
            self._datasets[path] = load_dataset(path)  # a DatasetError names the file and the line
        return self._datasets[path]

    def task_for(self, rel: str, settings: Mapping[str, Any]) -> EvaluationTask | None:
        """The evaluation of the model at ``rel`` with its merged batch settings; ``None`` without a dataset."""
        if not settings.get("dataset"):
            return None
        from ..evaluation import load_task_config
        from ..evaluation.evaluator import dataset_record

        path = str(settings["dataset"])
        dataset = self._dataset(path).limited(settings.get("eval_limit"))
        source = settings.get("task")
        try:
            config = load_task_config(source, "logits" if dataset.task == "classification" else "reference004")
        except EvaluationError as exc:
            raise BatchError(f"{rel}: {exc}") from None
        if config.task != dataset.task:
            raise BatchError(f"{rel}: the task config {source or config.preset} is for {config.task}, but the dataset "
                             f"{path} is a {dataset.task} dataset")
        record = dataset_record(dataset)
        return EvaluationTask(
            dataset=path, task=config, task_source=str(source or config.preset),
            dataset_record={k: record[k] for k in ("name", "source", "layout", "count")},
            ground_truth_sha256=record["ground_truth_sha256"], limit=settings.get("eval_limit"),
            batch_size=settings.get("eval_batch_size", 8))


# ------------------------------------------------------------------ the worker's side
def _forms(model_path: Path, folder: Path, final: Path, quantization: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(role, form) for every form the run produced, float first. Forms read from the staging
    folder record the path they will have once the folder is installed at ``final``."""
    from ..evaluation import model_forms

    def recorded(forms: list[Any]) -> list[Any]:
        return [dataclasses.replace(f, recorded_path=str(final / f.path.relative_to(folder))) for f in forms]

    forms: list[tuple[str, Any]] = [("float", f) for f in model_forms(model_path)]
    forms += [("converted", f) for f in recorded(model_forms(folder / "model_full.pt"))]
    for stage in ("ptq", "qft"):
        if (quantization.get(stage) or {}).get("status") == "ok" and (folder / stage).is_dir():
            forms += [(stage, f) for f in recorded(model_forms(folder / stage))]
    labels = [f.label for _, f in forms[1:]]
    if forms[0][1].label in labels:  # a model named like one of its own forms (model_ptq.onnx)
        forms[0] = ("float", dataclasses.replace(forms[0][1], label=f"float_{forms[0][1].label}"))
    return forms


def _fixed_batch_of_one(model_path: Path) -> bool:
    """Whether the model's first input has a batch dimension fixed at 1 (then it gets one image a call)."""
    import onnx

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # the float form's own evaluation reports an unreadable file
        return False
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    return len(dims) > 0 and dims[0].HasField("dim_value") and dims[0].dim_value == 1


def _error(exc: BaseException, folder: Path, final: Path) -> dict[str, str]:
    """An exception as a record, with the staging folder's paths replaced by the final ones."""
    return {"type": type(exc).__name__, "message": str(exc).replace(str(folder), str(final))}


def evaluate_model(model_path: Path, folder: Path, request: EvaluationTask, quantization: Mapping[str, Any], *,
                   final: Path | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate every form of one model (see the module docstring); the report's ``task_metrics``.

    ``folder`` is the model folder being written, ``final`` where it will be installed (default:
    ``folder`` itself). Never raises for a failing evaluation: the section records it.
    """
    from ..evaluation import EvaluationRun, compare_evaluations, evaluate_form, load_dataset, write_run
    from ..evaluation.report_section import task_metrics_section

    final = final or folder
    report = progress or (lambda text: None)
    try:
        dataset = load_dataset(request.dataset).limited(request.limit)
        forms = _forms(model_path, folder, final, quantization)
    except Exception as exc:  # noqa: BLE001 - whatever stops the evaluation is the model's result
        return failed_section(request, _error(exc, folder, final))
    batch_size = 1 if _fixed_batch_of_one(model_path) else request.batch_size
    results: list[Any] = []
    roles: dict[str, str] = {}
    failed: list[dict[str, Any]] = []
    for index, (role, form) in enumerate(forms):
        step = f"evaluating {form.label} ({index + 1}/{len(forms)})"
        report(step)
        try:
            results.append(evaluate_form(form, dataset, request.task, batch_size=batch_size,
                                         on_batch=lambda done, total, step=step: report(f"{step} {done}/{total}")))
            roles[form.label] = role
        except Exception as exc:  # noqa: BLE001 - one form failing leaves the others' metrics
            failed.append({"label": form.label, "role": role, "runtime": form.runtime, "model": form.recorded,
                           "error": _error(exc, folder, final)})
    if not results:
        return failed_section(request, _failure_summary(failed), failed)
    report(f"writing {EVALUATION_FOLDER}/")
    try:
        run = EvaluationRun(results, compare_evaluations([r.document() for r in results]) if len(results) > 1
                            else None)
        write_run(run, folder / EVALUATION_FOLDER)
        section = task_metrics_section(run, folder)
    except Exception as exc:  # noqa: BLE001
        return failed_section(request, _error(exc, folder, final), failed)
    for form in section["forms"]:
        form["role"] = roles[form["label"]]
    section.update(status="failed" if failed else "ok", error=_failure_summary(failed) if failed else None,
                   failed_forms=failed)
    return section


def _failure_summary(failed: list[dict[str, Any]]) -> dict[str, str]:
    """One error for the forms that failed: the first one's type, every form's message."""
    return {"type": failed[0]["error"]["type"],
            "message": "; ".join(f"{f['label']}: {f['error']['type']}: {f['error']['message']}" for f in failed)}


def failed_section(request: EvaluationTask, error: Mapping[str, str],
                   failed_forms: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``task_metrics`` section of an evaluation that produced no metrics at all."""
    from ..evaluation.comparison import HEADLINE_METRICS

    return {"task": request.task.task, "dataset": dict(request.dataset_record), "forms": [],
            "headline_metrics": list(HEADLINE_METRICS[request.task.task]), "grade": None, "comparison": None,
            "folder": None, "pictures": [], "status": "failed", "error": dict(error),
            "failed_forms": list(failed_forms or [])}


# ------------------------------------------------------------------ the summary's record
def not_run_record(message: str) -> dict[str, Any]:
    """The summary entry of a model whose evaluation was requested but did not run."""
    return {"status": "not_run", "message": message, "task": None, "dataset": None, "images": None, "folder": None,
            "reference": None, "grade": None, "forms": [], "error": None}


def evaluation_record(section: Mapping[str, Any] | None, out: str, model_status: str) -> dict[str, Any]:
    """The model's ``evaluation`` entry of ``summary.json`` from its report's ``task_metrics``.

    ``out`` is the model folder relative to the output folder; ``model_status`` says why an
    evaluation that left no section did not run.
    """
    if not section or "status" not in section:
        reasons = {"skipped": "the model was skipped by the config", "crashed": "the worker crashed"}
        return not_run_record(reasons.get(model_status, "the model did not convert"))
    comparison = section.get("comparison") or {}
    grades = comparison.get("grades") or {}
    forms = [{"label": f["label"], "role": f.get("role"), "runtime": f["runtime"], "metrics": dict(f["metrics"]),
              "grade": "reference" if f["label"] == comparison.get("reference") else grades.get(f["label"]),
              "error": None} for f in section.get("forms", [])]
    forms += [{"label": f["label"], "role": f.get("role"), "runtime": f["runtime"], "metrics": None, "grade": None,
               "error": dict(f["error"])} for f in section.get("failed_forms", [])]
    forms.sort(key=lambda f: ROLES.index(f["role"]) if f["role"] in ROLES else len(ROLES))
    dataset = section.get("dataset") or {}
    folder = section.get("folder")
    return {"status": section["status"], "message": None, "task": section.get("task"), "dataset": dataset.get("name"),
            "images": dataset.get("count"), "folder": None if folder is None else f"{out}/{folder}",
            "reference": comparison.get("reference"), "grade": section.get("grade"), "forms": forms,
            "error": section.get("error")}

