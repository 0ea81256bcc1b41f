"""onnx2fx post-training quantization against onnxruntime's ``quantize_static``.

For each model, both quantizers start from the same float ONNX file and the same calibration
samples, and both quantized models are measured the same way: the QDQ ONNX file each one writes
is run in onnxruntime (CPU, basic graph optimizations, so every QuantizeLinear/DequantizeLinear
runs as written) on held-out inputs that were not used for calibration, and compared with the
float ONNX model run the same way.

- ours: ``onnx2fx.quantization.ptq`` with every activation calibration scheme (minmax,
  percentile, mse, entropy); W8A8 with the defaults: weights int8 symmetric per output channel,
  activations uint8 asymmetric per tensor, int32 biases. The SQNR of the torch fake-quant model
  (``PTQResult.sim_model``) on the same inputs is reported beside it.
- onnxruntime: ``quantize_static`` in QDQ format, per-channel weights, activations QUInt8,
  weights QInt8, calibration methods MinMax, Entropy and Percentile (its defaults otherwise).
- ours with PTQ options (``--variants``): the minmax scheme again with cross-layer equalization
  (``cle=True``), bias correction (``bias_correction=True``), both, AdaRound (``adaround=True``, on
  ``--adaround-models`` only, ``--adaround-iterations`` per layer) and AdaRound with bias correction;
  the goal compares the plain schemes only.
- QFT (``--qft-samples``, 0 skips it): ResNet-50 at ``--qft-resolution``, W4A8 PTQ (minmax, weights
  per channel) and then ``onnx2fx.quantization.qft`` for ``--qft-epochs`` epoch(s) of distillation
  from the float model on the seeded random training images; both QDQ models are measured in
  onnxruntime on held-out inputs like the rows above. Goal: output SQNR after QFT > after PTQ.

Models:

- ``digits``: a small CNN trained here on scikit-learn's 8x8 digits (fixed seeds; calibration on
  training images, evaluation on the test split, so test accuracy is reported too);
- ``resnet50``: ``transformers`` ``ResNetForImageClassification(ResNetConfig(num_labels=1000))``
  (ResNet-50), random weights as the library initialises them (seeded);
- ``vit``: a small ``ViTForImageClassification`` (hidden 192, 4 layers, 3 heads, patch 16), random
  weights (seeded);
- ``digits_vit``: a tiny ``ViTForImageClassification`` (8x8 single-channel images, patch 2, hidden
  64, 2 layers, 4 heads, MLP 128) trained here on the digits split of ``digits`` (40 epochs, AdamW
  with a one-cycle learning rate, on one thread; about 15 s), calibrated and evaluated like ``digits``:
  does a ViT with trained weights behave like the random one?

All models are exported with ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic
batch); ResNet-50 and the random ViT are calibrated and evaluated on seeded standard-normal images.
The calibration overhead (pass and range search against the float forwards) is measured by
``calibration_overhead.py``, which writes its own section of the same file. Usage::

    python benchmarks/quant_compare.py [--resolution 224] [--calib-samples 32] [--eval-samples 32]
                                       [--models digits,resnet50,vit,digits_vit]
                                       [--variants cle,bias_correction,cle+bias_correction,adaround,...]
                                       [--adaround-models digits,vit,digits_vit] [--adaround-iterations 500]
                                       [--qft-samples 256] [--qft-resolution 64] [--output DIR]

The defaults take roughly half an hour or more on two CPU cores (ResNet-50 at 224x224 dominates; the
QFT section adds a few minutes at 64x64); lower ``--resolution`` and ``--calib-samples``, or pass
``--variants ''`` and ``--qft-samples 0``, for a quicker run.
Writes ``docs/quantization.md`` and ``benchmarks/results/quant_compare.json`` (``--output DIR``
writes both into DIR instead, for trial runs); the Markdown starts with the command that produced it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SCHEMES = ("minmax", "percentile", "mse", "entropy")
ORT_METHODS = ("MinMax", "Entropy", "Percentile")
MODELS = ("digits", "resnet50", "vit", "digits_vit")
VARIANTS = {"cle": {"cle": True}, "bias_correction": {"bias_correction": True},
            "cle+bias_correction": {"cle": True, "bias_correction": True}, "adaround": {"adaround": True},
            "adaround+bias_correction": {"adaround": True, "bias_correction": True}}
# AdaRound optimises every layer for its iterations on the CPU: ResNet-50 at 224x224 would take
# most of an hour, so by default its AdaRound rows are left out (--adaround-models).
ADAROUND_MODELS = ("digits", "vit", "digits_vit")


@dataclass
class Case:
    """One model to quantize: its float ONNX file and data."""

    name: str
    title: str
    onnx_path: Path
    input_name: str
    calib: np.ndarray
    evaluation: np.ndarray
    batch_size: int
    labels: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    build_seconds: float = 0.0


# ---------------------------------------------------------------------------------- models
class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Logits(nn.Module):
    """A transformers image classifier as ``pixel_values -> logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def export(model: nn.Module, example: torch.Tensor, path: Path, input_name: str) -> None:
    """TorchScript exporter, opset 17, dynamic batch; shared initializers are then split (see below)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=17,
                          input_names=[input_name], output_names=["logits"],
                          dynamic_axes={input_name: {0: "batch"}, "logits": {0: "batch"}})
    copies = unshare_initializers(path)
    if copies:
        print(f"  {path.name}: {copies} uses of shared constants given their own initializer", flush=True)


def unshare_initializers(path: Path) -> int:
    """Give every use of a constant its own initializer; returns how many uses got one.

    The exporter writes equal constants once (the folded biases of ResNet-50 and the zero biases of
    the ViT are all zero at initialisation) and lets several nodes read them, directly or through
    Identity nodes. A bias's int32 scale depends on the node that reads it, both quantizers only
    quantize biases that are initializers, and onnx2fx's converter does not save tied tensors; so
    Identity nodes over initializers are folded and every further use gets a copy. Nothing changes
    numerically.
    """
    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    copies = 0
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            clone = onnx.TensorProto()
            clone.CopyFrom(inits[node.input[0]])
            clone.name = node.output[0]
            graph.initializer.append(clone)
            inits[clone.name] = clone
            copies += 1
        else:
            kept.append(node)
    if copies:
        del graph.node[:]
        graph.node.extend(kept)
    used: set[str] = set()
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name not in inits:
                continue
            if name not in used:
                used.add(name)
                continue
            copies += 1
            clone = onnx.TensorProto()
            clone.CopyFrom(inits[name])
            clone.name = f"{name}__use{copies}"
            graph.initializer.append(clone)
            node.input[i] = clone.name
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    if copies or unused:
        onnx.save(model, str(path))
    return copies


def digits_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, x_test, y_train, y_test``: scikit-learn's 8x8 digits scaled to [0, 1] as (N, 1, 8, 8) float32,
    split in half (stratified, fixed seed); both digits models use this split."""
    from sklearn import datasets, model_selection

    data = datasets.load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(x, y, test_size=0.5, random_state=0,
                                                                        stratify=y)
    return x_train, x_test, y_train, y_test


