"""Task metrics, computed by the library users trust for them.

Detection: COCO's AP, AP50, AP75, APs/m/l and AR1/10/100 (and ARs/m/l) from pycocotools' ``COCOeval``
(``stats`` in its documented order), so a number here is the number users get from the COCO API.
Classification: top-1 and top-5 accuracy.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import EvaluationError

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
CLASSIFICATION_METRICS = ("top1", "top5")


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise EvaluationError("detection metrics need pycocotools: pip install 'onnx2fx[evaluate]'") from None
    return COCO, COCOeval


def coco_metrics(ground_truth: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]],
                 image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCO bbox metrics of ``predictions`` (COCO results format) against a COCO ground-truth document.

    No predictions at all scores 0 everywhere (pycocotools refuses an empty results list), except
    where COCO itself says "undefined" (-1: no ground truth of that size).
    """
    COCO, COCOeval = _pycocotools()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
        gt = COCO()
        gt.dataset = {"info": {}, **{k: list(v) for k, v in ground_truth.items()}}
        gt.createIndex()
        if predictions:
            dt = gt.loadRes([dict(p) for p in predictions])
        else:
            dt = COCO()
            dt.dataset = {"images": list(ground_truth["images"]), "annotations": [],
                          "categories": list(ground_truth["categories"])}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_METRICS, evaluator.stats)}


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy of class ``scores`` [N, C] against integer ``labels`` [N]."""
    if scores.ndim != 2 or len(scores) != len(labels):
        raise EvaluationError(f"scores {list(scores.shape)} do not match {len(labels)} labels")
    k = min(5, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = top == labels[:, None]
    return {"top1": float(hits[:, 0].mean()), "top5": float(hits.any(axis=1).mean())}


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    inside = (labels < classes) & (predicted < classes)
    np.add.at(matrix, (labels[inside], predicted[inside]), 1)
    return matrix
