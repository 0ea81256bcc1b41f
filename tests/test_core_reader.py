"""The native reader (onnx2fx._core) against onnx.load, field by field."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper
from wire_encoding import field_bytes, field_varint, varint

from onnx2fx import _core

BACKEND_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
BACKEND_MODELS = sorted(
    [
        p
        for folder in ("simple", "pytorch-converted", "pytorch-operator")
        for p in BACKEND_DATA.glob(f"{folder}/*/model.onnx")
    ]
    + list(BACKEND_DATA.glob("light/*.onnx"))
)

# Types whose numpy form is the raw storage: bit patterns or packed sub-byte elements.
RAW_BITS = {
    TensorProto.BFLOAT16: np.uint16,
    TensorProto.FLOAT8E4M3FN: np.uint8,
    TensorProto.FLOAT8E4M3FNUZ: np.uint8,
    TensorProto.FLOAT8E5M2: np.uint8,
    TensorProto.FLOAT8E5M2FNUZ: np.uint8,
    TensorProto.FLOAT8E8M0: np.uint8,
}
PACKED = {TensorProto.UINT4, TensorProto.INT4, TensorProto.FLOAT4E2M1, TensorProto.UINT2, TensorProto.INT2}
TYPE_KINDS = {
    "tensor_type": "tensor",
    "sequence_type": "sequence",
    "map_type": "map",
    "optional_type": "optional",
    "sparse_tensor_type": "sparse_tensor",
    "opaque_type": "opaque",
    None: "",
}


# --- field-by-field comparison -------------------------------------------------------------------


def opset_dict(opsets) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): o.version for o in opsets}


def expected_storage(proto: TensorProto, base_dir: str) -> np.ndarray:
    """The tensor's contents as onnx2fx exposes them (raw bits or packed bytes where numpy lacks a type)."""
    if proto.data_type in PACKED:
        if proto.data_location == TensorProto.EXTERNAL:
            return numpy_helper.to_array(proto, base_dir)  # unreachable in these tests
        data = proto.raw_data if proto.HasField("raw_data") else bytes(v & 0xFF for v in proto.int32_data)
        return np.frombuffer(data, dtype=np.uint8)
    array = numpy_helper.to_array(proto, base_dir)
    return array.view(RAW_BITS[proto.data_type]) if proto.data_type in RAW_BITS else array


def compare_tensor(ours: _core.Tensor, proto: TensorProto, base_dir: str = "") -> None:
    assert ours.name == proto.name
    assert ours.doc_string == proto.doc_string
    assert ours.data_type == proto.data_type
    assert ours.dims == list(proto.dims)
    external = proto.data_location == TensorProto.EXTERNAL
    assert ours.data_location == ("external" if external else "default")
    location = {e.key: e.value for e in proto.external_data}.get("location", "") if external else ""
    assert ours.external_location == location
    if proto.data_type == TensorProto.STRING:
        assert ours.strings() == list(proto.string_data)
        with pytest.raises(TypeError):
            ours.numpy()
        return
    expected = expected_storage(proto, base_dir)
    array = ours.numpy()
    assert array.dtype == expected.dtype
    assert array.shape == expected.shape
    np.testing.assert_array_equal(array, expected)
    assert ours.nbytes == array.nbytes
    if proto.HasField("raw_data") or external:
        assert ours.data_offset >= 0 and array.base is not None
    else:
        assert ours.data_offset == -1


def compare_sparse(ours: _core.SparseTensor, proto: onnx.SparseTensorProto) -> None:
    compare_tensor(ours.values, proto.values)
    compare_tensor(ours.indices, proto.indices)
    assert ours.dims == list(proto.dims)


def compare_type(ours: _core.TypeInfo | None, proto: onnx.TypeProto) -> None:
    which = proto.WhichOneof("value")
    assert ours.kind == TYPE_KINDS[which]
    if which in ("tensor_type", "sparse_tensor_type"):
        tensor = getattr(proto, which)
        assert ours.elem_type == tensor.elem_type
        if not tensor.HasField("shape"):
            assert ours.shape is None
        else:
            assert ours.shape == [
                d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                for d in tensor.shape.dim
            ]
    elif which in ("sequence_type", "optional_type"):
        inner = getattr(proto, which)
        if inner.HasField("elem_type"):
            compare_type(ours.element, inner.elem_type)
        else:
            assert ours.element is None
    elif which == "map_type":
        assert ours.elem_type == proto.map_type.key_type
        compare_type(ours.element, proto.map_type.value_type)


