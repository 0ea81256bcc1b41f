"""Property-based fuzzing of the Python path with Hypothesis: ONNX bytes -> ``OnnxToFxConverter
(...).convert()`` either succeeds or raises one of the documented ``onnx2fx.errors`` classes.
Anything else (another exception, a crash, a conversion running past the time limit or allocating
more than MEMORY_LIMIT_BYTES) is a bug.

Inputs are structured mutations of small valid models, so they get past the reader into the
lowering: swapped op types, attributes of the wrong type, inputs of the wrong rank, subgraphs
nested deeply, huge dims, names that collide once turned into Python identifiers, and random byte
flips of the serialized model. ``ONNX2FX_FUZZ_EXAMPLES`` sets how many models a run tries
(default 150; docs/security.md gives the figure of a long run).
"""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx2fx import OnnxToFxConverter
from onnx2fx.errors import ConversionError, Onnx2FxError

EXAMPLES = int(os.environ.get("ONNX2FX_FUZZ_EXAMPLES", "150"))
TIME_LIMIT_S = 60
MEMORY_LIMIT_BYTES = 4 << 30  # more than any of these small models needs
TRACE_FILE = os.environ.get("ONNX2FX_FUZZ_TRACE")

OP_TYPES = ["Relu", "Conv", "MatMul", "Gemm", "Add", "Reshape", "Transpose", "Concat", "Gather", "Softmax", "Split",
            "Slice", "MaxPool", "AveragePool", "BatchNormalization", "LayerNormalization", "Flatten", "Squeeze",
            "Unsqueeze", "Expand", "Tile", "Where", "Cast", "ReduceMean", "Pad", "Resize", "ConstantOfShape",
            "Range", "TopK", "Einsum", "If", "Loop", "Shape", "Size", "Identity", "Clip", "Pow", "Sqrt", "Mod",
            "GlobalAveragePool", "Upsample", "DepthToSpace", "NonZero", "CumSum", "OneHot", "ScatterND"]
ODD_NAMES = ["a.b", "a_b", "a-b", "1x", "class", "self", "forward", "x", "x_1", "torch", "__init__", "a b", "a/b",
             "π", "x" * 300, "_", "input", "weight", "import"]


def _vi(name: str, shape: list[int | str] | None, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def base_models() -> list[onnx.ModelProto]:
    """Small valid models that convert, as starting points."""
    opset = [helper.make_opsetid("", 18)]
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    conv = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("Shape", ["r"], ["s"], name="shape"),
         helper.make_node("Constant", [], ["idx"], name="idx",
                          value=helper.make_tensor("i", TensorProto.INT64, [], [0])),
         helper.make_node("Gather", ["s", "idx"], ["n"], name="gather"),
         helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsq"),
         helper.make_node("Concat", ["n1", "minus1"], ["shape2"], name="concat", axis=0),
         helper.make_node("Reshape", ["r", "shape2"], ["y"], name="reshape")],
        "conv", [_vi("x", ["batch", 3, 8, 8])], [_vi("y", None)],
        [w, b, numpy_helper.from_array(np.array([0], np.int64), "axes"),
         numpy_helper.from_array(np.array([-1], np.int64), "minus1")])
    m = numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "m")
    matmul = helper.make_graph(
        [helper.make_node("MatMul", ["x", "m"], ["h"], name="mm"),
         helper.make_node("Add", ["h", "h"], ["a"], name="add"),
         helper.make_node("Softmax", ["a"], ["y"], name="softmax", axis=-1)],
        "matmul", [_vi("x", [2, 6])], [_vi("y", None)], [m])
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [_vi("t", None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", None)])
    branch = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
         helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g)],
        "branch", [_vi("x", [3])], [_vi("y", None)], [numpy_helper.from_array(np.array(0, np.float32), "zero")])
    return [helper.make_model(g, opset_imports=opset) for g in (conv, matmul, branch)]


