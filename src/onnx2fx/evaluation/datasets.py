"""Evaluation datasets: what the images are and what the right answers are.

Four layouts are recognised by :func:`load_dataset` (each checked fully before any model runs, so a
missing image or a corrupt annotation is reported, by name, before minutes of inference are spent):

- **COCO detection**: a COCO ``instances`` JSON file (or a folder holding ``annotations.json`` or one
  ``instances*.json``) and its images, found beside the JSON file, in ``images/`` next to it, or
  under ``image_root``.
- **Reference 004's layout**: a folder with ``dataset.jsonl`` and ``data/``; each line is one image,
  ``{"image": "data/x.png", "boxes": [[x1, y1, x2, y2], ...], "labels": [1, ...]}`` with boxes in
  pixels and 1-indexed labels (``file_name``/``image_path``/``path``, ``bboxes``/``categories`` are
  accepted too; ``width``/``height`` are read from the image when absent).
- **ImageFolder classification**: ``root/<class name>/<image>``; classes are the sorted folder names.
- **Arrays**: an ``.npz`` with ``inputs`` (or ``x``), already preprocessed, and integer ``labels``
  (or ``y``), for classification.

Order is deterministic: COCO by image id, the others by file order or name. Detection ground truth
is always available as a COCO document (:meth:`Dataset.coco_ground_truth`), converted when the
dataset is not COCO, so that pycocotools scores every layout the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Sample:
    """One evaluation item: an image file (or a preprocessed array) and its id in the ground truth."""

    image_id: int
    name: str
    path: Path | None = None
    array: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    label: int | None = None  # classification: the class index

    def load_rgb(self) -> np.ndarray:
        """The image as H x W x 3 uint8 RGB; a file that is not a readable image is a DatasetError naming it."""
        from PIL import Image, UnidentifiedImageError

        assert self.path is not None
        try:
            with Image.open(self.path) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DatasetError(f"image {self.path} cannot be read: {exc}") from None


@dataclass
class Dataset:
    """Samples in evaluation order plus the ground truth they are scored against."""

    task: str  # "detection" or "classification"
    source: Path
    layout: str
    samples: list[Sample]
    categories: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)  # detection, COCO annotations

    @property
    def name(self) -> str:
        return self.source.stem if self.source.is_file() else self.source.name

    def limited(self, limit: int | None) -> Dataset:
        """The first ``limit`` samples (and only their annotations)."""
        if limit is None or limit >= len(self.samples):
            return self
        if limit < 1:
            raise DatasetError(f"limit {limit}: must be at least 1")
        samples = self.samples[:limit]
        kept = {s.image_id for s in samples}
        return Dataset(self.task, self.source, self.layout, samples, self.categories,
                       [a for a in self.annotations if a["image_id"] in kept])

    def image_ids(self) -> list[int]:
        return [s.image_id for s in self.samples]

    def coco_ground_truth(self) -> dict[str, Any]:
        """The detection ground truth as a COCO document (images, annotations, categories)."""
        images = [{"id": s.image_id, "file_name": s.name, "width": s.width, "height": s.height} for s in self.samples]
        return {"images": images, "annotations": self.annotations, "categories": self.categories}

    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)


def load_dataset(path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None) -> Dataset:
    """Recognise the layout of ``path`` (see the module docstring) and check it completely."""
    source = Path(path)
    if not source.exists():
        raise DatasetError(f"dataset {source} does not exist")
    if source.is_file():
        if source.suffix == ".npz":
            return _npz(source)
        if source.suffix == ".json":
            return _coco(source, Path(image_root) if image_root else None)
        if source.name.endswith(".jsonl"):
            return _jsonl(source)
        raise DatasetError(f"dataset {source}: expected a COCO .json, a dataset.jsonl, an .npz or a folder")
    if (source / "dataset.jsonl").is_file():
        return _jsonl(source / "dataset.jsonl")
    candidates = [source / "annotations.json"] if (source / "annotations.json").is_file() else \
        sorted(source.glob("instances*.json"))
    if len(candidates) == 1:
        return _coco(candidates[0], Path(image_root) if image_root else None)
    if len(candidates) > 1:
        raise DatasetError(f"dataset {source} holds several annotation files ({', '.join(c.name for c in candidates)})"
                           ": pass the one to use")
    return _image_folder(source)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"annotation file {path} is not valid JSON: {exc}") from None


def _number_list(value: Any, length: int) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value):
        return None
    return [float(v) for v in value]


def _coco(path: Path, image_root: Path | None) -> Dataset:
    document = _read_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list) \
            or not isinstance(document.get("annotations"), list):
        raise DatasetError(f"annotation file {path} is not a COCO detection file (needs 'images' and 'annotations')")
    categories = document.get("categories") or []
    category_ids = {c.get("id") for c in categories if isinstance(c, dict)}
    roots = [image_root] if image_root else [path.parent / "images", path.parent]
    samples: list[Sample] = []
    for image in document["images"]:
        if not isinstance(image, dict) or not isinstance(image.get("id"), int) or not image.get("file_name"):
            raise DatasetError(f"annotation file {path}: image entry {image!r} needs an integer 'id' and 'file_name'")
        found = next((r / image["file_name"] for r in roots if (r / image["file_name"]).is_file()), None)
        if found is None:
            raise DatasetError(f"image {image['file_name']} (id {image['id']}) listed in {path} does not exist "
                               f"under {' or '.join(str(r) for r in roots)}")
        samples.append(Sample(image["id"], image["file_name"], found, width=image.get("width"),
                              height=image.get("height")))
    ids = {s.image_id for s in samples}
    if len(ids) != len(samples):
        raise DatasetError(f"annotation file {path}: image ids are not unique")
    annotations: list[dict[str, Any]] = []
    for a in document["annotations"]:
        where = f"annotation file {path}: annotation {a.get('id', '?') if isinstance(a, dict) else a!r}"
        if not isinstance(a, dict):
            raise DatasetError(f"{where} is not an object")
        box = _number_list(a.get("bbox"), 4)
        if box is None or box[2] < 0 or box[3] < 0:
            raise DatasetError(f"{where} has bbox {a.get('bbox')!r}: expected [x, y, width, height] with "
                               "non-negative width and height")
        if a.get("image_id") not in ids:
            raise DatasetError(f"{where} refers to image id {a.get('image_id')!r}, which is not in 'images'")
        if category_ids and a.get("category_id") not in category_ids:
            raise DatasetError(f"{where} has category_id {a.get('category_id')!r}, which is not in 'categories'")
        annotations.append({**a, "bbox": box, "area": float(a.get("area", box[2] * box[3])),
                            "iscrowd": int(a.get("iscrowd", 0))})
    if not categories:
        categories = [{"id": c, "name": str(c)} for c in sorted({a["category_id"] for a in annotations})]
    samples.sort(key=lambda s: s.image_id)
    for i, a in enumerate(annotations):
        a.setdefault("id", i + 1)
    return _with_sizes(Dataset("detection", path.parent if path.name == "annotations.json" else path, "coco",
                               samples, sorted(categories, key=lambda c: c["id"]), annotations))


def _first(entry: dict[str, Any], keys: Sequence[str]) -> Any:
    return next((entry[k] for k in keys if k in entry), None)


def _jsonl(path: Path) -> Dataset:
    samples: list[Sample] = []
    annotations: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where} is not valid JSON: {exc}") from None
        if not isinstance(entry, dict):
            raise DatasetError(f"{where} is not a JSON object")
        name = _first(entry, ("image", "file_name", "image_path", "path"))
        if not isinstance(name, str):
            raise DatasetError(f"{where} names no image (key 'image')")
        image_path = path.parent / name
        if not image_path.is_file():
            raise DatasetError(f"image {name} listed in {where} does not exist ({image_path})")
        boxes = _first(entry, ("boxes", "bboxes")) or []
        labels = _first(entry, ("labels", "categories", "category_ids")) or []
        if not isinstance(boxes, list) or not isinstance(labels, list) or len(boxes) != len(labels):
            raise DatasetError(f"{where}: 'boxes' and 'labels' must be lists of the same length")
        image_id = len(samples) + 1
        for box, label in zip(boxes, labels):
            xyxy = _number_list(box, 4)
            if xyxy is None or xyxy[2] < xyxy[0] or xyxy[3] < xyxy[1]:
                raise DatasetError(f"{where} has box {box!r}: expected [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1")
            if not isinstance(label, int) or isinstance(label, bool) or label < 1:
                raise DatasetError(f"{where} has label {label!r}: expected a 1-indexed integer category")
            w, h = xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [xyxy[0], xyxy[1], w, h], "area": w * h, "iscrowd": 0})
        samples.append(Sample(image_id, name, image_path, width=entry.get("width"), height=entry.get("height")))
    if not samples:
        raise DatasetError(f"{path} lists no images")
    names = _category_names(path.parent)
    ids = sorted({a["category_id"] for a in annotations} | set(names))
    categories = [{"id": c, "name": names.get(c, str(c))} for c in ids]
    return _with_sizes(Dataset("detection", path.parent, "jsonl", samples, categories, annotations))


def _category_names(folder: Path) -> dict[int, str]:
    """Optional ``categories.json`` beside ``dataset.jsonl``: ``{"1": "triangle", ...}`` or a COCO list."""
    path = folder / "categories.json"
    if not path.is_file():
        return {}
    document = _read_json(path)
    if isinstance(document, dict):
        return {int(k): str(v) for k, v in document.items()}
    return {int(c["id"]): str(c["name"]) for c in document}


def _with_sizes(dataset: Dataset) -> Dataset:
    """Fill in image sizes the annotations leave out, reading only the image headers."""
    from PIL import Image, UnidentifiedImageError

    for i, s in enumerate(dataset.samples):
        if s.width and s.height:
            continue
        try:
            with Image.open(s.path) as image:
                width, height = image.size
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"image {s.path} cannot be read: {exc}") from None
        dataset.samples[i] = Sample(s.image_id, s.name, s.path, width=width, height=height)
    return dataset


def _image_folder(root: Path) -> Dataset:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"dataset folder {root} has no dataset.jsonl, COCO annotations or class folders")
    samples: list[Sample] = []
    for index, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(len(samples) + 1, f"{name}/{file.name}", file, label=index))
    if not samples:
        raise DatasetError(f"dataset folder {root}: the class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    categories = [{"id": i, "name": n} for i, n in enumerate(classes)]
    return Dataset("classification", root, "imagefolder", samples, categories)


def _npz(path: Path) -> Dataset:
    try:
        arrays = np.load(path, allow_pickle=False)
        keys = set(arrays.files)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} cannot be read as .npz: {exc}") from None
    inputs_key = next((k for k in ("inputs", "x") if k in keys), None)
    labels_key = next((k for k in ("labels", "y") if k in keys), None)
    if inputs_key is None or labels_key is None:
        raise DatasetError(f"{path} needs arrays 'inputs' (or 'x') and 'labels' (or 'y'); it has {sorted(keys)}")
    inputs, labels = arrays[inputs_key], arrays[labels_key]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}: '{labels_key}' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(inputs) != len(labels):
        raise DatasetError(f"{path}: {len(inputs)} inputs but {len(labels)} labels")
    samples = [Sample(i + 1, f"{path.name}[{i}]", array=inputs[i], label=int(labels[i])) for i in range(len(labels))]
    classes = int(labels.max()) + 1 if len(labels) else 0
    return Dataset("classification", path, "npz", samples, [{"id": i, "name": str(i)} for i in range(classes)])
