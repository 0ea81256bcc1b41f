"""Run one corpus file the way a user would: convert once, then at every size compare with
onnxruntime, re-trace with ``torch.fx.symbolic_trace``, and ``torch.export`` with the dimensions
that vary across the sizes marked dynamic. Shared by the tests and the benchmark.

Every failure is kept with its reason, split by where it happened: onnxruntime rejecting an input
size is the model's limit, not ours, and is recorded as such.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.fx

from benchmarks.real_models_corpus.entries import CorpusFile
from onnx2fx import OnnxToFxConverter

# The gate for float32 outputs, in percent of each output's largest magnitude.
TOLERANCE_PERCENT = 1e-3


def relative_error_percent(reference: np.ndarray, produced: np.ndarray) -> float:
    """``max|produced - reference| / max|reference| * 100`` (the project's definition)."""
    reference = np.asarray(reference, dtype=np.float64)
    produced = np.asarray(produced, dtype=np.float64)
    if reference.shape != produced.shape:
        raise AssertionError(f"shape {list(produced.shape)} != onnxruntime's {list(reference.shape)}")
    if reference.size == 0:
        return 0.0
    diff = float(np.abs(reference - produced).max())
    scale = float(np.abs(reference).max())
    return 0.0 if diff == 0 else diff / scale * 100 if scale else float("inf")


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (initializers listed as inputs by old exporters excluded)."""
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def make_feeds(entry: CorpusFile, model: onnx.ModelProto, sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """One size case's inputs, in the model's input order."""
    names = [v.name for v in graph_inputs(model)]
    missing = set(names) ^ set(entry.inputs)
    if missing:
        raise KeyError(f"{entry.key}: recipes and model inputs differ on {sorted(missing)}")
    return {name: entry.inputs[name].make(sizes) for name in names}


def ort_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # a model rejecting a size is reported by us, not logged twice
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_torch(module: Callable[..., Any], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        produced = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in feeds.values()])
    produced = list(produced) if isinstance(produced, (tuple, list)) else [produced]
    return [p.detach().float().numpy() if p.is_floating_point() else p.numpy() for p in produced]


def errors_against(expected: Sequence[np.ndarray], produced: Sequence[np.ndarray],
                   names: Sequence[str]) -> dict[str, float]:
    if len(expected) != len(produced):
        raise AssertionError(f"{len(produced)} outputs, onnxruntime has {len(expected)}")
    return {name: relative_error_percent(e, p) for name, e, p in zip(names, expected, produced)}


def varying_dims(feeds_per_size: Sequence[Mapping[str, np.ndarray]]) -> dict[str, dict[int, str]]:
    """Input axes whose size differs between the size cases: what torch.export must keep dynamic."""
    first = feeds_per_size[0]
    dims: dict[str, dict[int, str]] = {}
    for name, array in first.items():
        for axis in range(array.ndim):
            if any(f[name].shape[axis] != array.shape[axis] for f in feeds_per_size[1:]):
                dims.setdefault(name, {})[axis] = f"{name}_{axis}"
    return dims


def export_program(gm: torch.fx.GraphModule, feeds: Mapping[str, np.ndarray],
                   dims: Mapping[str, Mapping[int, str]]) -> torch.export.ExportedProgram:
    """``torch.export`` with the varying axes as ``Dim.DYNAMIC`` (an error if tracing specialises one)."""
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in feeds.values())
    shapes = tuple({axis: torch.export.Dim.DYNAMIC for axis in dims.get(name, {})} or None for name in feeds)
    return torch.export.export(gm, args, dynamic_shapes=shapes, strict=False)


def reason(error: BaseException) -> str:
    """One line: the exception type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:400] if text else ''}"


@dataclass
class SizeResult:
    sizes: dict[str, int]
    input_shapes: dict[str, list[int]]
    errors: dict[str, float] = field(default_factory=dict)  # output -> relative error (%), torch vs ort
    status: str = "ok"  # ok | mismatch | torch failed | onnxruntime rejects
    reason: str = ""
    ort_noise: float | None = None  # on a mismatch: onnxruntime unoptimised vs optimised, worst output (%)
    export_error: float | None = None  # worst relative error of the exported program, when exported
    compile_error: float | None = None


