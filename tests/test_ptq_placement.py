"""Quantizer placement on small synthetic graphs: elementwise chains and MatMul + bias."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2fx import OnnxToFxConverter, _core
from onnx2fx.quantization import QuantConfig, ptq
from onnx2fx.quantization.placement import OnnxGraphView, plan_placement

pytestmark = pytest.mark.usefixtures("one_thread")


def _scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, np.float32), name)


def _model(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], outputs: list[str],
           channels: int = 4) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [1, channels, 8, 8])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, channels, 8, 8])
                               for o in outputs],
                              initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _view(model: onnx.ModelProto) -> OnnxGraphView:
    return OnnxGraphView.from_core(_core.load_model_from_bytes(model.SerializeToString()))


def _lcnet_block() -> onnx.ModelProto:
    """Conv, a scalar affine, a decomposed HardSwish (x * Clip(x + 3, 0, 6) / 6), another scalar
    affine and a Conv: the block PP-LCNetV3 exports as through paddle2onnx."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32), name)
               for name in ("w1", "w2")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["scale1", "c"], ["m"], name="scale1_mul"),
        helper.make_node("Add", ["m", "shift1"], ["a"], name="shift1_add"),
        helper.make_node("Add", ["a", "three"], ["a3"], name="hs_add"),
        helper.make_node("Constant", [], ["zero"], name="zero_c", value=helper.make_tensor("v", 1, [], [0.0])),
        helper.make_node("Clip", ["a3", "zero", "six"], ["clip"], name="hs_clip"),
        helper.make_node("Mul", ["a", "clip"], ["hm"], name="hs_mul"),
        helper.make_node("Div", ["hm", "six"], ["hs"], name="hs_div"),
        helper.make_node("Mul", ["scale2", "hs"], ["m2"], name="scale2_mul"),
        helper.make_node("Add", ["m2", "shift2"], ["y1"], name="shift2_add"),
        helper.make_node("Conv", ["y1", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    constants = [_scalar("scale1", 1.3), _scalar("shift1", -0.2), _scalar("three", 3.0), _scalar("six", 6.0),
                 _scalar("scale2", 0.8), _scalar("shift2", 0.1)]
    return _model(nodes, [*weights, *constants], ["y"])


def test_decomposed_hardswish_and_scalar_affines_keep_only_the_chain_input_and_exit() -> None:
    placement = plan_placement(_view(_lcnet_block()), QuantConfig())
    # the convolution's output feeds the chain (its 8-bit input), the chain's last Add feeds conv2
    assert [a.tensor for a in placement.activations] == ["x", "c", "y1", "y"]
    assert placement.fused == {"m": "shift1_add", "a": "hs_add", "a3": "hs_clip", "clip": "hs_mul",
                               "hm": "hs_div", "hs": "scale2_mul", "m2": "shift2_add"}
    assert [w.initializer for w in placement.weights] == ["w1", "w2"]
    unfused = plan_placement(_view(_lcnet_block()), QuantConfig.from_dict({"fuse_elementwise": False}))
    assert [a.tensor for a in unfused.activations] == ["x", "c", "m", "a", "a3", "clip", "hm", "hs", "m2", "y1", "y"]
    assert plan_placement(_view(_lcnet_block()), QuantConfig.from_dict({"fuse": False})).fused == {}
    # the integer writers lower each op on its own: they need the chain's values in 8 bits
    for formats in (("qdq", "qoperator"), ("fixed-point",)):
        assert len(plan_placement(_view(_lcnet_block()), QuantConfig(), formats).activations) == 11


def test_silu_and_a_tensor_leaving_the_chain() -> None:
    """x * Sigmoid(x) is one function of x; a chain value that also feeds a Conv is quantized."""
    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid"),
             helper.make_node("Mul", ["x", "s"], ["silu"], name="silu_mul"),
             helper.make_node("Add", ["silu", "one"], ["p"], name="plus"),
             helper.make_node("Mul", ["p", "two"], ["q"], name="times"),
             helper.make_node("Conv", ["p", "w"], ["c"], name="conv"),
             helper.make_node("Add", ["q", "c"], ["y"], name="residual")]
    placement = plan_placement(_view(_model(nodes, [w, _scalar("one", 1.0), _scalar("two", 2.0)], ["y"])),
                               QuantConfig())
    assert placement.fused == {"s": "silu_mul", "silu": "plus"}
    assert [a.tensor for a in placement.activations] == ["x", "p", "q", "c", "y"]


def test_per_channel_constants_and_two_roots_are_not_chains() -> None:
    """A per-channel affine (a LayerNorm's gamma, a BatchNorm as Mul/Add) and x - mean(x) keep their
    quantizers; inside the normalisation the variance's + epsilon is a chain of the variance."""
    gamma = numpy_helper.from_array(np.linspace(0.5, 1.5, 8, dtype=np.float32), "gamma")
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], name="mean", axes=[-1]),
             helper.make_node("Sub", ["x", "mean"], ["d"], name="sub"),
             helper.make_node("Pow", ["d", "two"], ["sq"], name="pow"),
             helper.make_node("ReduceMean", ["sq"], ["var"], name="var", axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"], name="eps_add"),
             helper.make_node("Sqrt", ["ve"], ["sd"], name="sqrt"),
             helper.make_node("Div", ["d", "sd"], ["n"], name="div"),
             helper.make_node("Mul", ["n", "gamma"], ["y"], name="gamma_mul")]
    placement = plan_placement(_view(_model(nodes, [gamma, _scalar("two", 2.0), _scalar("eps", 1e-5)], ["y"],
                                            channels=8)), QuantConfig())
    assert placement.fused == {"ve": "sqrt"}
    assert [a.tensor for a in placement.activations] == ["x", "mean", "d", "sq", "var", "sd", "n", "y"]


