"""Errors of the native reader: each bad input raises a specific onnx2fx.errors class and message."""

from __future__ import annotations

import random
import re
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from wire_encoding import field_bytes, field_varint, varint

from onnx2fx import _core
from onnx2fx.errors import ExternalDataError, GraphStructureError, ModelFormatError


def tensor_info(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def make_model(nodes, inputs=(), outputs=("y",), initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "main", [tensor_info(n) for n in inputs], [tensor_info(n) for n in outputs], list(initializers)
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def small_model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    return make_model(nodes, ["x"], ["y"], [weight])


def raw_tensor(name: str, dims: list[int], raw: bytes, data_type: int = TensorProto.FLOAT) -> TensorProto:
    tensor = TensorProto(name=name, data_type=data_type, raw_data=raw)
    tensor.dims.extend(dims)
    return tensor


def external_tensor(name: str, dims: list[int], **entries: str | int) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, data_location=TensorProto.EXTERNAL)
    tensor.dims.extend(dims)
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=str(value))
    return tensor


def load_bytes(data: bytes, **kwargs) -> _core.Model:
    return _core.load_model_from_bytes(data, run_passes=False, **kwargs)


def model_with_initializer(tensor: TensorProto) -> bytes:
    return make_model(
        [helper.make_node("Identity", [tensor.name], ["y"])], initializers=[tensor]
    ).SerializeToString()


# --- files ---------------------------------------------------------------------------------------


def test_nonexistent_path(tmp_path: Path):
    path = tmp_path / "missing.onnx"
    with pytest.raises(FileNotFoundError) as info:
        _core.load_model(path)
    assert info.value.filename == str(path)


def test_directory_path(tmp_path: Path):
    with pytest.raises(IsADirectoryError):
        _core.load_model(tmp_path)


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="model has no graph"):
        _core.load_model(path)
    with pytest.raises(ModelFormatError, match="model has no graph"):
        load_bytes(b"")


def test_model_without_graph_or_opset():
    with pytest.raises(ModelFormatError, match="^model has no graph$"):
        load_bytes(field_varint(1, 8) + field_bytes(2, b"producer"))
    no_opset = small_model()
    del no_opset.opset_import[:]
    with pytest.raises(ModelFormatError, match="model has no opset_import"):
        load_bytes(no_opset.SerializeToString())


@pytest.mark.parametrize("seed", range(20))
def test_garbage_bytes(seed: int):
    data = random.Random(seed).randbytes(64 + seed * 13)
    with pytest.raises(ModelFormatError):
        load_bytes(data)


def test_every_truncation_is_a_format_error():
    data = small_model().SerializeToString()
    for length in range(0, len(data), 3):
        with pytest.raises(ModelFormatError):
            load_bytes(data[:length])


def test_truncation_names_field_path_and_offset():
    node = field_bytes(1, b"a") + varint(1 << 3 | 2) + varint(50) + b"xy"
    graph = field_bytes(1, field_bytes(4, b"Relu")) + field_bytes(1, node)
    data = field_varint(1, 8) + field_bytes(7, graph)
    at = data.index(varint(1 << 3 | 2) + varint(50))
    message = f"truncated field ModelProto.graph.node[1].input at byte {at}: length 50 exceeds remaining 2 "
    with pytest.raises(ModelFormatError, match=re.escape(message)):
        load_bytes(data)


def test_varint_errors():
    with pytest.raises(ModelFormatError, match="varint runs past the end"):
        load_bytes(b"\x08\xff\xff")
    with pytest.raises(ModelFormatError, match="varint longer than 10 bytes"):
        load_bytes(b"\x08" + b"\xff" * 10 + b"\x01")
    with pytest.raises(ModelFormatError, match="varint overflows 64 bits"):
        load_bytes(b"\x08" + b"\xff" * 9 + b"\x02")


def test_invalid_utf8_in_a_name():
    model = small_model()
    model.graph.node[0].name = "matmul\u00e9"
    data = model.SerializeToString().replace("matmul\u00e9".encode(), b"matmul\xff\xfe")
    with pytest.raises(ModelFormatError, match=r"node\[0\]\.name at byte \d+: string is not valid UTF-8"):
        load_bytes(data)


