"""ONNX functions: a node without a lowering of its own is replaced by its function body.

Two kinds of functions define an operator in terms of others: the model's local functions
(``ModelProto.functions``, e.g. what exporters write for modules kept whole), and the function
bodies the ONNX specification gives many operators (``LayerNormalization``,
``SoftmaxCrossEntropyLoss``, ``Shrink``, ...; some depend on the node's input types). When the op
table has no lowering for a node, or its lowering refuses the node's attributes, the lowering
expands the node into the nodes of its function body and lowers those instead. The generated code
for such a node is longer than a hand-written lowering, but it computes exactly what the
specification says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, FunctionProto, NodeProto, TensorProto

from . import _core
from .codegen.values import Value
from .ops.registry import normalize_domain
from .tensors import TORCH_TO_ONNX

_ATTRIBUTE_TYPES = {
    "FLOAT": AttributeProto.FLOAT, "INT": AttributeProto.INT, "STRING": AttributeProto.STRING,
    "TENSOR": AttributeProto.TENSOR, "FLOATS": AttributeProto.FLOATS, "INTS": AttributeProto.INTS,
    "STRINGS": AttributeProto.STRINGS, "TENSORS": AttributeProto.TENSORS,
}


def function_body(node: Any, domain: str, opset: int, args: Sequence[Value | None],
                  local_functions: Sequence[Any] = ()) -> tuple[list[Any], dict[str, int]] | None:
    """The nodes that replace ``node`` (core nodes, with fresh names for the function's internal
    values) and the opsets they are written against; ``None`` when ``node`` has no function."""
    call = _node_proto(node)
    if call is None:
        return None
    function = _local_function(node, domain, local_functions) or _schema_function(call, domain, opset, args)
    if function is None:
        return None
    nodes = _expand(call, function, prefix=f"{node.name or node.op_type}/")
    graph = onnx.helper.make_graph(nodes, "function_body", [], [])
    opsets = {normalize_domain(o.domain): o.version for o in function.opset_import}
    imports = [onnx.helper.make_opsetid(d, v) for d, v in opsets.items()] or [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(graph, opset_imports=imports)
    core = _core.load_model_from_bytes(model.SerializeToString(), run_passes=False)
    return list(core.graph.nodes), opsets


def _schema_function(call: NodeProto, domain: str, opset: int, args: Sequence[Value | None]) -> FunctionProto | None:
    try:
        schema = onnx.defs.get_schema(call.op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None
    for name, attr in schema.attributes.items():  # the body refers to attributes by name: give it defaults
        if name not in {a.name for a in call.attribute} and attr.default_value.type != AttributeProto.UNDEFINED:
            call.attribute.append(attr.default_value)
    versions = [v for v in schema.function_opset_versions if v <= opset]
    if versions:
        function = FunctionProto()
        function.ParseFromString(schema.get_function_with_opset_version(max(versions)))
        return function
    versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if not versions:
        return None
    types = [_type_proto(a).SerializeToString() for a in args]
    data = schema.get_context_dependent_function_with_opset_version(max(versions), call.SerializeToString(), types)
    if not data:
        return None
    function = FunctionProto()
    function.ParseFromString(data)
    return function if function.node else None


def _local_function(node: Any, domain: str, functions: Sequence[Any]) -> FunctionProto | None:
    for f in functions:
        if f.name == node.op_type and normalize_domain(f.domain) == domain:
            proto = FunctionProto(name=f.name, domain=f.domain, input=list(f.inputs), output=list(f.outputs),
                                  attribute=list(f.attributes))
            for name, attr in f.attribute_defaults.items():
                converted = _attribute_proto(name, attr)
                if converted is not None:
                    proto.attribute_proto.append(converted)
            for n in f.nodes:
                converted_node = _node_proto(n)
                if converted_node is None:
                    return None
                proto.node.append(converted_node)
            proto.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in f.opset_imports.items())
            return proto
    return None


def _expand(call: NodeProto, function: FunctionProto, prefix: str) -> list[NodeProto]:
    """The function's nodes with its formal inputs/outputs renamed to the call's actual ones, its
    internal values prefixed, and attribute references replaced by the call's attributes."""
    names = {formal: (call.input[i] if i < len(call.input) else "") for i, formal in enumerate(function.input)}
    names.update({formal: call.output[i] for i, formal in enumerate(function.output)
                  if i < len(call.output) and call.output[i]})
    given = {a.name: a for a in function.attribute_proto}
    given.update({a.name: a for a in call.attribute})

    def rename(name: str) -> str:
        return names.get(name, prefix + name if name else "")

    return [_rename_node(n, rename, given, prefix) for n in function.node]