def train_classifier(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, *, epochs: int, lr: float,
                     seed: int, batch_size: int = 32, weight_decay: float = 0.0, one_cycle: bool = False) -> None:
    """Cross-entropy training with AdamW (plain Adam when ``weight_decay`` is 0) on seeded shuffles.

    ``one_cycle`` warms the learning rate up and anneals it (``OneCycleLR``): the ViT trained from scratch
    on 898 images needs that to pass 95 % test accuracy in 40 epochs (at a constant rate of 1e-3 to 4e-3 it
    ends at 88-94 %).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(x_train) // batch_size)
    schedule = (torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
                if one_cycle else None)
    inputs, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            idx = order[start:start + batch_size]
            loss = nn.functional.cross_entropy(model(inputs[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
    model.eval()


def digits_case(name: str, title: str, path: Path, x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                args: argparse.Namespace, training: str) -> Case:
    """Calibration on the first ``--digits-calib-samples`` training images in batches of 25 (a whole number of
    them), evaluation on the whole test split: the same for both digits models, so their rows compare."""
    batch = min(25, args.digits_calib_samples)
    calib = x_train[:min(args.digits_calib_samples, len(x_train)) // batch * batch]
    return Case(name, title, path, "image", calib, x_test, batch, y_test,
                [f"{training}; calibration: the first {len(calib)} training images; evaluation: the {len(x_test)} "
                 "test images"])


def build_digits(work: Path, args: argparse.Namespace) -> Case:
    x_train, x_test, y_train, y_test = digits_data()
    torch.manual_seed(args.seed)
    model = DigitsCNN()
    train_classifier(model, x_train, y_train, epochs=10, lr=3e-3, seed=args.seed)
    path = work / "digits.onnx"
    export(model, torch.zeros(1, 1, 8, 8), path, "image")
    return digits_case("digits", "Digits CNN (trained, 8x8 images)", path, x_train, x_test, y_test, args,
                       f"trained 10 epochs on {len(x_train)} scikit-learn digits")


DIGITS_VIT = {"image_size": 8, "patch_size": 2, "num_channels": 1, "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "intermediate_size": 128, "num_labels": 10}
DIGITS_VIT_TRAINING = {"epochs": 40, "lr": 2e-3, "batch_size": 32, "weight_decay": 0.05}


def build_digits_vit(work: Path, args: argparse.Namespace) -> Case:
    """A ViT with trained weights, on the digits split and calibration of ``build_digits``: the random ViT
    shows how summation-order differences get amplified there, this one whether trained weights do too."""
    prepare_transformers()
    from transformers import ViTConfig, ViTForImageClassification

    x_train, x_test, y_train, y_test = digits_data()
    torch.manual_seed(args.seed)
    model = ViTForImageClassification(ViTConfig(**DIGITS_VIT, attn_implementation="eager"))
    # one thread: the trained weights then do not depend on --threads (the float sums do), and a model this
    # small trains several times faster on one thread than on two busy ones
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        train_classifier(Logits(model), x_train, y_train, seed=args.seed, one_cycle=True, **DIGITS_VIT_TRAINING)
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    path = work / "digits_vit.onnx"
    export(Logits(model), torch.zeros(1, 1, 8, 8), path, "image")
    config = ", ".join(f"{k}={v}" for k, v in DIGITS_VIT.items())
    t = DIGITS_VIT_TRAINING
    tokens = (DIGITS_VIT["image_size"] // DIGITS_VIT["patch_size"]) ** 2 + 1
    case = digits_case("digits_vit", "Digits ViT (trained, 8x8 images)", path, x_train, x_test, y_test, args,
                       f"trained {t['epochs']} epochs on {len(x_train)} scikit-learn digits (AdamW, weight decay "
                       f"{t['weight_decay']:g}, batches of {t['batch_size']}, one-cycle learning rate up to "
                       f"{t['lr']:g}; {seconds:.0f} s on one thread)")
    case.notes.insert(0, f"`ViTConfig({config})`, eager attention, {tokens} tokens, initialised by transformers "
                         f"(seed {args.seed}) and then trained here")
    return case


def prepare_transformers() -> None:
    """transformers imports torchvision when it is installed, and the PyPI torchvision wheels fail to
    import on a CPU-only torch (their operators link against CUDA torch); the zoo's shim defines those
    operators first so that the import works."""
    if importlib.util.find_spec("torchvision") is None:
        return
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.zoo.torchvision_ops import import_torchvision

    import_torchvision()


def build_resnet50(work: Path, args: argparse.Namespace) -> Case:
    prepare_transformers()
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(args.seed)
    model = ResNetForImageClassification(ResNetConfig(num_labels=1000))
    res = args.resolution
    path = work / "resnet50.onnx"
    export(Logits(model), torch.zeros(1, 3, res, res), path, "pixel_values")
    calib, evaluation = random_images(args, (3, res, res))
    return Case("resnet50", f"ResNet-50 (random weights, {res}x{res})", path, "pixel_values", calib, evaluation,
                args.batch_size, notes=[f"`ResNetConfig(num_labels=1000)` (ResNet-50), weights as transformers "
                                        f"initialises them (seed {args.seed}), BatchNorm folded into the convolutions "
                                        "by the exporter"])


def build_vit(work: Path, args: argparse.Namespace) -> Case:
    prepare_transformers()
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(args.seed)
    config = ViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
                       image_size=args.vit_image, patch_size=16, num_labels=1000, attn_implementation="eager")
    model = ViTForImageClassification(config)
    res = args.vit_image
    path = work / "vit.onnx"
    export(Logits(model), torch.zeros(1, 3, res, res), path, "pixel_values")
    calib, evaluation = random_images(args, (3, res, res))
    tokens = (res // 16) ** 2 + 1
    return Case("vit", f"ViT (hidden 192, 4 layers, 3 heads, {res}x{res}, random weights)", path, "pixel_values",
                calib, evaluation, args.batch_size,
                notes=[f"`ViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, "
                       f"intermediate_size=768, image_size={res}, patch_size=16, num_labels=1000)`, eager attention, "
                       f"{tokens} tokens, weights as transformers initialises them (seed {args.seed})",
                       "the logits read only the CLS token, which in a randomly initialised ViT is several times "
                       "smaller than the patch tokens sharing its per-tensor activation grids, so both quantizers "
                       "lose most of their SQNR there"])


def random_images(args: argparse.Namespace, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Seeded standard-normal images; the calibration count is a whole number of batches (onnxruntime's
    histogram calibrators cannot stack a shorter last batch)."""
    count = max(1, args.calib_samples // args.batch_size) * args.batch_size
    calib = np.random.default_rng(args.seed).standard_normal((count, *shape), dtype=np.float32)
    evaluation = np.random.default_rng(args.seed + 1).standard_normal((args.eval_samples, *shape), dtype=np.float32)
    return calib, evaluation


BUILDERS: dict[str, Callable[[Path, argparse.Namespace], Case]] = {
    "digits": build_digits, "resnet50": build_resnet50, "vit": build_vit, "digits_vit": build_digits_vit}


# ---------------------------------------------------------------------------------- measuring
def ort_session(path: Path, threads: int) -> Any:
    """Basic graph optimizations only: the QDQ graph runs as written (no fused integer kernels)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, input_name: str, data: np.ndarray, batch: int, threads: int) -> np.ndarray:
    session = ort_session(path, threads)
    return np.concatenate([session.run(None, {input_name: data[i:i + batch]})[0] for i in range(0, len(data), batch)])


def run_torch(model: nn.Module, data: np.ndarray, batch: int) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(data[i:i + batch])).numpy() for i in range(0, len(data), batch)])


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - approx.astype(np.float64)) ** 2))
    return math.inf if noise == 0 else 10.0 * math.log10(float(np.sum(ref ** 2)) / noise)


def output_metrics(case: Case, reference: np.ndarray, output: np.ndarray) -> dict[str, Any]:
    sqnr = sqnr_db(reference, output)
    metrics: dict[str, Any] = {"sqnr_db": sqnr if math.isfinite(sqnr) else None,
                               "top1_agreement": round(float((output.argmax(1) == reference.argmax(1)).mean()), 4)}
    if case.labels is not None:
        metrics["accuracy"] = round(float((output.argmax(1) == case.labels).mean()), 4)
    return metrics


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    return message if len(message) <= 240 else message[:237] + "..."


def convert(case: Case, work: Path) -> Path:
    """The converted model that every onnx2fx row quantizes, as ``onnx2fx convert`` writes it (a
    fused attention is quantized node by node by ``ptq`` itself, as AIMET and onnxruntime place
    their quantizers)."""
    from onnx2fx import OnnxToFxConverter

    converter = OnnxToFxConverter(case.onnx_path)
    converter.convert()
    out = work / f"{case.name}_converted"
    converter.save(out)
    return out / "model_full.pt"


def variant_label(scheme: str, variant: str | None) -> str:
    return scheme if not variant else " + ".join([scheme, *(v.replace("_", " ") for v in variant.split("+"))])


def ours(case: Case, model_path: Path, scheme: str, reference: np.ndarray, work: Path,
         args: argparse.Namespace, variant: str | None = None) -> dict[str, Any]:
    from onnx2fx.quantization import ptq

    row: dict[str, Any] = {"quantizer": "onnx2fx", "method": variant_label(scheme, variant)}
    if variant:
        row["variant"] = variant
    out = work / f"{case.name}_ours_{scheme}_{(variant or 'plain').replace('+', '_')}"
    try:
        started = time.perf_counter()
        result = ptq(model_path, case.calib, output_dir=out, scheme=scheme, weight_bits=8, activation_bits=8,
                     per_channel=True, samples=len(case.calib), batch_size=case.batch_size,
                     eval_samples=min(args.batch_size, len(case.calib)), seed=args.seed, progress=False,
                     **VARIANTS.get(variant or "", {}),
                     **({"adaround_iterations": args.adaround_iterations} if "adaround" in (variant or "") else {}))
        row["ptq_seconds"] = round(time.perf_counter() - started, 2)
        row["calibration_seconds"] = result.report["calibration"]["seconds"]
        row.update(output_metrics(case, reference, run_onnx(out / "model_ptq.onnx", case.input_name, case.evaluation,
                                                            args.batch_size, args.threads)))
        sim = output_metrics(case, reference, run_torch(result.sim_model, case.evaluation, args.batch_size))
        row["fake_quant"] = sim
        qdq = result.report.get("qdq") or {}
        row["qdq_within_one_step_of_sim"] = qdq.get("within_one_step")
        row["counts"] = {k: result.report["counts"].get(k) for k in ("activation_quantizers", "weight_quantizers",
                                                                     "bias_encodings")}
        if variant:
            row["equalized_pairs"] = len((result.report.get("equalization") or {}).get("pairs", []))
            row["corrected_biases"] = len((result.report.get("bias_correction") or {}).get("layers", []))
    except Exception as exc:  # a failure is a result: record it and go on
        row["error"] = describe(exc)
    return row


class Reader:
    """onnxruntime's CalibrationDataReader over the calibration array, in the same batches as ours."""

    def __init__(self, input_name: str, data: np.ndarray, batch: int) -> None:
        self.input_name, self.data, self.batch, self.position = input_name, data, batch, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.data):
            return None
        chunk = self.data[self.position:self.position + self.batch]
        self.position += self.batch
        return {self.input_name: chunk}

    def rewind(self) -> None:
        self.position = 0


