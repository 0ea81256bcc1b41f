"""The target model zoo: which models, built by which library, exported how.

Every entry builds its architecture with random weights under a fixed seed (nothing is downloaded)
and exports it to ONNX the way users of that library do. ``export_model`` writes
``<out>/<name>.onnx`` (and ``<name>_dynamic.onnx`` where the batch dimension can be dynamic) and
returns their paths; scripts that need a model call it and reuse an existing file whose manifest
matches.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

SEED = 0


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry.

    ``export(path, dynamic_batch)`` writes the ONNX file itself because each library has its own
    exporter (ultralytics' ``YOLO.export``, torchvision's TorchScript path, ``torch.onnx.export``).
    ``inputs(batch)`` returns seeded numpy inputs keyed by ONNX input name, at the realistic size.
    """

    name: str
    title: str  # as the specification names it, e.g. "CLIP ViT-L/14 (vision tower)"
    library: str  # "transformers 5.23.0", or "faithful definition (mmdet cannot be installed: ...)"
    export: Callable[[Path, bool], None]
    inputs: Callable[[int], dict[str, np.ndarray]]
    dynamic_batch: bool = True
    ci: bool = False  # part of the CI regression subset (tests/test_zoo.py)
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


ZOO: dict[str, ZooModel] = {}


def register(model: ZooModel) -> ZooModel:
    if model.name in ZOO:
        raise ValueError(f"zoo model {model.name!r} registered twice")
    ZOO[model.name] = model
    return model


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seeded_normal(shape: tuple[int, ...], seed: int = SEED, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def torchscript_export(model: torch.nn.Module, args: tuple, path: Path, opset: int, input_names: list[str],
                       output_names: list[str], dynamic_axes: dict[str, dict[int, str]] | None = None) -> None:
    """``torch.onnx.export`` on its TorchScript path (``dynamo=False``), weights embedded in the file:
    what optimum, timm's ``onnx_export.py``, torchvision's docs, mmdeploy and Real-ESRGAN's script call."""
    with torch.no_grad():
        torch.onnx.export(model.eval(), args, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes)


def select_models(spec: str) -> list[str]:
    """Names from a comma-separated ``--models`` value (all when empty); ValueError names unknown ones."""
    zoo = load_all()
    names = [n.strip() for n in spec.split(",") if n.strip()] or list(zoo)
    unknown = [n for n in names if n not in zoo]
    if unknown:
        raise ValueError(f"unknown zoo models {unknown}; known: {', '.join(zoo)}")
    return names


def load_all() -> dict[str, ZooModel]:
    """Import every family module so that its ``register`` calls run."""
    from benchmarks.zoo import models  # noqa: F401

    return ZOO


def _manifest_key(model: ZooModel, dynamic_batch: bool) -> str:
    source = Path(model.export.__code__.co_filename).read_bytes()
    return hashlib.sha256(source + f"{model.name}:{dynamic_batch}:{SEED}".encode()).hexdigest()


def export_model(name: str, out_dir: Path, dynamic_batch: bool = False, force: bool = False) -> Path:
    """Export one model (or reuse the file a previous identical export left) and return its path."""
    model = load_all()[name]
    if dynamic_batch and not model.dynamic_batch:
        raise ValueError(f"{name} has no dynamic-batch variant")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (f"{name}_dynamic.onnx" if dynamic_batch else f"{name}.onnx")
    manifest = path.with_suffix(".json")
    key = _manifest_key(model, dynamic_batch)
    if not force and path.exists() and manifest.exists():
        if json.loads(manifest.read_text()).get("key") == key:
            return path
    seed_everything()
    partial = path.with_name(path.stem + ".partial.onnx")
    model.export(partial, dynamic_batch)  # every zoo model is < 2 GB: weights embedded, one file
    partial.rename(path)
    manifest.write_text(json.dumps({"name": name, "dynamic_batch": dynamic_batch, "seed": SEED, "key": key}))
    return path
