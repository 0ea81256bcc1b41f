"""torchvision models: Faster R-CNN ResNet-50 FPN.

Built with ``weights=None, weights_backbone=None`` under the registry's seed and exported as
torchvision documents it (``fasterrcnn_resnet50_fpn``'s docstring and its ONNX tests): the
TorchScript exporter at opset 11, the model called on a list holding one 3xHxW image. The graph keeps
the model's own preprocessing (resize to a shorter side of 800, normalisation, padding to a multiple
of 32) and post-processing, so it contains NonMaxSuppression, RoiAlign, TopK and shapes that depend
on the data (how many boxes survive each stage).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.zoo.registry import SEED, ZooModel, register, torchscript_export
from benchmarks.zoo.torchvision_ops import import_torchvision

OPSET = 11  # the opset torchvision's documentation and ONNX tests export detection models with
IMAGE_SHAPE = (3, 480, 640)  # a VGA photo; the model resizes it to 800x1067 itself


def fasterrcnn_inputs(batch: int) -> dict[str, np.ndarray]:
    """One seeded RGB image with values in [0, 1], as torchvision detection models take them.

    The ONNX input is a single 3xHxW image (the exported list holds one), so there is no batch axis.
    """
    if batch != 1:
        raise ValueError("the exported Faster R-CNN takes one image; it has no batch axis")
    return {"images": np.random.default_rng(SEED).random(IMAGE_SHAPE, dtype=np.float32)}


def export_fasterrcnn(path: Path, dynamic_batch: bool) -> None:
    """torchvision's documented export: ``torch.onnx.export(model, [image], ..., opset_version=11)``."""
    if dynamic_batch:
        raise ValueError("the exported Faster R-CNN takes one image; it has no batch axis")
    import_torchvision()
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    image = torch.from_numpy(fasterrcnn_inputs(1)["images"])
    torchscript_export(model, ([image],), path, OPSET, ["images"], ["boxes", "labels", "scores"])


register(
    ZooModel(
        name="fasterrcnn",
        title="Faster R-CNN ResNet-50 FPN",
        library="torchvision 0.28.0",
        export=export_fasterrcnn,
        inputs=fasterrcnn_inputs,
        dynamic_batch=False,
        notes="fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None); input one 3x480x640 image in [0, 1], "
        "resized in-graph to 800x1067; outputs boxes (N x 4), labels (N), scores (N), N <= 100 data-dependent.",
        tags=("detection", "cnn", "data-dependent-shapes"),
    )
)