@dataclass
class FileResult:
    key: str
    converted: bool = False
    conversion_error: str = ""
    conversion_seconds: float = 0.0
    sizes: list[SizeResult] = field(default_factory=list)
    trace: str = "not run"  # ok | failed: reason
    export: str = "not run"
    compile: str = "not run"
    onnx: str = "not run"  # onnx2fx.export_onnx back to ONNX, run in onnxruntime: ok (exporter) | failed: reason
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _worst(errors: Mapping[str, float]) -> float:
    return max(errors.values(), default=0.0)


def check_file(entry: CorpusFile, path: Path, *, export: bool = True, compile_backend: str | None = None,
               onnx_roundtrip: bool = False, on_size: Callable[[SizeResult], None] | None = None) -> FileResult:
    """Convert ``path`` once and check it at every size of ``entry``; never raises for the
    model's own failures (they are recorded with their reasons)."""
    result = FileResult(entry.key)
    model = onnx.load(str(path), load_external_data=False)
    session = ort_session(path)
    output_names = [o.name for o in session.get_outputs()]
    start = time.perf_counter()
    try:
        gm = OnnxToFxConverter(path).convert()
    except Exception as error:  # noqa: BLE001 - recorded, with its reason, for the report
        result.conversion_error = reason(error)
        return result
    result.converted = True
    result.conversion_seconds = round(time.perf_counter() - start, 3)

    cases: list[tuple[SizeResult, dict[str, np.ndarray], list[np.ndarray]]] = []
    for sizes in entry.sizes:
        feeds = make_feeds(entry, model, sizes)
        size_result = SizeResult(dict(sizes), {k: list(v.shape) for k, v in feeds.items()})
        result.sizes.append(size_result)
        try:
            expected = session.run(None, feeds)
        except Exception as error:  # noqa: BLE001
            size_result.status, size_result.reason = "onnxruntime rejects", reason(error)
            continue
        try:
            size_result.errors = errors_against(expected, run_torch(gm, feeds), output_names)
        except Exception as error:  # noqa: BLE001
            size_result.status, size_result.reason = "torch failed", reason(error)
        else:
            if _worst(size_result.errors) > TOLERANCE_PERCENT:
                size_result.status = "mismatch"
                size_result.reason = f"relative error {_worst(size_result.errors):.3g} % > {TOLERANCE_PERCENT} %"
                size_result.ort_noise = _ort_noise(path, feeds, expected, output_names)
                size_result.reason += f"; onnxruntime itself, unoptimised vs optimised: {size_result.ort_noise:.3g} %"
        cases.append((size_result, feeds, expected))
        if on_size:
            on_size(size_result)
    if not cases:
        return result

    try:
        traced = torch.fx.symbolic_trace(gm)
        for size_result, feeds, expected in cases:
            worst = _worst(errors_against(expected, run_torch(traced, feeds), output_names))
            if worst > TOLERANCE_PERCENT and size_result.status == "ok":
                raise AssertionError(f"re-traced module off by {worst:.3g} % at {size_result.sizes}")
        result.trace = "ok"
    except Exception as error:  # noqa: BLE001
        result.trace = f"failed: {reason(error)}"

    result.seconds["sizes"] = round(time.perf_counter() - start - result.conversion_seconds, 2)
    mark = time.perf_counter()
    if onnx_roundtrip:
        # In a forked copy of this process: once torch.export has traced a module holding an nn.LSTM,
        # a later torch.onnx export (of any module) freezes the sequence length, and a failed dynamo
        # export can leave torch's mode stack broken for every later torch.export in the process.
        result.onnx = _in_fork(lambda: _check_onnx_roundtrip(gm, path, cases, output_names))
        result.seconds["onnx"] = round(time.perf_counter() - mark, 2)
    mark = time.perf_counter()
    if export:
        # Traced at the largest case: torch.export specialises a dimension whose example size is 1.
        example = max((c[1] for c in cases), key=lambda feeds: sum(a.size for a in feeds.values()))
        result.export = _check_variant(cases, output_names, "export_error", lambda: export_program(
            gm, example, varying_dims([c[1] for c in cases])).module())
        result.seconds["export"] = round(time.perf_counter() - mark, 2)
    mark = time.perf_counter()
    if compile_backend:
        torch._dynamo.reset()
        result.compile = _check_variant(cases, output_names, "compile_error",
                                        lambda: torch.compile(gm, backend=compile_backend, dynamic=True))
        result.seconds["compile"] = round(time.perf_counter() - mark, 2)
    return result