BASES = [m.SerializeToString() for m in base_models()]


def _attribute_of_another_type(data: st.DataObject, attribute: onnx.AttributeProto) -> onnx.AttributeProto:
    choices = [
        lambda: helper.make_attribute(attribute.name, data.draw(st.integers(-(2**63), 2**63 - 1))),
        lambda: helper.make_attribute(attribute.name, data.draw(st.floats(allow_nan=True))),
        lambda: helper.make_attribute(attribute.name, data.draw(st.text(max_size=8))),
        lambda: helper.make_attribute(attribute.name,
                                      data.draw(st.lists(st.integers(-5, 2**40), min_size=1, max_size=6))),
        lambda: helper.make_attribute(attribute.name, data.draw(st.lists(st.floats(-10, 10), min_size=1, max_size=4))),
        lambda: helper.make_attribute(attribute.name, helper.make_tensor("t", TensorProto.INT64, [2], [1, 2])),
        lambda: helper.make_attribute(attribute.name, helper.make_graph([], "empty", [], [])),
    ]
    return choices[data.draw(st.integers(0, len(choices) - 1))]()


def _nest(graph: onnx.GraphProto, levels: int) -> onnx.GraphProto:
    """Wraps the graph's nodes in `levels` If nodes whose condition is a constant True. The else
    branch is a single node (the same body in both branches would double the size per level)."""
    for level in range(levels):
        body = helper.make_graph(list(graph.node), f"level{level}", [], list(graph.output))
        other = helper.make_graph([helper.make_node("Identity", [graph.input[0].name], [graph.output[0].name])],
                                  f"else{level}", [], list(graph.output[:1]))
        cond = helper.make_node("Constant", [], [f"cond{level}"],
                                value=helper.make_tensor("c", TensorProto.BOOL, [], [True]))
        node = helper.make_node("If", [f"cond{level}"], [o.name for o in graph.output], then_branch=body,
                                else_branch=other)
        del graph.node[:]
        graph.node.extend([cond, node])
    return graph


@st.composite
def mutated_models(draw: st.DrawFn) -> bytes:
    data = draw(st.data())
    model = onnx.ModelProto.FromString(draw(st.sampled_from(BASES)))
    graph = model.graph
    nested = False
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["op_type", "attribute", "rank", "nesting", "huge_dim", "names", "bytes",
                                     "initializer_dims", "opset"]))
        node = graph.node[draw(st.integers(0, len(graph.node) - 1))]
        if kind == "op_type":
            node.op_type = draw(st.sampled_from(OP_TYPES))
        elif kind == "attribute" and node.attribute:
            index = draw(st.integers(0, len(node.attribute) - 1))
            node.attribute[index].CopyFrom(_attribute_of_another_type(data, node.attribute[index]))
        elif kind == "rank":
            dims = draw(st.lists(st.integers(0, 8), max_size=6))
            graph.input[0].CopyFrom(_vi(graph.input[0].name, dims))
        elif kind == "nesting" and not nested:
            # Once, at most 10 levels: protobuf's parser caps message depth at 100 (3 per level);
            # deeper nesting is the hostile corpus's (10^4 levels, refused by the reader).
            _nest(graph, draw(st.integers(1, 10)))
            nested = True
        elif kind == "huge_dim":
            dims = list(graph.input[0].type.tensor_type.shape.dim)
            if dims:
                dims[draw(st.integers(0, len(dims) - 1))].dim_value = draw(st.sampled_from([2**31, 2**40, 2**62]))
        elif kind == "initializer_dims" and graph.initializer:
            tensor = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
            del tensor.dims[:]
            tensor.dims.extend(draw(st.lists(st.integers(-1, 2**33), max_size=4)))
        elif kind == "names":
            old = draw(st.sampled_from([*(o for n in graph.node for o in n.output), graph.input[0].name]))
            new = draw(st.sampled_from(ODD_NAMES))
            for n in graph.node:
                n.input[:] = [new if i == old else i for i in n.input]
                n.output[:] = [new if o == old else o for o in n.output]
                n.name = draw(st.sampled_from(["", *ODD_NAMES]))
            for v in (*graph.input, *graph.output):
                if v.name == old:
                    v.name = new
        elif kind == "opset":
            model.opset_import[0].version = draw(st.integers(1, 30))
    data_bytes = bytearray(model.SerializeToString())
    if draw(st.booleans()) and draw(st.booleans()):  # a quarter of the models also get byte flips
        for _ in range(draw(st.integers(1, 4))):
            data_bytes[draw(st.integers(0, len(data_bytes) - 1))] = draw(st.integers(0, 255))
    return bytes(data_bytes)


