"""The quantized ONNX model: a QDQ plan for the native writer, and a check against the simulation.

The writer (``onnx2fx._core.write_qdq_model``) edits the original graph, not an export of the
torch model: each planned activation gets QuantizeLinear -> DequantizeLinear with all consumers
rewired, each planned weight becomes an integer initializer plus a DequantizeLinear that produces
the original name, and each planned bias becomes int32 with ``scale = input scale x weight scale``.
Everything else in the graph (names, ops, unquantized tensors) stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._core import QdqActivation, QdqBias, QdqFloat, QdqPlan, QdqWeight
from ..errors import QuantizationError
from .grid import Encoding
from .metrics import flatten_outputs


def build_plan(activations: Mapping[str, Encoding], weights: Mapping[str, Encoding],
               biases: Mapping[str, Encoding], values: Mapping[str, np.ndarray] | None = None,
               int4_storage: str = "int4") -> QdqPlan:
    """The writer's plan. ``activations`` are the tensors that get Q -> DQ (not the ones sharing an
    encoding). ``values`` holds new data for initializers, in their ONNX layout: the model that is
    exported can differ from the source file (fine-tuned weights, equalized layers, corrected
    biases), and the writer edits the source file. Weights and biases are quantized from their new
    values; any other initializer named there stays float with the new data. Initializers not
    named keep their stored data.

    ``int4_storage="int8"`` writes 4-bit weights as INT8/UINT8 initializers whose values stay in
    the 4-bit range ([-8, 7] or [0, 15]), which needs no opset 21; their values must then lie on
    the 4-bit grid already (fake-quantized weights), since the writer only clamps to the 8-bit range.

    The plan is the core's own type (``_core.QdqPlan``), so the writer receives it as built; the
    opset its QuantizeLinear/DequantizeLinear nodes need is ``plan.required_opset``, which the core
    computes by the same rule the writer applies.
    """
    def stored(e: Encoding) -> str:
        return f"{'int' if e.grid.signed else 'uint'}8" if int4_storage == "int8" and e.grid.bits == 4 \
            else e.grid.dtype

    values = values or {}
    return QdqPlan(
        activations=[QdqActivation(tensor=name, scale=_floats(e.scale), zero_point=_ints(e.zero_point),
                                   dtype=e.grid.dtype) for name, e in activations.items()],
        weights=[QdqWeight(initializer=name, scale=_floats(e.scale), zero_point=_ints(e.zero_point),
                           dtype=stored(e), axis=e.axis,
                           values=np.ascontiguousarray(values[name], dtype=np.float32) if name in values else None)
                 for name, e in weights.items()],
        biases=[QdqBias(initializer=name, scale=_floats(e.scale), axis=e.axis,
                        values=np.ascontiguousarray(values[name], dtype=np.float32) if name in values else None)
                for name, e in biases.items()],
        floats=[QdqFloat(initializer=name, values=np.ascontiguousarray(v, dtype=np.float32))
                for name, v in values.items() if name not in weights and name not in biases],
    )


def write_qdq_model(source: Path, output: Path, plan: QdqPlan,
                    source_opset: int | None = None) -> dict[str, Any]:
    """Write the QDQ model with the native writer, then check it with ``onnx.checker``."""
    from .. import _core

    try:
        info = _core.write_qdq_model(str(source), str(output), plan)
    except ValueError as exc:
        raise QuantizationError(f"the QDQ writer rejected the quantization plan: {exc}") from None
    import onnx

    try:
        onnx.checker.check_model(str(output))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        hint = ""
        if source_opset is not None and plan.required_opset > source_opset:
            hint = (f" (the plan needs opset {plan.required_opset} but the source model is opset {source_opset}, and "
                    "its other operators are not converted: re-export it at a newer opset, or use per-tensor / "
                    "8-bit encodings)")
        raise QuantizationError(f"the QDQ model fails onnx.checker: {first}{hint}") from None
    return dict(info) if isinstance(info, Mapping) else {}


def ort_session(onnx_path: Path, optimized: bool) -> Any:
    """An onnxruntime CPU session on the QDQ model.

    ``optimized=False`` keeps basic graph optimizations only, so every QuantizeLinear,
    DequantizeLinear and float op runs as written: the QDQ model's reference semantics, which the
    simulation reproduces. ``optimized=True`` lets onnxruntime fuse DQ -> op -> Q groups into
    integer kernels (QLinearConv, ...), whose rounding and accumulation depend on the CPU (u8s8
    kernels on AVX2 without VNNI, for example, saturate 16-bit intermediate sums).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def compare_with_sim(onnx_path: Path, sim_gm: torch.nn.Module, batches: Iterable[Sequence[torch.Tensor]],
                     input_names: Sequence[str], output_names: Sequence[str],
                     output_encodings: Mapping[str, Encoding | None]) -> dict[str, Any]:
    """Run the QDQ model in onnxruntime (reference and optimized sessions, see :func:`ort_session`)
    and the simulated model in torch on the same inputs.

    Per output with an encoding: the share of elements whose difference is at most one
    quantization step (two valid rounding orders can differ by one step) and the largest
    difference in steps.

    An optimized session onnxruntime cannot build is reported with its error rather than failing
    the export: its fusions can produce a graph its own kernels reject (4-bit activations moved
    into a MaxPool, which has no uint4 kernel), while the model as written runs.
    """
    sessions = {"reference": ort_session(onnx_path, False)}
    failed: dict[str, str] = {}
    try:
        sessions["optimized"] = ort_session(onnx_path, True)
    except Exception as exc:  # onnxruntime raises its own exception types
        text = str(exc).strip().splitlines()
        failed["optimized"] = f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
    stats = {kind: {name: [0, 0, 0.0, 0.0] for name in output_names} for kind in sessions}  # within, total, steps, abs
    with torch.no_grad():
        for batch in batches:
            feed = {name: t.numpy() for name, t in zip(input_names, batch)}
            sim_out = [t.detach().double().numpy() for t in flatten_outputs(sim_gm(*batch))]
            for kind, session in sessions.items():
                for name, a, b in zip(output_names, session.run(list(output_names), feed), sim_out):
                    row = stats[kind][name]
                    diff = np.abs(a.astype(np.float64) - b)
                    row[3] = max(row[3], float(diff.max()) if diff.size else 0.0)
                    enc = output_encodings.get(name)
                    if enc is None or not diff.size:
                        continue
                    steps = diff / float(enc.scale.max())
                    row[0] += int((steps <= 1.0 + 1e-3).sum())
                    row[1] += steps.size
                    row[2] = max(row[2], float(steps.max()))
    result: dict[str, Any] = {}
    for kind in sessions:
        rows = []
        for name in output_names:
            within, total, steps, max_abs = stats[kind][name]
            row: dict[str, Any] = {"name": name, "max_abs_difference": max_abs}
            if total:
                row.update(within_one_step=within / total, max_difference_steps=round(steps, 3))
            rows.append(row)
        fractions = [r["within_one_step"] for r in rows if "within_one_step" in r]
        result[kind] = {"outputs": rows, "within_one_step": min(fractions) if fractions else None}
    if "optimized" in sessions:
        from .ort_cpu import u8s8_saturates

        # explains a low figure there: the fused u8 x s8 kernels clip on this CPU (see ort_cpu)
        result["optimized"]["u8s8_saturates"] = u8s8_saturates()
    for kind, error in failed.items():
        result[kind] = {"outputs": [], "within_one_step": None, "error": error}
    result["within_one_step"] = result["reference"]["within_one_step"]
    return result


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float32).ravel().tolist()]


def _ints(values: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(values).ravel().tolist()]