def _in_fork(check: Callable[[], str]) -> str:
    """``check()`` in a forked child (copy-on-write: nothing is pickled but the returned text),
    so whatever it does to torch's global state stays there."""
    import os
    import pickle

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, report, and leave without running the parent's exit handlers
        os.close(read)
        try:
            text = check()
        except BaseException as error:  # noqa: BLE001 - every failure is the result
            text = f"failed: {reason(error)}"
        with os.fdopen(write, "wb") as out:
            pickle.dump(text, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as source:
        data = source.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        return f"failed: the round trip's process ended with status {status} before reporting"
    return pickle.loads(data)


def _check_onnx_roundtrip(gm: torch.fx.GraphModule, path: Path,
                          cases: Sequence[tuple[SizeResult, dict[str, np.ndarray], list[np.ndarray]]],
                          output_names: Sequence[str]) -> str:
    """Export the converted module back to ONNX (the source's names and dynamic dimensions, the
    largest case as the example) and compare the file in onnxruntime with the source at every size."""
    import tempfile

    from onnx2fx.export import export_onnx

    example = max((c[1] for c in cases), key=lambda feeds: sum(a.size for a in feeds.values()))
    shapes = {name: list(array.shape) for name, array in example.items()}
    with tempfile.TemporaryDirectory(prefix="onnx2fx-roundtrip-") as folder:
        try:
            exported = export_onnx(gm, Path(folder) / "model.onnx", source=path, input_shapes=shapes,
                                   validate=False)
            session = ort_session(exported.path)
        except Exception as error:  # noqa: BLE001
            return f"failed: {reason(error)}"
        failures = []
        for size_result, feeds, expected in cases:
            try:
                produced = session.run(list(output_names), feeds)
                worst = _worst(errors_against(expected, produced, output_names))
            except Exception as error:  # noqa: BLE001
                failures.append(f"{size_result.sizes}: {reason(error)}")
                continue
            if worst > TOLERANCE_PERCENT and size_result.status == "ok":
                failures.append(f"{size_result.sizes}: relative error {worst:.3g} %")
    return f"ok ({exported.exporter})" if not failures else "failed: " + "; ".join(failures)


def _ort_noise(path: Path, feeds: Mapping[str, np.ndarray], expected: Sequence[np.ndarray],
               output_names: Sequence[str]) -> float:
    """The model's float32 noise floor as onnxruntime shows it: its output with graph optimisations
    off against the default (fused, reordered kernels). A difference of that size is rounding."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    plain = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, dict(feeds))
    return _worst(errors_against(expected, plain, output_names))


def _check_variant(cases: Sequence[tuple[SizeResult, dict[str, np.ndarray], list[np.ndarray]]],
                   output_names: Sequence[str], attribute: str, build: Callable[[], Any]) -> str:
    """Build an exported or compiled variant and compare it with onnxruntime at every size."""
    try:
        variant = build()
    except Exception as error:  # noqa: BLE001
        return f"failed: {reason(error)}"
    failures = []
    for size_result, feeds, expected in cases:
        try:
            worst = _worst(errors_against(expected, run_torch(variant, feeds), output_names))
        except Exception as error:  # noqa: BLE001
            failures.append(f"{size_result.sizes}: {reason(error)}")
            continue
        setattr(size_result, attribute, worst)
        if worst > TOLERANCE_PERCENT:
            failures.append(f"{size_result.sizes}: relative error {worst:.3g} %")
    return "ok" if not failures else "failed: " + "; ".join(failures)


def format_traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))[-2000:]
