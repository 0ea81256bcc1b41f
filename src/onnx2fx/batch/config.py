"""The batch config (``--config batch.yaml``): its schema, and checks that name what is wrong.

A config has ``defaults:`` for every model and ``models:`` entries keyed by the model's path
relative to the models folder or by its file stem. Every value is checked when the file is read,
so a typo is a one-line :class:`~onnx2fx.errors.BatchError` (exit code 2) before any model runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BatchError, EvaluationError

__all__ = ["CONFIG_KEYS", "BatchConfig", "load_config", "parse_config"]

CONFIG_KEYS: dict[str, str] = {
    "input_shapes": "a mapping from input name to a list of positive sizes, e.g. {image: [1, 3, 224, 224]}",
    "tolerance": "a number >= 0 (percent)",
    "samples": "an integer >= 1",
    "inputs": "the path of a .npy or .npz file, relative to the config file",
    "calibration": "PTQ calibration data: a .npy/.npz file or a folder, relative to the config file",
    "skip": "true or false",
    "per_layer": "true or false",
    "sweep": "true or false",
    "timeout": "a number of seconds > 0, or null for none",
    "formats": "the quantized ONNX forms --ptq/--qft write: a list of qdq, qoperator, fixed-point",
    "dataset": "an evaluation dataset (COCO .json or folder, dataset.jsonl folder, ImageFolder, .npz), relative to "
               "the config file",
    "task": "a task config YAML/JSON file relative to the config file, or a preset: reference004, torchvision, "
            "yolo, logits",
    "eval_limit": "an integer >= 1 (images evaluated)",
    "eval_batch_size": "an integer >= 1 (images per model call when evaluating)",
}
_TOP_KEYS = ("defaults", "models")


@dataclass(frozen=True)
class BatchConfig:
    """Settings from ``batch.yaml``: ``defaults`` for every model and per-model overrides.

    ``models`` is keyed by the model's path relative to the models folder (with or without
    ``.onnx``) or by its file stem; a path entry wins over a stem entry, which wins over
    ``defaults``. Values are already checked and normalized (``inputs`` is an absolute path).
    """

    defaults: Mapping[str, Any] = field(default_factory=dict)
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = "<config>"

    def with_defaults(self, **values: Any) -> BatchConfig:
        """A copy whose defaults are overridden by the ``values`` that are not ``None``."""
        defaults = dict(self.defaults)
        for key, value in values.items():
            if key not in CONFIG_KEYS:
                raise BatchError(f"unknown batch setting {key!r}")
            if value is not None:
                defaults[key] = _check_value(key, value, key, Path.cwd(), "command line")
        return dataclasses.replace(self, defaults=defaults)

    def settings_for(self, rel: str) -> dict[str, Any]:
        """The merged settings of the model at ``rel`` (path relative to the models folder)."""
        settings = dict(self.defaults)
        path_key = _model_key(rel)
        stem_key = path_key.rsplit("/", 1)[-1]
        if stem_key != path_key and stem_key in self.models:
            settings.update(self.models[stem_key])
        if path_key in self.models:
            settings.update(self.models[path_key])
        return settings

    def unmatched(self, rels: Sequence[str]) -> list[str]:
        """Model entries that name none of ``rels``."""
        keys = {_model_key(r) for r in rels} | {_model_key(r).rsplit("/", 1)[-1] for r in rels}
        return [k for k in self.models if k not in keys]


def _model_key(name: str) -> str:
    key = name.replace("\\", "/").strip()
    while key.startswith("./"):
        key = key[2:]
    return key[:-5] if key.lower().endswith(".onnx") else key


def load_config(path: str | os.PathLike[str]) -> BatchConfig:
    """Read and check a YAML batch config; any problem is a one-line :class:`BatchError`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BatchError(f"{path}: invalid YAML: {problem}{where}") from None
    except UnicodeDecodeError as exc:
        raise BatchError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    return parse_config(data, base=path.parent, source=str(path))


