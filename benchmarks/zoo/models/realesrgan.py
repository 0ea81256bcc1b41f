"""Real-ESRGAN x2 (RRDBNet), built by spandrel and exported the way Real-ESRGAN's own script does.

The x2 model pixel-unshuffles the image by 2 and runs the x4 RRDB trunk (64 features, 23 RRDB
blocks, growth 32, two nearest-upsample stages), so its first convolution takes 12 channels.
spandrel is the maintained library that loads Real-ESRGAN checkpoints (basicsr, Real-ESRGAN's own
dependency, no longer imports on current torchvision). Its users hand it a checkpoint's state dict
and get the architecture that fits it; the zoo builds that state dict with random weights under the
fixed seed and lets spandrel's loader recognise it as the x2 model, so the module exported is the
one spandrel returns for Real-ESRGAN's ``RealESRGAN_x2plus.pth``.

Real-ESRGAN's ``scripts/pytorch2onnx.py`` exports with the TorchScript-based ``torch.onnx.export``
at opset 11; the zoo does the same. The dynamic variant makes batch, height and width dynamic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.zoo.registry import SEED, ZooModel, register, torchscript_export

TILE = 256  # a realistic tile: upscalers run large images tile by tile
OPSET = 11


def _spandrel_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spandrel")
    except PackageNotFoundError:
        return "not installed"


def build_realesrgan_x2() -> torch.nn.Module:
    """spandrel's RRDBNet for a Real-ESRGAN x2 checkpoint, with seeded random weights."""
    from benchmarks.zoo.torchvision_ops import import_torchvision

    import_torchvision()  # spandrel's architecture package imports torchvision
    from spandrel import ImageModelDescriptor, ModelLoader
    from spandrel.architectures.ESRGAN import ESRGAN

    # The x2 checkpoint's shapes: 3 * 2 * 2 input channels after pixel-unshuffle, the x4 trunk.
    template = ESRGAN(in_nc=12, out_nc=3, num_filters=64, num_blocks=23, scale=4, shuffle_factor=2)
    descriptor = ModelLoader().load_from_state_dict(template.state_dict())
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.scale != 2:
        raise RuntimeError(f"spandrel did not recognise a Real-ESRGAN x2 state dict: {descriptor!r}")
    return descriptor.model.eval()


def image_inputs(batch: int) -> dict[str, np.ndarray]:
    """A seeded batch of 256x256 RGB tiles in [0, 1], what Real-ESRGAN's inference feeds the model."""
    rng = np.random.default_rng(SEED)
    return {"image": rng.random((batch, 3, TILE, TILE), dtype=np.float32)}


def export_realesrgan_x2(path: Path, dynamic_batch: bool) -> None:
    """TorchScript-based ``torch.onnx.export`` at opset 11, as Real-ESRGAN's export script."""
    model = build_realesrgan_x2()
    example = torch.from_numpy(image_inputs(1)["image"])
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "upscaled": {0: "batch", 2: "height2", 3: "width2"}}
    torchscript_export(model, (example,), path, OPSET, ["image"], ["upscaled"], axes if dynamic_batch else None)


register(
    ZooModel(
        name="realesrgan_x2",
        title="Real-ESRGAN x2",
        library=f"spandrel {_spandrel_version()}",
        export=export_realesrgan_x2,
        inputs=image_inputs,
        notes="spandrel RRDBNet loaded from an x2 state dict (pixel-unshuffle 2, x4 trunk); "
        "torch.onnx.export TorchScript opset 11; 1x3x256x256",
        tags=("super-resolution", "cnn"),
    )
)
