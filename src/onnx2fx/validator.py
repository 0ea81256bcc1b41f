"""Numerical validation of a converted model against onnxruntime.

Both run on the same seeded inputs (several sets); each output is compared with:

- ``max_abs_error`` and ``mean_abs_error``;
- ``relative_error`` in percent: ``max|torch - ort| / max|ort| * 100``, the largest error measured
  against the output's own scale. Element-wise ratios are avoided because they explode wherever
  the reference crosses zero;
- ``cosine_similarity`` of the flattened outputs.

A model passes when every output's relative error is within ``tolerance`` (percent), and, with
``sweep=True``, when every dynamic dimension also matches at each size of its sweep
(``size_sweep.py``) where onnxruntime can run the model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ValidationInputError
from .fx_tracer import restore_origins
from .size_sweep import SweepPoint, base_shapes, dynamic_dimensions, shapes_at

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}


@dataclass
class OutputMetrics:
    """Worst case over all input sets for one output."""

    name: str
    shape: list[int]
    max_abs_error: float
    mean_abs_error: float
    relative_error: float  # percent
    cosine_similarity: float
    passed: bool
    note: str = ""
    # Counts of |torch - ort| per decade: [0], (0, 1e-12], (1e-12, 1e-11], ..., (1e1, inf]
    error_histogram: list[int] = field(default_factory=list)


@dataclass
class ValidationMetrics:
    outputs: list[OutputMetrics]
    tolerance: float
    num_samples: int
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    sweep: list[SweepPoint] | None = None  # None: no sweep was asked for

    @property
    def relative_error(self) -> float:
        """Largest relative error (%) over all outputs."""
        return max((o.relative_error for o in self.outputs), default=0.0)

    @property
    def max_abs_error(self) -> float:
        return max((o.max_abs_error for o in self.outputs), default=0.0)

    @property
    def mean_abs_error(self) -> float:
        return max((o.mean_abs_error for o in self.outputs), default=0.0)

    @property
    def cosine_similarity(self) -> float:
        return min((o.cosine_similarity for o in self.outputs), default=1.0)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs) and all(p.ok for p in self.sweep or [])

    def to_dict(self) -> dict[str, Any]:
        record = {
            "passed": self.passed, "tolerance_percent": self.tolerance, "relative_error": self.relative_error,
            "max_abs_error": self.max_abs_error, "mean_abs_error": self.mean_abs_error,
            "cosine_similarity": self.cosine_similarity, "num_samples": self.num_samples,
            "input_shapes": self.input_shapes, "outputs": [asdict(o) for o in self.outputs],
        }
        if self.sweep is not None:
            record["sweep"] = [asdict(p) for p in self.sweep]
        return record


class AccuracyValidator:
    """Compare a converted model with onnxruntime (CPU provider) on the same inputs.

    ``model`` is an ``nn.Module`` / ``GraphModule`` or the path of a saved ``model_full.pt``.
    ``inputs`` gives real data instead of random: a ``.npy`` (single-input models) or ``.npz``
    path, or a mapping input name -> array. ``input_shapes`` fills dynamic dimensions.
    ``ort_optimization`` is onnxruntime's graph optimisation level for the reference run:
    "basic" (default; exact rewrites only) or "all" (includes approximate fusions).
    ``sweep=True`` also runs every dynamic dimension at the sizes of its sweep (one seeded input
    set each) and records each size in ``ValidationMetrics.sweep``.
    """

    def __init__(self, onnx_model: Any, model: Any, tolerance: float = 1.0, num_samples: int = 3,
                 seed: int = 0, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 inputs: str | os.PathLike[str] | Mapping[str, np.ndarray] | None = None,
                 ort_optimization: str = "basic", sweep: bool = False) -> None:
        if sweep and inputs is not None:
            raise ValidationInputError("a size sweep generates its inputs at every size; it cannot use real "
                                       "inputs (leave out the inputs, or the sweep)")
        self.sweep = sweep
        self.onnx_model = onnx_model
        self.model = load_torch_model(model)
        self.tolerance = float(tolerance)
        self.num_samples = num_samples
        self.seed = seed
        self.input_shapes = {k: list(v) for k, v in (input_shapes or {}).items()}
        self.inputs = inputs
        self.ort_optimization = ort_optimization

    def session(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.ort_optimization]
        source = self.onnx_model
        if hasattr(source, "SerializeToString"):
            source = source.SerializeToString()
        elif isinstance(source, os.PathLike):
            source = os.fspath(source)
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    def input_sets(self, session: Any) -> list[dict[str, np.ndarray]]:
        specs = session.get_inputs()
        if self.inputs is not None:
            return [load_inputs(self.inputs, [s.name for s in specs])]
        rng = np.random.default_rng(self.seed)
        return [{s.name: random_input(s, self.input_shapes.get(s.name), rng) for s in specs}
                for _ in range(self.num_samples)]

    def validate(self) -> ValidationMetrics:
        session = self.session()
        names = [o.name for o in session.get_outputs()]
        input_names = [s.name for s in session.get_inputs()]
        worst: dict[str, OutputMetrics] = {}
        sets = self.input_sets(session)
        for feed in sets:
            reference = session.run(None, feed)
            with torch.no_grad():
                produced = self.model(*[torch.from_numpy(np.ascontiguousarray(feed[n])) for n in input_names])
            produced_list = list(produced) if isinstance(produced, (tuple, list)) else [produced]
            if len(produced_list) != len(reference):
                raise ValidationInputError(f"the converted model returns {len(produced_list)} outputs, "
                                           f"onnxruntime {len(reference)}")
            for name, ref, out in zip(names, reference, produced_list):
                metrics = compare(name, np.asarray(ref), out.detach().cpu().numpy() if isinstance(out, torch.Tensor)
                                  else np.asarray(out), self.tolerance)
                if name not in worst or _worse(metrics, worst[name]):
                    worst[name] = metrics
        shapes = {k: list(v.shape) for k, v in sets[0].items()} if sets else {}
        sweep = self.sweep_sizes(session) if self.sweep else None
        return ValidationMetrics([worst[n] for n in names], self.tolerance, len(sets), shapes, sweep)

    def sweep_sizes(self, session: Any) -> list[SweepPoint]:
        """Each dynamic dimension at each size of its sweep but the base size (which ``validate``
        has compared already), the other dimensions at their base sizes."""
        specs = session.get_inputs()
        bases = base_shapes(specs, self.input_shapes)
        names = [o.name for o in session.get_outputs()]
        points = []
        for index, dim in enumerate(dynamic_dimensions(specs, self.input_shapes)):
            for size in dim.sizes():
                if size == dim.base:
                    continue
                shapes = shapes_at(dim, size, bases)
                rng = np.random.default_rng([self.seed, index, size])
                feed = {s.name: random_input(s, shapes[s.name], rng) for s in specs}
                points.append(self._sweep_point(session, names, feed, dim.label, size, shapes))
        return points

    def _sweep_point(self, session: Any, names: list[str], feed: dict[str, np.ndarray], label: str, size: int,
                     shapes: dict[str, list[int]]) -> SweepPoint:
        try:
            reference = session.run(None, feed)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's refusal is the finding
            return SweepPoint(label, size, shapes, "onnxruntime_rejects", note=_first_line(exc))
        try:
            with torch.no_grad():
                produced = self.model(*[torch.from_numpy(np.ascontiguousarray(feed[s])) for s in feed])
        except Exception as exc:  # noqa: BLE001 - onnxruntime ran this size; the converted model must too
            return SweepPoint(label, size, shapes, "error", note=f"{type(exc).__name__}: {_first_line(exc)}")
        produced_list = list(produced) if isinstance(produced, (tuple, list)) else [produced]
        errors, notes = {}, []
        for name, ref, out in zip(names, reference, produced_list):
            m = compare(name, np.asarray(ref), out.detach().cpu().numpy() if isinstance(out, torch.Tensor)
                        else np.asarray(out), self.tolerance)
            errors[name] = m.relative_error
            if m.note:
                notes.append(f"{name}: {m.note}")
        worst = max(errors.values(), default=0.0)
        passed = len(produced_list) == len(reference) and worst <= self.tolerance
        return SweepPoint(label, size, shapes, "passed" if passed else "failed", worst, "; ".join(notes), errors)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _worse(a: OutputMetrics, b: OutputMetrics) -> bool:
    return (not a.passed and b.passed) or a.relative_error > b.relative_error


def compare(name: str, reference: np.ndarray, produced: np.ndarray, tolerance: float) -> OutputMetrics:
    if reference.shape != produced.shape:
        return OutputMetrics(name, list(reference.shape), float("inf"), float("inf"), float("inf"), 0.0, False,
                             f"shape {list(produced.shape)} differs from onnxruntime's {list(reference.shape)}")
    if reference.size == 0:
        return OutputMetrics(name, list(reference.shape), 0.0, 0.0, 0.0, 1.0, True)
    ref = reference.astype(np.float64)
    out = produced.astype(np.float64)
    both_nan = np.isnan(ref) & np.isnan(out)
    ref, out = np.where(both_nan, 0.0, ref), np.where(both_nan, 0.0, out)
    same_inf = np.isinf(ref) & (ref == out)
    ref, out = np.where(same_inf, 0.0, ref), np.where(same_inf, 0.0, out)
    diff = np.abs(ref - out)
    diff = np.where(np.isnan(diff), np.inf, diff)
    max_abs = float(diff.max())
    mean_abs = float(diff.mean())
    scale = float(np.abs(ref).max())
    relative = 0.0 if max_abs == 0.0 else (max_abs / scale * 100.0 if scale > 0 else float("inf"))
    norm = float(np.linalg.norm(ref) * np.linalg.norm(out))
    cosine = 1.0 if norm == 0.0 and max_abs == 0.0 else (float(np.dot(ref.ravel(), out.ravel()) / norm)
                                                          if norm > 0 and np.isfinite(norm) else 0.0)
    return OutputMetrics(name, list(reference.shape), max_abs, mean_abs, relative, cosine, relative <= tolerance,
                         error_histogram=error_histogram(diff))


# Upper edges of the error histogram's bins after the first (exact zeros): 1e-12 ... 1e1, then inf.
HISTOGRAM_EDGES = [0.0] + [10.0 ** e for e in range(-12, 2)] + [float("inf")]


def error_histogram(diff: np.ndarray) -> list[int]:
    """How many elements fall in each decade of absolute error (bin 0 holds exact matches)."""
    counts, _ = np.histogram(diff, bins=[-1.0, *HISTOGRAM_EDGES[1:-1], np.inf])
    exact = int(np.count_nonzero(diff == 0))  # the first bin, [-1, 1e-12), also holds the zeros
    return [exact, int(counts[0]) - exact, *(int(c) for c in counts[1:])]


def random_input(spec: Any, override: Sequence[int] | None, rng: np.random.Generator) -> np.ndarray:
    dtype = _ORT_TYPES.get(spec.type)
    if dtype is None:
        raise ValidationInputError(f"input {spec.name!r} has type {spec.type}, which cannot be generated; "
                                   "pass real inputs")
    shape = [int(d) for d in override] if override is not None else base_shapes([spec], {})[spec.name]
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype is np.bool_:
        return rng.random(shape) < 0.5
    return rng.integers(0, 10, size=shape).astype(dtype)


def load_inputs(source: str | os.PathLike[str] | Mapping[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Real inputs from a mapping, an ``.npz`` (keys = input names) or an ``.npy`` (one input)."""
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ValidationInputError(f"input file {path} does not exist")
        if path.suffix == ".npy":
            if len(names) != 1:
                raise ValidationInputError(f"a .npy file feeds one input, the model has {len(names)}: {names}")
            data = {names[0]: np.load(path, allow_pickle=False)}
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        else:
            raise ValidationInputError(f"input file {path} must be .npy or .npz")
    missing = [n for n in names if n not in data]
    if missing:
        raise ValidationInputError(f"inputs {missing} are missing; given: {sorted(data)}")
    return {n: np.asarray(data[n]) for n in names}


def load_torch_model(model: Any) -> torch.nn.Module:
    """A module from an object or a saved ``model_full.pt`` (a pickled GraphModule)."""
    if isinstance(model, torch.nn.Module):
        return model.eval()
    path = Path(os.fspath(model))
    if not path.is_file():
        raise ValidationInputError(f"converted model {path} does not exist")
    loaded = torch.load(path, weights_only=False, map_location="cpu")
    if not isinstance(loaded, torch.nn.Module):
        raise ValidationInputError(f"{path} holds a {type(loaded).__name__}, not a torch module")
    return restore_origins(loaded).eval()
