"""Per-layer comparison: find the first ONNX node whose converted output diverges.

onnxruntime runs with intermediate tensors exposed as extra graph outputs; the converted
GraphModule runs under an FX interpreter that captures the value of every FX node tagged with
``onnx_outputs``. Tensors are compared in graph order, a chunk of them per run, and dropped as soon
as they are compared, so memory stays bounded on models with many nodes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
import torch.fx

from .errors import ValidationInputError
from .validator import OutputMetrics, compare, load_torch_model

# Intermediate tensors fetched from onnxruntime per run: bounds the memory held at once.
TENSORS_PER_RUN = 64


@dataclass
class LayerMetrics:
    """One ONNX tensor compared between onnxruntime and torch."""

    tensor: str
    node: str
    op_type: str
    metrics: OutputMetrics


@dataclass
class Divergence:
    """The first node whose output exceeds the tolerance, with what it received."""

    node: str
    op_type: str
    tensor: str
    relative_error: float
    attributes: dict[str, Any]
    input_errors: dict[str, float | None]  # input tensor -> relative error (%), None if not compared


@dataclass
class LayerReport:
    tolerance: float
    layers: list[LayerMetrics] = field(default_factory=list)
    first_divergence: Divergence | None = None
    not_compared: list[str] = field(default_factory=list)  # tensors folded to constants or not captured

    def to_dict(self) -> dict[str, Any]:
        return {
            "tolerance_percent": self.tolerance,
            "first_divergence": asdict(self.first_divergence) if self.first_divergence else None,
            "layers": [{"tensor": lm.tensor, "node": lm.node, "op_type": lm.op_type, **asdict(lm.metrics)}
                       for lm in self.layers],
            "not_compared": self.not_compared,
        }


class _Capture(torch.fx.Interpreter):
    """Runs the GraphModule and keeps the values of the wanted ONNX tensors (CPU numpy)."""

    def __init__(self, gm: torch.fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.values: dict[str, np.ndarray] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        for name in n.meta.get("onnx_outputs", ()):
            if name in self.wanted and isinstance(result, torch.Tensor):
                self.values[name] = result.detach().cpu().numpy()
        return result


def compare_layers(onnx_model: Any, converted: Any, feed: Mapping[str, np.ndarray], tolerance: float = 1e-3,
                   tensors_per_run: int = TENSORS_PER_RUN) -> LayerReport:
    """Compare every intermediate tensor of ``converted`` with onnxruntime on one input set."""
    import onnxruntime as ort

    gm = load_torch_model(converted)
    if not isinstance(gm, torch.fx.GraphModule):
        raise ValidationInputError("per-layer comparison needs the converted torch.fx.GraphModule")
    proto = _load_proto(onnx_model)
    producers = {out: node for node in proto.graph.node for out in node.output if out}
    captured = {name for n in gm.graph.nodes for name in n.meta.get("onnx_outputs", ())}
    ordered = [out for node in proto.graph.node for out in node.output if out]
    comparable = [t for t in ordered if t in captured]
    report = LayerReport(tolerance, not_compared=[t for t in ordered if t not in captured])

    existing = {o.name for o in proto.graph.output}
    for tensor in comparable:
        if tensor not in existing:
            proto.graph.output.append(onnx.ValueInfoProto(name=tensor))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del proto.graph.output[len(existing):]
    input_names = [i.name for i in session.get_inputs()]
    args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in input_names]

    errors: dict[str, float] = {}
    for start in range(0, len(comparable), tensors_per_run):
        chunk = comparable[start:start + tensors_per_run]
        reference = dict(zip(chunk, session.run(chunk, dict(feed))))
        capture = _Capture(gm, set(chunk))
        with torch.no_grad():
            capture.run(*args)
        for tensor in chunk:
            node = producers[tensor]
            metrics = compare(tensor, np.asarray(reference.pop(tensor)), capture.values.pop(tensor), tolerance)
            errors[tensor] = metrics.relative_error
            report.layers.append(LayerMetrics(tensor, node.name, node.op_type, metrics))
            if not metrics.passed and report.first_divergence is None:
                report.first_divergence = Divergence(
                    node.name, node.op_type, tensor, metrics.relative_error,
                    {a.name: _attribute(a) for a in node.attribute},
                    {i: errors.get(i) for i in node.input if i})
    return report


def _attribute(attr: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in value
                if isinstance(v, (bytes, int, float, str))]
    if isinstance(value, (int, float, str)):
        return value
    return f"<{type(value).__name__}>"


def _load_proto(model: Any) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    path = os.fspath(model)
    return onnx.load(path)


def format_report(report: LayerReport, limit: int = 20) -> Sequence[str]:
    """Plain-text lines: the first divergence, then the worst layers."""
    lines = []
    d = report.first_divergence
    if d is None:
        lines.append(f"all {len(report.layers)} compared tensors are within {report.tolerance}%")
    else:
        lines.append(f"first divergence: node {d.node!r} ({d.op_type}) output {d.tensor!r}: "
                     f"relative error {d.relative_error:.3g}% > {report.tolerance}%")
        lines.append(f"  attributes: {d.attributes}")
        lines.append("  input errors (%): " + ", ".join(
            f"{k}={'n/a' if v is None else f'{v:.3g}'}" for k, v in d.input_errors.items()))
    worst = sorted(report.layers, key=lambda lm: -lm.metrics.relative_error)[:limit]
    for lm in worst:
        lines.append(f"  {lm.metrics.relative_error:10.3g}%  {lm.node} ({lm.op_type}) -> {lm.tensor}")
    return lines
