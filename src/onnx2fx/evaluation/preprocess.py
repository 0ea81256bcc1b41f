"""Images to model inputs, remembering how each image was resized so boxes can be mapped back.

The same function feeds every model form, so onnxruntime and torch see identical arrays and a
metric difference between them is the model's alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DatasetError
from .datasets import Sample
from .task import Preprocess


@dataclass(frozen=True)
class Placement:
    """Where the original image lies in the model input: input pixel = original pixel * scale + pad."""

    width: int  # original image size
    height: int
    input_width: int
    input_height: int
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """x1y1x2y2 boxes in input pixels -> original image pixels, clipped to the image."""
        out = boxes.astype(np.float64).copy()
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad_x) / self.scale_x).clip(0, self.width)
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad_y) / self.scale_y).clip(0, self.height)
        return out


def preprocess_batch(samples: Sequence[Sample], options: Preprocess,
                     model_size: tuple[int, int] | None) -> tuple[np.ndarray, list[Placement]]:
    """A float32 batch for the model and each image's placement in it.

    Samples holding arrays (``.npz``) are stacked as they are: they are already model inputs.
    """
    if samples[0].array is not None:
        array = np.stack([np.asarray(s.array, dtype=np.float32) for s in samples])
        return array, [Placement(1, 1, 1, 1, 1.0, 1.0) for _ in samples]
    size = options.size or model_size
    images, placements = [], []
    for sample in samples:
        pixels = sample.load_rgb()
        image, placement = _resize(pixels, size, options)
        images.append(image)
        placements.append(placement)
    shapes = {i.shape for i in images}
    if len(shapes) > 1:
        raise DatasetError(f"images of different sizes {sorted(shapes)} in one batch and no input size: set "
                           "preprocess.size in the task config or use --batch-size 1")
    batch = np.stack(images).astype(np.float32)
    if options.channels == "bgr":
        batch = batch[..., ::-1]
    batch = batch * np.float32(options.scale)
    batch = (batch - np.asarray(options.mean, np.float32)) / np.asarray(options.std, np.float32)
    if options.layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32), placements


def _resize(pixels: np.ndarray, size: tuple[int, int] | None, options: Preprocess) -> tuple[np.ndarray, Placement]:
    from PIL import Image

    height, width = pixels.shape[:2]
    if size is None or options.resize == "none" or (height, width) == tuple(size):
        return pixels, Placement(width, height, width, height, 1.0, 1.0)
    target_h, target_w = size
    if options.resize == "stretch":
        resized = np.asarray(Image.fromarray(pixels).resize((target_w, target_h), Image.BILINEAR))
        return resized, Placement(width, height, target_w, target_h, target_w / width, target_h / height)
    ratio = min(target_w / width, target_h / height)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    canvas = np.full((target_h, target_w, 3), options.pad_value, dtype=np.uint8)
    pad_x, pad_y = (target_w - new_w) // 2, (target_h - new_h) // 2
    resized = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.BILINEAR))
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    return canvas, Placement(width, height, target_w, target_h, new_w / width, new_h / height, pad_x, pad_y)