def compare_value_infos(ours: list[_core.ValueInfo], protos) -> None:
    assert [v.name for v in ours] == [p.name for p in protos]
    for value, proto in zip(ours, protos, strict=True):
        assert value.doc_string == proto.doc_string
        compare_type(value.type, proto.type)


def attribute_type(proto: AttributeProto) -> int:
    """The declared type, or for old files without one the type of the field that is set."""
    if proto.HasField("type"):
        return proto.type
    singles = {"t": "TENSOR", "g": "GRAPH", "sparse_tensor": "SPARSE_TENSOR", "tp": "TYPE_PROTO"}
    lists = {
        "floats": "FLOATS",
        "ints": "INTS",
        "strings": "STRINGS",
        "tensors": "TENSORS",
        "graphs": "GRAPHS",
    }
    scalars = {"s": "STRING", "i": "INT", "f": "FLOAT"}
    for field, name in [*singles.items(), *lists.items(), *scalars.items()]:
        if (len(getattr(proto, field)) if field in lists else proto.HasField(field)) > 0:
            return AttributeProto.AttributeType.Value(name)
    return AttributeProto.UNDEFINED


def compare_attribute(ours: _core.Attribute, proto: AttributeProto) -> None:
    assert ours.name == proto.name
    assert ours.ref_attr_name == proto.ref_attr_name
    assert ours.type == AttributeProto.AttributeType.Name(attribute_type(proto))
    value = ours.value
    match attribute_type(proto):
        case AttributeProto.FLOAT:
            assert value == proto.f or (np.isnan(value) and np.isnan(proto.f))
        case AttributeProto.INT:
            assert value == proto.i
        case AttributeProto.STRING:
            assert value == proto.s
        case AttributeProto.TENSOR:
            compare_tensor(value, proto.t)
        case AttributeProto.GRAPH:
            compare_graph(value, proto.g)
        case AttributeProto.FLOATS:
            np.testing.assert_array_equal(np.array(value, np.float32), np.array(proto.floats, np.float32))
        case AttributeProto.INTS:
            assert value == list(proto.ints)
        case AttributeProto.STRINGS:
            assert value == list(proto.strings)
        case AttributeProto.TENSORS:
            assert len(value) == len(proto.tensors)
            for tensor, tensor_proto in zip(value, proto.tensors, strict=True):
                compare_tensor(tensor, tensor_proto)
        case AttributeProto.GRAPHS:
            assert len(value) == len(proto.graphs)
            for graph, graph_proto in zip(value, proto.graphs, strict=True):
                compare_graph(graph, graph_proto)
        case AttributeProto.SPARSE_TENSOR:
            compare_sparse(value, proto.sparse_tensor)
        case AttributeProto.SPARSE_TENSORS:
            for sparse, sparse_proto in zip(value, proto.sparse_tensors, strict=True):
                compare_sparse(sparse, sparse_proto)
        case AttributeProto.TYPE_PROTO:
            compare_type(value, proto.tp)
        case AttributeProto.TYPE_PROTOS:
            for type_info, type_proto in zip(value, proto.type_protos, strict=True):
                compare_type(type_info, type_proto)
        case _:
            raise AssertionError(f"unexpected attribute type {proto.type}")


def compare_nodes(ours: list[_core.Node], protos) -> None:
    assert len(ours) == len(protos)
    for node, proto in zip(ours, protos, strict=True):
        assert (node.name, node.op_type, node.domain, node.overload, node.doc_string) == (
            proto.name,
            proto.op_type,
            proto.domain,
            proto.overload,
            proto.doc_string,
        )
        assert node.inputs == list(proto.input)
        assert node.outputs == list(proto.output)
        assert list(node.attributes) == [a.name for a in proto.attribute]
        for attribute_proto in proto.attribute:
            compare_attribute(node.attributes[attribute_proto.name], attribute_proto)