def test_wire_type_mismatch():
    with pytest.raises(
        ModelFormatError, match=r"ModelProto\.ir_version at byte 0: wire type length-delimited"
    ):
        load_bytes(field_bytes(1, b"8"))
    with pytest.raises(
        ModelFormatError, match=r"ModelProto\.graph at byte 0: wire type varint, expected length"
    ):
        load_bytes(field_varint(7, 1))


# --- tensors -------------------------------------------------------------------------------------


def test_raw_data_size_mismatch():
    data = model_with_initializer(raw_tensor("w", [2, 3], b"\0" * 12))
    with pytest.raises(
        ModelFormatError,
        match=re.escape("tensor 'w': raw_data has 12 bytes but dims [2, 3] of FLOAT need 24"),
    ):
        load_bytes(data)
    with pytest.raises(ModelFormatError, match=r"ModelProto\.graph\.initializer\[0\] at byte"):
        load_bytes(data)


def test_typed_data_count_mismatch():
    tensor = helper.make_tensor("w", TensorProto.INT64, [4], [1, 2, 3, 4])
    tensor.dims[0] = 5
    with pytest.raises(
        ModelFormatError, match=re.escape("int64_data has 4 values but dims [5] of INT64 need 5")
    ):
        load_bytes(model_with_initializer(tensor))


def test_typed_data_in_the_wrong_field():
    tensor = helper.make_tensor("w", TensorProto.INT64, [2], [1, 2])
    tensor.data_type = TensorProto.FLOAT
    with pytest.raises(ModelFormatError, match="has values in int64_data, expected float_data"):
        load_bytes(model_with_initializer(tensor))


def test_missing_data():
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3])
    with pytest.raises(ModelFormatError, match="tensor 'w' has no data"):
        load_bytes(model_with_initializer(tensor))


def test_unknown_data_type():
    with pytest.raises(ModelFormatError, match="unknown data type 99"):
        load_bytes(model_with_initializer(raw_tensor("w", [1], b"\0", data_type=99)))


def test_negative_dim():
    with pytest.raises(
        ModelFormatError, match=re.escape("tensor 'w' has negative dimension -3 in dims [2, -3]")
    ):
        load_bytes(model_with_initializer(raw_tensor("w", [2, -3], b"")))


def test_overflowing_dims():
    with pytest.raises(ModelFormatError, match="overflow the element count"):
        load_bytes(model_with_initializer(raw_tensor("w", [2**62, 2**62], b"")))
    with pytest.raises(ModelFormatError, match="overflow the byte size"):
        load_bytes(model_with_initializer(raw_tensor("w", [2**62], b"", TensorProto.DOUBLE)))


def test_dims_claiming_more_than_the_file():
    data = model_with_initializer(raw_tensor("w", [10**12], b"\0" * 4))
    with pytest.raises(
        ModelFormatError, match=f"need 4000000000000 bytes but the whole file has only {len(data)}"
    ):
        load_bytes(data)
    typed = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    typed.dims[0] = 10**12
    with pytest.raises(ModelFormatError, match="float_data has 1 values"):
        load_bytes(model_with_initializer(typed))


def test_too_many_dims():
    with pytest.raises(ModelFormatError, match="65 dimensions, more than 64"):
        load_bytes(model_with_initializer(raw_tensor("w", [1] * 65, b"\0" * 4)))


def test_segmented_tensor():
    tensor = raw_tensor("w", [1], b"\0" * 4)
    tensor.segment.begin = 0
    tensor.segment.end = 1
    with pytest.raises(ModelFormatError, match=r"segment at byte \d+: segmented tensors are not supported"):
        load_bytes(model_with_initializer(tensor))


def test_string_tensor_with_raw_data():
    with pytest.raises(ModelFormatError, match="STRING tensor, which cannot use raw_data"):
        load_bytes(model_with_initializer(raw_tensor("w", [1], b"abc", TensorProto.STRING)))


# --- external data -------------------------------------------------------------------------------


