"""X3D-M, built by pytorchvideo's own hub entry and exported with ``torch.onnx.export``.

pytorchvideo has no exporter of its own; its users call ``torch.onnx.export`` on the module that
``pytorchvideo.models.hub.x3d_m`` builds (16 frames, 224x224 crop, width 2.0, depth 2.2, 400
Kinetics classes, softmax head). The zoo does the same with ``pretrained=False`` so that the
weights are random under the fixed seed instead of downloaded. The head's global pooling kernel is
sized for 16x224x224 clips, so only the batch dimension can be dynamic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.zoo.registry import SEED, ZooModel, register

FRAMES = 16
CROP = 224


def _pytorchvideo_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytorchvideo")
    except PackageNotFoundError:
        return "not installed"


def build_x3d_m() -> torch.nn.Module:
    """pytorchvideo's X3D-M with random weights (its modules import torchvision, hence the shim)."""
    from benchmarks.zoo.torchvision_ops import import_torchvision

    import_torchvision()
    from pytorchvideo.models.hub import x3d_m

    return x3d_m(pretrained=False).eval()


def clip_inputs(batch: int) -> dict[str, np.ndarray]:
    """A seeded batch of normalised 16-frame 224x224 RGB clips (N, C, T, H, W)."""
    rng = np.random.default_rng(SEED)
    return {"video": rng.standard_normal((batch, 3, FRAMES, CROP, CROP), dtype=np.float32)}


def export_x3d_m(path: Path, dynamic_batch: bool) -> None:
    """``torch.onnx.export`` with its defaults (the dynamo exporter in torch 2.x), weights inside the file."""
    model = build_x3d_m()
    example = (torch.from_numpy(clip_inputs(2 if dynamic_batch else 1)["video"]),)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic_batch else None
    with torch.no_grad():
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=["video"],
            output_names=["probabilities"],
            dynamic_shapes=dynamic_shapes,
            external_data=False,
        )


register(
    ZooModel(
        name="x3d_m",
        title="X3D-M",
        library=f"pytorchvideo {_pytorchvideo_version()}",
        export=export_x3d_m,
        inputs=clip_inputs,
        notes="pytorchvideo.models.hub.x3d_m(pretrained=False); torch.onnx.export (dynamo); 1x3x16x224x224",
        tags=("video", "cnn", "conv3d"),
    )
)
