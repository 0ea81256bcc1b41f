"""Evaluate model forms on a dataset: the loop, the output folder and the automatic comparison.

``evaluate(models, dataset)`` runs every form found at ``models`` (see runners.py) over the dataset
in its fixed order, decodes outputs with the task config, scores them (metrics.py) and, with
``output_dir``, writes (atomically: a staging folder renamed into place)::

    evaluation.json         label, model, runtime, task config, dataset record, metrics, timings
    metrics.json            the metrics alone
    predictions.json        detections in COCO results format (classification: top-5 per image)
    ground_truth_coco.json  the ground truth as COCO (detection; converted when the dataset is not COCO)
    visualizations/         0000_detected.png ... (detection) or confusion_matrix.png (classification)

One form writes these into ``output_dir``; several write one folder per form (named by its label)
plus ``comparison.json`` and ``comparison.md`` comparing every form with the first.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_folder import atomic_folder
from ..errors import EvaluationError
from ..progress import LiveProgress
from .comparison import compare_evaluations, comparison_markdown, write_comparison
from .datasets import Dataset, load_dataset
from .metrics import classification_metrics, coco_metrics, confusion_matrix
from .pictures import draw_confusion_matrix, draw_detections
from .postprocess import Detections, decode
from .preprocess import preprocess_batch
from .runners import ModelForm, model_forms
from .task import TaskConfig, load_task_config


@dataclass
class EvaluationResult:
    """One form's evaluation: its metrics, its predictions and how long it took."""

    form: ModelForm
    dataset: Dataset
    config: TaskConfig
    metrics: dict[str, float]
    predictions: list[dict[str, Any]]
    seconds: dict[str, float]
    class_scores: np.ndarray | None = None

    @property
    def label(self) -> str:
        return self.form.label

    def document(self) -> dict[str, Any]:
        """The ``evaluation.json`` content (what ``compare`` reads)."""
        return {"format_version": 1, "label": self.label, "model": self.form.recorded, "runtime": self.form.runtime,
                "task": self.config.task, "task_config": self.config.to_dict(), "dataset": dataset_record(self.dataset),
                "metrics": self.metrics, "seconds": self.seconds, "notes": self.form.notes()}


@dataclass
class EvaluationRun:
    results: list[EvaluationResult]
    comparison: dict[str, Any] | None = None
    files: dict[str, Path] = field(default_factory=dict)
    output_dir: Path | None = None


def dataset_record(dataset: Dataset) -> dict[str, Any]:
    """What identifies the images and answers an evaluation used (for the consistency check)."""
    truth = dataset.coco_ground_truth() if dataset.task == "detection" else dataset.labels().tolist()
    digest = hashlib.sha256(json.dumps(truth, sort_keys=True, default=str).encode()).hexdigest()
    return {"name": dataset.name, "source": str(dataset.source), "layout": dataset.layout,
            "count": len(dataset.samples), "image_ids": dataset.image_ids(), "ground_truth_sha256": digest}


def evaluate(models: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
             dataset: str | os.PathLike[str] | Dataset, *, task: Any = None,
             output_dir: str | os.PathLike[str] | None = None, limit: int | None = None,
             batch_size: int = 8, image_root: str | os.PathLike[str] | None = None,
             progress: bool = False) -> EvaluationRun:
    """Evaluate every form found at ``models`` on ``dataset``; compare them when there are several.

    ``task`` is a task config (file, mapping, preset name or :class:`TaskConfig`; default: the
    ``logits`` preset for classification datasets, else ``reference004``).
    """
    if batch_size < 1:
        raise EvaluationError(f"batch size {batch_size}: must be at least 1")
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, image_root)
    data = data.limited(limit)
    config = load_task_config(task, "logits" if data.task == "classification" else "reference004")
    if config.task != data.task:
        raise EvaluationError(f"the task config is for {config.task} but {data.source} is a {data.task} dataset")
    paths = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    forms = [form for path in paths for form in model_forms(path)]
    labels = [f.label for f in forms]
    if len(set(labels)) != len(labels):
        raise EvaluationError(f"model forms with the same label {labels}: evaluate them separately")
    results = [evaluate_form(form, data, config, batch_size=batch_size, progress=progress) for form in forms]
    run = EvaluationRun(results, compare_evaluations([r.document() for r in results]) if len(results) > 1 else None)
    if output_dir is not None:
        write_run(run, output_dir)
    return run


def _batches(dataset: Dataset, batch_size: int) -> Iterator[list[Any]]:
    for start in range(0, len(dataset.samples), batch_size):
        yield dataset.samples[start:start + batch_size]