def compare_graph(ours: _core.Graph, proto: onnx.GraphProto, base_dir: str = "") -> None:
    assert ours.name == proto.name
    assert ours.doc_string == proto.doc_string
    compare_nodes(ours.nodes, proto.node)
    compare_value_infos(ours.inputs, proto.input)
    compare_value_infos(ours.outputs, proto.output)
    compare_value_infos(ours.value_info, proto.value_info)
    assert len(ours.initializers) == len(proto.initializer)
    for tensor, tensor_proto in zip(ours.initializers, proto.initializer, strict=True):
        compare_tensor(tensor, tensor_proto, base_dir)
    assert len(ours.sparse_initializers) == len(proto.sparse_initializer)
    for sparse, sparse_proto in zip(ours.sparse_initializers, proto.sparse_initializer, strict=True):
        compare_sparse(sparse, sparse_proto)


def compare_model(ours: _core.Model, proto: onnx.ModelProto, base_dir: str = "") -> None:
    assert ours.ir_version == proto.ir_version
    assert ours.producer_name == proto.producer_name
    assert ours.producer_version == proto.producer_version
    assert ours.domain == proto.domain
    assert ours.model_version == proto.model_version
    assert ours.doc_string == proto.doc_string
    assert ours.opset_imports == opset_dict(proto.opset_import)
    assert ours.metadata_props == {p.key: p.value for p in proto.metadata_props}
    compare_graph(ours.graph, proto.graph, base_dir)
    assert len(ours.functions) == len(proto.functions)
    for function, function_proto in zip(ours.functions, proto.functions, strict=True):
        assert (function.name, function.domain, function.overload, function.doc_string) == (
            function_proto.name,
            function_proto.domain,
            function_proto.overload,
            function_proto.doc_string,
        )
        assert function.inputs == list(function_proto.input)
        assert function.outputs == list(function_proto.output)
        assert function.attributes == list(function_proto.attribute)
        assert list(function.attribute_defaults) == [a.name for a in function_proto.attribute_proto]
        for attribute_proto in function_proto.attribute_proto:
            compare_attribute(function.attribute_defaults[attribute_proto.name], attribute_proto)
        compare_nodes(function.nodes, function_proto.node)
        assert function.opset_imports == opset_dict(function_proto.opset_import)


def check_file(path: Path) -> _core.Model:
    ours = _core.load_model(path, run_passes=False)
    compare_model(ours, onnx.load(str(path), load_external_data=False), str(path.parent))
    assert ours.path == str(path)
    return ours


def check_bytes(data: bytes) -> _core.Model:
    ours = _core.load_model_from_bytes(data, run_passes=False)
    compare_model(ours, onnx.load_from_string(data))
    assert ours.path == ""
    return ours


# --- model builders ------------------------------------------------------------------------------


def make_model(nodes, inputs, outputs, initializers=(), **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "main", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], **kwargs)


def tensor_info(name: str, elem_type: int = TensorProto.FLOAT, shape=None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def sample_values(data_type: int, count: int) -> np.ndarray:
    rng = np.random.default_rng(data_type)
    dtype = helper.tensor_dtype_to_np_dtype(data_type)
    if data_type == TensorProto.BOOL:
        return rng.integers(0, 2, count).astype(bool)
    if data_type in PACKED:
        low, high = (-2, 1) if data_type == TensorProto.INT2 else (0, 3)
        return rng.integers(low, high + 1, count).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True)
    if dtype.kind == "c":
        return (rng.standard_normal(count) + 1j * rng.standard_normal(count)).astype(dtype)
    return (rng.standard_normal(count) * 4).astype(dtype)


# --- wire encoding, for encodings onnx.save never writes ---------------------------------------------








# --- tests ---------------------------------------------------------------------------------------


def test_backend_corpus_size():
    assert len(BACKEND_MODELS) == 149


@pytest.mark.parametrize(
    "path", BACKEND_MODELS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}"
)
def test_backend_model_matches_onnx(path: Path):
    check_file(path)


def test_backend_models_pass_the_load_passes():
    for path in BACKEND_MODELS:
        model = _core.load_model(path)
        model.graph.check()


