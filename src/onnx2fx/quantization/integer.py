"""Integer ONNX from PTQ/QFT: the fixed-point and QOperator forms, their integer simulation, checks.

The native writer (``onnx2fx._core.write_integer_model``, ``cpp/writer/integer_writer.cc``) builds
them from the original graph plus the same plan as the QDQ model, with every encoded tensor listed
(shared encodings included, since a MaxPool's integer output is read directly):

- ``fixed-point``: between the inputs' QuantizeLinear and the outputs' DequantizeLinear only
  integer tensors and standard integer operators. ConvInteger / MatMulInteger accumulate in int32
  (signed weights are stored as uint8 offset by 128 with weight zero point 128, the u8 x u8 form
  every onnxruntime build has), the int32 bias is added, and each accumulator is requantized by
  ``y = clamp(zp + floor((acc * M0 + 2^(n-1)) / 2^n), lo, hi)`` in int64 (Mul, Add, Mod, Sub, Div,
  Add, Clip, Cast): ``M0`` in [2^30, 2^31] and ``n`` come from the float rescale
  ``s_x * s_w / s_y`` (``frexp``), the rounding is half up, and the clamp saturates at the 8-bit
  range, or at the zero point for a fused ReLU. A residual Add scales both centred inputs by
  multipliers sharing one shift; GlobalAveragePool sums in int64 and divides by the count inside
  the requantization; element-wise functions (Sigmoid, Tanh, HardSwish, GELU, ...) are a 256-entry
  table read by Gather; MaxPool, Reshape, Flatten, Transpose, ... run on the 8-bit integers.
- ``qoperator``: QLinearConv, QLinearMatMul, com.microsoft QGemm / QLinearAdd / QLinearSigmoid /
  QLinearLeakyRelu / QLinearGlobalAveragePool / QLinearConcat / QLinearSoftmax, with the data
  movement ops on the 8-bit tensors, as onnxruntime's quantizer writes it.

Functions the conversion fused from an exporter's decomposition (``onnx2fx.idioms``) have encodings
only at their input and result. Both writers read a copy of the source in which each fused
activation is one node (GELU as onnxruntime's ``Gelu`` / ``FastGelu``, SiLU as ``QuickGelu`` with
alpha 1, HardSwish as ``HardSwish``): the fixed-point form computes it as one table from the input's
grid to the result's, the QOperator form runs it in float between them. Fused normalisations and
attention keep their nodes and run in float (QOperator, or fixed point with ``float_islands``): an
attention's products with its unencoded scores or probabilities are float ``MatMul`` nodes between
the encodings of q, k, v and the result; a fused ``MatMul + Add`` is one integer linear layer with
an int32 bias.

A node with no integer form stops the export with :class:`IntegerExportError` naming it, unless
``float_islands`` is set: then it runs in float between DequantizeLinear and QuantizeLinear and is
listed in the result.

The integer simulation (:func:`integer_model`) is the written integer model converted by onnx2fx
itself into a torch GraphModule: its ConvInteger / MatMulInteger compute exactly (float64 sums of
integers below 2^53) and the requantization is the same int64 arithmetic, so it must equal
onnxruntime on every element.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._core import QdqActivation, QdqPlan
from ..errors import QuantizationError
from .grid import Encoding

FORMATS = ("qdq", "qoperator", "fixed-point")
INTEGER_FORMATS = ("qoperator", "fixed-point")


class IntegerExportError(QuantizationError):
    """A node has no integer form in the requested format (the message names it)."""


def check_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """The requested formats, deduplicated in the order :data:`FORMATS` lists them."""
    requested = [formats] if isinstance(formats, str) else list(formats)
    unknown = [f for f in requested if f not in FORMATS]
    if unknown or not requested:
        raise QuantizationError(f"format {unknown[0] if unknown else '(none)'!r} is not one of {list(FORMATS)}")
    return tuple(f for f in FORMATS if f in requested)


def onnx_file_name(stage: str, fmt: str) -> str:
    """``model_<stage>.onnx`` for QDQ, ``model_<stage>_fixed_point.onnx`` / ``..._qoperator.onnx``."""
    return f"model_{stage}.onnx" if fmt == "qdq" else f"model_{stage}_{fmt.replace('-', '_')}.onnx"


def integer_plan(plan: QdqPlan, activations: Mapping[str, Encoding]) -> QdqPlan:
    """The QDQ plan with every encoded tensor under ``activations`` (the integer writers read the
    encodings of tensors that share one, such as a MaxPool's output, directly)."""
    return QdqPlan(activations=[QdqActivation(tensor=name, scale=[float(e.scale[0])], zero_point=[int(e.zero_point[0])],
                                              dtype=e.grid.dtype) for name, e in activations.items()],
                   weights=plan.weights, biases=plan.biases, floats=plan.floats, min_opset=plan.min_opset)


def write_integer_model(source: Path, output: Path, plan: QdqPlan, fmt: str, float_islands: bool = False,
                        functions: Sequence[Any] = ()) -> dict[str, Any]:
    """Write the ``fmt`` model with the native writer, then check it with ``onnx.checker``.
    ``functions`` are the functions the conversion fused (``ConversionRecord.idioms``)."""
    import onnx

    from .. import _core

    if fmt not in INTEGER_FORMATS:
        raise QuantizationError(f"integer format {fmt!r} is not one of {list(INTEGER_FORMATS)}")
    # Integer average pooling divides by the number of positions, so the writer needs the shapes
    # that the exporter may not have written: it reads a shape-inferred copy of the source.
    with tempfile.TemporaryDirectory(dir=output.parent) as folder:
        inferred = Path(folder) / "inferred.onnx"
        try:
            onnx.shape_inference.infer_shapes_path(str(source), str(inferred))
        except Exception:  # noqa: BLE001 - inference is an aid; the writer names what it then lacks
            inferred = Path(source)
        single = Path(folder) / "functions.onnx"
        if _fused_activations_as_nodes(inferred, single, functions):
            inferred = single
        try:
            info = dict(_core.write_integer_model(str(inferred), str(output), plan, fmt, float_islands))
        except NotImplementedError as exc:
            raise IntegerExportError(f"cannot write the {fmt} model: {exc}") from None
        except ValueError as exc:
            raise QuantizationError(f"the {fmt} writer rejected the quantization plan: {exc}") from None
    try:
        onnx.checker.check_model(str(output))
    except onnx.checker.ValidationError as exc:
        output.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise QuantizationError(f"the {fmt} model fails onnx.checker: {first}") from None
    rows = info["requantizations"]
    info["max_relative_error"] = max((r["max_relative_error"] for r in rows), default=None)
    return info


# The one node each fused activation is written as for the integer writers: op, domain, attributes.
_ACTIVATION_NODES: dict[str, tuple[str, str, dict[str, float]]] = {
    "gelu": ("Gelu", "com.microsoft", {}), "gelu_tanh": ("FastGelu", "com.microsoft", {}),
    "silu": ("QuickGelu", "com.microsoft", {"alpha": 1.0}), "hardswish": ("HardSwish", "", {})}


def _fused_activations_as_nodes(source: Path, target: Path, functions: Sequence[Any]) -> bool:
    """Write ``source`` to ``target`` with each fused activation of ``functions`` as one node (its
    terminal node's name, input and output); False, writing nothing, when there is none."""
    import onnx
    from onnx import helper

    uses = [u for u in functions if u.kind in _ACTIVATION_NODES]
    if not uses:
        return False
    model = onnx.load(str(source), load_external_data=False)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)
    producer = {out: i for i, n in enumerate(model.graph.node) for out in n.output if out}
    replaced: dict[int, onnx.NodeProto] = {}
    removed: set[int] = set()
    for use in uses:
        op, domain, attributes = _ACTIVATION_NODES[use.kind]
        members = [producer.get(t) for t in (*use.internal, use.output)]
        if any(m is None for m in members) or (op == "HardSwish" and opset < 14):
            continue  # HardSwish is an ONNX op from opset 14 on: before, its nodes stay as they are
        terminal = producer[use.output]
        replaced[terminal] = helper.make_node(op, [use.input], [use.output], name=model.graph.node[terminal].name,
                                              domain=domain or None, **attributes)
        removed.update(m for m in members if m is not None and m != terminal)
    if not replaced:
        return False
    nodes = [replaced.get(i, n) for i, n in enumerate(model.graph.node) if i not in removed]
    read = {name for n in nodes for name in n.input} | {o.name for o in model.graph.output}
    nodes = [n for n in nodes if n.op_type != "Constant" or any(o in read for o in n.output)]  # the functions' own
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if any(n.domain == "com.microsoft" for n in replaced.values()) and \
            not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(target))
    return True


