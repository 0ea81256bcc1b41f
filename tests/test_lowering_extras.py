"""Lowering mechanisms beyond one op: function bodies, sub-byte and unsigned types, run-time shapes,
generated loops, recurrent layers as torch modules."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.fx
from onnx import TensorProto, helper, numpy_helper
from support import check_conversion, export_torch, ort_run

from onnx2fx import OnnxToFxConverter


def _convert(model: onnx.ModelProto) -> tuple[torch.fx.GraphModule, str]:
    converter = OnnxToFxConverter(model)
    gm = converter.convert()
    return gm, converter.source_code


def test_local_function_is_expanded() -> None:
    """A model-local function (as exporters write for modules kept whole) is lowered through its body."""
    body = [helper.make_node("Mul", ["a", "a"], ["sq"]), helper.make_node("Add", ["sq", "a"], ["out"])]
    function = helper.make_function("custom", "SquarePlus", ["a"], ["out"], body, [helper.make_opsetid("", 17)])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("SquarePlus", ["x"], ["y"], domain="custom")], "g", [x], [y])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)])
    gm, _ = _convert(model)
    t = torch.randn(2, 3)
    torch.testing.assert_close(gm(t), t * t + t)


def test_int4_weights_are_unpacked() -> None:
    """INT4 initializers (two per byte in the file) dequantize exactly."""
    values = np.array([[1, -2, 3, -8], [7, 0, -1, 5]], dtype=np.int8)
    weight = helper.make_tensor("w", TensorProto.INT4, [2, 4], values.reshape(-1).tolist())
    scale = numpy_helper.from_array(np.array([0.5, 2.0], np.float32), "scale")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])
    nodes = [helper.make_node("DequantizeLinear", ["w", "scale"], ["wf"], axis=0),
             helper.make_node("MatMul", ["x", "wf"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [weight, scale]),
                              opset_imports=[helper.make_opsetid("", 21)])
    feed = {"x": np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)}
    gm, _ = _convert(model)
    expected = feed["x"] @ (values * np.array([[0.5], [2.0]], np.float32))
    np.testing.assert_allclose(gm(torch.from_numpy(feed["x"])).detach().numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(ort_run(model, feed)[0], expected, rtol=1e-6)


def test_uint32_arithmetic_is_widened() -> None:
    a = helper.make_tensor_value_info("a", TensorProto.UINT32, [3])
    b = helper.make_tensor_value_info("b", TensorProto.UINT32, [3])
    y = helper.make_tensor_value_info("y", TensorProto.UINT32, [3])
    model = helper.make_model(helper.make_graph([helper.make_node("Sub", ["a", "b"], ["y"])], "g", [a, b], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    gm, source = _convert(model)
    out = gm(torch.tensor([5, 7, 9], dtype=torch.uint32), torch.tensor([1, 7, 10], dtype=torch.uint32))
    assert out.dtype == torch.uint32 and "torch.int64" in source
    assert out.tolist() == [4, 0, 2**32 - 1]


def test_run_time_shape_warns_and_traces() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
                                                [x, shape], [y]), opset_imports=[helper.make_opsetid("", 17)])
    converter = OnnxToFxConverter(model)
    gm = converter.convert()
    assert any("run time" in w for w in converter.result.info["warnings"])
    assert gm(torch.arange(12.0).reshape(3, 4), torch.tensor([0, 2, -1])).shape == (3, 2, 2)
    torch.fx.symbolic_trace(gm)


def test_loop_with_run_time_trip_count_is_a_generated_function() -> None:
    """A Loop whose trip count is data: a body function and a loop function in model.py."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "step"], ["acc_out"]), helper.make_node("Identity", ["cond_in"],
                                                                                     ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2])])
    inputs = [helper.make_tensor_value_info("n", TensorProto.INT64, []),
              helper.make_tensor_value_info("acc", TensorProto.FLOAT, [2]),
              helper.make_tensor_value_info("step", TensorProto.FLOAT, [2])]
    node = helper.make_node("Loop", ["n", "", "acc"], ["out"], body=body)
    model = helper.make_model(helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info(
        "out", TensorProto.FLOAT, [2])]), opset_imports=[helper.make_opsetid("", 17)])
    gm, source = _convert(model)
    assert "def _loop_body(" in source and "def _loop(" in source
    out = gm(torch.tensor(4), torch.zeros(2), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(out, torch.tensor([4.0, 2.0]))
    assert [n.op for n in torch.fx.symbolic_trace(gm).graph.nodes].count("call_function") == 1


def _guarded_if_model() -> onnx.ModelProto:
    """torchvision's ``batched_nms`` pattern: ``if boxes.numel() == 0: empty else: <uses boxes.max()>``,
    an empty branch against one whose length is data, and a branch that fails on no elements
    (``torch.amax``). The elements are the positive entries of ``x``, so the condition is data."""
    empty = helper.make_graph(
        [helper.make_node("Constant", [], ["none"], value=numpy_helper.from_array(np.zeros(0, np.int64)))],
        "then", [], [helper.make_tensor_value_info("none", TensorProto.INT64, [0])])
    selected = helper.make_graph(
        [helper.make_node("ReduceMax", ["positive"], ["top"], keepdims=0),
         helper.make_node("Sub", ["positive", "top"], ["shifted"]),
         helper.make_node("Greater", ["shifted", "minus_one"], ["near"]),
         helper.make_node("NonZero", ["near"], ["where"]),
         helper.make_node("Squeeze", ["where", "zero_axis"], ["keep"])],
        "else", [], [helper.make_tensor_value_info("keep", TensorProto.INT64, ["K"])])
    nodes = [helper.make_node("Greater", ["x", "zero_f"], ["is_positive"]),
             helper.make_node("Compress", ["x", "is_positive"], ["positive"], axis=0),
             helper.make_node("Size", ["positive"], ["n"]),
             helper.make_node("Equal", ["n", "zero"], ["is_empty"]),
             helper.make_node("If", ["is_empty"], ["y"], then_branch=empty, else_branch=selected)]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero_f"),
             numpy_helper.from_array(np.array(-1.0, np.float32), "minus_one"),
             numpy_helper.from_array(np.array([0], np.int64), "zero_axis")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_if_with_branches_of_different_shapes_runs_only_the_chosen_branch() -> None:
    """An If on a run-time condition whose branches differ in shape becomes generated branch
    functions, and a helper runs only the chosen one: all-negative input never reaches the
    branch that takes the maximum of no elements."""
    model = _guarded_if_model()
    gm, source = _convert(model)
    assert "def _then_branch(" in source and "def _else_branch(" in source
    values = np.array([0.5, 2.0, 1.5, -3.0, 1.2], np.float32)
    for x in (values, -values * values):
        np.testing.assert_array_equal(gm(torch.from_numpy(x)).numpy(), ort_run(model, {"x": x})[0])
    torch.fx.symbolic_trace(gm)


def test_if_with_branches_of_different_shapes_exports_through_torch_cond() -> None:
    """Under torch.export the branch helper traces both branches with torch.cond (the maximum over
    a data-dependent number of elements is padded with its identity, so tracing needs no guard
    that the branch's input is non-empty); the exported program still takes either branch."""
    model = _guarded_if_model()
    gm, source = _convert(model)
    assert "torch.cond(" in source
    values = np.array([0.5, 2.0, 1.5, -3.0, 1.2], np.float32)
    program = torch.export.export(gm, (torch.from_numpy(values),),
                                  dynamic_shapes=({0: torch.export.Dim("n", min=1, max=64)},))
    for x in (values[:3], -values * values):
        np.testing.assert_array_equal(program.module()(torch.from_numpy(x)).numpy(), ort_run(model, {"x": x})[0])


def test_sequence_output_is_a_list() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])
    seq = helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)
    node = helper.make_node("SplitToSequence", ["x"], ["parts"], axis=0, keepdims=0)
    model = helper.make_model(helper.make_graph([node], "g", [x], [seq]), opset_imports=[helper.make_opsetid("", 17)])
    gm, _ = _convert(model)
    t = torch.randn(4, 3)
    parts = gm(t)
    assert isinstance(parts, list) and len(parts) == 4
    torch.testing.assert_close(parts[2], t[2])


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_recurrent_layers_become_torch_modules(kind: str) -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = getattr(torch.nn, kind)(8, 16, bidirectional=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(x)[0]

    x = torch.randn(5, 3, 8)
    model = export_torch(Net(), (x,), opset=17, dynamic_batch=False)
    check_conversion(model, {"input_0": x.numpy()}, export=False, tolerance_percent=1e-3)
    _, source = _convert(model)
    assert f"nn.{kind}(8, 16, bidirectional=True)" in source


def test_a_constant_never_gets_the_shape_of_a_freed_one() -> None:
    """Fake tensors of constants are cached by id; a freed constant's id reused by a new tensor
    must not hand the new one the old shape (QGemm's folded operands met this at random)."""
    from onnx2fx.codegen.emitter import Emitter

    g = Emitter()
    for _ in range(200):
        scalar = torch.zeros(())
        g.fake(g.const(scalar))
        del scalar
        matrix = torch.zeros(19, 6)
        assert tuple(g.fake(g.const(matrix)).shape) == (19, 6)
        del matrix
