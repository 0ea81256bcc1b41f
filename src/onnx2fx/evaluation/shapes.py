"""A synthetic shapes detection dataset (triangles, squares, circles on textured backgrounds).

It exists so that detection can be exercised end to end without downloading anything: the example
detector in ``examples/shapes_detection`` is trained on it, the tests evaluate that detector on a few
of its images, and the benchmark times evaluation on 500 of them. Generation is deterministic in the
seed: image ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so any prefix of a dataset is
the same whatever its total size.

Layouts written by :func:`write_shapes_dataset`:

- ``coco``: ``annotations.json`` (COCO detection) + ``images/000000.png`` ...
- ``jsonl``: reference 004's ``dataset.jsonl`` + ``data/000000.png`` ...; each line is
  ``{"image": "data/000000.png", "width": W, "height": H, "boxes": [[x1, y1, x2, y2], ...] (pixels),
  "labels": [1, ...] (1-indexed category ids)}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CATEGORIES = ({"id": 1, "name": "triangle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "circle"})


@dataclass(frozen=True)
class ShapesImage:
    """One generated image (H x W x 3 uint8) and its objects: pixel boxes x1y1x2y2 and 1-indexed labels."""

    pixels: np.ndarray
    boxes: np.ndarray  # float32 [N, 4]
    labels: np.ndarray  # int64 [N]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Texture: a colour gradient, sinusoidal stripes and pixel noise, so boxes are not found by colour alone."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    tilt = rng.uniform(-60, 60, size=(2, 3)).astype(np.float32)
    image = base + xx[..., None] * tilt[0] + yy[..., None] * tilt[1]
    angle, freq = rng.uniform(0, np.pi), rng.uniform(8, 30)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq * np.pi)
    image += stripes[..., None] * rng.uniform(5, 25)
    image += rng.normal(0, 8, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_shapes_image(seed: int, index: int, size: int = 320, max_objects: int = 4) -> ShapesImage:
    """Image ``index`` of the dataset with ``seed``: 1 to ``max_objects`` shapes, overlapping little."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, index])
    image = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(image)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            side = float(rng.uniform(0.08, 0.3) * size)
            x1, y1 = rng.uniform(0, size - side, size=2)
            box = np.array([x1, y1, x1 + side, y1 + side], dtype=np.float32)
            if all(_iou(box, other) < 0.2 for other in boxes):
                break
        else:
            continue
        label = int(rng.integers(1, 4))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x1, y1, x2, y2 = (float(v) for v in box)
        if label == 1:
            draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=colour)
        elif label == 2:
            draw.rectangle([x1, y1, x2, y2], fill=colour)
        else:
            draw.ellipse([x1, y1, x2, y2], fill=colour)
        boxes.append(box)
        labels.append(label)
    return ShapesImage(np.asarray(image), np.array(boxes, dtype=np.float32).reshape(-1, 4),
                       np.array(labels, dtype=np.int64))


def write_shapes_dataset(out_dir: str | os.PathLike[str], count: int, *, seed: int = 0, size: int = 320,
                         layout: str = "coco") -> Path:
    """Write ``count`` images in the ``coco`` or ``jsonl`` layout (see the module docstring)."""
    from PIL import Image

    if layout not in ("coco", "jsonl"):
        raise ValueError(f"layout {layout!r}: expected 'coco' or 'jsonl'")
    root = Path(out_dir)
    folder = root / ("images" if layout == "coco" else "data")
    folder.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    lines: list[str] = []
    for i in range(count):
        sample = make_shapes_image(seed, i, size)
        name = f"{i:06d}.png"
        Image.fromarray(sample.pixels).save(folder / name)
        rounded = [[round(float(v), 2) for v in box] for box in sample.boxes]
        if layout == "jsonl":
            lines.append(json.dumps({"image": f"data/{name}", "width": size, "height": size, "boxes": rounded,
                                     "labels": [int(v) for v in sample.labels]}))
            continue
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for box, label in zip(rounded, sample.labels):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label),
                                "bbox": [box[0], box[1], round(w, 2), round(h, 2)], "area": round(w * h, 2),
                                "iscrowd": 0})
    if layout == "jsonl":
        (root / "dataset.jsonl").write_text("\n".join(lines) + "\n")
    else:
        document = {"images": images, "annotations": annotations, "categories": list(CATEGORIES)}
        (root / "annotations.json").write_text(json.dumps(document) + "\n")
    return root
