"""YOLOv8n and YOLO11n, built by ultralytics from its model YAMLs and exported with ``YOLO.export``.

Users of ultralytics get ONNX files from ``model.export(format="onnx")`` with its defaults: the
TorchScript-based exporter at the opset ultralytics picks for the installed torch, then onnxslim.
The zoo does the same so the converter sees exactly what those users feed it (the raw head output
``(batch, 84, anchors)``, no NMS). The dynamic variant is ``dynamic=True``, which makes batch,
height and width dynamic, as ultralytics does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.zoo.registry import SEED, ZooModel, register

IMAGE_SIZE = 640


def _ultralytics_version() -> str:
    """The installed ultralytics version without importing it (its import reads settings)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ultralytics")
    except PackageNotFoundError:
        return "not installed"


def _import_yolo() -> type:
    """Import ``ultralytics.YOLO`` kept offline.

    ultralytics checks connectivity at import time (``YOLO_OFFLINE``) and keeps a settings file; the
    variables make it skip every network call (telemetry, asset downloads, pip auto-updates) and keep
    its settings away from the user's own configuration directory.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "onnx2fx-zoo-ultralytics"))
    from benchmarks.zoo.torchvision_ops import import_torchvision

    import_torchvision()
    from ultralytics import YOLO

    return YOLO


def _exporter(yaml_name: str) -> Callable[[Path, bool], None]:
    """An export function for the registry: random weights (seeded by the caller), ``YOLO.export``."""

    def export(path: Path, dynamic_batch: bool) -> None:
        yolo_class = _import_yolo()
        with tempfile.TemporaryDirectory() as workdir, contextlib.chdir(workdir):
            # A YAML name builds the architecture with fresh weights; ultralytics writes <stem>.onnx
            # next to it, that is into the working directory, so the export runs in a scratch one.
            model = yolo_class(yaml_name)
            written = model.export(format="onnx", imgsz=IMAGE_SIZE, dynamic=dynamic_batch, device="cpu")
            shutil.move(str(Path(workdir) / written), path)

    return export


def image_inputs(batch: int) -> dict[str, np.ndarray]:
    """A seeded batch of 640x640 RGB images scaled to [0, 1], what ultralytics' preprocessing feeds the model."""
    rng = np.random.default_rng(SEED)
    return {"images": rng.random((batch, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)}


_LIBRARY = f"ultralytics {_ultralytics_version()}"

register(
    ZooModel(
        name="yolov8n",
        title="YOLOv8n",
        library=_LIBRARY,
        export=_exporter("yolov8n.yaml"),
        inputs=image_inputs,
        ci=True,
        notes='YOLO("yolov8n.yaml").export(format="onnx"), ultralytics defaults (onnxslim); 640x640',
        tags=("detection", "cnn"),
    )
)

register(
    ZooModel(
        name="yolo11n",
        title="YOLOv11",
        library=_LIBRARY,
        export=_exporter("yolo11n.yaml"),
        inputs=image_inputs,
        notes='YOLO("yolo11n.yaml").export(format="onnx"), ultralytics defaults (onnxslim); 640x640',
        tags=("detection", "cnn", "attention"),
    )
)
