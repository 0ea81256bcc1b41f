"""Casts to the 4- and 2-bit integer types, with the expected values written out.

The ONNX specification defines Cast from a float to an integer type as truncation toward zero and
leaves values out of the target's range undefined. onnx2fx keeps the low bits of the truncated
integer there (two's complement wrapping, the rule the specification gives for integer -> integer
casts), which is what onnxruntime does. QuantizeLinear, in contrast, rounds half to even and
saturates. The expected values below are the specification's (in range) and onnxruntime's (out of
range), so a change in onnxruntime, in onnx's backend data or in the library it computes them with
(ml_dtypes) fails here with a message that says which one moved.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from support import ort_run

from onnx2fx import OnnxToFxConverter

pytestmark = pytest.mark.usefixtures("one_thread")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

STORAGE = {TensorProto.INT4: torch.int8, TensorProto.UINT4: torch.uint8, TensorProto.INT2: torch.int8,
           TensorProto.UINT2: torch.uint8}
# Sub-byte type -> the 8-bit type onnxruntime widens it to, to read its output.
WIDE = {TensorProto.INT4: TensorProto.INT8, TensorProto.UINT4: TensorProto.UINT8,
        TensorProto.INT2: TensorProto.INT8, TensorProto.UINT2: TensorProto.UINT8}
BOUNDS = {TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15), TensorProto.INT2: (-2, 1),
          TensorProto.UINT2: (0, 3)}

# The backend suite's inputs: every integer around the type's range.
FOUR_BIT_INPUT = [float(v) for v in range(-9, 16)]
TWO_BIT_INPUT = [float(v) for v in range(-3, 4)]
CAST_EXPECTED = {
    TensorProto.INT4: [7, -8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1],
    TensorProto.UINT4: [7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    TensorProto.INT2: [1, -2, -1, 0, 1, -2, -1],
    TensorProto.UINT2: [1, 2, 3, 0, 1, 2, 3],
}
# Fractions in range: truncation toward zero, as for every integer type and as onnx's reference
# implementation does. onnxruntime rounds half away from zero for the sub-byte types alone (it
# truncates for int8), so there the two differ and this file records both.
FRACTIONS = {
    TensorProto.INT4: ([2.5, -2.5, 1.7, -1.7, 0.5, -0.5, 6.9, -7.9], [2, -2, 1, -1, 0, 0, 6, -7]),
    TensorProto.UINT4: ([2.5, 1.7, 0.5, 0.4, 14.9], [2, 1, 0, 0, 14]),
    TensorProto.INT2: ([0.5, -0.5, 0.9, -1.9], [0, 0, 0, -1]),
    TensorProto.UINT2: ([0.5, 1.5, 2.9], [0, 1, 2]),
}
ONNXRUNTIME_ROUNDS = {
    TensorProto.INT4: [3, -3, 2, -2, 1, -1, 7, -8], TensorProto.UINT4: [3, 2, 1, 0, 15],
    TensorProto.INT2: [1, -1, 1, -2], TensorProto.UINT2: [1, 2, 3],
}


def _input(to: int) -> np.ndarray:
    return np.array(TWO_BIT_INPUT if to in (TensorProto.INT2, TensorProto.UINT2) else FOUR_BIT_INPUT, np.float32)


def _cast_model(to: int, source: int, n: int, like: bool = False, opset: int = 25) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", source, [n])
    y = helper.make_tensor_value_info("y", to, [n])
    if like:
        target = helper.make_tensor("target", to, [1], [0])
        node = helper.make_node("CastLike", ["x", "target"], ["y"])
        graph = helper.make_graph([node], "g", [x], [y], initializer=[target])
    else:
        graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=to)], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _widened(model: onnx.ModelProto, to: int) -> onnx.ModelProto:
    """``model`` with its sub-byte output cast to 8 bits, which onnxruntime can hand back."""
    widened = onnx.ModelProto()
    widened.CopyFrom(model)
    graph = widened.graph
    graph.output[0].name = "y_sub_byte"
    graph.node[0].output[0] = "y_sub_byte"
    graph.node.append(helper.make_node("Cast", ["y_sub_byte"], ["y"], to=WIDE[to]))
    shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("y", WIDE[to], shape))
    return widened


def _ours(model: onnx.ModelProto, to: int, x: np.ndarray) -> list[int]:
    gm = OnnxToFxConverter(model).convert()
    with torch.no_grad():
        y = gm(torch.from_numpy(x))
    assert y.dtype == {TensorProto.INT4: torch.int4, TensorProto.UINT4: torch.uint4, TensorProto.INT2: torch.int2,
                       TensorProto.UINT2: torch.uint2}[to]
    return y.view(STORAGE[to]).tolist()


@pytest.mark.parametrize("to", list(CAST_EXPECTED), ids=lambda t: TensorProto.DataType.Name(t))
@pytest.mark.parametrize("source", [TensorProto.FLOAT, TensorProto.FLOAT16], ids=["FLOAT", "FLOAT16"])
@pytest.mark.parametrize("like", [False, True], ids=["Cast", "CastLike"])
def test_float_to_sub_byte_integer(to: int, source: int, like: bool) -> None:
    x = _input(to).astype(np.float32 if source == TensorProto.FLOAT else np.float16)
    model = _cast_model(to, source, len(x), like)
    assert _ours(model, to, x) == CAST_EXPECTED[to], "onnx2fx's cast changed"
    reference = ort_run(_widened(model, to), {"x": x})[0].tolist()
    assert reference == CAST_EXPECTED[to], (
        f"onnxruntime's Cast to {TensorProto.DataType.Name(to)} no longer gives the values written here: "
        f"{reference}; decide which one follows the specification before changing either")


@pytest.mark.parametrize("to", list(FRACTIONS), ids=lambda t: TensorProto.DataType.Name(t))
def test_fractions_truncate_toward_zero(to: int) -> None:
    from onnx.reference import ReferenceEvaluator

    values, truncated = FRACTIONS[to]
    x = np.array(values, np.float32)
    model = _cast_model(to, TensorProto.FLOAT, len(x))
    assert _ours(model, to, x) == truncated
    assert ReferenceEvaluator(model).run(None, {"x": x})[0].astype(np.int32).tolist() == truncated, (
        "onnx's reference implementation no longer truncates float -> sub-byte integer casts")
    assert ort_run(_widened(model, to), {"x": x})[0].tolist() == ONNXRUNTIME_ROUNDS[to], (
        "onnxruntime's rounding of fractions in sub-byte casts changed; if it now truncates, this "
        "divergence is gone and ONNXRUNTIME_ROUNDS can go")


@pytest.mark.parametrize("name, to", [("test_cast_FLOAT_to_INT4", TensorProto.INT4),
                                      ("test_cast_FLOAT_to_UINT4", TensorProto.UINT4),
                                      ("test_cast_FLOAT_to_INT2", TensorProto.INT2),
                                      ("test_cast_FLOAT_to_UINT2", TensorProto.UINT2)])
def test_backend_data_agrees_where_the_specification_defines_the_value(name: str, to: int) -> None:
    """onnx's backend case computes its expected output with ml_dtypes; in range it must be ours.
    Out of range it is the library's choice (0.6 wraps, 0.7 gives 0), which the conformance run
    does not compare (``conformance.spec_undefined_elements``)."""
    import conformance  # benchmarks/conformance.py

    case = next(c for c in conformance.node_cases(["cast"])[0] if c.name == name)
    (x,), (expected,) = case.data_sets[0]
    low, high = BOUNDS[to]
    inside = (np.trunc(x) >= low) & (np.trunc(x) <= high)
    backend = np.asarray(expected).astype(np.int32)[inside].tolist()
    ours = dict(zip(_input(to).tolist(), CAST_EXPECTED[to], strict=True))
    assert backend == [ours[float(v)] for v in x[inside]], (
        f"onnx's backend data for {name} changed inside the range the specification defines: {backend}")
    mask = conformance.spec_undefined_elements(case_model := onnx.load_from_string(case.model), [x])[0]
    assert mask is not None and mask.tolist() == (~inside).tolist(), case_model.graph.node[0]


# QuantizeLinear: round half to even, then saturate to the type's range.
QUANTIZE_INPUT = [-20.0, -8.5, -7.5, -2.5, -0.5, 0.5, 1.5, 2.5, 6.5, 7.5, 20.0]
QUANTIZE_EXPECTED = {
    TensorProto.INT4: [-8, -8, -8, -2, 0, 0, 2, 2, 6, 7, 7],
    TensorProto.UINT4: [0, 0, 0, 0, 0, 0, 2, 2, 6, 8, 15],
    TensorProto.INT2: [-2, -2, -2, -2, 0, 0, 1, 1, 1, 1, 1],
    TensorProto.UINT2: [0, 0, 0, 0, 0, 0, 2, 2, 3, 3, 3],
}


@pytest.mark.parametrize("to", list(QUANTIZE_EXPECTED), ids=lambda t: TensorProto.DataType.Name(t))
def test_quantize_linear_to_sub_byte_rounds_half_to_even_and_saturates(to: int) -> None:
    n = len(QUANTIZE_INPUT)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])
    y = helper.make_tensor_value_info("y", to, [n])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0])
    zero = helper.make_tensor("zero", to, [], [0])
    graph = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["y"])], "g", [x], [y],
                              initializer=[scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    data = np.array(QUANTIZE_INPUT, np.float32)
    gm = OnnxToFxConverter(model).convert()
    with torch.no_grad():
        assert gm(torch.from_numpy(data)).view(STORAGE[to]).tolist() == QUANTIZE_EXPECTED[to]
    widened = onnx.ModelProto()
    widened.CopyFrom(model)
    widened.graph.node[0].output[0] = "q"
    widened.graph.node.append(helper.make_node("Cast", ["q"], ["y"], to=WIDE[to]))
    widened.graph.output[0].type.tensor_type.elem_type = WIDE[to]
    assert ort_run(widened, {"x": data})[0].tolist() == QUANTIZE_EXPECTED[to], "onnxruntime's QuantizeLinear moved"