def save_with_external(tmp_path: Path, tensor: TensorProto) -> Path:
    path = tmp_path / "model" / "model.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(model_with_initializer(tensor))
    return path


def test_external_location_leaving_the_folder(tmp_path: Path):
    (tmp_path / "x.bin").write_bytes(b"\0" * 8)
    path = save_with_external(tmp_path, external_tensor("w", [2], location="../x.bin"))
    with pytest.raises(
        ExternalDataError, match="external data location '../x.bin' of tensor 'w' leaves the model folder"
    ):
        _core.load_model(path)
    path = save_with_external(tmp_path, external_tensor("w", [2], location="sub/../../x.bin"))
    with pytest.raises(ExternalDataError, match="leaves the model folder"):
        _core.load_model(path)


def test_external_absolute_location(tmp_path: Path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"\0" * 8)
    path = save_with_external(tmp_path, external_tensor("w", [2], location=str(target)))
    with pytest.raises(ExternalDataError, match="is an absolute path"):
        _core.load_model(path)


def test_external_symlink_outside_the_folder(tmp_path: Path):
    (tmp_path / "x.bin").write_bytes(b"\0" * 8)
    path = save_with_external(tmp_path, external_tensor("w", [2], location="link.bin"))
    (path.parent / "link.bin").symlink_to(tmp_path / "x.bin")
    with pytest.raises(ExternalDataError, match="outside the model folder"):
        _core.load_model(path)


def test_external_file_missing(tmp_path: Path):
    path = save_with_external(tmp_path, external_tensor("w", [2], location="w.bin"))
    with pytest.raises(ExternalDataError, match="external data location 'w.bin' of tensor 'w' not found"):
        _core.load_model(path)


def test_external_range_past_end(tmp_path: Path):
    path = save_with_external(tmp_path, external_tensor("w", [4], location="w.bin", offset=8, length=16))
    (path.parent / "w.bin").write_bytes(b"\0" * 20)
    with pytest.raises(
        ExternalDataError, match=r"\(offset 8, length 16\) runs past the end of 'w.bin' \(20 bytes\)"
    ):
        _core.load_model(path)
    path = save_with_external(tmp_path, external_tensor("w", [1], location="w.bin", offset=30))
    with pytest.raises(ExternalDataError, match="runs past the end"):
        _core.load_model(path)


def test_external_length_mismatch(tmp_path: Path):
    path = save_with_external(tmp_path, external_tensor("w", [4], location="w.bin"))
    (path.parent / "w.bin").write_bytes(b"\0" * 20)
    with pytest.raises(
        ExternalDataError, match=re.escape("external data has 20 bytes but dims [4] of FLOAT need 16")
    ):
        _core.load_model(path)


def test_external_bad_offset(tmp_path: Path):
    path = save_with_external(tmp_path, external_tensor("w", [1], location="w.bin", offset="12abc"))
    (path.parent / "w.bin").write_bytes(b"\0" * 20)
    with pytest.raises(ExternalDataError, match="offset '12abc' of tensor 'w' is not a number"):
        _core.load_model(path)


def test_external_data_from_bytes_needs_base_dir(tmp_path: Path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 8)
    data = model_with_initializer(external_tensor("w", [2], location="w.bin"))
    with pytest.raises(ExternalDataError, match="without a base_dir"):
        load_bytes(data)
    assert load_bytes(data, base_dir=str(tmp_path)).graph.initializers[0].numpy().tolist() == [0.0, 0.0]


def test_external_data_error_is_a_format_error():
    assert issubclass(ExternalDataError, ModelFormatError)


# --- structure -----------------------------------------------------------------------------------


def test_undefined_input():
    model = make_model([helper.make_node("Add", ["x", "missing"], ["y"], name="add1")], inputs=["x"])
    message = "node 'add1' (Add) input 'missing' is not produced by any node, input or initializer"
    with pytest.raises(GraphStructureError, match=re.escape(message)):
        _core.load_model_from_bytes(model.SerializeToString())
    graph = load_bytes(model.SerializeToString()).graph
    with pytest.raises(GraphStructureError, match=re.escape(message)):
        graph.check()