def evaluate_form(form: ModelForm, dataset: Dataset, config: TaskConfig, *, batch_size: int = 8,
                  progress: bool = False, on_batch: Callable[[int, int], None] | None = None) -> EvaluationResult:
    """Run one form over the dataset and score it.

    ``on_batch(done, total)`` is called after each batch with the images done so far, for callers
    that show progress their own way (``onnx2fx batch`` reports it from a worker process).
    """
    started = time.perf_counter()
    runner = form.open()
    input_name = config.input or runner.input_names[0]
    if input_name not in runner.input_names:
        raise EvaluationError(f"the task config's input {input_name!r} is not an input of {form.recorded} "
                              f"({', '.join(runner.input_names)})")
    if len(runner.input_names) > 1:
        raise EvaluationError(f"{form.recorded} has inputs {runner.input_names}: only single-input models are "
                              "evaluated")
    model_size = runner.image_size(input_name)
    category_ids = [c["id"] for c in dataset.categories]
    predictions: list[dict[str, Any]] = []
    scores: list[np.ndarray] = []
    inference = 0.0
    done = 0
    with LiveProgress(progress, f"evaluating {form.label}", len(dataset.samples), after_count="images",
                      spinner=False) as bar:
        for samples in _batches(dataset, batch_size):
            batch, placements = preprocess_batch(samples, config.preprocess, model_size)
            tick = time.perf_counter()
            outputs = runner({input_name: batch})
            inference += time.perf_counter() - tick
            decoded = decode(outputs, config, placements, category_ids)
            if isinstance(decoded, np.ndarray):
                scores.append(decoded)
            else:
                for sample, detections in zip(samples, decoded):
                    predictions += coco_results(sample.image_id, detections)
            bar.advance(len(samples))
            done += len(samples)
            if on_batch is not None:
                on_batch(done, len(dataset.samples))
    if dataset.task == "detection":
        metrics = coco_metrics(dataset.coco_ground_truth(), predictions, dataset.image_ids())
        class_scores = None
    else:
        class_scores = np.concatenate(scores).astype(np.float64)
        metrics = classification_metrics(class_scores, dataset.labels())
        predictions = _classification_results(dataset, class_scores)
    seconds = {"total": time.perf_counter() - started, "inference": inference}
    return EvaluationResult(form, dataset, config, metrics, predictions, seconds, class_scores)


def coco_results(image_id: int, detections: Detections) -> list[dict[str, Any]]:
    """Detections in COCO's results format: bbox = [x, y, width, height] in pixels, rounded as saved."""
    results = []
    for (x1, y1, x2, y2), score, category in zip(detections.boxes, detections.scores, detections.categories):
        results.append({"image_id": int(image_id), "category_id": int(category),
                        "bbox": [round(float(x1), 3), round(float(y1), 3), round(float(x2 - x1), 3),
                                 round(float(y2 - y1), 3)], "score": round(float(score), 6)})
    return results


def _classification_results(dataset: Dataset, scores: np.ndarray) -> list[dict[str, Any]]:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    return [{"image_id": s.image_id, "category_id": int(t[0]), "score": float(row[t[0]]),
             "top5": [int(v) for v in t]} for s, t, row in zip(dataset.samples, top, scores)]


def _write_json(path: Path, document: Any, indent: int | None = 2) -> None:
    path.write_text(json.dumps(document, indent=indent) + "\n")


def _write_result(result: EvaluationResult, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "evaluation.json", result.document())
    _write_json(folder / "metrics.json", result.metrics)
    _write_json(folder / "predictions.json", result.predictions, indent=None)
    pictures = folder / "visualizations"
    pictures.mkdir()
    dataset, config = result.dataset, result.config
    names = {int(c["id"]): str(c["name"]) for c in dataset.categories}
    if dataset.task == "detection":
        _write_json(folder / "ground_truth_coco.json", dataset.coco_ground_truth(), indent=None)
        for i, sample in enumerate(dataset.samples[: config.visualize]):
            mine = [p for p in result.predictions if p["image_id"] == sample.image_id]
            truth = [a for a in dataset.annotations if a["image_id"] == sample.image_id]
            draw_detections(sample.load_rgb(), mine, truth, names, pictures / f"{i:04d}_detected.png")
    elif result.class_scores is not None and config.visualize:
        classes = max(len(names), result.class_scores.shape[1])
        matrix = confusion_matrix(result.class_scores.argmax(axis=1), dataset.labels(), classes)
        draw_confusion_matrix(matrix, [names.get(i, str(i)) for i in range(classes)], pictures / "confusion_matrix.png")


def write_run(run: EvaluationRun, output_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``run`` into ``output_dir`` (see the module docstring for the layout) and record the
    files and folder in ``run``.

    The folder is assembled in a staging folder beside ``output_dir`` and moved into place,
    replacing an older folder there only then.
    """
    run.files = _write(run, Path(output_dir).resolve())
    run.output_dir = Path(output_dir).resolve()
    return run.files


def _write(run: EvaluationRun, out_dir: Path) -> dict[str, Path]:
    with atomic_folder(out_dir) as staging:
        files: dict[str, Path] = {}
        if len(run.results) == 1:
            _write_result(run.results[0], staging)
            files[run.results[0].label] = out_dir
        else:
            for result in run.results:
                _write_result(result, staging / result.label)
                files[result.label] = out_dir / result.label
            assert run.comparison is not None
            write_comparison(run.comparison, staging / "comparison.json")
            (staging / "comparison.md").write_text(comparison_markdown(run.comparison) + "\n")
            files["comparison"] = out_dir / "comparison.json"
    return files
