"""FX tracing that remembers where every node came from in the ONNX graph.

The generated ``forward`` is traced with ``torch.fx``; each FX node is created while a particular
line of the generated source executes, and every such line belongs to one ONNX node. The tracer
reads the line from the call stack and stores the ONNX origin in ``node.meta``:

- ``onnx_node``: the ONNX node name, ``onnx_op_type``: its op type,
- ``onnx_outputs``: the ONNX tensor names whose value this FX node computes (may be empty for
  intermediate FX nodes of one ONNX node).
"""

from __future__ import annotations

import dis
import inspect
import sys
import weakref
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

from .conversion_record import find_conversion_record


@dataclass
class OriginMap:
    """What the tracer needs to know about the generated source."""

    filename: str
    line_nodes: dict[int, str]  # line -> ONNX node name
    node_op_types: dict[str, str]  # ONNX node name -> op type
    line_outputs: dict[int, list[list[str]]]  # line -> per assigned variable, the ONNX tensors it holds


# code object -> {bytecode offset of an UNPACK_SEQUENCE: how many values it takes}
_UNPACK_SITES: weakref.WeakKeyDictionary[Any, dict[int, int]] = weakref.WeakKeyDictionary()


def _unpack_sites(code: Any) -> dict[int, int]:
    sites = _UNPACK_SITES.get(code)
    if sites is None:
        sites = {i.offset: i.argval for i in dis.get_instructions(code) if i.opname == "UNPACK_SEQUENCE"}
        _UNPACK_SITES[code] = sites
    return sites


class UnpackingProxy(torch.fx.Proxy):
    """A Proxy that learns how many values ``a, b = proxy`` takes from a per-function table.

    ``torch.fx.Proxy.__iter__`` disassembles the whole calling function on every unpacking; in a
    generated ``forward`` of thousands of lines that made a handful of ``a, b = split(...)`` lines
    a third of the trace. The answer is the same bytecode instruction either way.
    """

    def __iter__(self) -> Iterator[torch.fx.Proxy]:
        frame = sys._getframe(1)
        count = _unpack_sites(frame.f_code).get(frame.f_lasti)
        if count is None:
            return self.tracer.iter(self)
        return (self[i] for i in range(count))  # type: ignore[index]


# Arguments that stand for themselves in a graph (the base tracer's answer for these exact types).
_PLAIN_ARGUMENTS = frozenset({int, float, bool, str})


@dataclass
class _AttributeNames:
    """The qualified name of each parameter and buffer of a module, by object identity.

    The first name wins, as in ``named_parameters()``'s order, which is the name the base tracer
    would find; the root holds every object for as long as the table lives, so identities are stable.
    """

    root: torch.nn.Module
    parameters: dict[int, str]
    buffers: dict[int, str]

    @classmethod
    def of(cls, root: torch.nn.Module) -> _AttributeNames:
        parameters: dict[int, str] = {}
        for name, parameter in root.named_parameters():
            parameters.setdefault(id(parameter), name)
        buffers: dict[int, str] = {}
        for name, buffer in root.named_buffers():
            buffers.setdefault(id(buffer), name)
        return cls(root, parameters, buffers)


class OriginTracer(torch.fx.Tracer):
    """A ``torch.fx.Tracer`` that tags nodes with their ONNX origin."""

    def __init__(self, origins: OriginMap) -> None:
        # Nothing to autowrap: generated code never calls ``math`` (model.py does not import it), and
        # patching its 50-odd functions in and out again costs 0.4 ms per trace.
        super().__init__(autowrap_modules=())
        self.origins = origins
        self.nodes_by_line: dict[int, list[torch.fx.Node]] = defaultdict(list)
        self._attribute_names: _AttributeNames | None = None

    def _names(self) -> _AttributeNames:
        names = self._attribute_names
        if names is None or names.root is not self.root:
            names = self._attribute_names = _AttributeNames.of(self.root)
        return names

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, torch.fx.Proxy]) -> Any:
        """``torch.fx.Tracer.getattr`` with the parameter's name looked up by identity in a table.

        The base class walks ``named_parameters()`` on every attribute read, which made tracing
        quadratic in the number of parameters: a sixth of a 500-node conversion.
        """
        if isinstance(attr_val, torch.nn.Parameter) and not self.param_shapes_constant:
            name = self._names().parameters.get(id(attr_val))
            if name is not None:
                if name not in parameter_proxy_cache:
                    parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
                return parameter_proxy_cache[name]
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_arg(self, a: Any) -> Any:
        """``torch.fx.Tracer.create_arg``, with parameters and buffers found by identity, not by a walk,
        and the argument types of nearly every call (proxies, numbers, plain tuples and lists) answered
        before the base class's dozen type tests."""
        kind = type(a)
        if kind is UnpackingProxy:
            return a.node
        if kind in _PLAIN_ARGUMENTS or a is None:
            return a
        if kind is tuple:
            return tuple([self.create_arg(item) for item in a])
        if kind is list:
            return [self.create_arg(item) for item in a]
        if isinstance(a, torch.Tensor):
            names = self._names()
            table = names.parameters if isinstance(a, torch.nn.Parameter) else names.buffers
            name = table.get(id(a))
            if name is not None:
                return self.create_node("get_attr", name, (), {})
        return super().create_arg(a)

    def proxy(self, node: torch.fx.Node) -> torch.fx.Proxy:
        return UnpackingProxy(node, self)

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