def _rename_node(n: NodeProto, rename: Any, given: dict[str, AttributeProto], prefix: str) -> NodeProto:
    copy = NodeProto()
    copy.CopyFrom(n)
    copy.name = prefix + (n.name or n.op_type)
    copy.input[:] = [rename(i) for i in n.input]
    copy.output[:] = [rename(o) for o in n.output]
    del copy.attribute[:]
    for a in n.attribute:
        if a.ref_attr_name:
            if a.ref_attr_name in given:
                resolved = AttributeProto()
                resolved.CopyFrom(given[a.ref_attr_name])
                resolved.name = a.name
                copy.attribute.append(resolved)
            continue
        a_copy = AttributeProto()
        a_copy.CopyFrom(a)
        # Subgraphs see the function's values by name: rename them (and their own) consistently.
        for graph in ([a_copy.g] if a_copy.HasField("g") else []) + list(a_copy.graphs):
            _rename_graph(graph, rename, given, prefix)
        copy.attribute.append(a_copy)
    return copy


def _rename_graph(graph: onnx.GraphProto, rename: Any, given: dict[str, AttributeProto], prefix: str) -> None:
    for collection in (graph.input, graph.output, graph.value_info, graph.initializer):
        for item in collection:
            item.name = rename(item.name)
    renamed = [_rename_node(n, rename, given, prefix) for n in graph.node]
    del graph.node[:]
    graph.node.extend(renamed)


def _node_proto(node: Any) -> NodeProto | None:
    """A core node as a NodeProto (``None`` when it has attributes that cannot be carried over)."""
    proto = onnx.helper.make_node(node.op_type, list(node.inputs), list(node.outputs), name=node.name,
                                  domain=node.domain)
    for name, attr in node.attributes.items():
        converted = _attribute_proto(name, attr)
        if converted is None:
            return None
        proto.attribute.append(converted)
    return proto


def _attribute_proto(name: str, attr: Any) -> AttributeProto | None:
    if attr.ref_attr_name:
        kind = _ATTRIBUTE_TYPES.get(attr.type, AttributeProto.UNDEFINED)
        return AttributeProto(name=name, ref_attr_name=attr.ref_attr_name, type=kind)
    kind = attr.type
    value = attr.value
    if kind not in _ATTRIBUTE_TYPES:
        return None
    if kind == "TENSOR":
        value = _tensor_proto(value)
    elif kind == "TENSORS":
        value = [_tensor_proto(v) for v in value]
    return onnx.helper.make_attribute(name, value, attr_type=_ATTRIBUTE_TYPES[kind])


def _tensor_proto(tensor: Any) -> TensorProto:
    array = np.asarray(tensor.aligned_numpy()).reshape(list(tensor.dims))
    proto = TensorProto(name=tensor.name, data_type=tensor.data_type, dims=list(tensor.dims))
    proto.raw_data = np.ascontiguousarray(array).tobytes()
    return proto


def _type_proto(v: Value | None) -> onnx.TypeProto:
    if v is None or (v.fake is None and v.const is None and v.elements is None):
        return onnx.TypeProto()
    shape = [d if d is not None else "?" for d in v.static_shape()]
    return onnx.helper.make_tensor_type_proto(TORCH_TO_ONNX.get(v.dtype, TensorProto.UNDEFINED), shape)
