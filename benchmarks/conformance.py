"""ONNX backend conformance: every ai.onnx node test case of the installed onnx package, plus the
model folders shipped with it, converted by onnx2fx and compared with the expected outputs.

For each case: ``OnnxToFxConverter(model).convert()``, run the GraphModule on every data set of the
case, compare with the expected outputs as onnx's backend runner does (same shape, same dtype,
``np.testing.assert_allclose`` at the case's rtol/atol, 1e-3/1e-7 unless the case says otherwise),
then check ``torch.fx.symbolic_trace`` of the result. Cases run in worker processes with a per-case
timeout: a case that hangs or crashes its worker is recorded as failed and the worker replaced.

Usage::

    python benchmarks/conformance.py [--jobs 2] [--timeout 120] [-k REGEX] [--no-models]

Writes ``docs/conformance.md`` and ``benchmarks/results/conformance.json`` (not with ``-k``, unless
``--output-json``/``--output-md`` are given). Exclusions live in ``conformance_exclusions.py``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import importlib
import json
import multiprocessing
import multiprocessing.connection
import os
import pkgutil
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conformance_exclusions import EXCLUSIONS, exclusion_reason  # noqa: E402

RESULTS_JSON = ROOT / "benchmarks" / "results" / "conformance.json"
RESULTS_MD = ROOT / "docs" / "conformance.md"
MODEL_KINDS = ("simple", "pytorch-converted", "pytorch-operator", "light")
DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-7
DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class Case:
    """One test case: a model and its data sets (lists of inputs and expected outputs)."""

    name: str
    source: str  # "node" or a model folder kind
    op: str
    model: bytes
    data_sets: list[tuple[list[Any], list[Any]]]
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    timeout: float | None = None  # seconds; the run's per-case limit when None


@dataclass
class CaseResult:
    name: str
    source: str
    op: str
    status: str  # passed | failed | unsupported | excluded
    stage: str = ""  # convert | run | compare | symbolic_trace | timeout | crash
    reason: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    results: list[CaseResult]
    skipped_domains: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def totals(self, source: str | None = None) -> dict[str, Any]:
        rows = [r for r in self.results if source is None or (r.source == "node") == (source == "node")]
        counts = collections.Counter(r.status for r in rows)
        total = len(rows)
        return {"cases": total, **{s: counts.get(s, 0) for s in ("passed", "failed", "unsupported", "excluded")},
                "coverage_percent": round(100.0 * counts.get("passed", 0) / total, 2) if total else 0.0}


# ---------------------------------------------------------------------------------- collecting
_MODULE_CASES: dict[str, list[tuple[Any, str]]] = {}  # onnx test module -> (its cases, class name)


def node_cases(modules: list[str] | None = None) -> tuple[list[Case], dict[str, int]]:
    """The node test cases of onnx (all, or those of the given ``onnx.backend.test.case.node``
    submodules), ai.onnx domain only; also the number left out per other domain."""
    import onnx.backend.test.case.node as node_pkg

    names = modules or sorted(m.name[len(node_pkg.__name__) + 1:] for m in
                              pkgutil.walk_packages(node_pkg.__path__, node_pkg.__name__ + ".") if not m.ispkg)
    cases: list[Case] = []
    skipped: collections.Counter[str] = collections.Counter()
    single_op: dict[str, str] = {}
    pending: list[tuple[Any, str]] = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for module_name in names:
            if module_name not in _MODULE_CASES:  # importing a module registers its cases, once
                start = len(node_pkg._NodeTestCases)
                module = importlib.import_module(f"{node_pkg.__name__}.{module_name}")
                classes = [v.__name__ for v in vars(module).values()
                           if isinstance(v, type) and v.__module__ == module.__name__]
                _MODULE_CASES[module_name] = [(case, classes[0] if classes else module_name)
                                              for case in node_pkg._NodeTestCases[start:]]
            pending += _MODULE_CASES[module_name]
    for case, _ in pending:
        ops = [n.op_type for n in case.model.graph.node if n.op_type != "Constant"]
        if len(set(ops)) == 1:
            single_op[case.name] = ops[0]
    for case, class_name in pending:
        domains = {n.domain for n in case.model.graph.node} - set(DEFAULT_DOMAINS)
        if domains:
            skipped[sorted(domains)[0]] += 1
            continue
        base = re.sub(r"_expanded(_.*)?$", "", case.name)
        op = single_op.get(case.name) or single_op.get(base) or class_name
        data = [([_normalize(a) for a in inputs], [_normalize(a) for a in outputs])
                for inputs, outputs in case.data_sets]
        cases.append(Case(case.name, "node", op, case.model.SerializeToString(), data,
                          case.rtol if case.rtol is not None else DEFAULT_RTOL,
                          case.atol if case.atol is not None else DEFAULT_ATOL))
    return cases, dict(skipped)


def _normalize(item: Any) -> Any:
    """Test data as numpy arrays (some cases store TensorProtos, as onnx's own runner expects)."""
    import onnx
    from onnx import numpy_helper

    if isinstance(item, onnx.TensorProto):
        return numpy_helper.to_array(item)
    if isinstance(item, list):
        return [_normalize(i) for i in item]
    return item


def model_cases(kinds: tuple[str, ...] = MODEL_KINDS) -> list[Case]:
    """The model folders shipped with onnx (``onnx/backend/test/data/<kind>``)."""
    import onnx
    from onnx.backend.test.loader import load_model_tests

    data_dir = Path(onnx.__file__).parent / "backend" / "test" / "data"
    cases: list[Case] = []
    for kind in kinds:
        if kind == "light":  # files, not folders: light_<name>.onnx and light_<name>_output_0.pb
            for path in sorted((data_dir / "light").glob("light_*.onnx")):
                cases.append(_light_case(data_dir, path.stem[len("light_"):]))
            continue
        for test in sorted(load_model_tests(kind=kind), key=lambda t: t.name):
            model = onnx.load(os.path.join(test.model_dir, "model.onnx"))
            data = []
            for folder in sorted(glob.glob(os.path.join(test.model_dir, "test_data_set*"))):
                inputs = [_load_proto(p, model.graph.input[i].type)
                          for i, p in enumerate(_numbered(folder, "input"))]
                outputs = [_load_proto(p, model.graph.output[i].type)
                           for i, p in enumerate(_numbered(folder, "output"))]
                data.append((inputs, outputs))
            op = "/".join(sorted({n.op_type for n in model.graph.node} - {"Constant"})) if kind == "simple" else kind
            cases.append(Case(test.name, kind, op if len(op) < 40 else kind, model.SerializeToString(), data,
                              test.rtol, test.atol))
    return cases


def _light_case(data_dir: Path, name: str) -> Case:
    """A "light" model: real architectures with generated weights; inputs as onnx's runner makes
    them (``arange(n) / n``), expected outputs stored beside the model."""
    import onnx
    from onnx import numpy_helper

    path = data_dir / "light" / f"light_{name}.onnx"
    model = onnx.load(str(path))
    initializers = {t.name for t in model.graph.initializer}
    inputs = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        inputs.append((np.arange(n).reshape(shape) / n).astype(np.float32))
    outputs = []
    for i in range(len(model.graph.output)):
        tensor = onnx.TensorProto()
        tensor.ParseFromString((data_dir / "light" / f"light_{name}_output_{i}.pb").read_bytes())
        outputs.append(numpy_helper.to_array(tensor))
    return Case(f"test_{name}", "light", "light", model.SerializeToString(), [(inputs, outputs)])


def _numbered(folder: str, prefix: str) -> list[str]:
    count = len(glob.glob(os.path.join(folder, f"{prefix}_*.pb")))
    return [os.path.join(folder, f"{prefix}_{i}.pb") for i in range(count)]


def _load_proto(path: str, type_proto: Any) -> Any:
    import onnx
    from onnx import numpy_helper

    data = Path(path).read_bytes()
    kind = type_proto.WhichOneof("value")
    if kind == "sequence_type":
        proto = onnx.SequenceProto()
        proto.ParseFromString(data)
        return numpy_helper.to_list(proto)
    if kind == "optional_type":
        proto = onnx.OptionalProto()
        proto.ParseFromString(data)
        return numpy_helper.to_optional(proto)
    proto = onnx.TensorProto()
    proto.ParseFromString(data)
    return numpy_helper.to_array(proto)


# ---------------------------------------------------------------------------------- running one case
def run_case(case: Case) -> CaseResult:
    """Convert, run, compare and trace one case in this process."""
    import onnx
    import torch

    from onnx2fx import OnnxToFxConverter, UnsupportedOperatorError

    start = time.perf_counter()

    def result(status: str, stage: str = "", reason: str = "") -> CaseResult:
        return CaseResult(case.name, case.source, case.op, status, stage, _one_line(reason),
                          round(time.perf_counter() - start, 3))

    model = onnx.load_from_string(case.model)
    try:
        gm = OnnxToFxConverter(model).convert()
    except UnsupportedOperatorError as exc:
        return result("unsupported", "convert", str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure is a result
        return result("failed", "convert", f"{type(exc).__name__}: {exc}")
    for inputs, expected in case.data_sets:
        try:
            with torch.no_grad():
                produced = gm(*[to_torch(a) for a in inputs])
        except Exception as exc:  # noqa: BLE001
            return result("failed", "run", f"{type(exc).__name__}: {exc}")
        single = len(model.graph.output) == 1  # a single output may itself be a sequence (a list)
        outputs = [produced] if single else list(produced)
        problem = compare(expected, outputs, case.rtol, case.atol, spec_undefined_elements(model, inputs))
        if problem:
            return result("failed", "compare", problem)
    try:
        torch.fx.symbolic_trace(gm)
    except Exception as exc:  # noqa: BLE001
        return result("failed", "symbolic_trace", f"{type(exc).__name__}: {exc}")
    return result("passed")


def to_torch(array: Any) -> Any:
    import torch

    if isinstance(array, list):
        return [to_torch(a) for a in array]
    if array is None:
        return None
    array = np.asarray(array)
    array = array.copy(order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    if array.dtype.name in _SUB_BYTE:  # one element per byte, in torch's sub-byte dtype
        storage = np.int8 if array.dtype.name.startswith("int") else np.uint8
        return torch.from_numpy(array.astype(storage)).view(getattr(torch, array.dtype.name))
    special = _ML_DTYPES.get(array.dtype.name)
    if special is not None:
        bits = array.view(np.uint16 if array.dtype.itemsize == 2 else np.uint8)
        return torch.from_numpy(bits).view(getattr(torch, special))
    return torch.from_numpy(array)


# numpy (ml_dtypes) type name -> torch dtype name, for types numpy itself lacks
_ML_DTYPES = {"bfloat16": "bfloat16", "float8_e4m3fn": "float8_e4m3fn", "float8_e4m3fnuz": "float8_e4m3fnuz",
              "float8_e5m2": "float8_e5m2", "float8_e5m2fnuz": "float8_e5m2fnuz", "float8_e8m0fnu": "float8_e8m0fnu"}


_SUB_BYTE = ("int4", "uint4", "int2", "uint2")


def spec_undefined_elements(model: Any, inputs: list[Any]) -> list[Any]:
    """Per output, a mask of the elements whose value the ONNX specification leaves undefined, or
    ``None``. Cast (and CastLike) from a floating-point type to an integer type is "undefined if out
    of range": the backend data then holds whatever the library that generated it did (ml_dtypes
    0.6 wrapped float -> int4, 0.7 gives 0), so those elements are not compared. What onnx2fx
    produces there (the low bits, as onnxruntime does) is asserted in tests/test_casts.py."""
    from onnx import TensorProto
    from onnx.helper import tensor_dtype_to_np_dtype

    nodes = [n for n in model.graph.node if n.op_type != "Constant"]
    masks: list[Any] = [None] * len(model.graph.output)
    if len(nodes) != 1 or nodes[0].op_type not in ("Cast", "CastLike") or not inputs:
        return masks
    x = inputs[0]
    if not isinstance(x, np.ndarray) or not (x.dtype.kind == "f" or x.dtype.name in _ML_DTYPES):
        return masks
    target = model.graph.output[0].type.tensor_type.elem_type
    sub_byte = {TensorProto.UINT4: (0, 15), TensorProto.INT4: (-8, 7), TensorProto.UINT2: (0, 3),
                TensorProto.INT2: (-2, 1)}
    if target in sub_byte:
        low, high = sub_byte[target]
    elif np.dtype(tensor_dtype_to_np_dtype(target)).kind in "iu":
        info = np.iinfo(tensor_dtype_to_np_dtype(target))
        low, high = int(info.min), int(info.max)
    else:
        return masks
    values = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        truncated = np.trunc(values)
        masks[0] = ~np.isfinite(values) | (truncated < low) | (truncated > high)
    return masks


def compare(expected: list[Any], produced: list[Any], rtol: float, atol: float,
            undefined: list[Any] | None = None) -> str:
    """What differs, as onnx's backend runner checks it; "" when the outputs match. Elements that
    ``undefined`` marks (per output) are not compared."""
    import torch

    if len(produced) != len(expected):
        return f"{len(produced)} outputs, expected {len(expected)}"
    for i, (ref, out) in enumerate(zip(expected, produced)):
        if isinstance(ref, list):
            if not isinstance(out, (list, tuple)):
                return f"output {i}: a {type(out).__name__}, expected a sequence"
            problem = compare(ref, list(out), rtol, atol)
            if problem:
                return f"output {i}: {problem}"
            continue
        if not isinstance(out, torch.Tensor):
            return f"output {i}: a {type(out).__name__}, expected a tensor"
        out = out.detach()
        ref = np.asarray(ref)
        if tuple(out.shape) != ref.shape:
            return f"output {i}: shape {tuple(out.shape)}, expected {ref.shape}"
        torch_name = str(out.dtype).replace("torch.", "")
        expected_name = {"bool_": "bool"}.get(ref.dtype.name, ref.dtype.name)
        if torch_name != expected_name:
            return f"output {i}: dtype {torch_name}, expected {expected_name}"
        tol = rtol
        if ref.dtype.name in _SUB_BYTE:
            storage = torch.int8 if ref.dtype.name.startswith("int") else torch.uint8
            got, want = out.view(storage).numpy(), ref.astype(storage_numpy(ref.dtype.name))
        elif ref.dtype.name in _ML_DTYPES:
            got, want = out.float().numpy(), ref.astype(np.float32)
            tol = max(rtol, 2**-6) if ref.dtype.name == "bfloat16" else rtol
        else:
            got, want = out.numpy(), ref
        mask = undefined[i] if undefined and i < len(undefined) else None
        if mask is not None and mask.shape == got.shape:
            got, want = got[~mask], np.asarray(want)[~mask]
        try:
            np.testing.assert_allclose(got, want, rtol=tol, atol=atol)
        except AssertionError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            detail = "; ".join(line for line in lines if line.startswith(("Mismatched", "Max abs", "Max rel")))
            return f"output {i}: values differ ({detail or lines[-1] if lines else 'mismatch'})"
    return ""


def storage_numpy(name: str) -> Any:
    return np.int8 if name.startswith("int") else np.uint8


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------- worker pool
def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    import torch

    # torch.fx and fake tensors print tracebacks of failing calls; the result carries the message.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    while True:
        try:
            case = conn.recv()
        except EOFError:
            return
        if case is None:
            return
        conn.send(run_case(case))


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.case: Case | None = None
        self.started = 0.0
        self.done = 0

    def send(self, case: Case) -> None:
        self.case, self.started = case, time.monotonic()
        self.conn.send(case)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def run_cases(cases: list[Case], jobs: int = 2, timeout: float = 120.0, progress: bool = True,
              recycle_after: int = 200) -> list[CaseResult]:
    """Run ``cases`` in ``jobs`` worker processes; excluded cases are not run."""
    results: dict[str, CaseResult] = {}
    queue: collections.deque[Case] = collections.deque()
    for case in cases:
        reason = exclusion_reason(case.name)
        if reason:
            results[case.name] = CaseResult(case.name, case.source, case.op, "excluded", reason=reason)
        else:
            queue.append(case)
    ctx = multiprocessing.get_context("spawn")
    workers = [_Worker(ctx) for _ in range(max(1, min(jobs, len(queue))))]
    total, finished = len(queue), 0
    try:
        while queue or any(w.case is not None for w in workers):
            for i, w in enumerate(workers):
                if w.case is None and queue:
                    if w.done >= recycle_after:  # bounded memory: converted modules accumulate
                        w.stop()
                        workers[i] = w = _Worker(ctx)
                    w.send(queue.popleft())
            busy = [w for w in workers if w.case is not None]
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=1.0)
            for i, w in enumerate(workers):
                case = w.case
                if case is None:
                    continue
                outcome: CaseResult | None = None
                if w.conn in ready:
                    try:
                        outcome = w.conn.recv()
                    except (EOFError, OSError):
                        w.process.join(5)
                        outcome = CaseResult(case.name, case.source, case.op, "failed", "crash",
                                             f"worker died (exit code {w.process.exitcode})")
                        w.stop(kill=True)
                        workers[i] = _Worker(ctx)
                elif time.monotonic() - w.started > (case.timeout or timeout):
                    limit = case.timeout or timeout
                    outcome = CaseResult(case.name, case.source, case.op, "failed", "timeout",
                                         f"no result within {limit:g} s", round(limit, 3))
                    w.stop(kill=True)
                    workers[i] = _Worker(ctx)
                if outcome is not None:
                    results[case.name] = outcome
                    w.case = None
                    w.done += 1
                    finished += 1
                    if progress and (finished % 100 == 0 or finished == total):
                        print(f"  {finished}/{total} cases", file=sys.stderr, flush=True)
    finally:
        for w in workers:
            w.stop(kill=w.case is not None)
    return [results[c.name] for c in cases]


# ---------------------------------------------------------------------------------- reports
def op_families() -> dict[str, str]:
    """op type -> the onnx2fx module implementing it (its family), for the default domain; ops
    without a lowering that convert through their ONNX function body: "function body"."""
    import onnx

    import onnx2fx.ops  # noqa: F401 - registers the op table
    from onnx2fx.ops.registry import _TABLE

    families = {op: impls[-1].fn.__module__.rsplit(".", 1)[-1] for (domain, op), impls in _TABLE.items()
                if not domain}
    for schema in onnx.defs.get_all_schemas():
        if not schema.domain and schema.name not in families and (
                schema.has_function or schema.has_context_dependent_function):
            families[schema.name] = "function body"
    return families


def write_json(report: Report, path: Path) -> None:
    import onnx
    import torch

    import onnx2fx

    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "format_version": 1,
        "versions": {"onnx2fx": onnx2fx.__version__, "onnx": onnx.__version__, "torch": torch.__version__},
        "totals": report.totals(),
        "node_totals": report.totals("node"),
        "model_totals": report.totals("model"),
        "skipped_other_domains": report.skipped_domains,
        "exclusions": [{"pattern": p, "reason": r} for p, r in EXCLUSIONS],
        "seconds": round(report.seconds, 1),
        "cases": [asdict(r) for r in report.results],
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


def render_markdown(report: Report) -> str:
    import onnx
    import torch

    families = op_families()
    t, tn, tm = report.totals(), report.totals("node"), report.totals("model")
    lines = [
        "# ONNX backend conformance",
        "",
        "Generated by `python benchmarks/conformance.py` (do not edit by hand) with "
        f"onnx {onnx.__version__} and torch {torch.__version__}.",
        "",
        "Every ai.onnx node test case of onnx's backend test suite and the model folders shipped with it "
        f"({', '.join(MODEL_KINDS)}) is converted with `OnnxToFxConverter(model).convert()`, run on the "
        "case's inputs and compared with its expected outputs (same shape and dtype, `assert_allclose` at the "
        "case's rtol/atol, default 1e-3/1e-7); the GraphModule must also pass `torch.fx.symbolic_trace`. "
        "Coverage counts excluded cases as not passed. Cast and CastLike from a float type to an integer type are "
        "compared on the elements the specification defines: out-of-range values are \"undefined\" there, and the "
        "expected data holds whatever the library that generated it did (onnx2fx keeps the low bits, as "
        "onnxruntime does; `tests/test_casts.py`).",
        "",
        "| | cases | passed | failed | unsupported | excluded | coverage |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in (("node tests", tn), ("model folders", tm), ("**all**", t)):
        lines.append(f"| {label} | {row['cases']} | {row['passed']} | {row['failed']} | {row['unsupported']} "
                     f"| {row['excluded']} | {row['coverage_percent']:.1f} % |")
    if report.skipped_domains:
        other = ", ".join(f"{d}: {n}" for d, n in sorted(report.skipped_domains.items()))
        lines += ["", f"Node test cases of other domains, not counted: {other}."]
    lines += ["", "## Per operator", "", "| op | family | cases | passed | failed | unsupported | excluded |",
              "|---|---|---:|---:|---:|---:|---:|"]
    per_op: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in report.results:
        per_op[(r.source if r.source != "node" else "", r.op)][r.status] += 1
    for (source, op), counts in sorted(per_op.items(), key=lambda kv: (kv[0][0] != "", kv[0][0], kv[0][1].lower())):
        label = op if not source else f"{op} ({source})"
        family = families.get(op, "—") if not source else "models"
        lines.append(f"| {label} | {family} | {sum(counts.values())} | {counts['passed']} | {counts['failed']} "
                     f"| {counts['unsupported']} | {counts['excluded']} |")
    bad = [r for r in report.results if r.status in ("failed", "unsupported")]
    lines += ["", "## Cases not passing", ""]
    if bad:
        lines += ["| case | op | status | stage | reason |", "|---|---|---|---|---|"]
        for r in sorted(bad, key=lambda r: (r.op.lower(), r.name)):
            reason = _one_line(r.reason, 300).replace("|", "\\|")
            lines.append(f"| {r.name} | {r.op} | {r.status} | {r.stage} | {reason} |")
    else:
        lines.append("None.")
    lines += ["", "## Exclusions", "", "Defined in `benchmarks/conformance_exclusions.py`.", "",
              "| pattern | cases | reason |", "|---|---:|---|"]
    for pattern, reason in EXCLUSIONS:
        n = sum(1 for r in report.results if r.status == "excluded" and re.fullmatch(pattern, r.name))
        lines.append(f"| `{pattern.replace('|', chr(92) + '|')}` | {n} | {reason} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", "-j", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    parser.add_argument("-k", "--filter", help="only cases whose name matches this regular expression")
    parser.add_argument("--no-models", action="store_true", help="node test cases only")
    parser.add_argument("--output-json", type=Path)
    parser.add_argument("--output-md", type=Path)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print("collecting test cases", file=sys.stderr, flush=True)
    cases, skipped = node_cases()
    if not args.no_models:
        cases += model_cases()
    if args.filter:
        cases = [c for c in cases if re.search(args.filter, c.name)]
    print(f"running {len(cases)} cases with {args.jobs} workers", file=sys.stderr, flush=True)
    report = Report(run_cases(cases, jobs=args.jobs, timeout=args.timeout), skipped)
    report.seconds = time.perf_counter() - start
    full = not args.filter and not args.no_models
    json_path = args.output_json or (RESULTS_JSON if full else None)
    md_path = args.output_md or (RESULTS_MD if full else None)
    if json_path:
        write_json(report, json_path)
    if md_path:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(render_markdown(report))
    t = report.totals()
    print(f"{t['passed']}/{t['cases']} passed ({t['coverage_percent']:.2f} %), {t['failed']} failed, "
          f"{t['unsupported']} unsupported, {t['excluded']} excluded in {report.seconds:.0f} s", flush=True)
    if not args.filter:
        return 0
    for r in report.results:
        if r.status != "passed":
            print(f"{r.status:12} {r.name}: [{r.stage}] {r.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