ALL_DATA_TYPES = [t for t in range(1, 27) if t != TensorProto.STRING]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_every_data_type(raw: bool):
    tensors = [
        helper.make_tensor(f"t{data_type}", data_type, [3, 5], sample_values(data_type, 15), raw=raw)
        for data_type in ALL_DATA_TYPES
    ]
    tensors.append(helper.make_tensor("scalar", TensorProto.FLOAT, [], np.array([2.5], np.float32), raw=raw))
    tensors.append(helper.make_tensor("empty", TensorProto.INT64, [0, 4], np.zeros(0, np.int64), raw=raw))
    tensors.append(
        helper.make_tensor("odd_int4", TensorProto.INT4, [3], np.array([1, -2, 7], ml_dtypes.int4), raw=raw)
    )
    tensors.append(helper.make_tensor("strings", TensorProto.STRING, [2], [b"ab", b"\x00\xff"]))
    model = make_model([], [], [tensor_info(t.name, t.data_type) for t in tensors], tensors)
    ours = check_bytes(model.SerializeToString())
    by_name = {t.name: t for t in ours.graph.initializers}
    assert by_name["t10"].numpy().dtype == np.float16
    assert by_name["t16"].numpy().dtype == np.uint16
    assert by_name["t9"].numpy().dtype == np.bool_
    assert by_name["t15"].numpy().dtype == np.complex128
    assert by_name["odd_int4"].numpy().shape == (2,)
    assert by_name["scalar"].numpy().shape == ()
    assert by_name["empty"].numpy().shape == (0, 4)
    bf16 = sample_values(TensorProto.BFLOAT16, 15).astype(ml_dtypes.bfloat16).view(np.uint16)
    np.testing.assert_array_equal(by_name["t16"].numpy().ravel(), bf16)


def test_elem_size():
    assert _core.elem_size(TensorProto.FLOAT) == 4
    assert _core.elem_size(TensorProto.COMPLEX128) == 16
    assert _core.elem_size(TensorProto.BFLOAT16) == 2
    assert _core.elem_size(TensorProto.FLOAT8E5M2) == 1
    assert _core.elem_size(TensorProto.STRING) == 0
    assert _core.elem_size(TensorProto.INT4) == 0
    with pytest.raises(ValueError):
        _core.elem_size(99)


def all_attributes_node() -> onnx.NodeProto:
    body = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"], name="inner")],
        "body",
        [tensor_info("x")],
        [tensor_info("y")],
    )
    tensor = helper.make_tensor("t", TensorProto.FLOAT, [2], [1.0, 2.0])
    sparse = helper.make_sparse_tensor(
        helper.make_tensor("sv", TensorProto.FLOAT, [2], [5.0, 6.0]),
        helper.make_tensor("si", TensorProto.INT64, [2], [1, 3]),
        [4],
    )
    node = helper.make_node(
        "Everything",
        ["a", "", "b"],
        ["c", ""],
        name="all",
        domain="test.domain",
        doc_string="a node with every attribute type",
        f=1.5,
        i=-7,
        s=b"bytes\x00",
        t=tensor,
        g=body,
        floats=[1.0, -2.5, float("inf")],
        ints=[1, -1, 2**62],
        strings=[b"x", b""],
        tensors=[tensor, helper.make_tensor("u", TensorProto.INT32, [1], [3])],
        graphs=[body, body],
        sparse_tensor=sparse,
        sparse_tensors=[sparse],
        tp=helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, ["n", 3])),
        tps=[
            helper.make_tensor_type_proto(TensorProto.INT64, None),
            helper.make_map_type_proto(7, helper.make_tensor_type_proto(1, [1])),
        ],
    )
    node.overload = "v2"
    node.attribute.append(helper.make_attribute_ref("alpha", AttributeProto.FLOAT))
    return node


def test_every_attribute_type():
    model = make_model([all_attributes_node()], [tensor_info("a"), tensor_info("b")], [tensor_info("c")])
    ours = check_bytes(model.SerializeToString())
    attributes = ours.graph.nodes[0].attributes
    assert {a.type for a in attributes.values()} == {
        "FLOAT", "INT", "STRING", "TENSOR", "GRAPH", "FLOATS", "INTS", "STRINGS", "TENSORS", "GRAPHS",
        "SPARSE_TENSOR", "SPARSE_TENSORS", "TYPE_PROTO", "TYPE_PROTOS",
    }  # fmt: skip
    assert attributes["alpha"].ref_attr_name == "alpha"
    assert attributes["i"].value == -7
    assert attributes["g"].value.nodes[0].name == "inner"
    assert ours.graph.nodes[0].inputs == ["a", "", "b"]