@contextmanager
def memory_limit(extra_bytes: int) -> Iterator[None]:
    """Caps the process's address space at its current size plus `extra_bytes`, so a conversion
    that allocates without bound fails with MemoryError instead of exhausting the machine."""
    with open("/proc/self/status") as status:
        size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size_kb * 1024 + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum, frame):
        raise TimeoutError(f"conversion ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_base_models_convert():
    torch.set_num_threads(1)
    for data in BASES:
        OnnxToFxConverter(data).convert()


# The suite's run is the same every time (derandomized): a finding fails it on every machine, not
# by chance; ONNX2FX_FUZZ_RANDOM=1 explores new inputs (the long runs in docs/security.md).
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not os.environ.get("ONNX2FX_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_models())
def test_conversion_succeeds_or_raises_a_documented_error(data: bytes):
    torch.set_num_threads(1)
    if TRACE_FILE:  # the input being converted, for finding one that kills the process
        with open(TRACE_FILE, "wb") as trace:
            trace.write(data)
    with time_limit(TIME_LIMIT_S), memory_limit(MEMORY_LIMIT_BYTES):
        try:
            OnnxToFxConverter(data).convert()
        except Onnx2FxError:
            pass
        except (TimeoutError, MemoryError) as exc:
            pytest.fail(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - any other exception is the finding
            pytest.fail(f"undocumented {type(exc).__name__}: {exc}")


# --- regressions: what the harness found, each now a ConversionError naming what is wrong -----------
def _single_node_model(node: onnx.NodeProto, input_shape: list[int], initializers=()) -> bytes:
    graph = helper.make_graph([node], "g", [_vi("x", input_shape)], [_vi("y", None)], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def test_a_missing_required_input_is_named():
    data = _single_node_model(helper.make_node("Conv", ["x"], ["y"], name="conv"), [1, 3, 8, 8])
    with pytest.raises(ConversionError, match=r"node 'conv' \(Conv, domain 'ai.onnx', opset 18\): "
                                              r"required input 1 \(w\) is missing; the node has 1 input\(s\)"):
        OnnxToFxConverter(data).convert()


def test_an_attribute_of_the_wrong_type_is_named():
    node = helper.make_node("Softmax", ["x"], ["y"], name="softmax", axis="last")
    with pytest.raises(ConversionError, match="node 'softmax' .*attribute 'axis' is STRING, expected INT"):
        OnnxToFxConverter(_single_node_model(node, [2, 3])).convert()


def test_a_lowering_failing_on_odd_inputs_names_the_node():
    node = helper.make_node("Add", ["x", ""], ["y"], name="add")  # an empty name for a required input
    with pytest.raises(ConversionError, match=r"node 'add' \(Add, domain 'ai.onnx', opset 18\): cannot be lowered "
                                              r"with these inputs and attributes: AttributeError"):
        OnnxToFxConverter(_single_node_model(node, [2, 3])).convert()


def test_an_input_too_large_to_trace_is_named():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    with pytest.raises(ConversionError, match=r"graph input 'x' has shape \[4611686018427387904, 8\], too large"):
        OnnxToFxConverter(_single_node_model(node, [2**62, 8])).convert()