def test_matmul_fuses_with_a_constant_bias_add_not_with_a_residual_add() -> None:
    rng = np.random.default_rng(0)
    w1, w2 = (numpy_helper.from_array(rng.normal(0, 0.3, (8, 8)).astype(np.float32), n) for n in ("w1", "w2"))
    bias = numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "bias")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "bias"], ["hb"], name="bias_add"),
             helper.make_node("MatMul", ["hb", "w2"], ["h2"], name="fc2"),
             helper.make_node("Add", ["x", "h2"], ["y"], name="residual")]
    view = _view(_model(nodes, [w1, w2, bias], ["y"], channels=8))
    placement = plan_placement(view, QuantConfig())
    assert placement.fused == {"h": "bias_add"}
    assert [a.tensor for a in placement.activations] == ["x", "hb", "h2", "y"]
    # the integer writers lower the MatMul with its own output encoding
    assert plan_placement(view, QuantConfig(), ("qdq", "fixed-point")).fused == {}


def test_fused_chain_simulates_and_exports_like_onnxruntime(tmp_path: Path) -> None:
    """PTQ of the LCNet block: the QDQ file holds quantizers only where placement put them and runs
    in onnxruntime within one step of the simulation."""
    model = _lcnet_block()
    path = tmp_path / "block.onnx"
    onnx.save(model, str(path))
    converter = OnnxToFxConverter(path)
    converter.convert()
    converter.save(tmp_path / "converted")
    calibration = np.random.default_rng(1).normal(0, 1, (16, 4, 8, 8)).astype(np.float32)
    result = ptq(tmp_path / "converted" / "model_full.pt", calibration, output_dir=tmp_path / "out", samples=16,
                 batch_size=8, progress=False)
    qdq = onnx.load(str(tmp_path / "out" / "model_ptq.onnx"))
    quantized = sorted(n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"
                       and n.input[0] in {"x", "c", "m", "a", "a3", "clip", "hm", "hs", "m2", "y1"})
    assert quantized == ["c", "x", "y1"]
    assert result.report["qdq"]["within_one_step"] == 1.0