def test_packed_and_unpacked_encodings_and_missing_attribute_type():
    # ints packed, floats unpacked, a FLOAT attribute without its type field (old files),
    # a tensor with unpacked float_data and packed dims.
    unpacked_floats = b"".join(varint(7 << 3 | 5) + struct.pack("<f", v) for v in (1.5, -2.0))
    float_data = b"".join(varint(4 << 3 | 5) + struct.pack("<f", v) for v in (3.0, 4.0))
    tensor = (
        field_bytes(1, varint(2)) + field_varint(2, TensorProto.FLOAT) + float_data + field_bytes(8, b"t")
    )
    attributes = [
        field_bytes(1, b"ints")
        + field_bytes(8, b"".join(varint(v) for v in (1, 300, -5)))
        + field_varint(20, 7),
        field_bytes(1, b"floats") + unpacked_floats + field_varint(20, 6),
        field_bytes(1, b"untyped") + varint(2 << 3 | 5) + struct.pack("<f", 0.25),
        field_bytes(1, b"untyped_ints") + field_varint(8, 4) + field_varint(8, 5),
        field_bytes(1, b"tensor") + field_bytes(5, tensor) + field_varint(20, 4),
    ]
    node = field_bytes(4, b"Custom") + field_bytes(2, b"y") + b"".join(field_bytes(5, a) for a in attributes)
    model = make_model([], [], [tensor_info("y")])
    data = model.SerializeToString() + field_bytes(7, field_bytes(1, node))  # merged into the graph
    ours = check_bytes(data)
    attributes = ours.graph.nodes[0].attributes
    assert attributes["ints"].value == [1, 300, -5]
    assert attributes["floats"].value == [1.5, -2.0]
    assert (attributes["untyped"].type, attributes["untyped"].value) == ("FLOAT", 0.25)
    assert (attributes["untyped_ints"].type, attributes["untyped_ints"].value) == ("INTS", [4, 5])
    assert attributes["tensor"].value.numpy().tolist() == [3.0, 4.0]


def test_unknown_fields_are_skipped():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor_info("x")], [tensor_info("y")])
    unknown = (
        field_varint(99, 12345)
        + varint(98 << 3 | 1) + struct.pack("<d", 1.0)
        + field_bytes(97, b"payload")
        + varint(96 << 3 | 5) + struct.pack("<f", 1.0)
        + varint(95 << 3 | 3) + field_varint(1, 5)  # group 95 { 1: 5, group 94 {} }
        + varint(94 << 3 | 3) + varint(94 << 3 | 4) + varint(95 << 3 | 4)
    )  # fmt: skip
    node = field_bytes(4, b"Relu") + field_bytes(1, b"y") + field_bytes(2, b"z") + unknown
    data = unknown + model.SerializeToString() + field_bytes(7, unknown + field_bytes(1, node))
    ours = check_bytes(data)
    assert [n.op_type for n in ours.graph.nodes] == ["Relu", "Relu"]


def test_value_info_shapes_and_types():
    optional_seq = helper.make_optional_type_proto(
        helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.INT64, [None]))
    )
    value_infos = [
        tensor_info("dynamic", TensorProto.FLOAT, ["batch", None, 3]),
        tensor_info("scalar", TensorProto.DOUBLE, []),
        tensor_info("unranked", TensorProto.FLOAT, None),
        helper.make_value_info("seq", helper.make_sequence_type_proto(helper.make_tensor_type_proto(1, [2]))),
        helper.make_value_info("opt", optional_seq),
        helper.make_value_info(
            "map", helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(1, []))
        ),
        helper.make_value_info("sparse", helper.make_sparse_tensor_type_proto(TensorProto.FLOAT, [4, "n"])),
        helper.make_value_info("untyped", onnx.TypeProto()),
    ]
    value_infos[0].doc_string = "documented"
    model = make_model(
        [helper.make_node("Identity", ["x"], ["dynamic"])], [tensor_info("x")], value_infos[:1]
    )
    model.graph.value_info.extend(value_infos[1:])
    ours = check_bytes(model.SerializeToString())
    by_name = {v.name: v.type for v in ours.graph.value_info}
    assert ours.graph.outputs[0].type.shape == ["batch", None, 3]
    assert by_name["scalar"].shape == []
    assert by_name["unranked"].shape is None
    assert by_name["opt"].element.element.shape == [None]
    assert by_name["untyped"].kind == ""