def parse_config(data: Any, base: str | os.PathLike[str] = ".", source: str = "<config>") -> BatchConfig:
    """Check a parsed config (``{"defaults": {...}, "models": {name: {...}}}``)."""
    base = Path(base)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BatchError(f"{source}: expected a mapping with {' and/or '.join(_TOP_KEYS)} at the top level, "
                         f"got {_describe(data)}")
    for key in data:
        if key not in _TOP_KEYS:
            raise BatchError(f"{source}: unknown key {key!r} at the top level (expected {', '.join(_TOP_KEYS)})")
    defaults = _section(data.get("defaults"), "defaults", base, source)
    raw_models = data.get("models")
    if raw_models is None:
        raw_models = {}
    if not isinstance(raw_models, dict):
        raise BatchError(f"{source}: models: expected a mapping from model path or stem to settings, "
                         f"got {_describe(raw_models)}")
    models: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for name, entry in raw_models.items():
        key = _model_key(str(name))
        if not key:
            raise BatchError(f"{source}: models: {name!r} is not a model path or stem")
        if key in models:
            raise BatchError(f"{source}: models: {origin[key]!r} and {name!r} name the same model")
        models[key] = _section(entry, f"models.{name}", base, source)
        origin[key] = str(name)
    return BatchConfig(defaults=defaults, models=models, source=source)


def _section(entry: Any, where: str, base: Path, source: str) -> dict[str, Any]:
    if entry is None:
        return {}
    if not isinstance(entry, dict):
        raise BatchError(f"{source}: {where}: expected a mapping of settings, got {_describe(entry)}")
    settings: dict[str, Any] = {}
    for key, value in entry.items():
        if key not in CONFIG_KEYS:
            raise BatchError(f"{source}: {where}: unknown key {key!r} (known: {', '.join(CONFIG_KEYS)})")
        settings[key] = _check_value(key, value, f"{where}.{key}", base, source)
    return settings


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_value(key: str, value: Any, where: str, base: Path, source: str) -> Any:
    def bad() -> BatchError:
        return BatchError(f"{source}: {where}: expected {CONFIG_KEYS[key]}, got {_describe(value)}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if key in ("skip", "per_layer", "sweep"):
        if not isinstance(value, bool):
            raise bad()
        return value
    if key == "tolerance":
        if not is_number(value) or value < 0:
            raise bad()
        return float(value)
    if key in ("samples", "eval_limit", "eval_batch_size"):
        if not is_int(value) or value < 1:
            raise bad()
        return value
    if key == "timeout":
        if value is None:
            return None
        if not is_number(value) or value <= 0:
            raise bad()
        return float(value)
    if key == "input_shapes":
        if not isinstance(value, dict):
            raise bad()
        shapes: dict[str, list[int]] = {}
        for name, dims in value.items():
            if not isinstance(name, str) or not name:
                raise BatchError(f"{source}: {where}: input names must be strings, got {_describe(name)}")
            if not isinstance(dims, list) or not all(is_int(d) and d >= 1 for d in dims):
                raise BatchError(f"{source}: {where}.{name}: expected a list of positive integers, "
                                 f"got {_describe(dims)}")
            shapes[name] = list(dims)
        return shapes
    if key == "formats":
        from ..quantization.integer import FORMATS

        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v in FORMATS for v in value):
            raise bad()
        return tuple(f for f in FORMATS if f in value)
    if key == "calibration":
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise bad()
        path = (base / value).absolute()
        if not path.exists():
            raise BatchError(f"{source}: {where}: calibration data {path} does not exist")
        return str(path)
    if key == "dataset":
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise bad()
        path = (base / value).absolute()
        if not path.exists():
            raise BatchError(f"{source}: {where}: dataset {path} does not exist")
        return str(path)
    if key == "task":
        from ..evaluation.task import PRESETS, load_task_config

        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise bad()
        if value in PRESETS:
            return value
        path = (base / value).absolute()
        try:
            load_task_config(path)  # every key checked now, not after the models have run
        except EvaluationError as exc:
            raise BatchError(f"{source}: {where}: {exc}") from None
        return str(path)
    if key == "inputs":
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise bad()
        path = (base / value).absolute()
        if path.suffix.lower() not in (".npy", ".npz"):
            raise BatchError(f"{source}: {where}: {value!r} is not a .npy or .npz file")
        if not path.is_file():
            raise BatchError(f"{source}: {where}: inputs file {path} does not exist")
        return str(path)
    raise bad()  # pragma: no cover - every key of CONFIG_KEYS is handled above

