"""ConvInteger and QLinearConv compute their int32 sums exactly in float arithmetic: one float32
convolution while no partial sum can pass 2**24, the input split into two 4-bit halves while each
half's sums stay below it, float64 beyond. Each case equals onnxruntime in every element, at two
input sizes, and the generated code uses the arithmetic the bound allows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from support import ort_run

from onnx2fx import OnnxToFxConverter


def _conv_integer(channels: int, kernel: int, weights: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("ConvInteger", ["x", "w", "x_zp", "w_zp"], ["y"], pads=[kernel // 2] * 4)],
        "conv_integer", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, channels, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array(131, np.uint8), "x_zp"),
         numpy_helper.from_array(np.array(-3, np.int8), "w_zp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(("channels", "kernel", "arithmetic"), [
    (2, 3, "float32"),  # 255 * sum|w| < 2**24
    (96, 3, "split"),  # 255 * sum|w| > 2**24 > 16 * sum|w|
    (1024, 5, "float64"),  # 16 * sum|w| > 2**24
])
def test_conv_integer_is_exact_in_the_cheapest_arithmetic(channels: int, kernel: int, arithmetic: str) -> None:
    rng = np.random.default_rng(channels)
    # The extreme weights make the bound the real worst case: every partial sum can reach it.
    weights = rng.choice(np.array([-128, 127], np.int8), size=(4, channels, kernel, kernel))
    model = _conv_integer(channels, kernel, weights)
    gm = OnnxToFxConverter(model).convert()
    code = gm.code
    assert ("torch.float64" in code) == (arithmetic == "float64")
    assert ("torch.remainder" in code) == (arithmetic == "split")
    for size in (5, 8):
        x = rng.choice(np.array([0, 255], np.uint8), size=(1, channels, size, size))
        x[..., 0, 0] = rng.integers(0, 256, size=channels, dtype=np.uint8)
        (expected,) = ort_run(model, {"x": x})
        produced = gm(torch.from_numpy(x)).numpy()
        assert produced.dtype == np.int32
        np.testing.assert_array_equal(produced, expected)


@pytest.mark.parametrize(("channels", "arithmetic"), [(2, "float32"), (96, "split")])
def test_conv_integer_exports_to_onnx_that_onnxruntime_runs_exactly(tmp_path: Path, channels: int,
                                                                       arithmetic: str) -> None:
    """``onnx2fx export`` of ConvInteger: float32 convolutions on integer-valued tensors, which
    onnxruntime's Conv accepts (it has no integer or double one), equal to the source in every
    element at two sizes."""
    from onnx2fx.export import export_onnx

    rng = np.random.default_rng(channels)
    model = _conv_integer(channels, 3, rng.choice(np.array([-128, 127], np.int8), size=(4, channels, 3, 3)))
    onnx.save(model, tmp_path / "source.onnx")
    gm = OnnxToFxConverter(model).convert()
    exported = export_onnx(gm, tmp_path / "roundtrip.onnx", source=tmp_path / "source.onnx", validate=False)
    written = onnx.load(str(exported.path))
    assert {n.op_type for n in written.graph.node if n.op_type.startswith("Conv")} == {"Conv"}
    for size in (5, 8):
        x = rng.integers(0, 256, size=(1, channels, size, size), dtype=np.uint8)
        (expected,) = ort_run(model, {"x": x})
        (produced,) = ort_run(written, {"x": x})
        np.testing.assert_array_equal(produced, expected)
