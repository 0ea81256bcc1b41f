"""Many models at once: ``onnx2fx batch MODELS_DIR -o OUTPUT``.

Every ``.onnx`` file under the models folder (searched recursively) gets the output folder
``OUTPUT/<relative path without .onnx>/`` with what :func:`onnx2fx.pipeline.run_model` writes,
plus ``batch.json`` (the options it was produced with) and ``worker.log`` (what the worker
printed, when it printed anything).

Isolation: each model runs in its own process (``spawn``), at most ``jobs`` at a time. A worker
that dies (segfault, out-of-memory kill, ``os._exit``) or runs past its timeout is recorded as
*crashed* with the reason and does not disturb the others.

Atomicity: a worker writes into a staging folder beside the final one
(``OUTPUT/a/.b.partial-XXXX/b``); the parent moves it into place once it is complete, replacing
the older folder only then. An interrupted run therefore leaves either the previous complete
folder or none, plus a ``.partial-`` folder that the next run removes first.

Resume: a model whose folder holds a report for the same file (sha256), the same onnx2fx version
and the same options is *up to date* and not run again (unless ``force``); crashed models are
always retried. Their recorded outcome still counts: a model that failed before fails the batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as _dt
import faulthandler
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from .errors import BatchError
from .pipeline import PipelineOptions, report_passed, run_model
from .reports import file_sha256, new_report, regenerate, write_atomic, write_report

if TYPE_CHECKING:
    from rich.console import Console

SUMMARY_SCHEMA_VERSION = "1.0"
SUMMARY_SCHEMA_PATH = Path(__file__).parent / "reports" / "summary.schema.json"
STAGING_MARK = ".partial-"
LOCK_NAME = ".onnx2fx-batch.lock"
STATUSES = ("ok", "failed", "crashed", "skipped", "up-to-date")
BATCH_RECORD_VERSION = 1

__all__ = [
    "BatchConfig",
    "BatchSummary",
    "ModelResult",
    "WorkerTask",
    "find_models",
    "load_config",
    "parse_config",
    "quantization_results",
    "regenerate_folder",
    "remove_leftovers",
    "render_summary_markdown",
    "run_batch",
    "run_worker",
    "summary_schema",
]


def _version() -> str:
    from . import __version__

    return __version__


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ================================================================================== config
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
    if key == "samples":
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
        from .quantization.integer import FORMATS

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


# ================================================================================== models
def find_models(models_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Paths (relative, ``/``-separated, sorted) of every ``.onnx`` file under ``models_dir``.

    When ``output_dir`` lies inside ``models_dir`` its files are not models; staging folders are
    skipped everywhere.
    """
    models_dir = Path(models_dir)
    root = models_dir.resolve()
    prune: Path | None = None
    if output_dir is not None:
        out = Path(output_dir).resolve()
        if out != root and out.is_relative_to(root):
            prune = out
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(models_dir):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not _is_staging(d)
                             and (prune is None or (here / d).resolve() != prune))
        for name in filenames:
            if name.lower().endswith(".onnx") and not _is_staging(name) and (here / name).is_file():
                found.append((here / name).relative_to(models_dir).as_posix())
    return sorted(found)


def _is_staging(name: str) -> bool:
    return name.startswith(".") and STAGING_MARK in name


def _output_name(rel: str) -> str:
    return rel[:-5] if rel.lower().endswith(".onnx") else rel


def _check_output_names(rels: Sequence[str]) -> None:
    owners: dict[str, str] = {}
    for rel in rels:
        out = _output_name(rel)
        if not out or out.endswith("/") or out.rsplit("/", 1)[-1] in ("", ".", ".."):
            raise BatchError(f"model {rel!r} has no usable name for its output folder")
        if out in owners:
            raise BatchError(f"models {owners[out]!r} and {rel!r} would share the output folder {out!r}")
        owners[out] = rel
    for out, rel in owners.items():
        parts = out.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in owners:
                raise BatchError(f"the output folder of {rel!r} ({out!r}) would lie inside the output folder of "
                                 f"{owners[parent]!r}; rename one of them")


