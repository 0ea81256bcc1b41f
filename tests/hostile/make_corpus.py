"""Generates the hostile-file corpus: ONNX files (and external-data folders) that a converter must
refuse with a typed error naming what is wrong.

``python tests/hostile/make_corpus.py OUT_DIR`` writes ``OUT_DIR/<case>/model.onnx`` (plus the
files a case needs beside it) and ``OUT_DIR/cases.json`` with each case's expected error class and
message pattern. ``tests/test_hostile_corpus.py`` builds each case in a temporary folder and checks
the Python API and the CLI (exit code 2, no output folder left behind) against those expectations.

Files are written byte by byte where the onnx package would refuse to produce them (broken wire
format, absurd sizes), and with ``onnx.helper`` where the protobuf is valid but the model is not.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, when run as a script
from wire_encoding import field_bytes, field_varint, key, varint  # noqa: E402

# --- protobuf wire encoding ------------------------------------------------------------------------








def opset(version: int = 18, domain: str = "") -> bytes:
    return field_bytes(8, field_bytes(1, domain.encode()) + field_varint(2, version))


def raw_model(graph: bytes, opsets: bytes | None = None) -> bytes:
    """ModelProto{ir_version: 8, graph, opset_import} from an encoded GraphProto."""
    return field_varint(1, 8) + field_bytes(7, graph) + (opset() if opsets is None else opsets)


# --- well-formed protobuf, invalid models ---------------------------------------------------------
def _info(name: str, shape=(2,)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape) if shape is not None else None)


def model(nodes, initializers=(), inputs=("x",), outputs=("y",), opsets=(("", 18),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [_info(n) for n in inputs], [_info(n, None) for n in outputs],
                              list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def valid_model() -> onnx.ModelProto:
    """y = Relu(MatMul(x, w) + b), the model the truncation cases cut."""
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    b = numpy_helper.from_array(np.ones(3, np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
             helper.make_node("Add", ["h", "b"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    return model(nodes, [w, b])


def tensor_model(tensor: TensorProto) -> bytes:
    return model([helper.make_node("Identity", [tensor.name], ["y"])], [tensor], inputs=()).SerializeToString()


def raw_tensor(name: str, dims, raw: bytes, data_type: int = TensorProto.FLOAT) -> TensorProto:
    tensor = TensorProto(name=name, data_type=data_type, raw_data=raw)
    tensor.dims.extend(dims)
    return tensor


def external_tensor(name: str, dims, **entries: str | int) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, data_location=TensorProto.EXTERNAL)
    tensor.dims.extend(dims)
    for k, value in entries.items():
        tensor.external_data.add(key=k, value=str(value))
    return tensor


# --- cases -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostileCase:
    name: str
    error: str            # class name in onnx2fx.errors
    message: str          # regular expression the message must match
    build: Callable[[Path], None]  # writes model.onnx (and its neighbours) into the folder


CASES: list[HostileCase] = []


def case(name: str, error: str, message: str):
    def register(build: Callable[[Path], None]) -> Callable[[Path], None]:
        CASES.append(HostileCase(name, error, message, build))
        return build
    return register


def bytes_case(name: str, error: str, message: str, data: Callable[[], bytes]) -> None:
    CASES.append(HostileCase(name, error, message, lambda folder: (folder / "model.onnx").write_bytes(data())))


def _field_starts(data: bytes, start: int, end: int, depth: int, out: list[int]) -> None:
    """Offsets where a field begins inside length-delimited fields, down to `depth` levels."""
    pos = start
    while pos < end:
        field_start = pos
        tag, pos = _read_varint(data, pos)
        wire_type = tag & 7
        if wire_type == 0:
            _, pos = _read_varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            if depth > 0 and length and not _looks_like_text(data[pos:pos + length]):
                _field_starts(data, pos, pos + length, depth - 1, out)
            pos += length
        out.append(field_start)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _looks_like_text(payload: bytes) -> bool:
    return all(32 <= b < 127 for b in payload)


def truncation_points() -> list[int]:
    """Every field boundary strictly inside the graph field of valid_model() (three levels deep)."""
    data = valid_model().SerializeToString()
    pos = 0
    while True:  # find ModelProto.graph (field 7) among the top-level fields
        tag, pos = _read_varint(data, pos)
        if tag == (7 << 3 | 2):
            break
        value, pos = _read_varint(data, pos)
        if tag & 7 == 2:
            pos += value
    length, payload_start = _read_varint(data, pos)
    points: list[int] = []
    _field_starts(data, payload_start, payload_start + length, 2, points)
    return sorted({p for p in points if payload_start < p})


for point in truncation_points():
    bytes_case(f"truncated_at_byte_{point}", "ModelFormatError",
               r"truncated field ModelProto\.graph at byte \d+: length",
               lambda point=point: valid_model().SerializeToString()[:point])

bytes_case("empty_file", "ModelFormatError", "model has no graph: the input is empty", lambda: b"")
bytes_case("truncated_inside_varint", "ModelFormatError", "varint runs past the end of the message",
           lambda: field_varint(1, 8)[:1] + b"\x80")
bytes_case("varint_overflows_64_bits", "ModelFormatError", "varint overflows 64 bits",
           lambda: b"\x08" + b"\xff" * 9 + b"\x7f")
bytes_case("varint_longer_than_10_bytes", "ModelFormatError", "varint longer than 10 bytes",
           lambda: b"\x08" + b"\xff" * 10 + b"\x01")
bytes_case("length_past_the_end", "ModelFormatError", "length 100 exceeds remaining 3 bytes",
           lambda: b"\x3a\x64abc")
bytes_case("tag_overflows_32_bits", "ModelFormatError", "overflows 32 bits", lambda: varint(1 << 40) + b"\x00")
bytes_case("field_number_zero", "ModelFormatError", "field number 0", lambda: b"\x00\x00")
bytes_case("unknown_wire_type", "ModelFormatError", "unknown wire type 7", lambda: b"\x0f")
bytes_case("graph_with_wrong_wire_type", "ModelFormatError",
           "invalid field ModelProto.graph at byte 0: wire type varint, expected length-delimited",
           lambda: field_varint(7, 1))
bytes_case("invalid_utf8_name", "ModelFormatError", "string is not valid UTF-8",
           lambda: raw_model(field_bytes(2, b"\xff\xfe")))
bytes_case("negative_dim", "ModelFormatError", r"tensor 'w' has negative dimension -1 in dims \[-1\]",
           lambda: tensor_model(raw_tensor("w", [-1], b"")))
bytes_case("element_count_overflows_64_bits", "ModelFormatError",
           r"tensor 'w': dims \[4294967296, 4294967296\] overflow the element count",
           lambda: tensor_model(raw_tensor("w", [1 << 32, 1 << 32], b"")))
bytes_case("byte_size_overflows_64_bits", "ModelFormatError",
           r"tensor 'w': dims \[4611686018427387904\] overflow the byte size",
           lambda: tensor_model(raw_tensor("w", [1 << 62], b"")))
bytes_case("size_larger_than_the_file", "ModelFormatError", "4000000000 bytes but the whole file has only",
           lambda: tensor_model(raw_tensor("w", [1_000_000_000], b"\0" * 4)))
bytes_case("raw_data_size_mismatch", "ModelFormatError",
           r"tensor 'w': raw_data has 12 bytes but dims \[2, 3\] of FLOAT need 24",
           lambda: tensor_model(raw_tensor("w", [2, 3], b"\0" * 12)))


def _typed_and_raw() -> bytes:
    tensor = raw_tensor("w", [1], b"\0" * 4)
    tensor.float_data.append(1.0)
    return tensor_model(tensor)


bytes_case("typed_and_raw_data", "ModelFormatError", "tensor 'w' has data in both raw_data and float_data",
           _typed_and_raw)
bytes_case("typed_field_of_the_wrong_type", "ModelFormatError",
           "tensor 'w' of type FLOAT has values in int64_data, expected float_data",
           lambda: tensor_model(helper.make_tensor("w", TensorProto.INT64, [1], [1]).__class__(
               name="w", data_type=TensorProto.FLOAT, dims=[1], int64_data=[1])))
bytes_case("string_tensor_with_raw_data", "ModelFormatError",
           "tensor 's' is a STRING tensor, which cannot use raw_data",
           lambda: tensor_model(raw_tensor("s", [1], b"abcd", TensorProto.STRING)))
bytes_case("string_tensor_where_numbers_are_expected", "UnsupportedOperatorError",
           "tensor 's' has ONNX element type STRING, which has no torch equivalent",
           lambda: model([helper.make_node("Add", ["x", "s"], ["y"])],
                         [helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"])]).SerializeToString())
bytes_case("unknown_data_type", "ModelFormatError", "tensor 'w' has unknown data type 999",
           lambda: tensor_model(raw_tensor("w", [1], b"\0" * 4, 999)))
bytes_case("rank_65", "ModelFormatError", "tensor 'w' has 65 dimensions, more than 64",
           lambda: tensor_model(raw_tensor("w", [1] * 65, b"\0" * 4)))
bytes_case("unknown_attribute_type", "ModelFormatError", "attribute 'alpha' has unknown type 99",
           lambda: raw_model(field_bytes(1, field_bytes(1, b"x") + field_bytes(2, b"y") + field_bytes(4, b"Relu")
                                         + field_bytes(5, field_bytes(1, b"alpha") + field_varint(20, 99)))
                             + field_bytes(11, field_bytes(1, b"x")) + field_bytes(12, field_bytes(1, b"y"))))
bytes_case("cyclic_graph", "GraphStructureError", r"graph contains a cycle through nodes: a \(Relu\), b \(Relu\)",
           lambda: model([helper.make_node("Relu", ["q"], ["p"], name="a"),
                          helper.make_node("Relu", ["p"], ["q"], name="b"),
                          helper.make_node("Relu", ["x"], ["y"], name="c")]).SerializeToString())
bytes_case("undefined_input", "GraphStructureError", "'missing'",
           lambda: model([helper.make_node("Add", ["x", "missing"], ["y"], name="add")]).SerializeToString())
bytes_case("duplicate_outputs", "GraphStructureError", "'y'",
           lambda: model([helper.make_node("Relu", ["x"], ["y"], name="r1"),
                          helper.make_node("Neg", ["x"], ["y"], name="r2")]).SerializeToString())
bytes_case("missing_opset_import", "ModelFormatError", "model has no opset_import",
           lambda: model([helper.make_node("Relu", ["x"], ["y"])], opsets=()).SerializeToString())
bytes_case("absurd_opset_version", "ModelFormatError",
           r"opset_import of domain '' has version 1000000000000, outside 1\.\.1000",
           lambda: model([helper.make_node("Relu", ["x"], ["y"])], opsets=(("", 10**12),)).SerializeToString())
bytes_case("negative_opset_version", "ModelFormatError", "opset_import of domain 'ai.onnx.ml' has version -5",
           lambda: model([helper.make_node("Relu", ["x"], ["y"])],
                         opsets=(("", 18), ("ai.onnx.ml", -5))).SerializeToString())
bytes_case("unsupported_operator", "UnsupportedOperatorError", "node 'n'.*operator NoSuchOp",
           lambda: model([helper.make_node("NoSuchOp", ["x"], ["y"], name="n", domain="")]).SerializeToString())


def _nested_graphs(levels: int) -> bytes:
    """A graph whose If node's then_branch holds a graph whose If node ... `levels` deep, built
    inside out with only the length headers repeated (linear size and time)."""
    headers: list[bytes] = []
    inner = field_bytes(2, b"leaf")
    size = len(inner)
    for _ in range(levels):
        # GraphProto{node{op_type: "If", attribute{name: "then_branch", type: GRAPH, g: <inner>}}}
        attribute_head = field_bytes(1, b"then_branch") + field_varint(20, 5) + key(6, 2) + varint(size)
        attribute_size = len(attribute_head) + size
        node_head = field_bytes(4, b"If") + key(5, 2) + varint(attribute_size)
        node_size = len(node_head) + attribute_size
        graph_head = key(1, 2) + varint(node_size)
        headers.append(graph_head + node_head + attribute_head)
        size = len(graph_head) + node_size
    graph = b"".join(reversed(headers)) + inner
    return field_varint(1, 8) + key(7, 2) + varint(len(graph)) + graph + opset()


bytes_case("subgraphs_nested_10000_deep", "ModelFormatError", "graphs nested deeper than 64 levels",
           lambda: _nested_graphs(10_000))


def _nested_types(levels: int) -> bytes:
    type_proto = field_bytes(1, field_varint(1, 1))  # TypeProto{tensor_type{elem_type: FLOAT}}
    for _ in range(levels):
        type_proto = field_bytes(4, field_bytes(1, type_proto))  # sequence_type{elem_type}
    return raw_model(field_bytes(11, field_bytes(1, b"x") + field_bytes(2, type_proto)))


bytes_case("types_nested_200_deep", "ModelFormatError", "types nested deeper than 64 levels",
           lambda: _nested_types(200))
bytes_case("more_than_4194304_nodes", "ModelFormatError", "model has more than 4194304 nodes",
           lambda: raw_model(field_bytes(1, b"") * ((1 << 22) + 1)))
bytes_case("metadata_noise_1000000_entries", "GraphStructureError", "'missing'",
           lambda: model([helper.make_node("Add", ["x", "missing"], ["y"], name="add")]).SerializeToString()
           + field_bytes(14, b"") * 1_000_000)


# --- external data ---------------------------------------------------------------------------------
def _external(tensor: TensorProto, files: dict[str, bytes] | None = None) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        (folder / "model.onnx").write_bytes(tensor_model(tensor))
        for name, data in (files or {}).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    return build


def external_case(name: str, message: str, build: Callable[[Path], None]) -> None:
    CASES.append(HostileCase(name, "ExternalDataError", message, build))


W16 = np.arange(4, dtype=np.float32).tobytes()
external_case("external_dotdot_traversal",
              "external data location '../secret.bin' of tensor 'w' leaves the model folder",
              _external(external_tensor("w", [4], location="../secret.bin")))
external_case("external_dotdot_inside_path", "leaves the model folder",
              _external(external_tensor("w", [4], location="sub/../../secret.bin"), {"sub/x": b""}))
external_case("external_absolute_path", "'/etc/passwd' of tensor 'w' is an absolute path",
              _external(external_tensor("w", [4], location="/etc/passwd")))


def _with_link(kind: str) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        (folder / "model.onnx").write_bytes(tensor_model(external_tensor("w", [4], location="link.bin")))
        outside = folder.parent / f"{folder.name}_outside"
        outside.mkdir(exist_ok=True)
        (outside / "secret.bin").write_bytes(W16)
        (folder / "w.bin").write_bytes(W16)
        if kind == "symlink_outside":
            (folder / "link.bin").symlink_to(outside / "secret.bin")
        elif kind == "symlink_inside":
            (folder / "link.bin").symlink_to("w.bin")
        elif kind == "hard_link_outside":
            os.link(outside / "secret.bin", folder / "link.bin")
        elif kind == "hard_link_inside":
            os.link(folder / "w.bin", folder / "link.bin")
    return build


external_case("external_symlink_outside",
              r"'link.bin' of tensor 'w' resolves to '.*secret.bin', outside the model folder",
              _with_link("symlink_outside"))
external_case("external_symlink_inside",
              "'link.bin' is a symbolic link; symbolic links in external data paths are refused",
              _with_link("symlink_inside"))
external_case("external_hard_link_outside", "'link.bin' of tensor 'w' has 2 hard links",
              _with_link("hard_link_outside"))
external_case("external_hard_link_inside", "'link.bin' of tensor 'w' has 2 hard links", _with_link("hard_link_inside"))


def _folder_symlink(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(tensor_model(external_tensor("w", [4], location="data/w.bin")))
    (folder / "real").mkdir()
    (folder / "real" / "w.bin").write_bytes(W16)
    (folder / "data").symlink_to("real", target_is_directory=True)


external_case("external_symlinked_folder_inside", "'data' is a symbolic link", _folder_symlink)


def _directory(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(tensor_model(external_tensor("w", [4], location="weights")))
    (folder / "weights").mkdir()


def _fifo(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(tensor_model(external_tensor("w", [4], location="pipe")))
    os.mkfifo(folder / "pipe")


external_case("external_location_is_a_directory", "'weights' of tensor 'w' is a directory, not a file", _directory)
external_case("external_location_is_a_fifo", "'pipe' of tensor 'w' is not a regular file", _fifo)
external_case("external_file_missing", "'w.bin' of tensor 'w' not found",
              _external(external_tensor("w", [4], location="w.bin")))
external_case("external_offset_past_the_end", r"\(offset 64, length 0\) runs past the end of 'w.bin' \(16 bytes\)",
              _external(external_tensor("w", [0], location="w.bin", offset=64), {"w.bin": W16}))
external_case("external_length_past_the_end", r"\(offset 8, length 16\) runs past the end of 'w.bin' \(16 bytes\)",
              _external(external_tensor("w", [4], location="w.bin", offset=8, length=16), {"w.bin": W16}))
external_case("external_offset_not_a_number", "external data offset '-8' of tensor 'w' is not a number",
              _external(external_tensor("w", [4], location="w.bin", offset=-8), {"w.bin": W16}))
external_case("external_length_mismatch", r"tensor 'w': external data has 16 bytes but dims \[2\] of FLOAT need 8",
              _external(external_tensor("w", [2], location="w.bin"), {"w.bin": W16}))


def _overlapping(folder: Path) -> None:
    a = external_tensor("a", [4], location="w.bin", offset=0, length=16)
    b = external_tensor("b", [4], location="w.bin", offset=8, length=16)
    graph = model([helper.make_node("Add", ["a", "b"], ["y"])], [a, b], inputs=())
    (folder / "model.onnx").write_bytes(graph.SerializeToString())
    (folder / "w.bin").write_bytes(W16 * 2)


external_case("external_overlapping_ranges",
              r"tensor 'b' \(offset 8, length 16\) overlaps that of tensor 'a' \(offset 0, length 16\) in 'w.bin'",
              _overlapping)


def _string_external(folder: Path) -> None:
    tensor = external_tensor("s", [1], location="s.bin")
    tensor.data_type = TensorProto.STRING
    (folder / "model.onnx").write_bytes(tensor_model(tensor))
    (folder / "s.bin").write_bytes(b"abcd")


CASES.append(HostileCase("external_string_tensor", "ModelFormatError",
                         "tensor 's' is a STRING tensor, which cannot use external data", _string_external))


def _both(folder: Path) -> None:
    tensor = external_tensor("w", [4], location="w.bin")
    tensor.raw_data = W16
    (folder / "model.onnx").write_bytes(tensor_model(tensor))
    (folder / "w.bin").write_bytes(W16)


CASES.append(HostileCase("external_and_embedded_data", "ModelFormatError",
                         "tensor 'w' has both external and embedded data",
                         _both))


def main(out: Path) -> None:
    expectations = {}
    for hostile in CASES:
        folder = out / hostile.name
        folder.mkdir(parents=True, exist_ok=True)
        hostile.build(folder)
        expectations[hostile.name] = {"error": hostile.error, "message": hostile.message}
    (out / "cases.json").write_text(json.dumps(expectations, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: make_corpus.py OUT_DIR  (writes one folder per hostile case and cases.json)")
    main(Path(sys.argv[1]))
