"""Lowering: walk the (sorted, checked) graph from the native core and call each op's handler.

The result is an :class:`~onnx2fx.codegen.emitted.EmittedModule`: the lines of a PyTorch module
plus the tensors for its parameters, which :mod:`onnx2fx.codegen.render` turns into ``model.py``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import torch
from torch.fx.experimental.symbolic_shapes import DimDynamic, StatelessSymbolicContext

from . import (
    _core,
    ops,  # noqa: F401 - registers the built-in op table
)
from .codegen import fake_eval
from .codegen.emitted import EmittedModule, NodeInfo
from .codegen.emitter import Emitter
from .codegen.values import Value
from .errors import ConversionError, Onnx2FxError, UnsupportedOperatorError
from .functions import function_body
from .gc_pause import collector_paused
from .idioms import IdiomDeclined, IdiomMatch, IdiomUse, find_idioms, idiom_kinds, lower_idiom
from .ops.registry import OpImpl, lookup, normalize_domain
from .tensors import ONNX_TO_TORCH, ONNX_TYPE_NAMES, SUB_BYTE_STORAGE, to_torch, torch_dtype

# Size assumed for a dynamic dimension while shapes are propagated (the code stays symbolic).
BATCH_HINT = 2
# Torch checks some sizes on the assumed value rather than symbolically: a convolution's kernel
# against its input length, a reflect pad against the padded size, a squeeze of a dimension that
# is 1 only for realistic lengths. When lowering fails on one assumed size for the non-batch
# dimensions, it starts over with the next; the generated code is symbolic whichever succeeds.
OTHER_DIM_HINTS = (64, 256, 512, 1024)
OTHER_DIM_HINT = OTHER_DIM_HINTS[0]


def attribute_value(attr: _core.Attribute) -> Any:
    """A core ``Attribute`` as the Python value a lowering receives."""
    kind = attr.type
    value: Any = attr.value  # its type follows from ``kind``, which a type checker cannot see
    if kind == "STRING":
        return value.decode("utf-8", errors="replace")
    if kind == "STRINGS":
        return [v.decode("utf-8", errors="replace") for v in value]
    if kind == "TENSOR":
        return to_torch(value)
    if kind == "TENSORS":
        return [to_torch(v) for v in value]
    if kind == "INTS":
        return [int(v) for v in value]
    if kind == "FLOATS":
        return [float(v) for v in value]
    return value


def input_shape(value_info: _core.ValueInfo, override: Sequence[int] | None) -> list[int | None]:
    """Sizes of a graph input: ints for static dims, ``None`` for dynamic ones."""
    if override is not None:
        return [int(d) for d in override]
    if value_info.type.kind != "tensor":
        raise ConversionError(f"graph input {value_info.name!r} is a {value_info.type.kind or 'untyped'} "
                              "value; only tensor inputs are supported")
    shape = value_info.type.shape
    if shape is None:
        raise ConversionError(f"graph input {value_info.name!r} has no shape in the model; "
                              "give one with input_shapes / --shape")
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]


def fake_input(emitter: Emitter, value_info: _core.ValueInfo, shape: list[int | None],
               other_dim_hint: int = OTHER_DIM_HINT) -> torch.Tensor:
    dtype = torch_dtype(value_info.type.elem_type, f"graph input {value_info.name!r}")
    hints = [d if d is not None else (BATCH_HINT if i == 0 else other_dim_hint) for i, d in enumerate(shape)]
    dynamic = [DimDynamic.STATIC if d is not None else DimDynamic.DYNAMIC for d in shape]
    try:  # never written, so the pages are not touched; an impossible size fails here
        example = torch.empty(hints, dtype=dtype)
    except RuntimeError as exc:
        raise ConversionError(f"graph input {value_info.name!r} has shape {hints}, too large to trace: "
                              f"{str(exc).splitlines()[0]}") from exc
    if fake_eval.META_EVALUATION and all(d is not None for d in shape):
        # static: a meta tensor, like the values computed from it (a FakeTensor is made only where a
        # call needs one; the first in a process costs milliseconds)
        return fake_eval.meta_like(example)
    return emitter.fake_mode.from_tensor(
        example, symbolic_context=StatelessSymbolicContext(dynamic_sizes=dynamic))


def lower_graph(model: _core.Model, input_shapes: Mapping[str, Sequence[int]] | None = None,
                idioms: bool | Collection[str] = True) -> EmittedModule:
    """Lower the main graph of a core ``Model`` into an emitted module.

    With ``idioms``, the decompositions exporters write for standard functions (GELU, SiLU,
    HardSwish, LayerNorm, RMSNorm, attention; Linear when named) become one call each (:mod:`onnx2fx.idioms`):
    True for the default kinds, False for none, or the kinds to fuse.

    A model with dynamic non-batch dimensions whose lowering fails on the first assumed size is
    lowered again on each larger one of ``OTHER_DIM_HINTS``; the first error is the one raised
    when none succeeds, with the sizes tried added to its message."""
    first_error: ConversionError | None = None
    tried: list[int] = []
    for hint in OTHER_DIM_HINTS:
        try:
            with collector_paused():
                return _lower_graph_at(model, input_shapes, hint, idioms)
        except UnsupportedOperatorError:
            raise
        except ConversionError as exc:
            first_error = first_error or exc
            tried.append(hint)
            if not _has_dynamic_non_batch_dim(model, input_shapes) or "too large to trace" in str(exc):
                break
    assert first_error is not None
    if len(tried) > 1 and first_error.args and isinstance(first_error.args[0], str):
        sizes = ", ".join(str(h) for h in tried)
        first_error.args = (f"{first_error.args[0]} (dynamic dimensions were traced at {sizes} in turn and "
                            "failed at each; --shape NAME=... fixes an input's sizes)", *first_error.args[1:])
    raise first_error


def _has_dynamic_non_batch_dim(model: _core.Model, input_shapes: Mapping[str, Sequence[int]] | None) -> bool:
    fixed = set(input_shapes or {})
    for vi in model.graph.inputs:
        if vi.name in fixed or vi.type.kind != "tensor" or vi.type.shape is None:
            continue
        if any(not (isinstance(d, int) and d >= 0) for d in list(vi.type.shape)[1:]):
            return True
    return False


def _lower_graph_at(model: _core.Model, input_shapes: Mapping[str, Sequence[int]] | None,
                    other_dim_hint: int, idioms: bool | Collection[str] = True) -> EmittedModule:
    input_shapes = dict(input_shapes or {})
    graph = model.graph
    emitter = Emitter()
    env: dict[str, Value] = {}
    weights_started = time.perf_counter()
    for tensor in graph.initializers:
        env[tensor.name] = emitter.const(to_torch(tensor), tensor.name, initializer=tensor.name)
    weight_seconds = time.perf_counter() - weights_started

    inputs: list[Value] = []
    input_onnx: list[str] = []
    shapes: dict[str, list[int | None]] = {}
    for vi in graph.inputs:
        if vi.name in env:  # old IR versions list initializers among the inputs
            continue
        if vi.type.kind in ("sequence", "optional"):  # a list of tensors / a tensor or None, at run time
            value = emitter.graph_input(vi.name, None)
            value.meta.update(runtime=vi.type.kind, element=vi.type.element)
            env[vi.name] = value
            inputs.append(value)
            input_onnx.append(vi.name)
            continue
        shape = input_shape(vi, input_shapes.pop(vi.name, None))
        shapes[vi.name] = shape
        value = emitter.graph_input(vi.name, fake_input(emitter, vi, shape, other_dim_hint))
        env[vi.name] = value
        inputs.append(value)
        input_onnx.append(vi.name)
    if input_shapes:
        raise ConversionError(f"input_shapes names inputs the model does not have: {sorted(input_shapes)}; "
                              f"its inputs are {input_onnx}")

    opsets = {normalize_domain(d): v for d, v in model.opset_imports.items()}
    functions = list(model.functions)
    nodes = list(graph.nodes)
    kinds = idiom_kinds(idioms)
    matches = {m.terminal: m for m in find_idioms(graph, kinds)} if kinds else {}
    deferred = {i for m in matches.values() for i in m.members[:-1]}
    used: list[IdiomUse] = []
    for index, node in enumerate(nodes):
        if index in deferred:  # lowered with its idiom's terminal node, or just before it if declined
            continue
        match = matches.get(index)
        if match is not None:
            use = _lower_idiom(emitter, match, nodes, opsets, env)
            if use is not None:
                used.append(use)
                continue
            for member in match.members[:-1]:
                lower_node(emitter, nodes[member], member, opsets, env, functions)
        lower_node(emitter, node, index, opsets, env, functions)

    outputs = [_declared_type(emitter, env[o.name], o) for o in graph.outputs]
    emitted = emitter.finish(inputs, outputs, input_onnx, [o.name for o in graph.outputs], env)
    emitted.input_shapes = shapes
    emitted.idioms = used
    emitted.weight_seconds = weight_seconds
    return emitted


def _node_name(node: _core.Node, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _lower_idiom(emitter: Emitter, match: IdiomMatch, nodes: Sequence[_core.Node], opsets: Mapping[str, int],
                 env: dict[str, Value]) -> IdiomUse | None:
    """Emit ``match`` as one call attributed to its terminal node; None when it does not fit the
    values it meets (nothing is emitted then)."""
    terminal = nodes[match.terminal]
    domain = normalize_domain(terminal.domain)
    info = NodeInfo(_node_name(terminal, match.terminal), terminal.op_type, domain,
                    opsets.get(domain, opsets.get("", 1)), list(terminal.outputs))
    emitter.begin_node(info)
    try:
        with emitter.attempt():
            value = lower_idiom(emitter, match, env)
    except (IdiomDeclined, Onnx2FxError):  # a shape or dtype the fused call does not take: the nodes instead
        return None
    value.onnx_name = match.output
    env[match.output] = value
    internal = tuple(out for i in match.members[:-1] for out in nodes[i].outputs if out)
    params = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in match.params.items()))
    return IdiomUse(match.kind, tuple(_node_name(nodes[i], i) for i in match.members), match.input, match.output,
                    internal, params)


def _declared_type(emitter: Emitter, value: Value, value_info: _core.ValueInfo) -> Value:
    """A graph output declared as a 4/2-bit type but computed in its storage type, viewed back."""
    elem_type = value_info.type.elem_type if value_info.type.kind == "tensor" else 0
    declared = ONNX_TO_TORCH.get(elem_type)
    if declared in SUB_BYTE_STORAGE and value.dtype == SUB_BYTE_STORAGE[declared]:
        emitter.node = None
        return emitter.method(value, "view", declared)
    return value


def lower_node(emitter: Emitter, node: _core.Node, index: int, opsets: Mapping[str, int],
               env: dict[str, Value], functions: Sequence[_core.Function] = (),
               parent: NodeInfo | None = None) -> None:
    """Lower one node. A node without a lowering, or whose lowering refuses it, is replaced by its
    function body when it has one (a local function of the model or the specification's)."""
    domain = normalize_domain(node.domain)
    name = parent.name if parent is not None else _node_name(node, index)
    opset = opsets.get(domain, 1 if domain else opsets.get("", 1))
    info = NodeInfo(name, node.op_type, domain, opset, list(node.outputs), node.name or f"{node.op_type}_{index}")
    emitter.begin_node(info)
    args = [env[i] if i else None for i in node.inputs]
    outer, emitter.scope = emitter.scope, Scope(env, opsets, functions)
    try:
        with emitter.attempt():
            _lower_with_table(emitter, node, info, args, env)
    except UnsupportedOperatorError:
        body = function_body(node, domain, opset, args, functions)
        if body is None:
            raise
        nodes, body_opsets = body
        for i, sub in enumerate(nodes):
            lower_node(emitter, sub, i, {**opsets, **body_opsets}, env, functions, parent=parent or info)
        emitter.begin_node(parent or info)
        if parent is None:
            emitter.warn(f"{node.op_type} has no lowering for this node; converted through its ONNX function body")
    finally:
        emitter.scope = outer


@dataclass
class Scope:
    """What lowering a subgraph (the body of If, Loop, Scan) needs: the values visible from it."""

    env: dict[str, Value]
    opsets: Mapping[str, int]
    functions: Sequence[_core.Function]


def lower_subgraph(emitter: Emitter, graph: _core.Graph, inputs: Sequence[Value | None]) -> list[Value]:
    """Lower a subgraph inline, in the current node's scope, with its formal inputs bound to
    ``inputs``; return its outputs. Called by control-flow lowerings, once per use of the body."""
    scope, node = emitter.scope, emitter.node
    assert scope is not None and node is not None, "subgraphs are lowered from within a node"
    env = dict(scope.env)
    for tensor in graph.initializers:
        env[tensor.name] = emitter.const(to_torch(tensor), tensor.name)
    for vi, value in zip(graph.inputs, inputs):
        if value is not None:
            env[vi.name] = value
    for index, sub in enumerate(graph.nodes):
        lower_node(emitter, sub, index, scope.opsets, env, scope.functions, parent=node)
    emitter.begin_node(node)
    emitter.scope = scope
    return [env[o.name] for o in graph.outputs]


def _where(info: NodeInfo) -> str:
    return f"node {info.name!r} ({info.op_type}, domain {info.domain or 'ai.onnx'!r}, opset {info.opset})"


# The ONNX attribute types a lowering's keyword default stands for: a mismatch (kernel_shape given
# as a string, say) is refused with the attribute's name before the lowering sees it.
_ATTRIBUTE_TYPES: dict[type, tuple[str, ...]] = {
    bool: ("INT",), int: ("INT",), float: ("FLOAT", "INT"), str: ("STRING",),
    list: ("INTS", "FLOATS", "STRINGS", "TENSORS", "GRAPHS"), tuple: ("INTS", "FLOATS", "STRINGS", "TENSORS", "GRAPHS"),
}


def _check_inputs_and_attributes(info: NodeInfo, node: _core.Node, impl: OpImpl, args: list[Value | None]) -> None:
    """Required inputs present and attributes of the type the lowering's defaults declare."""
    for index in range(len(args), len(impl.inputs)):  # "" inputs are the lowering's call
        param = impl.inputs[index]
        if param.default is inspect.Parameter.empty:
            raise ConversionError(f"{_where(info)}: required input {index} ({param.name}) is missing; "
                                  f"the node has {len(args)} input(s)")
    declared = impl.attribute_defaults
    for key, attribute in node.attributes.items():
        default = declared.get(key, None)
        expected = _ATTRIBUTE_TYPES.get(type(default))
        if expected is not None and attribute.type not in expected:
            raise ConversionError(f"{_where(info)}: attribute {key!r} is {attribute.type}, expected "
                                  f"{' or '.join(expected)}")


def _lower_with_table(emitter: Emitter, node: _core.Node, info: NodeInfo, args: list[Value | None],
                      env: dict[str, Value]) -> None:
    name, domain, opset = info.name, info.domain, info.opset
    impl = lookup(node.op_type, domain, opset)
    if impl is None:
        shown_domain = domain or "ai.onnx"
        raise UnsupportedOperatorError(
            f"node {name!r}: operator {node.op_type} (domain {shown_domain!r}, opset {opset}) is not supported",
            node=name, op_type=node.op_type, domain=domain, opset=opset)
    attrs = {key: attribute_value(a) for key, a in node.attributes.items()}
    if not impl.accepts_any_attribute:
        unknown = sorted(set(attrs) - impl.attribute_names)
        if unknown:
            raise emitter.unsupported(unknown[0], f"is not handled (value {attrs[unknown[0]]!r})")
    if len(args) > len(impl.inputs) and not impl.variadic:
        raise emitter.unsupported(None, f"{len(args)} inputs given, at most {len(impl.inputs)} handled")
    _check_inputs_and_attributes(info, node, impl, args)
    try:
        if not impl.sub_byte_aware:  # 4/2-bit values are computed on as int8/uint8
            args = [emitter.method(a, "view", SUB_BYTE_STORAGE[a.dtype]) if _is_tensor(a) and a.dtype
                    in SUB_BYTE_STORAGE else a for a in args]
        narrow_to = _wide_unsigned(args) if impl.widened_for_unsigned else None
        if narrow_to is not None:  # torch has no kernels for these ops on uint16/32/64: compute in int64
            args = [emitter.method(a, "to", torch.int64) if a is not None and a.dtype == narrow_to else a
                    for a in args]
        result = impl.fn(emitter, *args, **attrs)
    except (Onnx2FxError, MemoryError, RecursionError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a lowering meeting inputs it cannot handle (shapes, ranks, dtypes)
        raise ConversionError(f"{_where(info)}: cannot be lowered with these inputs and attributes: "
                              f"{type(exc).__name__}: {exc}") from exc
    results = result if isinstance(result, tuple) else (result,)
    if narrow_to is not None:
        results = tuple(emitter.method(v, "to", narrow_to) if i in impl.narrowed_outputs and v is not None
                        and v.dtype == torch.int64 else v for i, v in enumerate(results))
    for output, value in zip(node.outputs, results):
        if not output:
            continue
        if value is None:
            raise emitter.unsupported(None, f"output {output!r} is not produced by this lowering")
        value.onnx_name = output
        env[output] = value
    missing = [o for o in node.outputs[len(results):] if o]
    if missing:
        raise emitter.unsupported(None, f"optional outputs {missing} are not produced by this lowering")


# The unsigned types torch has few kernels for: ops registered ``widened_for_unsigned`` compute
# them as int64 (see ``OpImpl``).
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def _is_tensor(v: Value | None) -> TypeGuard[Value]:
    """Whether ``v`` is a tensor (not an omitted input, a sequence or an optional)."""
    return v is not None and (v.fake is not None or v.const is not None or v.elements is not None)


def _wide_unsigned(args: Sequence[Value | None]) -> torch.dtype | None:
    for a in args:
        if _is_tensor(a) and a.dtype in _WIDE_UNSIGNED:
            return a.dtype
    return None


def describe_type(value_info: _core.ValueInfo) -> str:
    t = value_info.type
    return f"{ONNX_TYPE_NAMES.get(t.elem_type, t.elem_type)}{t.shape}"