def test_model_fields_metadata_and_functions():
    function = helper.make_function(
        "custom.domain",
        "AddTwice",
        ["x", "y"],
        ["z"],
        [helper.make_node("Add", ["x", "y"], ["t"]), helper.make_node("Add", ["t", "y"], ["z"])],
        [helper.make_opsetid("", 18)],
        attributes=["unused"],
        attribute_protos=[helper.make_attribute("alpha", 0.5)],
        doc_string="adds y twice",
        overload="o1",
    )
    model = make_model(
        [helper.make_node("AddTwice", ["a", "b"], ["c"], domain="custom.domain")],
        [tensor_info("a"), tensor_info("b")],
        [tensor_info("c")],
        functions=[function],
        producer_name="tests",
        producer_version="1.0",
        doc_string="model doc",
    )
    model.domain = "org.tests"
    model.model_version = 42
    model.opset_import.append(helper.make_opsetid("custom.domain", 1))
    model.opset_import[0].domain = "ai.onnx"
    helper.set_model_props(model, {"author": "me", "license": "none"})
    ours = check_bytes(model.SerializeToString())
    assert ours.opset_imports == {"": 18, "custom.domain": 1}
    assert ours.metadata_props == {"author": "me", "license": "none"}
    assert ours.functions[0].attribute_defaults["alpha"].value == 0.5


def if_loop_model() -> onnx.ModelProto:
    then_graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["then_out"])], "then", [], [tensor_info("then_out")]
    )
    else_graph = helper.make_graph(
        [helper.make_node("Sub", ["x", "one"], ["else_out"])], "else", [], [tensor_info("else_out")]
    )
    loop_body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
        ],
        "body",
        [
            tensor_info("i", TensorProto.INT64, []),
            tensor_info("cond_in", TensorProto.BOOL, []),
            tensor_info("acc_in"),
        ],
        [tensor_info("cond_out", TensorProto.BOOL, []), tensor_info("acc_out")],
    )
    nodes = [
        helper.make_node(
            "If", ["cond"], ["if_out"], then_branch=then_graph, else_branch=else_graph, name="if"
        ),
        helper.make_node("Loop", ["trip", "cond", "if_out"], ["loop_out"], body=loop_body, name="loop"),
    ]
    inputs = [
        tensor_info("cond", TensorProto.BOOL, []),
        tensor_info("x", TensorProto.FLOAT, [2]),
        tensor_info("trip", TensorProto.INT64, []),
    ]
    one = numpy_helper.from_array(np.ones(2, np.float32), "one")
    return make_model(nodes, inputs, [tensor_info("loop_out", TensorProto.FLOAT, [2])], [one])


def test_subgraphs(tmp_path: Path):
    model = if_loop_model()
    onnx.checker.check_model(model)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    ours = check_file(path)
    branches = ours.graph.nodes[0].attributes
    assert branches["then_branch"].value.nodes[0].op_type == "Add"
    assert ours.graph.nodes[1].attributes["body"].value.inputs[2].name == "acc_in"
    _core.load_model(path).graph.check()


def test_sparse_initializer():
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "sparse"),
        numpy_helper.from_array(np.array([0, 5], np.int64), "sparse_indices"),
        [2, 3],
    )
    model = make_model([helper.make_node("Identity", ["sparse"], ["y"])], [], [tensor_info("y")])
    model.graph.sparse_initializer.append(sparse)
    ours = check_bytes(model.SerializeToString())
    assert ours.graph.sparse_initializers[0].dims == [2, 3]
    assert ours.graph.sparse_initializers[0].indices.numpy().tolist() == [0, 5]
    _core.load_model_from_bytes(model.SerializeToString()).graph.check()


def test_external_data(tmp_path: Path):
    weights = [
        numpy_helper.from_array(np.arange(600, dtype=np.float32).reshape(20, 30), "w"),
        numpy_helper.from_array(np.arange(300, dtype=np.int64), "v"),
        numpy_helper.from_array(np.array([1, 2], np.int32), "small"),
    ]
    model = make_model([helper.make_node("Identity", ["w"], ["y"])], [], [tensor_info("y")], weights)
    path = tmp_path / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, location="weights.bin", size_threshold=100)
    ours = check_file(path)
    by_name = {t.name: t for t in ours.graph.initializers}
    assert by_name["w"].data_location == "external"
    assert by_name["w"].external_location == "weights.bin"
    assert by_name["small"].data_location == "default"
    blob = (tmp_path / "weights.bin").read_bytes()
    for name in ("w", "v"):
        array = by_name[name].numpy()
        assert by_name[name].data_offset == blob.find(array.tobytes())
        assert array.base is not None

    # A location without offset or length covers the whole file; a subfolder is fine.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "v.bin").write_bytes(np.arange(300, dtype=np.int64).tobytes())
    proto = onnx.load(str(path), load_external_data=False)
    v = next(t for t in proto.graph.initializer if t.name == "v")
    del v.external_data[:]
    v.external_data.add(key="location", value="sub/./v.bin")
    onnx.save(proto, path)
    ours = check_file(path)
    v_ours = next(t for t in ours.graph.initializers if t.name == "v")
    assert v_ours.data_offset == 0
    np.testing.assert_array_equal(v_ours.numpy(), np.arange(300))

    # From bytes, external data resolves against base_dir.
    ours = _core.load_model_from_bytes(path.read_bytes(), base_dir=str(tmp_path), run_passes=False)
    compare_model(ours, proto, str(tmp_path))