def onnxruntime_static(case: Case, method: str, reference: np.ndarray, work: Path,
                       args: argparse.Namespace) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(Reader, CalibrationDataReader):
        pass

    row: dict[str, Any] = {"quantizer": "onnxruntime", "method": method}
    out = work / f"{case.name}_ort_{method}.onnx"
    try:
        started = time.perf_counter()
        quantize_static(str(case.onnx_path), str(out), _Reader(case.input_name, case.calib, case.batch_size),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method))
        row["ptq_seconds"] = round(time.perf_counter() - started, 2)
        row.update(output_metrics(case, reference, run_onnx(out, case.input_name, case.evaluation, args.batch_size,
                                                            args.threads)))
    except Exception as exc:
        row["error"] = describe(exc)
    return row


def compare(case: Case, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    print(f"{case.name}: float reference", flush=True)
    reference = run_onnx(case.onnx_path, case.input_name, case.evaluation, args.batch_size, args.threads)
    entry: dict[str, Any] = {"title": case.title, "notes": case.notes, "build_seconds": case.build_seconds,
                             "calibration_samples": len(case.calib), "evaluation_samples": len(case.evaluation),
                             "float": {"accuracy": round(float((reference.argmax(1) == case.labels).mean()), 4)}
                             if case.labels is not None else {},
                             "rows": []}
    try:
        started = time.perf_counter()
        model_path = convert(case, work)
        entry["convert_seconds"] = round(time.perf_counter() - started, 2)
    except Exception as exc:
        entry["convert_error"] = describe(exc)
        model_path = None
    for scheme in args.schemes:
        print(f"{case.name}: onnx2fx {scheme}", flush=True)
        if model_path is None:
            row = {"quantizer": "onnx2fx", "method": scheme, "error": f"conversion failed: {entry['convert_error']}"}
        else:
            row = ours(case, model_path, scheme, reference, work, args)
        entry["rows"].append(row)
        print("   ", summary(row), flush=True)
    for variant in args.variants:
        if "adaround" in variant and case.name not in args.adaround_models:
            continue
        label = variant_label("minmax", variant)
        print(f"{case.name}: onnx2fx {label}", flush=True)
        if model_path is None:
            row = {"quantizer": "onnx2fx", "method": label, "variant": variant,
                   "error": f"conversion failed: {entry['convert_error']}"}
        else:
            row = ours(case, model_path, "minmax", reference, work, args, variant)
        entry["rows"].append(row)
        print("   ", summary(row), flush=True)
    for method in args.ort_methods:
        print(f"{case.name}: onnxruntime {method}", flush=True)
        row = onnxruntime_static(case, method, reference, work, args)
        entry["rows"].append(row)
        print("   ", summary(row), flush=True)
    entry["goal"] = goal(entry["rows"], case.labels is not None)
    return entry


def summary(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"error: {row['error']}"
    acc = f", accuracy {row['accuracy']:.4f}" if "accuracy" in row else ""
    return f"SQNR {row['sqnr_db']:.2f} dB{acc}, {row['ptq_seconds']:.1f} s"


def goal(rows: list[dict[str, Any]], with_accuracy: bool) -> dict[str, Any]:
    """Our best scheme against onnxruntime's best method, by output SQNR of the QDQ model."""
    def best(quantizer: str) -> dict[str, Any] | None:
        ok = [r for r in rows if r["quantizer"] == quantizer and "error" not in r and not r.get("variant")]
        return max(ok, key=lambda r: r["sqnr_db"]) if ok else None

    mine, theirs = best("onnx2fx"), best("onnxruntime")
    options = [r for r in rows if r["quantizer"] == "onnx2fx" and "error" not in r and r.get("variant")]
    option = max(options, key=lambda r: r["sqnr_db"]) if options else None
    result: dict[str, Any] = {"ours_best": mine and mine["method"], "ours_best_sqnr_db": mine and mine["sqnr_db"],
                              "ort_best": theirs and theirs["method"], "ort_best_sqnr_db": theirs and theirs["sqnr_db"],
                              "ours_best_with_options": option and option["method"],
                              "ours_best_with_options_sqnr_db": option and option["sqnr_db"]}
    if mine is None or theirs is None:
        result["holds"] = None
    else:
        result["holds"] = mine["sqnr_db"] >= theirs["sqnr_db"]
        result["margin_db"] = round(mine["sqnr_db"] - theirs["sqnr_db"], 4)
    if with_accuracy:
        result["ours_best_accuracy"] = max((r["accuracy"] for r in rows if r["quantizer"] == "onnx2fx"
                                            and "accuracy" in r and not r.get("variant")), default=None)
        result["ort_best_accuracy"] = max((r["accuracy"] for r in rows if r["quantizer"] == "onnxruntime"
                                           and "accuracy" in r), default=None)
    return result


# ---------------------------------------------------------------------------------- fine-tuning
def qft_compare(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """ResNet-50: W{bits}A8 PTQ, then QFT from that PTQ folder; both QDQ models in onnxruntime on
    held-out inputs against the float ONNX model (the same measurement as the PTQ tables)."""
    from onnx2fx.quantization import ptq, qft

    result: dict[str, Any] = {"model": "resnet50", "resolution": args.qft_resolution, "weight_bits": args.qft_bits,
                              "activation_bits": 8, "epochs": args.qft_epochs, "lr": args.qft_lr,
                              "batch_size": args.batch_size}
    try:
        folder = work / "qft"
        folder.mkdir()
        settings = argparse.Namespace(**{**vars(args), "resolution": args.qft_resolution,
                                         "calib_samples": args.qft_samples, "eval_samples": args.qft_eval_samples})
        case = build_resnet50(folder, settings)
        result.update(train_samples=len(case.calib), evaluation_samples=len(case.evaluation), title=case.title)
        reference = run_onnx(case.onnx_path, case.input_name, case.evaluation, args.batch_size, args.threads)
        model_path = convert(case, folder)

        print(f"resnet50 QFT: W{args.qft_bits}A8 PTQ at {args.qft_resolution}x{args.qft_resolution}", flush=True)
        started = time.perf_counter()
        start = ptq(model_path, case.calib, output_dir=folder / "ptq", scheme="minmax", weight_bits=args.qft_bits,
                    activation_bits=8, per_channel=True, samples=len(case.calib), batch_size=args.batch_size,
                    eval_samples=min(args.batch_size, len(case.calib)), seed=args.seed, progress=False)
        result["ptq"] = {"seconds": round(time.perf_counter() - started, 2),
                         **output_metrics(case, reference, run_onnx(folder / "ptq" / "model_ptq.onnx",
                                                                    case.input_name, case.evaluation,
                                                                    args.batch_size, args.threads)),
                         "fake_quant": output_metrics(case, reference, run_torch(start.sim_model, case.evaluation,
                                                                                 args.batch_size)),
                         "qdq_within_one_step_of_sim": (start.report.get("qdq") or {}).get("within_one_step")}
        print("   ", summary({**result["ptq"], "ptq_seconds": result["ptq"]["seconds"]}), flush=True)

        print(f"resnet50 QFT: {args.qft_epochs} epoch(s) on {len(case.calib)} samples", flush=True)
        started = time.perf_counter()
        tuned = qft(model_path, case.calib, from_ptq=folder / "ptq", output_dir=folder / "qft",
                    epochs=args.qft_epochs, lr=args.qft_lr, batch_size=args.batch_size, seed=args.seed,
                    eval_data=case.evaluation, eval_samples=len(case.evaluation), progress=False)
        report = tuned.report
        result["qft"] = {"seconds": round(time.perf_counter() - started, 2),
                         "training_seconds": report["training_seconds"],
                         **output_metrics(case, reference, run_onnx(folder / "qft" / "model_qft.onnx",
                                                                    case.input_name, case.evaluation,
                                                                    args.batch_size, args.threads)),
                         "fake_quant": output_metrics(case, reference, run_torch(tuned.sim_model, case.evaluation,
                                                                                 args.batch_size)),
                         "objective": report["objective"], "steps": report["loss"]["steps"],
                         "loss_first": report["loss"].get("first_window_mean"),
                         "loss_last": report["loss"].get("last_window_mean"),
                         "int4_storage": report.get("int4_storage"),
                         "qdq_within_one_step_of_sim": (report.get("qdq") or {}).get("within_one_step")}
        print("   ", summary({**result["qft"], "ptq_seconds": result["qft"]["seconds"]}), flush=True)
        result["goal_holds"] = result["qft"]["sqnr_db"] > result["ptq"]["sqnr_db"]
        result["gain_db"] = round(result["qft"]["sqnr_db"] - result["ptq"]["sqnr_db"], 4)
    except Exception as exc:
        result["error"] = describe(exc)
    return result


# ---------------------------------------------------------------------------------- report
def fmt(value: Any, spec: str = ".2f", missing: str = "–") -> str:
    if value is None:
        return missing
    if isinstance(value, float) and math.isinf(value):
        return "exact"
    return format(value, spec)


def markdown(doc: dict[str, Any]) -> str:
    from onnx2fx.quantization import QuantConfig

    m = doc["machine"]
    lines = [
        "# Quantization: onnx2fx PTQ against onnxruntime",
        "",
        f"Generated by `{doc['command']}` on a machine with {m['cpu_count']} CPUs ({m['processor']}, "
        f"{m['platform']}), {m['torch_threads']} torch / onnxruntime threads; Python {m['python']}, torch "
        f"{m['torch']}, onnxruntime {m['onnxruntime']}, transformers {m['transformers']}, onnx2fx {m['onnx2fx']}. "
        f"The run took {doc['seconds'] / 60:.1f} minutes. Do not edit by hand: rerun the command.",
        "",
        "Both quantizers start from the same float ONNX file and the same calibration samples. Each writes a QDQ "
        "ONNX model, and both QDQ models are run the same way: onnxruntime on the CPU with basic graph "
        "optimizations only (every QuantizeLinear / DequantizeLinear runs as written), on held-out inputs that "
        "were not used for calibration, compared with the float ONNX model run the same way.",
        "",
        "- **onnx2fx**: `onnx2fx.quantization.ptq` on the converted model, W8A8: weights int8 symmetric per output "
        "channel, activations uint8 asymmetric per tensor, int32 biases; one row per activation calibration "
        f"scheme (`minmax`, `percentile` at {QuantConfig().percentile:g}, `mse`, `entropy`).",
        "- **onnx2fx, minmax + ...**: the minmax row again with PTQ options: `cle` (cross-layer equalization of "
        "consecutive convolutions, `ptq(cle=True)`), `bias correction` (empirical bias correction, "
        "`ptq(bias_correction=True)`), both, `adaround` (learned weight rounding, `ptq(adaround=True, "
        f"adaround_iterations={doc['settings']['adaround_iterations']})`, on "
        f"{', '.join(doc['settings']['adaround_models']) or 'no model'} only: it optimises every layer on the CPU) "
        "and AdaRound followed by bias correction. The goal below compares the plain schemes only.",
        "- **onnxruntime**: `onnxruntime.quantization.quantize_static(quant_format=QDQ, per_channel=True, "
        "activation_type=QUInt8, weight_type=QInt8, calibrate_method=...)`, its defaults otherwise, on the "
        "float ONNX file as exported (no pre-processing); one row per calibration method.",
        "- Calibration batches are the same for both (a whole number of batches: onnxruntime's histogram "
        "calibrators cannot stack a shorter last batch). The exporter writes equal constants once and lets "
        "several nodes read them, directly or through Identity nodes (the random models' biases are all zero); "
        "before either quantizer sees the file, every use gets its own initializer, which changes nothing "
        "numerically (a bias's int32 scale depends on the node reading it, and both quantizers only quantize "
        "biases that are initializers).",
        "",
        "**Goal: our best scheme's output SQNR >= onnxruntime's best method's, on every model.**",
        "",
        "| model | our best (QDQ SQNR) | onnxruntime's best (QDQ SQNR) | margin | goal | best accuracy, ours / "
        "onnxruntime's | our best with PTQ options (QDQ SQNR) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in doc["models"].items():
        g = entry["goal"]
        verdict = {True: "holds", False: "**does not hold**", None: "not measured (see errors)"}[g["holds"]]
        accuracy = (f"{fmt(g['ours_best_accuracy'], '.4f')} / {fmt(g['ort_best_accuracy'], '.4f')}"
                    if "ours_best_accuracy" in g else "–")
        lines.append(f"| {name} | {g['ours_best'] or '–'} {fmt(g['ours_best_sqnr_db'])} dB | "
                     f"{g['ort_best'] or '–'} {fmt(g['ort_best_sqnr_db'])} dB | {fmt(g.get('margin_db'), '+.3f')} dB "
                     f"| {verdict} | {accuracy} | "
                     + (f"{g['ours_best_with_options']} {fmt(g['ours_best_with_options_sqnr_db'])} dB |"
                        if g.get("ours_best_with_options") else "– |"))
    lines += [
        "",
        "Columns:",
        "",
        "- **QDQ SQNR**: output (logits) SQNR of the QDQ ONNX model in onnxruntime against the float ONNX model, "
        "`10 log10(sum(ref^2) / sum((ref - q)^2))` in dB over all held-out inputs (higher is better; 6 dB is "
        "about one bit).",
        "- **fake-quant SQNR**: the same for our torch simulation (`PTQResult.sim_model`) on the same inputs.",
        "- **accuracy** (digits, digits_vit): test-set accuracy of the QDQ model in onnxruntime (float in the "
        "heading).",
        "- **top-1 agree**: share of held-out inputs whose arg-max class equals the float model's.",
        "- **PTQ s**: wall time of the whole quantization call: for onnx2fx `ptq()` with an output folder "
        "(calibration, range search, evaluation on a few calibration samples, the QDQ file and its onnxruntime "
        "check, the report); for onnxruntime `quantize_static()` (calibration and the QDQ file).",
        "- **calib s**: our calibration pass alone (forwards with the observers on).",
        "- **QDQ = sim**: share of output elements where our QDQ model in onnxruntime and our torch simulation "
        "agree to within one output quantization step (measured inside `ptq()` on calibration samples).",
        "",
    ]
    for name, entry in doc["models"].items():
        float_acc = entry["float"].get("accuracy")
        heading = f"## {name}: {entry['title']}"
        lines += [heading, ""]
        for note in entry["notes"]:
            lines.append(f"- {note}")
        lines.append(f"- {entry['calibration_samples']} calibration samples, {entry['evaluation_samples']} held-out "
                     f"evaluation samples" + (f"; float test accuracy {float_acc:.4f}" if float_acc is not None
                                              else ""))
        if "build_error" in entry:
            lines.append(f"- building the model failed: `{entry['build_error']}`")
        if "convert_error" in entry:
            lines.append(f"- conversion failed: `{entry['convert_error']}`")
        lines.append("")
        acc = float_acc is not None
        header = "| quantizer | method | QDQ SQNR (dB) | fake-quant SQNR (dB) |" + (" accuracy |" if acc else "") + \
            " top-1 agree | PTQ s | calib s | QDQ = sim | error |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for r in entry["rows"]:
            fq = r.get("fake_quant") or {}
            cells = [r["quantizer"], r["method"], fmt(r.get("sqnr_db")), fmt(fq.get("sqnr_db"))]
            if acc:
                cells.append(fmt(r.get("accuracy"), ".4f"))
            cells += [fmt(r.get("top1_agreement"), ".3f"), fmt(r.get("ptq_seconds"), ".1f"),
                      fmt(r.get("calibration_seconds"), ".1f"), fmt(r.get("qdq_within_one_step_of_sim"), ".4f"),
                      f"`{r['error']}`" if "error" in r else ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += qft_markdown(doc.get("qft"))
    lines += INTEGER_FORMATS_SECTION.splitlines()
    return "\n".join(lines)


# Static text (the benchmark does not measure the integer forms); kept here so the doc regenerates with it.
INTEGER_FORMATS_SECTION = """
## Integer ONNX: QOperator and fixed point (measured by benchmarks/integer_formats.py, not by this benchmark)

`ptq(..., formats=[...])`, `qft(..., formats=[...])`, `onnx2fx ptq/qft --format qdq|qoperator|fixed-point` (repeatable) and the batch config key `formats` write, besides or instead of the QDQ model, `model_<stage>_qoperator.onnx` and `model_<stage>_fixed_point.onnx`. The native writer (`cpp/writer/integer_writer.cc`) builds both from the original graph and the same encodings and weights as the QDQ model.

- **QOperator**: QLinearConv, QLinearMatMul, com.microsoft QGemm, QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat, QLinearSoftmax; MaxPool, Reshape, Flatten, Transpose, Slice, nearest Resize, ... on the 8-bit tensors; a fused ReLU is the saturation at the output zero point. Ops without an integer form run in float between DequantizeLinear and QuantizeLinear (listed in the report as float islands), as in onnxruntime's own QOperator output, whose node list it reproduces on the digits CNN.
- **Fixed point**: only integer tensors between the inputs' QuantizeLinear and the outputs' DequantizeLinear. ConvInteger / MatMulInteger into int32 (signed weights stored as uint8 + 128 with weight zero point 128, the u8 x u8 kernels every onnxruntime build has), the int32 bias added, then `y = clamp(zp + floor((acc * M0 + 2^(n-1)) / 2^n), lo, hi)` in int64: the float rescale `s_x * s_w / s_y` (per output channel) is `M0 * 2^-n` with `M0` in [2^30, 2^31] (`frexp`), so the product stays below 2^62; rounding is half up (ties toward +infinity, where QuantizeLinear rounds ties to even: exact ties are rare); the clamp saturates at the 8-bit range, or at the zero point for a fused ReLU. A standalone ReLU on an unchanged grid is an integer Clip at the zero point; a residual Add scales both centred inputs with multipliers that share one shift; a Mul of two quantized tensors multiplies the centred inputs in int64; GlobalAveragePool sums in int64 and AveragePool is a depthwise ConvInteger with a kernel of ones (padding reads the zero point, so counted padding adds 0), both dividing by the window inside the requantization (shapes and channel counts from ONNX shape inference; uncounted padding and `ceil_mode` are errors); Sigmoid, Tanh, HardSigmoid, HardSwish, GELU, LeakyRelu, Elu, Softplus, Erf and Exp are a 256-entry table read by Gather. Any other op stops the export with `IntegerExportError` naming the node (nothing is written), or, with `float_islands=True` / `--float-islands`, runs in float and is listed (with all graph optimizations onnxruntime then fuses DequantizeLinear -> op -> QuantizeLinear into its own integer kernel, whose rounding can differ from the simulation's float op by a step). The report's `fixed_point.writer.requantizations` gives each layer's multipliers, shifts and worst relative error against the float rescale (below 2^-30).
- **Integer simulation**: `PTQResult.integer_model(fmt)` is the written integer model converted back to torch by onnx2fx; the report's `equal_to_simulation` is the share of output elements where onnxruntime (basic and all optimizations) and the simulation are equal, and `within_one_step_of_qdq` compares with the QDQ model.

`python examples/digits_fixed_point.py` trains the digits CNN (10 epochs), calibrates on 200 training images and evaluates on the 899 test images in onnxruntime: float, QDQ, QOperator and fixed-point accuracy were all 0.9755 on a 2-CPU x86_64 machine, with every fixed-point logit equal to the integer simulation.
`python benchmarks/integer_formats.py --models digits resnet50 yolov8n --resolution 224 --float-islands` measured on a 2-CPU x86_64 machine, onnxruntime 1.32.0, minmax W8A8:

- digits: the CNN above, 200 calibration images, its 899 test images;
- resnet50: `quant_compare.py`'s random-weight ResNet-50 at 224x224, 32 calibration and 32 held-out standard-normal images;
- yolov8n: the `nudenet` package's YOLOv8n (trained weights, 320x320, from the real-file corpus), 32 calibration and 32 held-out random square crops of scikit-image's photographs scaled to [0, 1]; the output is the raw head (4 box coordinates in pixels and the class scores for 2,100 anchors).

| model | form | SQNR vs QDQ (dB) | SQNR vs float (dB) | accuracy | = integer simulation |
|---|---|---|---|---|---|
| digits | QDQ | – | 40.08 | 0.9689 | – |
| digits | QOperator (basic / all optimizations) | identical | 40.08 | 0.9689 | 1.0000 |
| digits | fixed point (basic / all optimizations) | identical | 40.08 | 0.9689 | 1.0000 |
| resnet50 | QDQ | – | 32.90 | – | – |
| resnet50 | QOperator (basic / all optimizations) | 37.15 / 37.15 | 32.92 | – | 1.0000 |
| resnet50 | fixed point (basic / all optimizations) | 37.10 / 37.10 | 32.92 | – | 1.0000 |
| yolov8n | QDQ | – | 30.92 | – | – |
| yolov8n | QOperator (basic / all optimizations) | 40.08 / 40.08 | 30.81 | – | 1.0000 |
| yolov8n | fixed point (basic / all optimizations) | 40.26 / 40.11 | 30.97 / 30.85 | – | 1.0000 |

Every fixed-point output element equals the integer simulation; no float tensor lies inside the fixed-point graphs of the digits CNN and ResNet-50 (YOLOv8n's float islands are the only float tensors in its); the worst relative error of a multiplier and shift against its float rescale is 5.2e-10. The QOperator simulation (the written file converted back through the converter's QLinear* lowerings) equals onnxruntime on every output element of all three models: the lowerings reproduce onnxruntime's CPU kernels' arithmetic (QLinearConv/QLinearMatMul requantize the float32 product of the accumulator and the float32 rescale, rounding half to even; QLinearAdd's constant term is one fused multiply-add and a broadcast first operand swaps roles; QLinearMul adds the zero point before rounding), which exhaustive tests over every pair of 8-bit values check. Before that, one-step rounding differences left 75 % (ResNet-50) and 97 % (YOLOv8n) of the elements equal.

YOLOv8n needs float islands for the box decode at the end of its head: the anchor-grid Sub/Add, the Div and the stride Mul in both forms (their other operand is computed from the feature map's size alone, so placement leaves it unquantized), and the DFL Softmax in the fixed-point form, run in float between DequantizeLinear and QuantizeLinear and are listed in the report (5 nodes in QOperator, 6 in fixed point; the two nearest Resizes of the neck run on the 8-bit tensors). Without `--float-islands` the fixed-point export stops at the first of them with `IntegerExportError` naming the node.
"""  # noqa: E501


def qft_markdown(q: dict[str, Any] | None) -> list[str]:
    if not q:
        return []
    lines = ["## Fine-tuning: QFT after PTQ on ResNet-50 (goal: output SQNR after QFT > after PTQ)", ""]
    if "error" in q:
        return lines + [f"Not measured: `{q['error']}`", ""]
    res, bits = q["resolution"], q["weight_bits"]
    lines += [
        f"{q['title']}; {q['train_samples']} seeded random training images, {q['evaluation_samples']} held-out ones. "
        f"PTQ: `ptq(weight_bits={bits}, activation_bits=8, per_channel=True, scheme='minmax')` calibrated on the "
        f"training images. QFT: `qft(from_ptq=<that folder>, epochs={q['epochs']}, lr={q['lr']:g}, "
        f"batch_size={q['batch_size']})`, distillation from the float model "
        f"({', '.join(f'{k}: {v}' for k, v in q['qft']['objective']['outputs'].items())}) without labels, "
        f"{q['qft']['steps']} steps (mean loss {fmt(q['qft']['loss_first'], '.4g')} over the first tenth, "
        f"{fmt(q['qft']['loss_last'], '.4g')} over the last). Both QDQ models run in onnxruntime as above, on "
        f"{res}x{res} inputs" + (" (QFT stores its 4-bit weights as 8-bit initializers holding 4-bit values: the "
                                 "model is opset 17)" if q["qft"].get("int4_storage") == "int8" else "") + ".",
        "",
        "| stage | QDQ SQNR (dB) | fake-quant SQNR (dB) | top-1 agree | seconds | QDQ = sim |",
        "|---|---|---|---|---|---|",
        f"| PTQ W{bits}A8 | {fmt(q['ptq']['sqnr_db'])} | {fmt(q['ptq']['fake_quant']['sqnr_db'])} | "
        f"{fmt(q['ptq']['top1_agreement'], '.3f')} | {fmt(q['ptq']['seconds'], '.1f')} | "
        f"{fmt(q['ptq']['qdq_within_one_step_of_sim'], '.4f')} |",
        f"| + QFT | {fmt(q['qft']['sqnr_db'])} | {fmt(q['qft']['fake_quant']['sqnr_db'])} | "
        f"{fmt(q['qft']['top1_agreement'], '.3f')} | {fmt(q['qft']['seconds'], '.1f')} | "
        f"{fmt(q['qft']['qdq_within_one_step_of_sim'], '.4f')} |",
        "",
        f"QFT changes the output SQNR by {q['gain_db']:+.2f} dB: the goal "
        f"{'holds' if q['goal_holds'] else '**does not hold**'}. Seconds are whole calls (`ptq()`, `qft()` with its "
        "output folder and checkpoint).",
        "",
    ]
    return lines


def machine(threads: int) -> dict[str, Any]:
    import onnxruntime

    import onnx2fx

    try:
        import transformers
        tv = transformers.__version__
    except ImportError:
        tv = "not installed"
    processor = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                # the widest vector instructions: one model name covers CPUs with and without AVX-512,
                # and convolutions (the float forwards) and integer kernels run differently on them
                flags = set(line.split(":", 1)[1].split())
                isa = ["AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"]
                isa += ["VNNI"] if flags & {"avx512_vnni", "avx_vnni"} else []
                processor += f" ({', '.join(isa)})"
                break
    except OSError:
        pass
    return {"cpu_count": os.cpu_count(), "processor": processor,
            "platform": f"{platform.system()} {platform.machine()}", "torch_threads": threads,
            "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "transformers": tv, "onnx2fx": onnx2fx.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--resolution", type=int, default=224, help="ResNet-50 input size (default 224)")
    parser.add_argument("--vit-image", type=int, default=224,
                        help="random ViT input size, a multiple of 16 (default 224)")
    parser.add_argument("--calib-samples", type=int, default=32,
                        help="calibration samples (ResNet-50, random ViT), rounded down to whole batches; "
                        "onnxruntime's Entropy and Percentile calibrators keep every intermediate output in memory, "
                        "about 100 MB per ResNet-50 sample at 224x224")
    parser.add_argument("--digits-calib-samples", type=int, default=200,
                        help="calibration samples (digits, digits_vit)")
    parser.add_argument("--eval-samples", type=int, default=32, help="held-out samples (ResNet-50, random ViT)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--ort-methods", default=",".join(ORT_METHODS))
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"extra minmax rows with PTQ options, a comma-separated subset of {','.join(VARIANTS)} "
                        "('' for none)")
    parser.add_argument("--adaround-models", default=",".join(ADAROUND_MODELS),
                        help="models that get the AdaRound rows (default: all but ResNet-50, whose AdaRound takes "
                        "most of an hour here)")
    parser.add_argument("--adaround-iterations", type=int, default=500, help="AdaRound steps per layer")
    parser.add_argument("--qft-samples", type=int, default=256, help="ResNet-50 QFT training images; 0 skips QFT")
    parser.add_argument("--qft-eval-samples", type=int, default=32, help="held-out images for PTQ vs QFT")
    parser.add_argument("--qft-resolution", type=int, default=64, help="ResNet-50 input size for QFT (default 64)")
    parser.add_argument("--qft-bits", type=int, default=4, help="weight bits of the PTQ that QFT starts from")
    parser.add_argument("--qft-epochs", type=int, default=1)
    parser.add_argument("--qft-lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write quantization.md and quant_compare.json into this folder "
                        "instead of docs/ and benchmarks/results/ (a trial run)")
    parser.add_argument("--markdown", type=Path, help="the Markdown file (default docs/quantization.md)")
    parser.add_argument("--json", type=Path, help="the JSON file (default benchmarks/results/quant_compare.json)")
    args = parser.parse_args()
    args.markdown = args.markdown or (args.output / "quantization.md" if args.output else
                                      ROOT / "docs" / "quantization.md")
    args.json = args.json or (args.output / "quant_compare.json" if args.output else RESULTS / "quant_compare.json")
    args.models = [m for m in args.models.split(",") if m]
    args.schemes = [s for s in args.schemes.split(",") if s]
    args.ort_methods = [s for s in args.ort_methods.split(",") if s]
    args.variants = [v for v in args.variants.split(",") if v]
    args.adaround_models = [m for m in args.adaround_models.split(",") if m]
    unknown_variants = sorted(set(args.variants) - set(VARIANTS))
    if unknown_variants:
        parser.error(f"unknown variant(s) {unknown_variants}; choose from {list(VARIANTS)}")
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    doc: dict[str, Any] = {"command": "python benchmarks/quant_compare.py " + shlex.join(sys.argv[1:]),
                           "machine": machine(args.threads),
                           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                           "models": {}, "qft": None}
    doc["command"] = doc["command"].strip()
    run_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quant_compare.") as tmp:
        work = Path(tmp)
        cases: dict[str, Case] = {}
        for name in args.models:
            print(f"{name}: building", flush=True)
            started = time.perf_counter()
            try:
                case = BUILDERS[name](work, args)
            except Exception as exc:
                doc["models"][name] = {"title": name, "notes": [], "float": {}, "rows": [], "goal": goal([], False),
                                       "build_error": describe(exc), "calibration_samples": 0,
                                       "evaluation_samples": 0}
                print(f"  build failed: {describe(exc)}", flush=True)
                continue
            case.build_seconds = round(time.perf_counter() - started, 2)
            cases[name] = case
            doc["models"][name] = compare(case, work, args)
        if args.qft_samples > 0:
            doc["qft"] = qft_compare(work, args)

    doc["seconds"] = round(time.perf_counter() - run_started, 1)
    text = markdown(doc)
    print()
    print(text)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    from doc_sections import kept_sections  # beside this script

    others = kept_sections(args.markdown, ("quant_compare_aimet", "mixed_precision", "qft_compare",
                                            "calibration_overhead"))
    args.markdown.write_text(text + "\n" + others)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2, default=lambda v: None) + "\n")


if __name__ == "__main__":
    main()
