"""The round trip back to ONNX: a converted model exported with ``torch.onnx.export`` and checked
against the ONNX file it came from.

The exported file keeps the source's input and output names and its dynamic dimensions (by their
``dim_param`` names; dimensions that vary together in the source vary together in the export). The
dynamo exporter is tried first and the TorchScript exporter is the fallback; which one produced the
file, and why the first failed, is recorded. Both files then run in onnxruntime on the same inputs:
at the base sizes (``--shape``, else 2 for a leading dynamic dimension and 64 for the others), then
once more for each dynamic dimension at another size (3, or 33), so a size frozen during export
shows up as an error. A size that onnxruntime rejects for the source model too is recorded as such.
The file is written to a temporary name beside the destination and renamed into place only after
the check ran, so a failure never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from .conversion_record import find_conversion_record
from .errors import ExportError
from .export_lstm import onnx_lstms
from .export_translations import translation_table
from .size_sweep import BATCH_SIZE, OTHER_DIM_SIZE
from .validator import load_torch_model, random_input

__all__ = ["ExportResult", "SizeCheck", "export_onnx"]

SECOND_BATCH_SIZE = 3
SECOND_OTHER_SIZE = OTHER_DIM_SIZE // 2 + 1  # not a multiple of common strides


@dataclass
class SizeCheck:
    """One comparison of the exported file with the source in onnxruntime."""

    label: str  # "base sizes" or the dynamic dimension that was changed
    shapes: dict[str, list[int]]
    relative_error: float | None  # percent of the output's largest magnitude; worst output
    outputs: dict[str, float] = field(default_factory=dict)
    note: str = ""  # why there is no error figure (the source model rejects these sizes)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how it compares with the source."""

    path: Path
    exporter: str  # "dynamo" or "torchscript"
    fallback_reason: str | None  # why the dynamo exporter was not used
    source: Path
    input_names: list[str]
    output_names: list[str]
    dynamic_dims: dict[str, dict[int, str]]  # input -> axis -> dim_param
    checks: list[SizeCheck] = field(default_factory=list)

    @property
    def relative_error(self) -> float:
        """The worst relative error (percent) over every size that both models ran."""
        return max((c.relative_error for c in self.checks if c.relative_error is not None), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["path"], record["source"] = str(self.path), str(self.source)
        record["relative_error"] = self.relative_error
        return record


@dataclass
class _Source:
    path: Path
    proto: onnx.ModelProto
    inputs: list[onnx.ValueInfoProto]
    outputs: list[str]
    opset: int


def export_onnx(model: str | os.PathLike[str] | torch.nn.Module, path: str | os.PathLike[str], *,
                source: str | os.PathLike[str] | None = None,
                input_shapes: Mapping[str, Sequence[int]] | None = None, opset: int | None = None,
                dynamo: bool = True, validate: bool = True, seed: int = 0) -> ExportResult:
    """Export a converted model to ONNX at ``path``; returns the exporter used and the check.

    ``model`` is a ``convert`` output folder (``model_full.pt`` and ``conversion.json``), a saved
    ``model_full.pt`` or a converted module. ``source`` is the ONNX file it was converted from
    (default: the one recorded at conversion). ``dynamo=False`` skips the dynamo exporter.
    """
    module, recorded = _load(model)
    src = _source(source or recorded)
    out = Path(path)
    if out.is_dir():
        raise ExportError(f"output path {out} is a folder; give a file name such as {out / 'model.onnx'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    dims = _dynamic_dims(src)
    base = _base_shapes(src, input_shapes)
    torch_inputs = tuple(torch.from_numpy(a) for a in _feeds(src, base, seed).values())
    names = [v.name for v in src.inputs]
    exporter, reason, proto = _export(module, torch_inputs, names, src.outputs, dims, src.opset, opset, dynamo)
    _name_dimensions(proto, dims)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        onnx.save(proto, str(tmp))
        result = ExportResult(out, exporter, reason, src.path, names, list(src.outputs), dims)
        if validate:
            result.checks = _check(tmp, src, dims, base, seed)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return result


# ------------------------------------------------------------------------------ inputs of the export
def _load(model: str | os.PathLike[str] | torch.nn.Module) -> tuple[torch.nn.Module, str | None]:
    """The module and the source ONNX path recorded with it."""
    if isinstance(model, torch.nn.Module):
        return model.eval(), _recorded_source(model)
    folder = Path(os.fspath(model))
    if not folder.exists():
        raise ExportError(f"{folder} does not exist")
    if folder.is_dir():
        missing = [n for n in ("model_full.pt", "conversion.json") if not (folder / n).is_file()]
        if missing:
            raise ExportError(f"{folder} is not an onnx2fx convert output folder: {', '.join(missing)} missing")
        pickled = folder / "model_full.pt"
        try:
            record = json.loads((folder / "conversion.json").read_text())
        except (OSError, ValueError) as exc:
            raise ExportError(f"{folder / 'conversion.json'} cannot be read: {exc}") from exc
        recorded = record.get("source") if isinstance(record, dict) else None
    else:
        pickled, recorded = folder, None
    try:
        module = load_torch_model(pickled)
    except Exception as exc:  # a corrupt or foreign pickle: name the file
        raise ExportError(f"{pickled} cannot be loaded as a converted model: {type(exc).__name__}: {exc}") from exc
    return module, _recorded_source(module) or recorded


def _recorded_source(module: torch.nn.Module) -> str | None:
    record = find_conversion_record(module)
    return record.source if record is not None else None


def _source(path: str | os.PathLike[str] | None) -> _Source:
    if path is None or not Path(os.fspath(path)).is_file():
        where = f" ({path} does not exist)" if path is not None else ""
        raise ExportError(f"the source ONNX model is needed for names, dynamic dimensions and the check{where}; "
                          "pass it with --source / source=")
    file = Path(os.fspath(path))
    try:
        proto = onnx.load(str(file), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{file} cannot be read as ONNX: {exc}") from exc
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializers]
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    return _Source(file, proto, inputs, [o.name for o in proto.graph.output], opset)


def _dynamic_dims(src: _Source) -> dict[str, dict[int, str]]:
    """input -> axis -> the source's dim_param (a made-up name for an unnamed dynamic dimension)."""
    dims: dict[str, dict[int, str]] = {}
    for v in src.inputs:
        for axis, d in enumerate(v.type.tensor_type.shape.dim):
            if _is_dynamic(d):
                dims.setdefault(v.name, {})[axis] = _dim_name(d) or f"{v.name}_dim{axis}"
    return dims


def _is_dynamic(d: onnx.TensorShapeProto.Dimension) -> bool:
    """Paddle's exporter writes an unknown size as ``dim_value: -1``."""
    return not d.HasField("dim_value") or d.dim_value < 0


def _dim_name(d: onnx.TensorShapeProto.Dimension) -> str:
    """The dimension's symbol, or "" when it has none: an exporter's placeholder such as ``?``
    names no symbol (two ``?`` dimensions are not the same size)."""
    return d.dim_param if d.HasField("dim_param") and re.search(r"\w", d.dim_param) else ""


def _base_shapes(src: _Source, overrides: Mapping[str, Sequence[int]] | None) -> dict[str, list[int]]:
    """Every input's sizes: the override, else static sizes and defaults for dynamic ones, one size
    per dim_param (the first input that has it decides)."""
    shapes: dict[str, list[int]] = {}
    chosen: dict[str, int] = {}
    for v in src.inputs:
        if overrides and v.name in overrides:
            shapes[v.name] = [int(s) for s in overrides[v.name]]
            for axis, d in enumerate(v.type.tensor_type.shape.dim):
                if _dim_name(d) and axis < len(shapes[v.name]):
                    chosen.setdefault(_dim_name(d), shapes[v.name][axis])
    for v in src.inputs:
        if v.name in shapes:
            continue
        sizes = []
        for axis, d in enumerate(v.type.tensor_type.shape.dim):
            if not _is_dynamic(d):
                sizes.append(int(d.dim_value))
            else:
                default = BATCH_SIZE if axis == 0 else OTHER_DIM_SIZE
                sizes.append(chosen.setdefault(_dim_name(d), default) if _dim_name(d) else default)
        shapes[v.name] = sizes
    return shapes


class _Spec:
    """What :func:`random_input` reads from an onnxruntime input description."""

    def __init__(self, name: str, type_name: str, shape: list[int]) -> None:
        self.name, self.type, self.shape = name, type_name, shape


def _feeds(src: _Source, shapes: Mapping[str, list[int]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in src.inputs:
        elem = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
        type_name = {np.dtype(np.float32): "tensor(float)", np.dtype(np.float64): "tensor(double)",
                     np.dtype(np.float16): "tensor(float16)", np.dtype(np.bool_): "tensor(bool)"}.get(
            np.dtype(elem), f"tensor({np.dtype(elem).name})")
        feeds[v.name] = random_input(_Spec(v.name, type_name, shapes[v.name]), shapes[v.name], rng)
    return feeds


# ------------------------------------------------------------------------------ exporting
def _export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str],
            output_names: list[str], dims: dict[str, dict[int, str]], source_opset: int, opset: int | None,
            dynamo: bool) -> tuple[str, str | None, onnx.ModelProto]:
    reason = None if dynamo else "dynamo exporter not requested"
    if dynamo:
        try:
            return "dynamo", None, _export_dynamo(module, inputs, input_names, output_names, dims, opset)
        except Exception as exc:  # torch.export or the ONNX translation refused the module
            reason = f"{type(exc).__name__}: {_first_line(exc)}"
    try:
        version = opset or min(max(source_opset, 11), 20)
        if version < 14 and _has_fused_attention(module):
            version = 14  # F.scaled_dot_product_attention has an ONNX form from opset 14
        buffer = io.BytesIO()
        axes = {name: dict(d) for name, d in dims.items()}
        torch.onnx.export(module, inputs, buffer, dynamo=False, opset_version=version, input_names=input_names,
                          output_names=output_names, dynamic_axes=axes or None)
        return "torchscript", reason, onnx.load_from_string(buffer.getvalue())
    except Exception as exc:
        raise ExportError(f"both exporters failed: dynamo: {reason}; torchscript: {type(exc).__name__}: "
                          f"{_first_line(exc)}") from exc


def _has_fused_attention(module: torch.nn.Module) -> bool:
    """Whether the converted module calls ``F.scaled_dot_product_attention`` (an attention the
    conversion fused), which the TorchScript exporter writes from opset 14 only."""
    return any(getattr(node.target, "__name__", "") == "scaled_dot_product_attention"
               for m in module.modules() if isinstance(getattr(m, "graph", None), torch.fx.Graph)
               for node in m.graph.nodes)


def _export_dynamo(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str],
                   output_names: list[str], dims: dict[str, dict[int, str]], opset: int | None) -> onnx.ModelProto:
    symbols: dict[str, Any] = {}
    dynamic = []
    for name in input_names:
        axes = {}
        for axis, dim_param in dims.get(name, {}).items():
            if dim_param not in symbols:
                symbols[dim_param] = torch.export.Dim(_identifier(dim_param), min=1)
            axes[axis] = symbols[dim_param]
        dynamic.append(axes or None)
    kwargs: dict[str, Any] = {"opset_version": opset} if opset else {}
    translations = translation_table()
    if translations:
        kwargs["custom_translation_table"] = translations
    with onnx_lstms(module):  # one ONNX LSTM per layer instead of steps unrolled at the example's length
        program = torch.onnx.export(module, inputs, dynamo=True,
                                    dynamic_shapes=tuple(dynamic) if symbols else None, verbose=False,
                                    optimize=False, **kwargs)
    with _exact_no_op_rules():
        program.optimize()
    proto = program.model_proto
    _rename_interface(proto, input_names, output_names)
    return proto


# The exporter's graph optimizer removes ``x + c``, ``x - c``, ``x * c`` and ``x / c`` as no-ops when
# its pattern matcher finds ``c`` close to 0 or 1 with an absolute tolerance of 1e-8: the 1e-10 added
# before a Log, or a norm's 1e-12 epsilon, would vanish from the exported file (log(0) = -inf on a
# silent input). Those four rules (and their commuted forms) are left out; the rest run as usual.
_TOLERANT_NO_OP = re.compile(r"= (Add|Sub|Mul|Div) \((x, [01]|[01], x)\)")


@contextlib.contextmanager
def _exact_no_op_rules() -> Iterator[None]:
    """onnxscript's default rewrite rules without the tolerant no-op ones, while the program is optimised."""
    import onnxscript.rewriter as rewriter

    defaults = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if defaults is None:  # another onnxscript layout: the rules cannot be filtered, nothing to restore
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(
        rule for rule in defaults if not _TOLERANT_NO_OP.search(str(getattr(rule, "_target_pattern", ""))))
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = defaults


def _rename_interface(proto: onnx.ModelProto, input_names: Sequence[str], output_names: Sequence[str]) -> None:
    """Give the graph's inputs and outputs the source's names.

    The dynamo exporter names internal values after FX nodes, which can be a source output's name
    (``conv2d_4``); renaming only the outputs would define that name twice. Internal values that
    hold a wanted name move aside first; an output that is also an input, or another output, gets
    its own value through an Identity."""
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    wanted: dict[str, str] = {v.name: new for v, new in zip(inputs, input_names)}
    for index, (v, new) in enumerate(zip(graph.output, output_names)):
        if v.name in wanted:  # the same value already gets a name: give this output its own value
            own = f"{v.name}__output_{index}"
            graph.node.append(onnx.helper.make_node("Identity", [v.name], [own]))
            v.name = own
        wanted[v.name] = new
    taken = _value_names(graph) | set(wanted.values())
    mapping = dict(wanted)
    for name in _value_names(graph):
        if name not in wanted and name in set(wanted.values()):
            fresh, k = f"{name}_internal", 1
            while fresh in taken:
                fresh, k = f"{name}_internal_{k}", k + 1
            taken.add(fresh)
            mapping[name] = fresh
    _apply_renames(graph, mapping)


def _value_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info)} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(n for n in (*node.input, *node.output) if n)
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                names |= _value_names(sub)
    return names


