"""Operator coverage (gap analysis): which nodes of a model onnx2fx converts, and why the others are not.

:func:`scan_onnx_operators` lowers the model node by node with the same emitter and op table as
:class:`~onnx2fx.OnnxToFxConverter`, on fake tensors, so the answer is exactly what ``convert``
would do, without rendering, tracing or reading the weights (they stay memory-mapped). A node
that cannot be lowered is recorded with the reason the converter gives and its outputs become
unknown; nodes that depend on unknown values are checked statically instead (an implementation
registered for the op, domain and opset, and every attribute the node sets is one it handles).

>>> report = scan_onnx_operators("model.onnx")          # doctest: +SKIP
>>> print(report.coverage_percent)                      # doctest: +SKIP
>>> Path("operator_report.md").write_text(report.to_markdown())   # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .codegen.emitter import MAX_FOLDED_ELEMENTS, Emitter
from .codegen.nested import walk
from .codegen.values import Value
from .errors import ConversionError, Onnx2FxError, UnsupportedOperatorError
from .lowering import attribute_value, fake_input, input_shape, lower_node
from .ops.registry import lookup, normalize_domain
from .tensors import to_torch, torch_dtype

__all__ = ["NodeStatus", "OperatorReport", "OperatorSummary", "scan_onnx_operators"]

SUPPORTED = "supported"
CAVEAT = "supported with caveat"
UNSUPPORTED = "unsupported"
_RANK = {SUPPORTED: 0, CAVEAT: 1, UNSUPPORTED: 2}


@dataclass
class NodeStatus:
    """What the analysis found for one node."""

    name: str
    op_type: str
    domain: str
    opset: int
    status: str  # SUPPORTED, CAVEAT or UNSUPPORTED
    reason: str = ""  # why it is unsupported, or the caveat
    checked: str = "lowered"  # "lowered" (with the real emitter) or "static" (its inputs were unknown)


@dataclass
class OperatorSummary:
    """All nodes of one (domain, op type)."""

    op_type: str
    domain: str
    count: int = 0
    supported: int = 0
    caveat: int = 0
    unsupported: int = 0
    reasons: dict[str, list[str]] = field(default_factory=dict)  # reason -> node names

    @property
    def key(self) -> str:
        return self.op_type if not self.domain else f"{self.domain}::{self.op_type}"

    @property
    def status(self) -> str:
        if self.unsupported:
            return UNSUPPORTED
        return CAVEAT if self.caveat else SUPPORTED


@dataclass
class OperatorReport:
    """The operator gap analysis of one model."""

    model: str
    opset_imports: dict[str, int]
    nodes: list[NodeStatus]
    warnings: list[str] = field(default_factory=list)

    @property
    def total_nodes(self) -> int:
        return len(self.nodes)

    @property
    def supported_nodes(self) -> int:
        """Nodes that convert, with or without a caveat."""
        return sum(1 for n in self.nodes if n.status != UNSUPPORTED)

    @property
    def coverage_percent(self) -> float:
        return 100.0 * self.supported_nodes / self.total_nodes if self.nodes else 100.0

    @property
    def fully_supported(self) -> bool:
        return all(n.status != UNSUPPORTED for n in self.nodes)

    @property
    def op_counts(self) -> dict[str, int]:
        return {s.key: s.count for s in self.operators}

    @property
    def operators(self) -> list[OperatorSummary]:
        """Per (domain, op type), the worst status first, then by count."""
        table: dict[tuple[str, str], OperatorSummary] = {}
        for n in self.nodes:
            s = table.setdefault((n.domain, n.op_type), OperatorSummary(n.op_type, n.domain))
            s.count += 1
            if n.status == SUPPORTED:
                s.supported += 1
            elif n.status == CAVEAT:
                s.caveat += 1
            else:
                s.unsupported += 1
            if n.reason:
                s.reasons.setdefault(n.reason, []).append(n.name)
        return sorted(table.values(), key=lambda s: (-_RANK[s.status], -s.count, s.key))

    @property
    def unsupported_nodes(self) -> dict[str, list[str]]:
        """op key -> names of its unsupported nodes."""
        result: dict[str, list[str]] = {}
        for n in self.nodes:
            if n.status == UNSUPPORTED:
                result.setdefault(n.op_type if not n.domain else f"{n.domain}::{n.op_type}", []).append(n.name)
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "model": self.model,
            "opset_imports": self.opset_imports,
            "total_nodes": self.total_nodes,
            "supported_nodes": self.supported_nodes,
            "coverage_percent": round(self.coverage_percent, 2),
            "fully_supported": self.fully_supported,
            "operators": [
                {"op_type": s.op_type, "domain": s.domain or "ai.onnx", "count": s.count, "status": s.status,
                 "supported": s.supported, "caveat": s.caveat, "unsupported": s.unsupported,
                 "reasons": [{"reason": r, "nodes": names} for r, names in s.reasons.items()]}
                for s in self.operators
            ],
            "unsupported_nodes": self.unsupported_nodes,
            "nodes": [{"name": n.name, "op_type": n.op_type, "domain": n.domain or "ai.onnx", "opset": n.opset,
                       "status": n.status, "reason": n.reason, "checked": n.checked} for n in self.nodes],
            "warnings": self.warnings,
        }

    def to_markdown(self, max_names: int = 20) -> str:
        opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(self.opset_imports.items()))
        lines = [
            f"# Operator report: {_md(self.model)}",
            "",
            f"- Opsets: {opsets or 'none'}",
            f"- Nodes: {self.total_nodes}, converted: {self.supported_nodes} "
            f"(**{self.coverage_percent:.1f} %**)",
            f"- Operators: {len(self.operators)}, unsupported: "
            f"{sum(1 for s in self.operators if s.status == UNSUPPORTED)}",
            "",
            "| operator | domain | nodes | status | notes |",
            "|---|---|---:|---|---|",
        ]
        for s in self.operators:
            notes = "; ".join(f"{_md(r)} ({len(names)})" for r, names in s.reasons.items())
            status = s.status if s.status != UNSUPPORTED or not (s.supported + s.caveat) else \
                f"{UNSUPPORTED} ({s.unsupported} of {s.count})"
            lines.append(f"| {_md(s.op_type)} | {_md(s.domain or 'ai.onnx')} | {s.count} | {status} | {notes} |")
        blocked = [s for s in self.operators if s.unsupported]
        if blocked:
            lines += ["", "## Unsupported nodes", ""]
            for s in blocked:
                lines.append(f"### {_md(s.key)}")
                lines.append("")
                for reason, names in s.reasons.items():
                    names = [n for n in names if self._status_of(n) == UNSUPPORTED]
                    if not names:
                        continue
                    shown = ", ".join(f"`{_md(n)}`" for n in names[:max_names])
                    more = f" and {len(names) - max_names} more" if len(names) > max_names else ""
                    lines.append(f"- {_md(reason)}: {shown}{more}")
                lines.append("")
        if self.warnings:
            lines += ["## Warnings", ""] + [f"- {_md(w)}" for w in self.warnings] + [""]
        return "\n".join(lines).rstrip() + "\n"

    def _status_of(self, node_name: str) -> str:
        for n in self.nodes:
            if n.name == node_name:
                return n.status
        return ""


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------- analysis
class _ScanEmitter(Emitter):
    """The converter's emitter, except that it never computes on large constants: a weight is only
    ever used through its fake tensor, so the memory-mapped bytes are not read."""

    def foldable(self, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
        for v in walk([*args, *kwargs.values()]):
            if isinstance(v, Value) and v.const is not None and v.const.numel() > MAX_FOLDED_ELEMENTS:
                return False
        return super().foldable(args, kwargs)


def scan_onnx_operators(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None) -> OperatorReport:
    """Analyse which nodes of ``model`` (a path, bytes or ``onnx.ModelProto``) onnx2fx converts.

    Never raises for unsupported operators or unknown domains; raises :class:`ModelFormatError`
    (and the other load errors) when the file is not a readable ONNX model.
    """
    from .converter import load_core_model

    core = load_core_model(model)
    name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else "<in-memory model>"
    opsets = {normalize_domain(d): int(v) for d, v in core.opset_imports.items()}
    graph = core.graph
    emitter = _ScanEmitter()
    env: dict[str, Value] = {}
    unknown: set[str] = set()
    warnings: list[str] = []
    for tensor in graph.initializers:
        try:
            env[tensor.name] = emitter.const(to_torch(tensor), tensor.name, initializer=tensor.name)
        except Onnx2FxError as exc:
            unknown.add(tensor.name)
            warnings.append(f"initializer {tensor.name!r}: {exc}")
    shapes = dict(input_shapes or {})
    for vi in graph.inputs:
        if vi.name in env or vi.name in unknown:
            continue
        try:
            shape = input_shape(vi, shapes.get(vi.name))
            torch_dtype(vi.type.elem_type)
            env[vi.name] = emitter.input(vi.name, fake_input(emitter, vi, shape))
        except Onnx2FxError as exc:
            unknown.add(vi.name)
            warnings.append(f"graph input {vi.name!r} is analysed statically only: {exc}")

    nodes: list[NodeStatus] = []
    for index, node in enumerate(graph.nodes):
        domain = normalize_domain(node.domain)
        node_name = node.name or f"{node.op_type}_{index}"
        opset = opsets.get(domain, 1 if domain else opsets.get("", 1))
        status = NodeStatus(node_name, node.op_type, domain, opset, SUPPORTED)
        missing = [i for i in node.inputs if i and (i in unknown or i not in env)]
        if missing:
            _check_statically(status, node, missing)
        else:
            _lower(emitter, status, node, index, opsets, env)
        if status.status == UNSUPPORTED or status.checked == "static":
            unknown.update(o for o in node.outputs if o)
        nodes.append(status)
    return OperatorReport(name, opsets, nodes, warnings)


def _lower(emitter: Emitter, status: NodeStatus, node: Any, index: int, opsets: Mapping[str, int],
           env: dict[str, Value]) -> None:
    warnings_before = len(emitter.generated.warnings)
    lines_before = len(emitter.generated.forward_lines)
    try:
        lower_node(emitter, node, index, opsets, env)
    except (UnsupportedOperatorError, ConversionError) as exc:
        status.status, status.reason = UNSUPPORTED, _reason(node, exc)
    except Exception as exc:  # noqa: BLE001 - a handler bug is this node's problem, not the analysis'
        status.status = UNSUPPORTED
        status.reason = _reason(node, exc, prefix=f"conversion fails with {type(exc).__name__}: ")
    else:
        new = emitter.generated.warnings[warnings_before:]
        if new:
            status.status = CAVEAT
            status.reason = "; ".join(_strip_node_prefix(w) for w in new)
    if status.status == UNSUPPORTED:
        del emitter.generated.forward_lines[lines_before:]


def _check_statically(status: NodeStatus, node: Any, missing: list[str]) -> None:
    status.checked = "static"
    impl = lookup(node.op_type, status.domain, status.opset)
    if impl is None:
        status.status = UNSUPPORTED
        status.reason = _no_converter(status)
        return
    if not impl.accepts_any_attribute:
        extra = sorted(set(node.attributes) - impl.attribute_names)
        if extra:
            value = _short(attribute_value(node.attributes[extra[0]]))
            status.status = UNSUPPORTED
            status.reason = f"attribute {extra[0]}={value} is not handled"
            return
    status.status = CAVEAT
    status.reason = "checked statically only: its inputs come from nodes that do not convert"


def _no_converter(status: NodeStatus) -> str:
    domain = status.domain or "ai.onnx"
    return f"no converter for {status.op_type} in domain {domain!r} at opset {status.opset}"


def _reason(node: Any, exc: Exception, prefix: str = "") -> str:
    """The converter's message without the node name (reasons group across nodes), prefixed by
    the node's attribute values (``mode=cubic exclude_outside=1: ...``)."""
    message = _strip_node_prefix(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if isinstance(exc, UnsupportedOperatorError) and "is not supported" in message and "operator" in message:
        return _no_converter(NodeStatus("", exc.op_type or node.op_type, exc.domain,
                                        exc.opset or 0, UNSUPPORTED))
    attrs = _attribute_summary(node)
    return f"{node.op_type}{' ' + attrs if attrs else ''}: {prefix}{message}"


_NODE_PREFIX = re.compile(r"^node '(?:[^'\\]|\\.)*'(?: \([^)]*\))?: ")


def _strip_node_prefix(message: str) -> str:
    return _NODE_PREFIX.sub("", message, count=1)


def _attribute_summary(node: Any, limit: int = 6) -> str:
    """``key=value`` for the node's short attributes (numbers, strings, short lists)."""
    parts = []
    for key in sorted(node.attributes):
        value = attribute_value(node.attributes[key])
        if isinstance(value, torch.Tensor) or (isinstance(value, list) and (len(value) > 8 or any(
                isinstance(v, torch.Tensor) for v in value))) or not isinstance(value, (int, float, str, list)):
            continue
        parts.append(f"{key}={_short(value)}")
    return " ".join(parts[:limit])


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_short(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, torch.Tensor):
        return f"tensor{list(value.shape)}"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def write_report(report: OperatorReport, markdown: Path | None, json_path: Path | None) -> None:
    import json

    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(report.to_markdown())
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