def remove_leftovers(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete staging folders (and half-written summary files) an interrupted run left behind."""
    output_dir = Path(output_dir)
    removed: list[Path] = []
    if not output_dir.is_dir():
        return removed
    for dirpath, dirnames, _ in os.walk(output_dir):
        for name in list(dirnames):
            if _is_staging(name):
                shutil.rmtree(Path(dirpath) / name, ignore_errors=True)
                removed.append(Path(dirpath) / name)
                dirnames.remove(name)
    for item in output_dir.iterdir():
        if item.is_file() and item.name.startswith((".summary.json.", ".summary.md.")):
            item.unlink(missing_ok=True)
            removed.append(item)
    return removed


# ================================================================================== quantization
def quantization_results(ptq: bool, qft: bool) -> dict[str, dict[str, Any] | None]:
    """The ``quantization`` section for a model whose quantization stages did not run (skipped,
    crashed, or not converted): each requested stage is recorded as requested and not run."""

    def not_run(what: str) -> dict[str, Any]:
        return {"requested": True, "status": "not_run", "message": f"{what} was requested but did not run"}

    return {"ptq": not_run("post-training quantization (PTQ)") if ptq else None,
            "qft": not_run("quantization-aware fine-tuning (QFT)") if qft else None}


# ================================================================================== worker
@dataclass
class WorkerTask:
    """What one worker process is asked to do (sent to the process, so it must pickle)."""

    model_path: str
    out_dir: str  # the model folder to create; it lies inside the staging folder
    options: PipelineOptions
    ptq: bool = False
    qft: bool = False
    threads: int | None = None  # torch threads in the worker, so parallel workers do not oversubscribe


Worker = Callable[[WorkerTask], None]


def run_worker(task: WorkerTask) -> None:
    """The default worker: the whole pipeline for one model, then the quantization record."""
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    out = Path(task.out_dir)
    report = run_model(Path(task.model_path), out, task.options)
    quantization = quantization_results(task.ptq, task.qft)
    if task.ptq and report["conversion"]["status"] == "ok":
        quantization["ptq"] = run_ptq(out, task.options)
    if task.qft and report["conversion"]["status"] == "ok":
        ptq_ok = (quantization.get("ptq") or {}).get("status") == "ok"
        quantization["qft"] = run_qft(out, task.options, from_ptq=out / "ptq" if ptq_ok else None)
    if report.get("quantization") != quantization:
        report["quantization"] = quantization
        write_report(report, out)


def run_qft(model_folder: Path, options: PipelineOptions, from_ptq: Path | None) -> dict[str, Any]:
    """One epoch of QFT into ``<folder>/qft``, distilling from the float model on the config's
    ``calibration`` data (unlabeled). Without data it is skipped: fine-tuning on random inputs
    would only teach the model noise."""
    if options.calibration is None:
        return {"requested": True, "status": "skipped",
                "message": "QFT needs training data: set `calibration` for this model in the batch config"}
    from .quantization import qft

    try:
        result = qft(model_folder / "model_full.pt", options.calibration, output_dir=model_folder / "qft",
                     from_ptq=from_ptq, input_shapes=dict(options.input_shapes) or None, seed=options.seed,
                     progress=False, device="cpu", formats=options.formats)
    except Exception as exc:
        return {"requested": True, "status": "failed", "error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"requested": True, "status": "ok", "folder": "qft", **result.report}


def run_ptq(model_folder: Path, options: PipelineOptions) -> dict[str, Any]:
    """PTQ of a converted model folder into ``<folder>/ptq``; the report's ``quantization.ptq``.

    Without calibration data in the config, a batch calibrates on random data: the result says
    so in its warnings, because ranges from random inputs rarely match real ones.
    """
    from .quantization import ptq

    try:
        result = ptq(model_folder / "model_full.pt", options.calibration, output_dir=model_folder / "ptq",
                     input_shapes=dict(options.input_shapes) or None, random_calibration=options.calibration is None,
                     seed=options.seed, progress=False, formats=options.formats)
    except Exception as exc:
        return {"requested": True, "status": "failed", "error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"requested": True, "status": "ok", "folder": "ptq", **result.report}


def _worker_main(worker: Worker, task: WorkerTask, log_path: str, error_path: str, parent_pid: int) -> None:
    """Entry point of a worker process: isolate it, capture its output, run ``worker``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt stops
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # its own process group, so a timeout also kills what it started
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # die with the parent (PR_SET_PDEATHSIG = 1)
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(3)  # the parent is already gone
    with open(log_path, "ab", buffering=0) as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    faulthandler.enable()  # a native crash leaves its Python stack in worker.log
    try:
        worker(task)
    except BaseException as exc:  # noqa: B036 - everything the worker raises is a result to record
        traceback.print_exc()
        with contextlib.suppress(Exception):
            Path(error_path).write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()


# ================================================================================== results
@dataclass
class ModelResult:
    """One line of the summary."""

    path: str  # relative to the models folder
    output: str  # relative to the output folder
    status: str  # one of STATUSES
    passed: bool | None = None  # None: not run (skipped by config)
    relative_error: float | None = None  # percent; None when not measured or not finite
    conversion_seconds: float | None = None
    seconds: float | None = None  # worker wall time in this run
    error: dict[str, str] | None = None
    unsupported_ops: list[str] = field(default_factory=list)
    quantization: dict[str, Any] = field(default_factory=lambda: {"ptq": None, "qft": None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BatchSummary:
    """What :func:`run_batch` did; ``to_dict()`` is the content of ``summary.json``."""

    models_dir: str
    output_dir: str
    results: list[ModelResult]
    seconds: float = 0.0
    jobs: int = 1
    ptq: bool = False
    qft: bool = False
    warnings: list[str] = field(default_factory=list)
    removed_leftovers: list[str] = field(default_factory=list)
    generated_at: str = field(default_factory=_now)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            counts[result.status] += 1
        return counts

    @property
    def passed(self) -> bool:
        """No model failed or crashed, in this run or (for up-to-date models) in the run that made it."""
        return all(r.passed is not False for r in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "tool": {"name": "onnx2fx", "version": _version()},
            "generated_at": self.generated_at,
            "models_dir": self.models_dir,
            "output_dir": self.output_dir,
            "jobs": self.jobs,
            "seconds": round(self.seconds, 3),
            "ptq": self.ptq,
            "qft": self.qft,
            "passed": self.passed,
            "counts": self.counts,
            "warnings": list(self.warnings),
            "models": [r.to_dict() for r in self.results],
        }


def summary_schema() -> dict[str, Any]:
    return json.loads(SUMMARY_SCHEMA_PATH.read_text())


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _result_from_report(rel: str, out: str, report: Mapping[str, Any], status: str | None = None,
                        seconds: float | None = None) -> ModelResult:
    conversion = report.get("conversion") or {}
    accuracy = report.get("accuracy") or {}
    passed = report_passed(report)
    error = conversion.get("error") or accuracy.get("error")
    if error is None and not passed and accuracy:
        error = {"type": "ToleranceExceeded",
                 "message": f"relative error {accuracy.get('relative_error', float('nan')):.3g} % exceeds the "
                            f"tolerance of {accuracy.get('tolerance_percent')} %"}
    return ModelResult(
        path=rel, output=out, status=status or ("ok" if passed else "failed"), passed=passed,
        relative_error=_finite(accuracy.get("relative_error")), conversion_seconds=_finite(conversion.get("seconds")),
        seconds=None if seconds is None else round(seconds, 3),
        error=None if error is None else {"type": str(error.get("type", "")), "message": str(error.get("message", ""))},
        unsupported_ops=list(conversion.get("unsupported_ops") or []),
        quantization=dict(report.get("quantization") or {"ptq": None, "qft": None}))


def _fallback_report(model_path: Path, error: dict[str, str], quantization: dict[str, Any]) -> dict[str, Any]:
    """The report of a model whose worker produced none (it crashed, or raised outside a stage)."""
    try:
        report = new_report(model_path)
    except OSError:  # the model file went away meanwhile
        report = {"schema_version": "1.0", "tool": {"name": "onnx2fx", "version": _version()}, "generated_at": _now(),
                  "model": {"name": model_path.stem, "path": str(model_path), "sha256": "0" * 64, "size_bytes": 0,
                            "opset": None, "ir_version": None, "producer": None},
                  "conversion": {}, "accuracy": None, "traceability": None, "quantization": {}}
    report["conversion"] = {"status": "failed", "error": dict(error), "seconds": 0.0}
    report["quantization"] = quantization
    return report


# ================================================================================== the run
@dataclass
class _Job:
    rel: str
    out: str
    model_path: Path
    final: Path
    options: PipelineOptions
    fingerprint: dict[str, Any]
    timeout: float | None
    staging: Path | None = None
    process: Any = None
    started: float = 0.0

    @property
    def built(self) -> Path:
        assert self.staging is not None
        return self.staging / self.final.name


def _fingerprint(options: PipelineOptions, ptq: bool, qft: bool, hashes: dict[str, str]) -> dict[str, Any]:
    """The options a model folder was produced with, as recorded in its ``batch.json``."""
    record = dataclasses.asdict(options)
    record["input_shapes"] = {k: [int(d) for d in v] for k, v in sorted(dict(options.input_shapes).items())}
    if options.inputs:  # the content matters, not where the file lies
        path = str(Path(options.inputs).absolute())
        if path not in hashes:
            hashes[path] = file_sha256(Path(path))
        record["inputs"] = {"name": Path(path).name, "sha256": hashes[path]}
    if tuple(options.formats) == ("qdq",):  # the default: folders written before the option keep their record
        del record["formats"]
    record.update(ptq=ptq, qft=qft)
    return json.loads(json.dumps(record))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _up_to_date(final: Path, sha256: str, fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The saved report when ``final`` already holds this model's result for these options."""
    report = _read_json(final / "report.json")
    record = _read_json(final / "batch.json")
    if not isinstance(report, dict) or not isinstance(record, dict):
        return None
    try:
        same = (report["model"]["sha256"] == sha256 and report["tool"]["version"] == _version()
                and record.get("options") == fingerprint and record.get("outcome") in ("ok", "failed"))
    except (KeyError, TypeError):
        return None
    return report if same else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _kill(process: Any) -> None:
    """Kill a worker and its process group (what it started), then reap it."""
    with contextlib.suppress(OSError, AttributeError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(OSError, ValueError):
        process.kill()
    process.join(timeout=30)


def _install(built: Path, final: Path, staging: Path) -> None:
    """Move a complete model folder into place; the older one is moved away only now."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() or final.is_symlink():
        os.replace(final, staging / ".previous")
    os.replace(built, final)
    shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _output_lock(output_dir: Path) -> Iterator[None]:
    """One batch at a time per output folder (each removes the other's staging folders)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(output_dir / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchError(f"another onnx2fx batch is writing to {output_dir}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``kill PID`` cleans up like Ctrl-C does (workers stopped, staging folders removed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"received {_signal_name(signum)}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class _Display:
    """Live progress on ``console`` (nothing when it is ``None``)."""

    def __init__(self, console: Console | None, total: int) -> None:
        self.console = console
        self.counts = dict.fromkeys(STATUSES, 0)
        self.failed_before = 0
        self.running: list[str] = []
        self.progress: Any = None
        if console is None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[counts]}"),
                                 TextColumn("[dim]{task.fields[running]}"), console=console)
        self.task = self.progress.add_task("batch", total=total, counts=self._counts(), running="")

    def __enter__(self) -> _Display:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _counts(self) -> str:
        c = self.counts
        passed = c["ok"] + c["up-to-date"] - self.failed_before
        return (f"[green]{passed} passed[/] [red]{c['failed'] + self.failed_before} failed[/] "
                f"[magenta]{c['crashed']} crashed[/] {c['skipped']} skipped")

    def _update(self, advance: int = 0) -> None:
        if self.progress is not None:
            running = ", ".join(self.running[:4]) + (f" +{len(self.running) - 4}" if len(self.running) > 4 else "")
            self.progress.update(self.task, advance=advance, counts=self._counts(),
                                 running=f"running: {escape(running)}" if running else "")

    def started(self, rel: str) -> None:
        self.running.append(rel)
        self._update()

    def finished(self, result: ModelResult) -> None:
        if result.path in self.running:
            self.running.remove(result.path)
        self.counts[result.status] += 1
        if result.status == "up-to-date" and result.passed is False:
            self.failed_before += 1
        if self.progress is not None and result.status not in ("up-to-date", "skipped"):
            style = {"ok": "green", "failed": "red", "crashed": "magenta"}[result.status]
            detail = f": {result.error['type']}: {result.error['message']}" if result.error else ""
            if len(detail) > 160:
                detail = detail[:157] + "..."
            self.progress.console.print(f"[{style}]{result.status:>7}[/] {escape(result.path + detail)}",
                                        highlight=False)
        self._update(advance=1)


def run_batch(
    models_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    options: PipelineOptions | None = None,
    config: BatchConfig | str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    force: bool = False,
    ptq: bool = False,
    qft: bool = False,
    *,
    timeout: float | None = None,
    worker: Worker | None = None,
    console: Console | None = None,
) -> BatchSummary:
    """Convert, validate and report every ``.onnx`` under ``models_dir`` into ``output_dir``.

    ``options`` are the base pipeline options; the config's ``defaults`` and then its per-model
    entries override them. ``timeout`` (seconds) is the default per-model limit. ``worker`` runs
    inside each worker process (default :func:`run_worker`; it must be a module-level function).
    ``console``: show live progress there. Writes ``summary.json`` and ``summary.md`` and returns
    the summary; raises :class:`BatchError`, ``FileNotFoundError`` or ``NotADirectoryError`` for
    bad input before any model runs.
    """
    started_at = time.monotonic()
    models_dir, output_dir = Path(models_dir), Path(output_dir)
    if not models_dir.exists():
        raise FileNotFoundError(f"models folder {models_dir} does not exist")
    if not models_dir.is_dir():
        raise NotADirectoryError(f"{models_dir} is not a folder")
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output path {output_dir} exists and is not a folder")
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    config = config or BatchConfig()
    base = options or PipelineOptions()
    if jobs is not None and jobs < 1:
        raise BatchError(f"jobs must be at least 1, got {jobs}")
    if timeout is not None and timeout <= 0:
        raise BatchError(f"timeout must be positive, got {timeout}")
    worker = worker or run_worker

    rels = find_models(models_dir, output_dir)
    _check_output_names(rels)
    warnings = [f"config entry {k!r} matches no model under {models_dir}" for k in config.unmatched(rels)]
    if not rels:
        warnings.append(f"no .onnx files under {models_dir}")

    with _output_lock(output_dir), _sigterm_as_interrupt():
        removed = remove_leftovers(output_dir)
        results: dict[str, ModelResult] = {}
        to_run: list[_Job] = []
        hashes: dict[str, str] = {}
        quantization = quantization_results(ptq, qft)
        for rel in rels:
            settings = config.settings_for(rel)
            out = _output_name(rel)
            if settings.get("skip"):
                results[rel] = ModelResult(path=rel, output=out, status="skipped", quantization=quantization)
                continue
            fields = {k: settings[k] for k in ("input_shapes", "tolerance", "samples", "inputs", "per_layer",
                                                "sweep", "calibration", "formats") if k in settings}
            job_options = dataclasses.replace(base, **fields)
            job = _Job(rel=rel, out=out, model_path=models_dir / rel, final=output_dir / out, options=job_options,
                       fingerprint=_fingerprint(job_options, ptq, qft, hashes),
                       timeout=settings.get("timeout", timeout))
            if not force:
                try:
                    sha256 = file_sha256(job.model_path)
                except OSError:
                    sha256 = ""
                report = _up_to_date(job.final, sha256, job.fingerprint) if sha256 else None
                if report is not None:
                    results[rel] = _result_from_report(rel, out, report, status="up-to-date")
                    continue
            to_run.append(job)

        workers = max(1, min(jobs or _cpu_count(), len(to_run) or 1))
        threads = max(1, _cpu_count() // workers)
        with _Display(console, len(rels)) as display:
            for rel in rels:
                if rel in results:
                    display.finished(results[rel])
            for result in _run_jobs(to_run, workers, worker, ptq, qft, threads, display):
                results[result.path] = result

    summary = BatchSummary(models_dir=str(models_dir), output_dir=str(output_dir),
                           results=[results[rel] for rel in rels], jobs=workers, ptq=ptq, qft=qft,
                           warnings=warnings, removed_leftovers=[str(p) for p in removed])
    summary.seconds = time.monotonic() - started_at
    write_summary(summary.to_dict(), output_dir)
    return summary


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _run_jobs(jobs: list[_Job], parallel: int, worker: Worker, ptq: bool, qft: bool, threads: int,
              display: _Display) -> list[ModelResult]:
    """Run ``jobs`` in worker processes, at most ``parallel`` at a time; results in finishing order."""
    context = multiprocessing.get_context("spawn")
    pending = deque(jobs)
    running: list[_Job] = []
    results: list[ModelResult] = []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.popleft()
                _start(job, context, worker, ptq, qft, threads)
                running.append(job)
                display.started(job.rel)
            deadlines = [j.started + j.timeout for j in running if j.timeout is not None]
            wait = min([0.5] + [max(0.0, d - time.monotonic()) for d in deadlines])
            ready = set(multiprocessing.connection.wait([j.process.sentinel for j in running], timeout=wait))
            now = time.monotonic()
            for job in list(running):
                if job.process.sentinel in ready:
                    _kill(job.process)  # it has exited: this reaps it and stops anything it left running
                    result = _collect(job, ptq, qft, timed_out=False)
                elif job.timeout is not None and now - job.started > job.timeout:
                    _kill(job.process)
                    result = _collect(job, ptq, qft, timed_out=True)
                else:
                    continue
                running.remove(job)
                results.append(result)
                display.finished(result)
    finally:  # interrupted (Ctrl-C, SIGTERM) or failed: stop the workers, drop their unfinished folders
        for job in running:
            _kill(job.process)
            if job.staging is not None:
                shutil.rmtree(job.staging, ignore_errors=True)
    return results


def _start(job: _Job, context: Any, worker: Worker, ptq: bool, qft: bool, threads: int) -> None:
    job.final.parent.mkdir(parents=True, exist_ok=True)
    job.staging = Path(tempfile.mkdtemp(prefix=f".{job.final.name}{STAGING_MARK}", dir=job.final.parent))
    task = WorkerTask(model_path=str(job.model_path), out_dir=str(job.built), options=job.options, ptq=ptq, qft=qft,
                      threads=threads)
    job.process = context.Process(
        target=_worker_main, name=f"onnx2fx-batch {job.rel}",
        args=(worker, task, str(job.staging / "worker.log"), str(job.staging / "error.json"), os.getpid()))
    try:
        job.process.start()
    except BaseException:
        shutil.rmtree(job.staging, ignore_errors=True)
        raise
    job.started = time.monotonic()


def _collect(job: _Job, ptq: bool, qft: bool, timed_out: bool) -> ModelResult:
    """Turn a finished (or killed) worker's staging folder into the final model folder."""
    assert job.staging is not None
    seconds = time.monotonic() - job.started
    code = job.process.exitcode
    built = job.built
    report: dict[str, Any] | None = None
    crash: str | None = None
    error: dict[str, str] | None = None
    if timed_out:
        crash = f"worker exceeded {job.timeout:g} s"
    elif code == 0 and (built / "report.json").is_file():
        report = _read_json(built / "report.json")
        if not isinstance(report, dict):
            crash, report = "worker wrote an unreadable report.json", None
    elif isinstance(raised := _read_json(job.staging / "error.json"), dict):
        error = {"type": str(raised.get("type", "Exception")), "message": str(raised.get("message", ""))}
    elif code is not None and code < 0:
        crash = f"worker crashed with signal {_signal_name(-code)}"
        if -code == signal.SIGKILL:
            crash += " (killed from outside, often by the out-of-memory killer)"
    elif code:
        crash = f"worker exited with code {code}"
    else:
        crash = "worker exited without writing report.json"
    if report is None:
        shutil.rmtree(built, ignore_errors=True)
        failure = error or {"type": "WorkerTimeout" if timed_out else "WorkerCrashed", "message": crash or ""}
        report = _fallback_report(job.model_path, failure, quantization_results(ptq, qft))
        write_report(report, built)
    log = job.staging / "worker.log"
    if log.is_file() and log.stat().st_size:
        os.replace(log, built / "worker.log")
    result = _result_from_report(job.rel, job.out, report, status="crashed" if crash else None, seconds=seconds)
    record = {"format_version": BATCH_RECORD_VERSION, "model": job.rel, "tool_version": _version(),
              "sha256": report["model"]["sha256"], "options": job.fingerprint, "outcome": result.status,
              "error": result.error, "seconds": round(seconds, 3), "finished_at": _now()}
    write_atomic(built / "batch.json", json.dumps(record, indent=2) + "\n")
    _install(built, job.final, job.staging)
    return result


# ================================================================================== summary files
def write_summary(summary: Mapping[str, Any], output_dir: Path) -> None:
    write_atomic(output_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    write_atomic(output_dir / "summary.md", render_summary_markdown(summary))


def render_summary_markdown(summary: Mapping[str, Any]) -> str:
    counts = summary["counts"]
    lines = ["# Batch summary", "",
             f"onnx2fx {summary['tool']['version']}, {summary['generated_at']}: {len(summary['models'])} models "
             f"from `{summary['models_dir']}` in {summary['seconds']:.1f} s with {summary['jobs']} workers.", "",
             f"**{'Passed' if summary['passed'] else 'FAILED'}**: " + ", ".join(
                 f"{counts.get(s, 0)} {s}" for s in STATUSES) + ".", ""]
    if summary.get("ptq"):
        lines += ["PTQ requested: each converted model's quantized results are in its `ptq/` folder.", ""]
    if summary.get("qft"):
        lines += ["QFT requested: fine-tuned results are in each model's `qft/` folder (models with "
                  "`calibration` data in the config; others record why they were skipped).", ""]
    for warning in summary.get("warnings", []):
        lines.append(f"- warning: {warning}")
    if summary.get("warnings"):
        lines.append("")
    lines += ["| model | status | passed | rel. error % | conversion s | error |", "|---|---|---|---|---|---|"]
    for m in summary["models"]:
        name = f"[{m['path']}]({m['output']}/report.md)" if m["status"] != "skipped" else m["path"]
        passed = {True: "yes", False: "no", None: "—"}[m["passed"]]
        rel = "—" if m["relative_error"] is None else f"{m['relative_error']:.3g}"
        conv = "—" if m["conversion_seconds"] is None else f"{m['conversion_seconds']:.2f}"
        error = "" if not m["error"] else f"`{m['error']['type']}`: {m['error']['message']}"
        error = error.replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {m['status']} | {passed} | {rel} | {conv} | {error} |")
    return "\n".join(lines) + "\n"


def regenerate_folder(folder: str | os.PathLike[str]) -> list[Path]:
    """Re-render reports from their JSON: one model folder (``report.json``), or a batch output
    folder (``summary.json``: ``summary.md`` and every model folder's report). Returns the files
    written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise (NotADirectoryError if folder.exists() else FileNotFoundError)(f"{folder} is not a folder")
    if (folder / "report.json").is_file():
        return [_regenerate_one(folder)]
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{folder} has neither report.json (a model folder) nor summary.json "
                                "(a batch output folder)")
    summary = _read_json(summary_path)
    if not isinstance(summary, dict):
        raise BatchError(f"{summary_path} is not valid JSON")
    written: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_staging(d))
        if "report.json" in filenames:
            written.append(_regenerate_one(Path(dirpath)))
    try:
        text = render_summary_markdown(summary)
    except (KeyError, TypeError, ValueError) as exc:
        raise BatchError(f"{summary_path} is not an onnx2fx batch summary ({type(exc).__name__}: {exc})") from None
    write_atomic(folder / "summary.md", text)
    return written + [folder / "summary.md"]


def _regenerate_one(folder: Path) -> Path:
    try:
        regenerate(folder)
    except (KeyError, TypeError, ValueError) as exc:
        raise BatchError(f"{folder / 'report.json'} is not a valid onnx2fx report ({type(exc).__name__}: {exc})") \
            from None
    return folder / "report.md"