def test_raw_data_is_a_zero_copy_writable_view(tmp_path: Path):
    first = np.arange(64, dtype=np.float32) * 1.25 + 1000.0
    second = np.arange(32, dtype=np.int32) * 7 + 123456
    model = make_model(
        [helper.make_node("Identity", ["a"], ["y"])],
        [],
        [tensor_info("y")],
        [numpy_helper.from_array(first, "a"), numpy_helper.from_array(second, "b")],
    )
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    original = path.read_bytes()
    ours = _core.load_model(path)
    a, b = ours.graph.initializers
    assert a.data_offset == original.find(first.tobytes()) > 0
    assert b.data_offset == original.find(second.tobytes()) > 0

    view_a, view_b = a.numpy(), b.numpy()
    assert view_a.base is not None and view_a.flags.writeable
    # Both views point into one mapping of the file, at their file offsets.
    address = lambda array: array.__array_interface__["data"][0]  # noqa: E731
    assert address(view_b) - address(view_a) == b.data_offset - a.data_offset

    view_a[:] = -1.0
    assert (a.numpy() == -1.0).all()  # a second view sees the write: same memory
    del ours, a, b
    assert (view_a == -1.0).all()  # the view keeps the mapping alive
    assert path.read_bytes() == original  # copy-on-write: the file is untouched


def test_typed_data_is_owned():
    tensor = helper.make_tensor("t", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    model = make_model([], [], [tensor_info("t")], [tensor])
    ours = _core.load_model_from_bytes(model.SerializeToString())
    initializer = ours.graph.initializers[0]
    assert initializer.data_offset == -1
    assert initializer.numpy().tolist() == [1.0, 2.0, 3.0]


def test_load_accepts_pathlike_and_str(tmp_path: Path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor_info("x")], [tensor_info("y")])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert _core.load_model(path).path == str(path)
    assert _core.load_model(str(path)).graph.nodes[0].op_type == "Relu"
    assert _core.load_model(os.fspath(path)).graph.outputs[0].name == "y"


def test_aligned_numpy_copies_only_misaligned_data(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    # The name's length shifts where raw_data lands; one of these offsets is misaligned for float32.
    for name in ("w", "ww", "www", "wwww"):
        tensor = numpy_helper.from_array(values, name)
        graph = helper.make_graph([helper.make_node("Identity", [name], ["y"])], "g", [],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])], [tensor])
        path = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        core_tensor = _core.load_model(str(path)).graph.initializers[0]
        view, aligned = core_tensor.numpy(), core_tensor.aligned_numpy()
        np.testing.assert_array_equal(aligned, values)
        assert aligned.ctypes.data % 4 == 0
        assert np.shares_memory(view, aligned) == (core_tensor.data_offset % 4 == 0)


def test_aligned_numpy_copies_large_misaligned_tensors_whole(tmp_path: Path) -> None:
    # Large copies are split over threads (cpp/onnx/parallel_copy.h); every element must arrive.
    values = np.random.default_rng(0).standard_normal(3_000_001).astype(np.float32)
    for name in ("w", "ww", "www", "wwww"):
        tensor = numpy_helper.from_array(values, name)
        graph = helper.make_graph([helper.make_node("Identity", [name], ["y"])], "g", [],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [values.size])], [tensor])
        path = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        core_tensor = _core.load_model(str(path)).graph.initializers[0]
        if core_tensor.data_offset % 4 == 0:
            continue
        aligned = core_tensor.aligned_numpy()
        assert aligned.ctypes.data % 4 == 0
        np.testing.assert_array_equal(aligned, values)
        return
    pytest.fail("no name put the tensor at a misaligned offset")
