"""timm models: EfficientViT-B1 (MIT HAN Lab's EfficientViT, multi-scale linear attention).

Built with ``timm.create_model(..., pretrained=False, exportable=True)`` under the registry's seed and
exported the way timm's own ``onnx_export.py`` does it: the TorchScript exporter (``dynamo=False``),
input ``input0`` and output ``output0``, here at opset 17 with the weights embedded in the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.zoo.registry import ZooModel, register, seeded_normal, torchscript_export
from benchmarks.zoo.torchvision_ops import import_torchvision

OPSET = 17
EFFICIENTVIT_SIZE = 224  # timm's default pretrained tag for efficientvit_b1 is r224_in1k


def efficientvit_inputs(batch: int) -> dict[str, np.ndarray]:
    """Seeded normalised images at EfficientViT-B1's native 224x224."""
    return {"input0": seeded_normal((batch, 3, EFFICIENTVIT_SIZE, EFFICIENTVIT_SIZE))}


def export_efficientvit(path: Path, dynamic_batch: bool) -> None:
    """timm ``efficientvit_b1`` (the MIT variant, not Microsoft's ``efficientvit_m*``), 1000 classes."""
    import_torchvision()
    import timm

    model = timm.create_model("efficientvit_b1", pretrained=False, exportable=True).eval()
    example = torch.from_numpy(efficientvit_inputs(1)["input0"])
    axes = {"input0": {0: "batch"}, "output0": {0: "batch"}} if dynamic_batch else None
    torchscript_export(model, (example,), path, OPSET, ["input0"], ["output0"], axes)


register(
    ZooModel(
        name="efficientvit",
        title="EfficientViT-B1 (MIT, 224x224)",
        library="timm 1.0.31",
        export=export_efficientvit,
        inputs=efficientvit_inputs,
        notes="timm efficientvit_b1 at its native 224x224 (pretrained tag r224_in1k; r256/r288 tags exist), "
        "1x3x224x224, ~9.1M parameters.",
        tags=("classification", "transformer"),
    )
)
