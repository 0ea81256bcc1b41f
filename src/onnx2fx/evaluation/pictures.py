"""Pictures a person can check at a glance: predictions drawn on images, a confusion matrix.

Drawn with Pillow alone (already needed to read images), so evaluation needs no plotting library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))


def draw_detections(pixels: np.ndarray, predictions: Sequence[Mapping[str, Any]],
                    ground_truth: Sequence[Mapping[str, Any]], names: Mapping[int, str], path: Path,
                    min_score: float = 0.3) -> Path:
    """PNG of the image with ground truth (thin white) and predictions scoring at least ``min_score``
    (coloured by category, labelled with name and score); COCO ``bbox`` = [x, y, width, height]."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(pixels).convert("RGB")
    draw = ImageDraw.Draw(image)
    for a in ground_truth:
        x, y, w, h = a["bbox"]
        draw.rectangle([x, y, x + w, y + h], outline=(255, 255, 255), width=1)
    for p in predictions:
        if p["score"] < min_score:
            continue
        x, y, w, h = p["bbox"]
        colour = PALETTE[int(p["category_id"]) % len(PALETTE)]
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=2)
        text = f"{names.get(int(p['category_id']), p['category_id'])} {p['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x, y), text)
        draw.rectangle([left, top - (bottom - top) - 2, right + 2, top], fill=colour)
        draw.text((x + 1, y - (bottom - top) - 2), text, fill=(255, 255, 255))
    image.save(path)
    return path


def draw_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: Path, cell: int = 28) -> Path:
    """PNG of a confusion matrix (rows: true class, columns: predicted), shaded by row-normalized count."""
    from PIL import Image, ImageDraw

    classes = len(matrix)
    label_width = 8 + 7 * max((len(n) for n in names), default=1)
    side = label_width + classes * cell
    image = Image.new("RGB", (side + 4, side + 4), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    rows = matrix.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(classes):
        draw.text((4, label_width + i * cell + cell // 3), names[i], fill=(0, 0, 0))
        draw.text((label_width + i * cell + 2, 4), names[i][:4], fill=(0, 0, 0))
        for j in range(classes):
            shade = int(255 * (1 - matrix[i, j] / rows[i, 0]))
            box = [label_width + j * cell, label_width + i * cell, label_width + (j + 1) * cell,
                   label_width + (i + 1) * cell]
            draw.rectangle(box, fill=(shade, shade, 255), outline=(200, 200, 200))
            draw.text((box[0] + 3, box[1] + cell // 3), str(int(matrix[i, j])),
                      fill=(0, 0, 0) if shade > 128 else (255, 255, 255))
    image.save(path)
    return path