def test_undefined_graph_output():
    model = make_model([helper.make_node("Relu", ["x"], ["h"])], inputs=["x"], outputs=["nowhere"])
    with pytest.raises(GraphStructureError, match="graph output 'nowhere' is not produced"):
        _core.load_model_from_bytes(model.SerializeToString())


def test_value_defined_twice():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Relu", ["x"], ["y"], name="b")],
        inputs=["x"],
    )
    with pytest.raises(GraphStructureError, match="node 'b' \\(Relu\\) output 'y' is already defined"):
        _core.load_model_from_bytes(model.SerializeToString())


def test_cycle():
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["p"], name="start"),
            helper.make_node("Relu", ["q"], ["r"], name="b"),
            helper.make_node("Add", ["p", "r"], ["q"], name="a"),
            helper.make_node("Relu", ["q"], ["y"], name="after"),
        ],
        inputs=["x"],
    )
    message = "graph contains a cycle through nodes: b (Relu), a (Add)"
    with pytest.raises(GraphStructureError, match=re.escape(message)):
        _core.load_model_from_bytes(model.SerializeToString())
    graph = load_bytes(model.SerializeToString()).graph
    with pytest.raises(GraphStructureError, match=re.escape(message)):
        graph.topological_sort()


def test_self_loop():
    model = make_model([helper.make_node("Relu", ["y"], ["y"], name="loop")])
    with pytest.raises(GraphStructureError, match=re.escape("cycle through nodes: loop (Relu)")):
        _core.load_model_from_bytes(model.SerializeToString())


def nested_graph(depth: int) -> bytes:
    """A GraphProto holding `depth` graphs nested through node attributes (too deep for protobuf itself)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "leaf", [tensor_info("x")], [tensor_info("y")]
    )
    data = graph.SerializeToString()
    for level in range(depth - 1):
        attribute = field_bytes(1, b"body") + field_bytes(6, data) + field_varint(20, 5)
        node = field_bytes(4, b"Wrap") + field_bytes(2, b"y") + field_bytes(5, attribute)
        output = field_bytes(1, b"y")
        data = field_bytes(1, node) + field_bytes(2, f"level{level}".encode()) + field_bytes(12, output)
    return data


def model_around(graph: bytes) -> bytes:
    return field_varint(1, 8) + field_bytes(7, graph) + field_bytes(8, field_varint(2, 18))


def test_graph_nesting_cap():
    assert load_bytes(model_around(nested_graph(64))).graph.name == "level62"
    with pytest.raises(
        ModelFormatError, match=r"graphs nested deeper than 64 levels at ModelProto\.graph\.node\[0\]"
    ):
        load_bytes(model_around(nested_graph(65)))


def test_type_nesting_cap():
    element = b""
    for _ in range(70):
        element = field_bytes(4, field_bytes(1, element))  # TypeProto.sequence_type.elem_type
    value_info = field_bytes(1, b"s") + field_bytes(2, element)
    data = small_model().SerializeToString() + field_bytes(7, field_bytes(13, value_info))
    with pytest.raises(ModelFormatError, match="types nested deeper than 64 levels"):
        load_bytes(data)


def test_attribute_with_unknown_type():
    attribute = field_bytes(1, b"alpha") + varint(2 << 3 | 5) + struct.pack("<f", 1.0) + field_varint(20, 99)
    node = field_bytes(4, b"Relu") + field_bytes(1, b"x") + field_bytes(2, b"z") + field_bytes(5, attribute)
    data = small_model().SerializeToString() + field_bytes(7, field_bytes(1, node))
    with pytest.raises(ModelFormatError, match="attribute 'alpha' has unknown type 99"):
        load_bytes(data)


def test_string_tensor_numpy_is_a_type_error():
    tensor = helper.make_tensor("s", TensorProto.STRING, [1], [b"x"])
    initializer = load_bytes(model_with_initializer(tensor)).graph.initializers[0]
    with pytest.raises(TypeError, match=r"use \.strings\(\)"):
        initializer.numpy()
