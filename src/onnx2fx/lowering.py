"""Lowering: walk the (sorted, checked) graph from the native core and call each op's handler.

The result is an :class:`~onnx2fx.codegen.emitter.EmittedModule`: the lines of a PyTorch module
plus the tensors for its parameters, which :mod:`onnx2fx.codegen.render` turns into ``model.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.fx.experimental.symbolic_shapes import DimDynamic, StatelessSymbolicContext

from . import ops  # noqa: F401 - registers the built-in op table
from .codegen.emitter import EmittedModule, Emitter, NodeInfo
from .codegen.values import Value
from .errors import ConversionError, UnsupportedOperatorError
from .ops.registry import lookup, normalize_domain
from .tensors import ONNX_TYPE_NAMES, to_torch, torch_dtype

# Size assumed for a dynamic dimension while shapes are propagated (the code stays symbolic).
BATCH_HINT = 2
OTHER_DIM_HINT = 64


def attribute_value(attr: Any) -> Any:
    """A core ``Attribute`` as the Python value a lowering receives."""
    kind, value = attr.type, attr.value
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


def input_shape(value_info: Any, override: Sequence[int] | None) -> list[int | None]:
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


def fake_input(emitter: Emitter, value_info: Any, shape: list[int | None]) -> torch.Tensor:
    dtype = torch_dtype(value_info.type.elem_type)
    hints = [d if d is not None else (BATCH_HINT if i == 0 else OTHER_DIM_HINT) for i, d in enumerate(shape)]
    dynamic = [DimDynamic.STATIC if d is not None else DimDynamic.DYNAMIC for d in shape]
    example = torch.empty(hints, dtype=dtype)
    return emitter.fake_mode.from_tensor(
        example, symbolic_context=StatelessSymbolicContext(dynamic_sizes=dynamic))


def lower_graph(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None) -> EmittedModule:
    """Lower the main graph of a core ``Model`` into an emitted module."""
    input_shapes = dict(input_shapes or {})
    graph = model.graph
    emitter = Emitter()
    env: dict[str, Value] = {}
    for tensor in graph.initializers:
        env[tensor.name] = emitter.const(to_torch(tensor), tensor.name, initializer=tensor.name)

    inputs: list[Value] = []
    input_onnx: list[str] = []
    shapes: dict[str, list[int | None]] = {}
    for vi in graph.inputs:
        if vi.name in env:  # old IR versions list initializers among the inputs
            continue
        shape = input_shape(vi, input_shapes.pop(vi.name, None))
        shapes[vi.name] = shape
        value = emitter.input(vi.name, fake_input(emitter, vi, shape))
        env[vi.name] = value
        inputs.append(value)
        input_onnx.append(vi.name)
    if input_shapes:
        raise ConversionError(f"input_shapes names inputs the model does not have: {sorted(input_shapes)}; "
                              f"its inputs are {input_onnx}")

    opsets = {normalize_domain(d): v for d, v in model.opset_imports.items()}
    for index, node in enumerate(graph.nodes):
        lower_node(emitter, node, index, opsets, env)

    outputs = [env[o.name] for o in graph.outputs]
    emitted = emitter.finish(inputs, outputs, input_onnx, [o.name for o in graph.outputs], env)
    emitted.input_shapes = shapes
    return emitted


def lower_node(emitter: Emitter, node: Any, index: int, opsets: Mapping[str, int],
               env: dict[str, Value]) -> None:
    domain = normalize_domain(node.domain)
    name = node.name or f"{node.op_type}_{index}"
    opset = opsets.get(domain, 1 if domain else opsets.get("", 1))
    info = NodeInfo(name, node.op_type, domain, opset, list(node.outputs))
    emitter.begin_node(info)
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
    args = [env[i] if i else None for i in node.inputs]
    params = inspect.signature(impl.fn).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    if len(args) > len(positional) and not variadic:
        raise emitter.unsupported(None, f"{len(args)} inputs given, at most {len(positional)} handled")
    result = impl.fn(emitter, *args, **attrs)
    results = result if isinstance(result, tuple) else (result,)
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


def describe_type(value_info: Any) -> str:
    t = value_info.type
    return f"{ONNX_TYPE_NAMES.get(t.elem_type, t.elem_type)}{t.shape}"
