"""Writes the seed corpora of the libFuzzer targets in ``cpp/fuzz/`` from models built here.

Usage: ``python cpp/fuzz/make_seed_corpus.py OUT_DIR`` creates ``OUT_DIR/reader``,
``OUT_DIR/external_data`` and ``OUT_DIR/qdq_writer``. The seeds are the shipped example model plus
small models that reach every reader branch (typed and raw tensors, strings, subgraphs, functions,
sparse tensors, sequence/map/optional types, external data naming the files that
``external_data_fuzzer.cc`` creates), so nothing binary is committed without its source.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]


def _model(nodes, inputs, outputs, initializers=(), **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], **kwargs)


def _float(name: str, shape=None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def reader_seeds() -> dict[str, bytes]:
    """Models that are valid or nearly so, each exercising different fields."""
    seeds: dict[str, bytes] = {"tiny_cnn": (ROOT / "examples" / "tiny_cnn.onnx").read_bytes()}
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    seeds["matmul_raw"] = _model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        [_float("x", ["batch", 2])], [_float("y", ["batch", 3])], [w],
    ).SerializeToString()
    typed = [
        helper.make_tensor("f", TensorProto.FLOAT, [2], [1.0, 2.0]),
        helper.make_tensor("i64", TensorProto.INT64, [3], [1, -2, 3]),
        helper.make_tensor("i8", TensorProto.INT8, [2], [-1, 1]),
        helper.make_tensor("h", TensorProto.FLOAT16, [1], [np.float16(1.5).view(np.uint16)]),
        helper.make_tensor("d", TensorProto.DOUBLE, [1], [2.5]),
        helper.make_tensor("u64", TensorProto.UINT64, [1], [7]),
        helper.make_tensor("b", TensorProto.BOOL, [2], [True, False]),
        helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"bc"]),
        helper.make_tensor("u4", TensorProto.UINT4, [3], [1, 2, 3]),
    ]
    seeds["typed_fields"] = _model(
        [helper.make_node("Identity", ["f"], ["y"])], [], [_float("y")], typed
    ).SerializeToString()
    then_graph = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [_float("t")])
    else_graph = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_float("e")])
    seeds["if_subgraph"] = _model(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph)],
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), _float("x", [2])], [_float("y")],
    ).SerializeToString()
    function = helper.make_function(
        "local", "Double", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 18)],
    )
    seeds["function"] = helper.make_model(
        helper.make_graph([helper.make_node("Double", ["x"], ["y"], domain="local")], "g",
                          [_float("x", [2])], [_float("y")]),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)], functions=[function],
    ).SerializeToString()
    sparse = helper.make_sparse_tensor(
        helper.make_tensor("sv", TensorProto.FLOAT, [2], [1.0, 2.0]),
        helper.make_tensor("si", TensorProto.INT64, [2], [0, 3]), [4],
    )
    model = _model([helper.make_node("Identity", ["sv"], ["y"])], [], [_float("y")])
    model.graph.sparse_initializer.append(sparse)
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [2])
    model.graph.value_info.append(seq)
    model.graph.value_info.append(helper.make_value_info(
        "opt", helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.INT64, [1]))))
    model.metadata_props.add(key="k", value="v")
    seeds["sparse_and_types"] = model.SerializeToString()
    attributes = helper.make_node(
        "Conv", ["x", "w"], ["y"], kernel_shape=[1, 1], pads=[0, 0, 0, 0], auto_pad="NOTSET",
        strides=[1, 1], alpha=0.5, value=helper.make_tensor("t", TensorProto.FLOAT, [1], [1.0]),
    )
    seeds["attributes"] = _model([attributes], [_float("x", [1, 1, 2, 2])], [_float("y")],
                                 [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")]).SerializeToString()
    return seeds


def external_seeds() -> dict[str, bytes]:
    """Models whose tensors name the files external_data_fuzzer.cc creates."""
    seeds = {}
    cases = {
        "good": {"location": "w.bin", "offset": "0", "length": "16"},
        "offset": {"location": "w.bin", "offset": "48"},
        "subfolder": {"location": "sub/x.bin"},
        "inside_symlink": {"location": "inside.bin", "length": "16"},
        "outside_symlink": {"location": "outside.bin", "length": "16"},
        "folder_symlink": {"location": "up/secret.bin", "length": "16"},
        "dotdot": {"location": "../secret.bin", "length": "16"},
        "hard_link": {"location": "hard.bin"},
        "directory": {"location": "dir"},
        "fifo": {"location": "fifo", "length": "16"},
        "empty": {"location": "empty.bin", "length": "0"},
    }
    for name, entries in cases.items():
        length = int(entries.get("length", 16))
        tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, data_location=TensorProto.EXTERNAL)
        tensor.dims.append(length // 4)
        for key, value in entries.items():
            tensor.external_data.add(key=key, value=value)
        seeds[name] = _model([helper.make_node("Identity", ["w"], ["y"])], [], [_float("y")],
                             [tensor]).SerializeToString()
    return seeds


def qdq_writer_seeds() -> dict[str, bytes]:
    """FuzzedDataProvider input is unstructured; a few random byte strings of different sizes."""
    rng = random.Random(14)
    return {f"random_{size}": bytes(rng.randrange(256) for _ in range(size)) for size in (16, 64, 256, 1024)}


def main(out: Path) -> None:
    for folder, seeds in (("reader", reader_seeds()), ("external_data", external_seeds()),
                          ("qdq_writer", qdq_writer_seeds())):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (out / folder / name).write_bytes(data)
    # The external-data seeds are models too: the reader target should start from them as well.
    for name, data in external_seeds().items():
        (out / "reader" / f"external_{name}").write_bytes(data)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_seed_corpus.py OUT_DIR")
    main(Path(sys.argv[1]))