ORIGIN_KEYS = ("onnx_node", "onnx_op_type", "onnx_outputs")


def node_origins(gm: torch.fx.GraphModule) -> dict[str, dict[str, Any]]:
    """FX node name -> its ONNX origin entries of ``node.meta``; node.meta is not pickled, so the
    conversion record keeps this copy (see :func:`restore_origins`)."""
    return {n.name: {k: n.meta[k] for k in ORIGIN_KEYS} for n in gm.graph.nodes if "onnx_node" in n.meta}


def restore_origins(gm: torch.nn.Module) -> torch.nn.Module:
    """Put ONNX origins back into ``node.meta`` of a GraphModule loaded from ``model_full.pt``.

    Unpickling rebuilds the graph from its code, with the same node names, but without meta.
    """
    record = find_conversion_record(gm)
    if isinstance(gm, torch.fx.GraphModule) and record is not None:
        for node in gm.graph.nodes:
            node.meta.update(record.node_origins.get(node.name, {}))
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


# ---------------------------------------------------------------------------------- traceability
@dataclass
class CheckResult:
    """Whether one PyTorch tool accepted the model, and the error when it did not."""

    ok: bool | None  # None: not run (skipped)
    error: str = ""
    seconds: float = 0.0
    detail: str = ""


@dataclass
class TraceabilityReport:
    symbolic_trace: CheckResult
    export_static: CheckResult
    export_dynamic_batch: CheckResult
    compile: CheckResult
    backward: CheckResult

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {name: asdict(getattr(self, name)) for name in self.__dataclass_fields__}

    @property
    def ok(self) -> bool:
        return all(getattr(self, name).ok is not False for name in self.__dataclass_fields__)


def _attempt(fn: Any) -> CheckResult:
    import time

    start = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:  # each check reports the tool's own error rather than stopping the others
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()
        return CheckResult(False, message[0][:500] if message else type(exc).__name__,
                           round(time.perf_counter() - start, 3))
    return CheckResult(True, "", round(time.perf_counter() - start, 3), detail or "")


def check_traceability(gm: torch.nn.Module, inputs: tuple[torch.Tensor, ...], dynamic_batch: bool = True,
                       compile: bool = True) -> TraceabilityReport:
    """Try the PyTorch tools users rely on: ``symbolic_trace``, ``torch.export`` (static and with
    a dynamic batch dimension), ``torch.compile`` (CPU), and training (``train()`` + backward must
    reach every float parameter). The model itself is left untouched (training runs on a copy)."""
    import copy

    def trace() -> str:
        traced = torch.fx.symbolic_trace(gm)
        return f"{len(traced.graph.nodes)} FX nodes"

    def export_static() -> str:
        torch.export.export(gm, inputs)
        return ""

    def export_dynamic() -> str:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(gm, inputs, dynamic_shapes=tuple({0: batch} for _ in inputs))
        bigger = tuple(torch.cat([t, t[:1]]) for t in inputs)
        program.module()(*bigger)
        return "batch size varies"

    def compiled() -> str:
        with torch.no_grad():
            eager = gm(*inputs)
            result = torch.compile(gm, dynamic=False)(*inputs)
        eager_list = eager if isinstance(eager, (tuple, list)) else [eager]
        result_list = result if isinstance(result, (tuple, list)) else [result]
        diff = max((float((a.double() - b.double()).abs().max()) for a, b in zip(eager_list, result_list)
                    if a.is_floating_point() and a.numel()), default=0.0)
        return f"max abs difference to eager {diff:.3g}"

    def backward() -> str:
        model = copy.deepcopy(gm).train()
        ran: set[str] = set()  # modules that ran: a branch of a run-time If that these inputs do not take does not
        hooks = [module.register_forward_hook(lambda *_, name=name: ran.add(name))
                 for name, module in model.named_modules()]
        try:
            out = model(*inputs)
        finally:
            for hook in hooks:
                hook.remove()
        outs = out if isinstance(out, (tuple, list)) else [out]
        loss = sum(o.float().square().mean() for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point())
        if not isinstance(loss, torch.Tensor):
            raise RuntimeError("the model has no floating-point output to train on")
        loss.backward()
        params = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
        idle = [n for n, p in params if p.grad is None and n.rpartition(".")[0] not in ran]
        missing = [n for n, p in params if p.grad is None and n not in idle]
        if missing:
            raise RuntimeError(f"{len(missing)} of {len(params)} parameters get no gradient: {missing[:5]}")
        not_run = f" ({len(idle)} more in modules these inputs do not run)" if idle else ""
        return f"{len(params) - len(idle)} parameters receive gradients{not_run}"

    skipped = CheckResult(None, "", 0.0, "skipped")
    return TraceabilityReport(
        symbolic_trace=_attempt(trace),
        export_static=_attempt(export_static),
        export_dynamic_batch=_attempt(export_dynamic) if dynamic_batch else skipped,
        compile=_attempt(compiled) if compile else skipped,
        backward=_attempt(backward),
    )
