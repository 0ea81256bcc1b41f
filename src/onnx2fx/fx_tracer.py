"""FX tracing that remembers where every node came from in the ONNX graph.

The generated ``forward`` is traced with ``torch.fx``; each FX node is created while a particular
line of the generated source executes, and every such line belongs to one ONNX node. The tracer
reads the line from the call stack and stores the ONNX origin in ``node.meta``:

- ``onnx_node``: the ONNX node name, ``onnx_op_type``: its op type,
- ``onnx_outputs``: the ONNX tensor names whose value this FX node computes (may be empty for
  intermediate FX nodes of one ONNX node).
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx


@dataclass
class OriginMap:
    """What the tracer needs to know about the generated source."""

    filename: str
    line_nodes: dict[int, str]  # line -> ONNX node name
    node_op_types: dict[str, str]  # ONNX node name -> op type
    line_outputs: dict[int, list[list[str]]]  # line -> per assigned variable, the ONNX tensors it holds


class OriginTracer(torch.fx.Tracer):
    """A ``torch.fx.Tracer`` that tags nodes with their ONNX origin."""

    def __init__(self, origins: OriginMap) -> None:
        super().__init__()
        self.origins = origins
        self.nodes_by_line: dict[int, list[torch.fx.Node]] = defaultdict(list)

    def create_node(self, kind: str, target: Any, args: Any, kwargs: Any, name: str | None = None,
                    type_expr: Any | None = None) -> torch.fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        line = self._generated_line()
        if line is not None:
            onnx_node = self.origins.line_nodes[line]
            node.meta["onnx_node"] = onnx_node
            node.meta["onnx_op_type"] = self.origins.node_op_types.get(onnx_node, "")
            node.meta["onnx_outputs"] = []
            self.nodes_by_line[line].append(node)
        return node

    def _generated_line(self) -> int | None:
        frame = inspect.currentframe()
        while frame is not None:
            if frame.f_code.co_filename == self.origins.filename and frame.f_lineno in self.origins.line_nodes:
                return frame.f_lineno
            frame = frame.f_back
        return None

    def assign_outputs(self) -> None:
        """The last FX nodes of a line compute the variables that line assigns."""
        for line, nodes in self.nodes_by_line.items():
            per_variable = self.origins.line_outputs.get(line, [])
            computed = [n for n in nodes if n.op != "get_attr"]
            for tensors, node in zip(reversed(per_variable), reversed(computed)):
                node.meta["onnx_outputs"] = list(tensors)


def trace_with_origins(module: torch.nn.Module, origins: OriginMap, class_name: str = "Model") -> torch.fx.GraphModule:
    tracer = OriginTracer(origins)
    graph = tracer.trace(module)
    tracer.assign_outputs()
    gm = torch.fx.GraphModule(tracer.root, graph, class_name)
    # Unpickling re-traces with the recorded tracer class; a plain Tracer needs no origin map.
    gm._tracer_cls = None
    return gm


def onnx_origin_table(gm: torch.fx.GraphModule) -> list[dict[str, Any]]:
    """FX node -> ONNX origin, in graph order, for ``conversion.json``."""
    rows = []
    for node in gm.graph.nodes:
        if "onnx_node" in node.meta:
            rows.append({"fx_node": node.name, "op": node.op, "target": _target_name(node.target),
                         "onnx_node": node.meta["onnx_node"], "onnx_op_type": node.meta["onnx_op_type"],
                         "onnx_outputs": node.meta.get("onnx_outputs", [])})
    return rows


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    return getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)
