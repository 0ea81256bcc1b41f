"""Model outputs to predictions, one decoder per output convention (see task.py for the presets).

Detections come out in original image pixels (x1, y1, x2, y2) with dataset category ids, best score
first, ready for COCO's results format; classification gives each image's class scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import EvaluationError
from .preprocess import Placement
from .task import Postprocess, TaskConfig


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # float64 [N, 4] x1y1x2y2, original image pixels
    scores: np.ndarray  # float64 [N]
    categories: np.ndarray  # int64 [N], dataset category ids


def decode(outputs: Mapping[str, np.ndarray], config: TaskConfig, placements: Sequence[Placement],
           dataset_category_ids: Sequence[int]) -> list[Detections] | np.ndarray:
    """Per-image detections, or the [B, C] class scores for classification."""
    post = config.postprocess
    if config.task == "classification":
        logits = _output(outputs, post, "logits")
        if logits.ndim != 2:
            raise EvaluationError(f"classification output has shape {list(logits.shape)}, expected [batch, classes]")
        return logits
    if config.preset == "yolo":
        classes = len(post.category_ids) if post.category_ids is not None else len(dataset_category_ids)
        per_image = decode_yolo(_output(outputs, post, "predictions"), post, classes)
    elif config.preset == "torchvision":
        per_image = _decode_torchvision(outputs, post, len(placements))
    else:
        per_image = _decode_reference004(outputs, post)
    if len(per_image) != len(placements):
        raise EvaluationError(f"the model returned detections for {len(per_image)} images, {len(placements)} given")
    result = []
    for (boxes, scores, classes), placement in zip(per_image, placements):
        if post.boxes == "normalized":
            boxes = boxes * np.array([placement.input_width, placement.input_height] * 2)
        categories = _category_ids(classes, config, dataset_category_ids)
        keep = scores >= post.score_threshold
        order = np.argsort(-scores[keep], kind="stable")[: post.max_detections]
        result.append(Detections(placement.to_original(boxes[keep][order]), scores[keep][order].astype(np.float64),
                                 categories[keep][order]))
    return result


def _output(outputs: Mapping[str, np.ndarray], post: Postprocess, role: str) -> np.ndarray:
    """The output playing ``role``: named in the config, else the only (or first) output."""
    name = post.outputs.get(role)
    if name is not None:
        if name not in outputs:
            raise EvaluationError(f"postprocess.outputs.{role} is {name!r}, but the model's outputs are "
                                  f"{', '.join(outputs)}")
        return np.asarray(outputs[name])
    return np.asarray(next(iter(outputs.values())))


def _decode_reference004(outputs: Mapping[str, np.ndarray], post: Postprocess) -> list[tuple[np.ndarray, ...]]:
    location = _output(outputs, post, "location")
    score = _output(outputs, post, "score")
    category = _output(outputs, post, "category")
    if location.ndim != 3 or location.shape[-1] != 4 or score.shape != location.shape[:2] \
            or category.shape != location.shape[:2]:
        raise EvaluationError(f"reference004 outputs need location [B, N, 4], score [B, N], category [B, N]; got "
                              f"{list(location.shape)}, {list(score.shape)}, {list(category.shape)}")
    return [(location[b].astype(np.float64), score[b].astype(np.float64), category[b])
            for b in range(location.shape[0])]


def _decode_torchvision(outputs: Mapping[str, np.ndarray], post: Postprocess,
                        batch: int) -> list[tuple[np.ndarray, ...]]:
    boxes = _output(outputs, post, "boxes")
    labels = _output(outputs, post, "labels")
    scores = _output(outputs, post, "scores")
    if boxes.ndim == 2:
        if batch != 1:
            raise EvaluationError("torchvision detection outputs ([N, 4] boxes) hold one image: use --batch-size 1")
        boxes, labels, scores = boxes[None], labels[None], scores[None]
    if boxes.shape[-1] != 4 or labels.shape != boxes.shape[:-1] or scores.shape != boxes.shape[:-1]:
        raise EvaluationError(f"torchvision outputs need boxes [N, 4], labels [N], scores [N]; got "
                              f"{list(boxes.shape)}, {list(labels.shape)}, {list(scores.shape)}")
    return [(boxes[b].astype(np.float64), scores[b].astype(np.float64), labels[b]) for b in range(boxes.shape[0])]


def decode_yolo(head: np.ndarray, post: Postprocess,
                classes: int | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A raw YOLOv8-style head [B, 4 + C, A] (or [B, A, 4 + C]), cx cy w h + class scores, to boxes
    (x1y1x2y2, input pixels), scores and class indices after class-wise NMS.

    The layout is the one whose channel axis has 4 + ``classes`` entries (without ``classes``: the
    shorter axis, as anchors outnumber channels in real heads). Candidates keep their best class
    only, as ultralytics' own validation does for single-label data.
    """
    if head.ndim != 3 or max(head.shape[1:]) < 5:
        raise EvaluationError(f"a YOLO head has shape [batch, 4 + classes, anchors]; got {list(head.shape)}")
    channels_last = head.shape[2] == 4 + classes if classes else head.shape[1] > head.shape[2]
    if channels_last and head.shape[1] != head.shape[2]:
        head = head.transpose(0, 2, 1)
    if classes and head.shape[1] != 4 + classes:
        raise EvaluationError(f"a YOLO head for {classes} classes has 4 + {classes} channels; got shape "
                              f"{list(head.shape)}: set postprocess.category_ids to the model's classes")
    result = []
    for image in head.astype(np.float64):
        xywh, classes = image[:4].T, image[4:].T
        best = classes.argmax(axis=1)
        scores = classes[np.arange(len(best)), best]
        keep = scores >= post.score_threshold
        xywh, scores, best = xywh[keep], scores[keep], best[keep]
        boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
        chosen = batched_nms(boxes, scores, best, post.iou_threshold)[: post.max_detections]
        result.append((boxes[chosen], scores[chosen], best[chosen]))
    return result


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy class-wise non-maximum suppression; indices of the kept boxes, best score first.

    Written in numpy because torchvision.ops.nms is not a dependency of onnx2fx (torchvision's wheels
    pin one torch build); it follows torchvision's semantics: a box is suppressed when its IoU with a
    kept box of the same class is strictly greater than the threshold, ties broken by input order.
    """
    order = np.argsort(-scores, kind="stable")
    # Offsetting each class by more than the largest coordinate keeps classes from overlapping.
    shifted = boxes + (classes.astype(np.float64) * (np.abs(boxes).max(initial=0.0) + 1.0))[:, None]
    areas = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = (np.minimum(shifted[i, 2], shifted[rest, 2]) - np.maximum(shifted[i, 0], shifted[rest, 0])).clip(0)
        h = (np.minimum(shifted[i, 3], shifted[rest, 3]) - np.maximum(shifted[i, 1], shifted[rest, 1])).clip(0)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def _category_ids(classes: np.ndarray, config: TaskConfig, dataset_ids: Sequence[int]) -> np.ndarray:
    """Model classes -> dataset category ids (see task.py)."""
    classes = np.rint(np.asarray(classes, dtype=np.float64)).astype(np.int64)
    table = config.postprocess.category_ids
    if table is None and config.preset == "yolo":
        table = tuple(dataset_ids)
    if table is None:
        return classes
    lookup = np.asarray(table, dtype=np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= len(lookup)):
        raise EvaluationError(f"the model predicted class {int(classes.max())} but only {len(lookup)} category ids "
                              "are known: set postprocess.category_ids in the task config")
    return lookup[classes]
