"""The task config: how images become model inputs and model outputs become predictions.

One small YAML (or JSON) file per model; every key is checked, so a typo is an error that names the
file and the key rather than a silently ignored setting::

    preset: reference004        # reference004 | torchvision | yolo | logits (fills in what follows)
    task: detection             # detection | classification
    input: input                # the model input fed with images (default: the first one)
    preprocess:
      size: [320, 320]          # model input height, width (default: the model's static size, else the image's)
      resize: stretch           # stretch | letterbox | none
      scale: 0.00392156862745098  # pixel values are multiplied by this (1/255) ...
      mean: [0.0, 0.0, 0.0]     # ... then have mean subtracted ...
      std: [1.0, 1.0, 1.0]      # ... and are divided by std
      channels: rgb             # rgb | bgr
      layout: nchw              # nchw | nhwc
      pad_value: 114            # letterbox border (pixel value before scaling)
    postprocess:
      outputs: {location: location, score: score, category: category}  # output name per role
      boxes: normalized         # normalized | pixels (of the model input), x1y1x2y2 (cxcywh for yolo)
      category_ids: null        # class index -> dataset category id (default: see below)
      score_threshold: 0.0      # detections below are dropped
      iou_threshold: 0.7        # NMS, for presets that need it (yolo)
      max_detections: 100       # per image, best scores first
    visualize: 8                # images drawn with their predictions (0: none)

Presets, the output conventions users meet:

- ``reference004``: outputs ``location`` [B, N, 4] normalized x1y1x2y2, ``score`` [B, N], ``category``
  [B, N] 1-indexed dataset category ids; RGB in [0, 1], NCHW.
- ``torchvision``: torchvision detection models exported to ONNX: ``boxes`` [N, 4] x1y1x2y2 in input
  pixels, ``labels`` [N] category ids as is, ``scores`` [N] (batch size 1).
- ``yolo``: a raw YOLOv8-style head [B, 4 + C, A] (or [B, A, 4 + C]) with cx, cy, w, h in input pixels
  and per-class scores; decoded, then class-wise NMS; letterboxed RGB in [0, 1].
- ``logits``: classification logits (or probabilities) [B, C]; class index = label.

Class indices map to dataset category ids through ``category_ids`` when given; otherwise reference
004's and torchvision's categories are used as they are, and a YOLO class index ``i`` is the ``i``-th
dataset category in id order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import EvaluationError

PRESETS = ("reference004", "torchvision", "yolo", "logits")
RESIZE_MODES = ("stretch", "letterbox", "none")


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] | None = None
    resize: str = "stretch"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: str = "rgb"
    layout: str = "nchw"
    pad_value: float = 114.0


@dataclass(frozen=True)
class Postprocess:
    outputs: dict[str, str] = field(default_factory=dict)
    boxes: str = "normalized"
    category_ids: tuple[int, ...] | None = None
    score_threshold: float = 0.0
    iou_threshold: float = 0.7
    max_detections: int = 100


@dataclass(frozen=True)
class TaskConfig:
    """Everything between a dataset image and a scored prediction, for one model."""

    preset: str = "reference004"
    task: str = "detection"
    input: str | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)
    postprocess: Postprocess = field(default_factory=Postprocess)
    visualize: int = 8

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def preset(name: str) -> TaskConfig:
    """The defaults of one output convention (see the module docstring)."""
    if name == "reference004":
        return TaskConfig(preset=name, postprocess=Postprocess(
            outputs={"location": "location", "score": "score", "category": "category"}, boxes="normalized"))
    if name == "torchvision":
        return TaskConfig(preset=name, postprocess=Postprocess(
            outputs={"boxes": "boxes", "labels": "labels", "scores": "scores"}, boxes="pixels"))
    if name == "yolo":
        return TaskConfig(preset=name, preprocess=Preprocess(resize="letterbox"), postprocess=Postprocess(
            outputs={}, boxes="pixels", score_threshold=0.001, iou_threshold=0.7, max_detections=300))
    if name == "logits":
        return TaskConfig(preset=name, task="classification",
                          preprocess=Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    raise EvaluationError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")


_TOP_KEYS = {"preset", "task", "input", "preprocess", "postprocess", "visualize"}


def load_task_config(source: str | os.PathLike[str] | Mapping[str, Any] | TaskConfig | None,
                     default_preset: str = "reference004") -> TaskConfig:
    """A :class:`TaskConfig` from a YAML/JSON file, a mapping, a preset name or None (the default preset)."""
    if isinstance(source, TaskConfig):
        return source
    if source is None:
        return preset(default_preset)
    if isinstance(source, str) and source in PRESETS:
        return preset(source)
    where = "task config"
    if not isinstance(source, Mapping):
        path = Path(source)
        where = f"task config {path}"
        if not path.is_file():
            raise EvaluationError(f"{where} does not exist (or give a preset: {', '.join(PRESETS)})")
        text = path.read_text()
        try:
            if path.suffix == ".json":
                source = json.loads(text)
            else:
                import yaml

                source = yaml.safe_load(text) or {}
        except (ValueError, Exception) as exc:  # yaml.YAMLError derives from Exception only
            raise EvaluationError(f"{where} cannot be parsed: {exc}") from None
        if not isinstance(source, Mapping):
            raise EvaluationError(f"{where}: expected a mapping at the top level")
    return _from_mapping(source, where, default_preset)


def _from_mapping(data: Mapping[str, Any], where: str, default_preset: str) -> TaskConfig:
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise EvaluationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (allowed: "
                              f"{', '.join(sorted(_TOP_KEYS))})")
    base = preset(_choice(data.get("preset", default_preset), PRESETS, where, "preset"))
    task = _choice(data.get("task", base.task), ("detection", "classification"), where, "task")
    name = data.get("input", base.input)
    if name is not None and not isinstance(name, str):
        raise EvaluationError(f"{where}: 'input' must be an input name, got {name!r}")
    visualize = data.get("visualize", base.visualize)
    if not isinstance(visualize, int) or isinstance(visualize, bool) or visualize < 0:
        raise EvaluationError(f"{where}: 'visualize' must be a non-negative integer, got {visualize!r}")
    pre = _section(data.get("preprocess"), base.preprocess, where, "preprocess")
    post = _section(data.get("postprocess"), base.postprocess, where, "postprocess")
    return TaskConfig(base.preset, task, name, pre, post, visualize)


def _choice(value: Any, allowed: tuple[str, ...], where: str, key: str) -> str:
    if value not in allowed:
        raise EvaluationError(f"{where}: '{key}' is {value!r}, expected one of {', '.join(allowed)}")
    return str(value)


def _numbers(value: Any, where: str, key: str, count: int | None = None, integer: bool = False) -> tuple:
    kind = int if integer else (int, float)
    if not isinstance(value, (list, tuple)) or not value or (count and len(value) != count) or \
            not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        what = f"{count} " if count else ""
        raise EvaluationError(f"{where}: '{key}' must be a list of {what}{'integers' if integer else 'numbers'}, "
                              f"got {value!r}")
    return tuple(value)


def _section(data: Any, base: Any, where: str, name: str) -> Any:
    if data is None:
        return base
    if not isinstance(data, Mapping):
        raise EvaluationError(f"{where}: '{name}' must be a mapping")
    allowed = set(base.__dataclass_fields__)
    unknown = set(data) - allowed
    if unknown:
        raise EvaluationError(f"{where}: unknown key(s) {', '.join(f'{name}.{k}' for k in sorted(unknown))} "
                              f"(allowed: {', '.join(sorted(allowed))})")
    values: dict[str, Any] = {}
    for key, value in data.items():
        label = f"{name}.{key}"
        if key == "size":
            values[key] = None if value is None else _numbers(value, where, label, 2, integer=True)
        elif key in ("mean", "std"):
            values[key] = _numbers(value, where, label)
            if key == "std" and any(v == 0 for v in values[key]):
                raise EvaluationError(f"{where}: '{label}' must not contain 0")
        elif key == "category_ids":
            values[key] = None if value is None else _numbers(value, where, label, integer=True)
        elif key == "resize":
            values[key] = _choice(value, RESIZE_MODES, where, label)
        elif key == "channels":
            values[key] = _choice(value, ("rgb", "bgr"), where, label)
        elif key == "layout":
            values[key] = _choice(value, ("nchw", "nhwc"), where, label)
        elif key == "boxes":
            values[key] = _choice(value, ("normalized", "pixels"), where, label)
        elif key == "outputs":
            if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
                raise EvaluationError(f"{where}: '{label}' must map roles to output names")
            values[key] = {**base.outputs, **value}
        elif key == "max_detections":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EvaluationError(f"{where}: '{label}' must be a positive integer, got {value!r}")
            values[key] = value
        else:  # scale, pad_value, score_threshold, iou_threshold
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise EvaluationError(f"{where}: '{label}' must be a number, got {value!r}")
            values[key] = float(value)
    return replace(base, **values)