def float_tensors_inside(onnx_path: str | Path) -> list[str]:
    """Float tensors computed between the graph inputs' QuantizeLinear and the outputs'
    DequantizeLinear: every node output whose (inferred) type is a float type, other than the
    outputs of DequantizeLinear nodes that produce graph outputs and constants that only give a
    Resize its scales or region of interest (parameters of the op, float by specification, not
    data). Empty for a fixed-point model."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)), strict_mode=True)
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output, *graph.input]}
    outputs = {o.name for o in graph.output}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    parameter_slots = {"Resize": {1, 2}, "Upsample": {1}}
    as_parameter, as_data = set(), set()
    for node in graph.node:
        for i, name in enumerate(node.input):
            (as_parameter if i in parameter_slots.get(node.op_type, ()) else as_data).add(name)
    found = []
    for node in graph.node:
        for name in node.output:
            if node.op_type == "DequantizeLinear" and name in outputs:
                continue
            if node.op_type == "Constant" and name in as_parameter and name not in as_data:
                continue
            if types.get(name, 0) in floats or types.get(name, 0) == 0:
                found.append(name)
    return found


def integer_model(onnx_path: str | Path) -> torch.fx.GraphModule:
    """The integer simulation: the written fixed-point (or QOperator) model converted to torch."""
    from ..converter import OnnxToFxConverter

    return OnnxToFxConverter(Path(onnx_path)).convert()


def compare_integer(onnx_path: Path, batches: Iterable[Sequence[torch.Tensor]], input_names: Sequence[str],
                    output_names: Sequence[str], output_encodings: Mapping[str, Encoding | None],
                    qdq_path: Path | None = None) -> dict[str, Any]:
    """The integer model in onnxruntime (basic and full optimizations) against its integer
    simulation (equal elements, in output steps) and, when given, against the QDQ model."""
    from .qdq import ort_session

    simulation = integer_model(onnx_path)
    sessions = {"reference": ort_session(onnx_path, False), "optimized": ort_session(onnx_path, True)}
    qdq = ort_session(qdq_path, False) if qdq_path is not None else None
    equal = {kind: [0, 0] for kind in sessions}
    within_qdq = [0, 0]
    with torch.no_grad():
        for batch in batches:
            feed = {name: t.numpy() for name, t in zip(input_names, batch)}
            sim_out = simulation(*batch)
            sim_out = [t.numpy() for t in (sim_out if isinstance(sim_out, (tuple, list)) else [sim_out])]
            runs = {kind: session.run(list(output_names), feed) for kind, session in sessions.items()}
            for kind, outs in runs.items():
                for a, b in zip(outs, sim_out):
                    equal[kind][0] += int((a == b).sum())
                    equal[kind][1] += a.size
            if qdq is not None:
                for name, a, b in zip(output_names, runs["reference"], qdq.run(list(output_names), feed)):
                    enc = output_encodings.get(name)
                    step = float(enc.scale.max()) if enc is not None else 0.0
                    within_qdq[0] += int((np.abs(a.astype(np.float64) - b) <= step * (1 + 1e-3)).sum())
                    within_qdq[1] += a.size
    result: dict[str, Any] = {kind: {"equal_to_simulation": e / t if t else None} for kind, (e, t) in equal.items()}
    result["equal_to_simulation"] = result["reference"]["equal_to_simulation"]
    if qdq is not None:
        result["within_one_step_of_qdq"] = within_qdq[0] / within_qdq[1] if within_qdq[1] else None
    return result