def _apply_renames(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        v.name = mapping.get(v.name, v.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) if n else n for n in node.input]
        node.output[:] = [mapping.get(n, n) if n else n for n in node.output]
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                _apply_renames(sub, mapping)


def _identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return ident if ident and not ident[0].isdigit() else f"d_{ident}"


def _name_dimensions(proto: onnx.ModelProto, dims: dict[str, dict[int, str]]) -> None:
    """The source's dim_param names on the exported inputs, and on outputs whose dimension is one of
    those symbols (the dynamo exporter names them after the ``Dim``s)."""
    renames: dict[str, str] = {}
    for v in proto.graph.input:
        for axis, dim_param in dims.get(v.name, {}).items():
            shape = v.type.tensor_type.shape.dim
            if axis < len(shape):
                if shape[axis].dim_param:
                    renames[shape[axis].dim_param] = dim_param
                shape[axis].dim_param = dim_param
    for v in proto.graph.output:
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param in renames:
                d.dim_param = renames[d.dim_param]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


# ------------------------------------------------------------------------------ the check
def _session(path: Path | str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check(exported: Path, src: _Source, dims: dict[str, dict[int, str]], base: dict[str, list[int]],
           seed: int) -> list[SizeCheck]:
    """The exported file against the source in onnxruntime at the base sizes, then with each
    dynamic dimension (all inputs that share it) at a second size."""
    try:
        ours, theirs = _session(exported), _session(src.path)
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load the exported model: {_first_line(exc)}") from exc
    cases: list[tuple[str, dict[str, list[int]]]] = [("base sizes", base)]
    seen: set[str] = set()
    for name, axes in dims.items():
        for axis, dim_param in axes.items():
            if dim_param in seen:
                continue
            seen.add(dim_param)
            size = SECOND_BATCH_SIZE if axis == 0 else SECOND_OTHER_SIZE
            if size == base[name][axis]:
                size += 1
            shapes = {k: list(v) for k, v in base.items()}
            for other, other_axes in dims.items():
                for a, p in other_axes.items():
                    if p == dim_param:
                        shapes[other][a] = size
            cases.append((f"{dim_param}={size}", shapes))
    checks = []
    for label, shapes in cases:
        feeds = _feeds(src, shapes, seed)
        try:
            reference = theirs.run(None, feeds)
        except Exception as exc:
            checks.append(SizeCheck(label, shapes, None, note=f"the source model rejects these sizes in "
                                                                f"onnxruntime: {_first_line(exc)}"))
            continue
        try:
            produced = ours.run(None, feeds)
        except Exception as exc:  # a size frozen during export: a failure of the export, recorded
            checks.append(SizeCheck(label, shapes, float("inf"), note=f"the exported model fails where the source "
                                                                      f"runs: {_first_line(exc)}"))
            continue
        errors = {name: _relative_error(r, p) for name, r, p in zip(src.outputs, reference, produced)}
        checks.append(SizeCheck(label, shapes, max(errors.values(), default=0.0), errors))
    return checks


def _relative_error(reference: np.ndarray, produced: np.ndarray) -> float:
    """``max |produced - reference| / max |reference|`` in percent (inf for a shape mismatch)."""
    if reference.shape != produced.shape:
        return float("inf")
    ref, out = np.asarray(reference, np.float64), np.asarray(produced, np.float64)
    if ref.size == 0:
        return 0.0
    diff = float(np.abs(ref - out).max())
    scale = float(np.abs(ref).max())
    return 0.0 if diff == 0 else diff / scale * 100 if scale else float("inf")
