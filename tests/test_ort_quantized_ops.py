"""onnxruntime's quantized com.microsoft operators against onnxruntime itself.

Models come from ``onnxruntime.quantization`` where it writes the operator (quantize_static in the
QOperator format, quantize_dynamic, the MatMulNBits quantizer) or from onnxruntime's own graph
optimizer (DynamicQuantizeMatMul, MatMulIntegerToFloat); the rest are built with onnx.helper.
Integer outputs must be equal element for element; every model runs at two sizes of each dynamic
dimension and is traced with ``torch.fx.symbolic_trace``.

onnxruntime's uint8 x int8 kernels on x86-64 CPUs without VNNI clip pair sums at int16
(:mod:`onnx2fx.quantization.ort_cpu`), where the operators' definitions and the conversion do
not. On such a CPU the int8 weights of those products are drawn from 7 bits, and onnxruntime's
quantizers run with ``reduce_range``, its own remedy: both then compute the exact result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.fx
from onnx import TensorProto, helper, numpy_helper
from support import export_torch, relative_error_percent

from onnx2fx import OnnxToFxConverter, UnsupportedOperatorError
from onnx2fx.quantization.ort_cpu import u8s8_saturates

pytestmark = pytest.mark.usefixtures("one_thread")

MS = "com.microsoft"
RNG = np.random.default_rng(7)


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int = 1) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _compare(model: onnx.ModelProto, feed_sets: Sequence[dict[str, np.ndarray]], *, exact: bool = True,
             tolerance_percent: float = 1e-4, threads: int = 1) -> torch.fx.GraphModule:
    """Convert once, then compare with onnxruntime on every feed set; the traced module too."""
    gm = OnnxToFxConverter(model).convert()
    traced = torch.fx.symbolic_trace(gm)
    for feeds in feed_sets:
        expected = _ort(model, feeds, threads)
        inputs = [torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()]
        with torch.no_grad():
            for module in (gm, traced):
                produced = module(*inputs)
                produced = list(produced) if isinstance(produced, (tuple, list)) else [produced]
                assert len(produced) == len(expected)
                for ref, out in zip(expected, produced):
                    out = out.numpy()
                    assert out.dtype == ref.dtype and out.shape == ref.shape
                    if exact:
                        mismatched = int((out != ref).sum())
                        assert mismatched == 0, f"{mismatched} of {ref.size} elements differ from onnxruntime"
                    else:
                        error = relative_error_percent(ref, out)
                        assert error <= tolerance_percent, f"relative error {error:.3g}% > {tolerance_percent}%"
    return gm


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: Sequence[onnx.TensorProto] = (), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    return model


def _scalar(name: str, value: float | int, dtype: type) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def _q(dtype: type, *shape: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, size=shape).astype(dtype)


def _int8_weights(*shape: int) -> np.ndarray:
    """int8 weights of a uint8 x int8 product: the full range, or 7 bits where onnxruntime clips."""
    if u8s8_saturates():
        return RNG.integers(-64, 64, size=shape).astype(np.int8)
    return _q(np.int8, *shape)


REDUCE_RANGE = {"reduce_range": u8s8_saturates()}  # for onnxruntime's quantizers


_ONNX_TYPE = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}


# ------------------------------------------------------------------------------ QLinear elementwise
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("b_shape", [("batch", 3, 5, 7), (1, 3, 1, 1), (1,)])
@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_qlinear_add_and_mul_are_exact(op: str, b_shape: tuple, dtype: type) -> None:
    t = _ONNX_TYPE[dtype]
    zero = 0 if dtype == np.int8 else 128
    inits = [_scalar("sa", 0.0173, np.float32), _scalar("za", zero + 3, dtype), _scalar("sb", 0.0311, np.float32),
             _scalar("zb", zero - 5, dtype), _scalar("sc", 0.0427 if op == "QLinearAdd" else 0.00231, np.float32),
             _scalar("zc", zero + 1, dtype)]
    node = helper.make_node(op, ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["y"], domain=MS)
    model = _model([node], [helper.make_tensor_value_info("a", t, ["batch", 3, 5, 7]),
                            helper.make_tensor_value_info("b", t, list(b_shape))],
                   [helper.make_tensor_value_info("y", t, None)], inits)
    feeds = []
    for batch in (2, 5):
        shape_b = [batch if d == "batch" else d for d in b_shape]
        feeds.append({"a": _q(dtype, batch, 3, 5, 7), "b": _q(dtype, *shape_b)})
    _compare(model, feeds)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("op", ["QLinearSigmoid", "QLinearLeakyRelu"])
def test_qlinear_lookup_activations_are_exact_on_every_input_value(op: str, dtype: type) -> None:
    t = _ONNX_TYPE[dtype]
    inits = [_scalar("sx", 0.047, np.float32), _scalar("zx", 7, dtype), _scalar("sy", 0.0041, np.float32),
             _scalar("zy", -100 if dtype == np.int8 else 20, dtype)]
    attrs = {"alpha": 0.13} if op == "QLinearLeakyRelu" else {}
    node = helper.make_node(op, ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS, **attrs)
    model = _model([node], [helper.make_tensor_value_info("x", t, ["n"])],
                   [helper.make_tensor_value_info("y", t, None)], inits)
    info = np.iinfo(dtype)
    every = np.arange(info.min, info.max + 1).astype(dtype)  # all 256 entries of onnxruntime's table
    _compare(model, [{"x": every}, {"x": every[::-3].copy()}])


def test_qlinear_concat_requantizes_inputs_with_other_encodings_exactly() -> None:
    inits = [_scalar("sy", 0.02, np.float32), _scalar("zy", 120, np.uint8), _scalar("s1", 0.02, np.float32),
             _scalar("z1", 120, np.uint8), _scalar("s2", 0.0333, np.float32), _scalar("z2", 3, np.uint8),
             _scalar("s3", 0.011, np.float32), _scalar("z3", 200, np.uint8)]
    node = helper.make_node("QLinearConcat", ["sy", "zy", "x1", "s1", "z1", "x2", "s2", "z2", "x3", "s3", "z3"],
                            ["y"], domain=MS, axis=1)
    inputs = [helper.make_tensor_value_info(f"x{i}", TensorProto.UINT8, ["batch", c, "h"])
              for i, c in ((1, 2), (2, 3), (3, 1))]
    model = _model([node], inputs, [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    feeds = [{"x1": _q(np.uint8, b, 2, h), "x2": _q(np.uint8, b, 3, h), "x3": _q(np.uint8, b, 1, h)}
             for b, h in ((1, 9), (4, 17))]
    gm = _compare(model, feeds)
    assert "torch.cat" in gm.code


# ------------------------------------------------------------------------------ pooling and softmax
@pytest.mark.parametrize("channels_last", [0, 1])
def test_qlinear_global_average_pool_is_exact(channels_last: int) -> None:
    inits = [_scalar("sx", 0.05, np.float32), _scalar("zx", 131, np.uint8), _scalar("sy", 0.0213, np.float32),
             _scalar("zy", 117, np.uint8)]
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS,
                            channels_last=channels_last)
    dims = ["batch", "h", "w", 6] if channels_last else ["batch", 6, "h", "w"]
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.UINT8, dims)],
                   [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    shapes = [(2, 7, 9, 6), (3, 13, 5, 6)] if channels_last else [(2, 6, 7, 9), (3, 6, 13, 5)]
    _compare(model, [{"x": _q(np.uint8, *s)} for s in shapes])


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                                   dict(kernel_shape=[2, 3], count_include_pad=1, pads=[0, 1, 0, 1])])
def test_qlinear_average_pool_is_exact(attrs: dict) -> None:
    inits = [_scalar("sx", 0.031, np.float32), _scalar("zx", 9, np.int8), _scalar("sy", 0.027, np.float32),
             _scalar("zy", -3, np.int8)]
    node = helper.make_node("QLinearAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS, **attrs)
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.INT8, ["batch", 4, "h", "w"])],
                   [helper.make_tensor_value_info("y", TensorProto.INT8, None)], inits)
    _compare(model, [{"x": _q(np.int8, 2, 4, 11, 8)}, {"x": _q(np.int8, 1, 4, 6, 13)}])


@pytest.mark.parametrize(("dtype", "opset", "axis"), [(np.uint8, 13, -1), (np.uint8, 13, 1), (np.int8, 13, -1),
                                                      (np.uint8, 12, 1)])
def test_qlinear_softmax_is_exact(dtype: type, opset: int, axis: int) -> None:
    t = _ONNX_TYPE[dtype]
    zy = -128 if dtype == np.int8 else 0
    inits = [_scalar("sx", 0.083, np.float32), _scalar("zx", 0, dtype), _scalar("sy", 1 / 256, np.float32),
             _scalar("zy", zy, dtype)]
    node = helper.make_node("QLinearSoftmax", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS, opset=opset,
                            axis=axis)
    model = _model([node], [helper.make_tensor_value_info("x", t, ["batch", 5, "n"])],
                   [helper.make_tensor_value_info("y", t, None)], inits)
    _compare(model, [{"x": _q(dtype, 2, 5, 10)}, {"x": _q(dtype, 3, 5, 37)}])


# ------------------------------------------------------------------------------ matrix products
@pytest.mark.parametrize(("trans_a", "trans_b", "per_column", "requantize"),
                         [(0, 0, False, True), (0, 1, True, True), (1, 0, False, False), (0, 1, True, False)])
def test_qgemm(trans_a: int, trans_b: int, per_column: bool, requantize: bool) -> None:
    k, n = 19, 6
    b = _int8_weights(*((n, k) if trans_b else (k, n)))
    b_scale = RNG.uniform(0.001, 0.01, n if per_column else ()).astype(np.float32)
    b_zero = np.zeros(n if per_column else (), np.int8)
    inits = [_scalar("sa", 0.021, np.float32), _scalar("za", 113, np.uint8), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(b_scale, "sb"), numpy_helper.from_array(b_zero, "zb"),
             numpy_helper.from_array(RNG.integers(-3000, 3000, n).astype(np.int32), "c")]
    names = ["a", "sa", "za", "b", "sb", "zb", "c"]
    if requantize:
        inits += [_scalar("sy", 0.17, np.float32), _scalar("zy", 121, np.uint8)]
        names += ["sy", "zy"]
    node = helper.make_node("QGemm", names, ["y"], domain=MS, alpha=0.75, transA=trans_a, transB=trans_b)
    a_dims = [k, "m"] if trans_a else ["m", k]
    out_type = TensorProto.UINT8 if requantize else TensorProto.FLOAT
    model = _model([node], [helper.make_tensor_value_info("a", TensorProto.UINT8, a_dims)],
                   [helper.make_tensor_value_info("y", out_type, None)], inits)
    feeds = [{"a": _q(np.uint8, *((k, m) if trans_a else (m, k)))} for m in (3, 8)]
    _compare(model, feeds, exact=requantize, tolerance_percent=1e-5)


def test_matmul_integer_to_float_with_per_column_scales() -> None:
    k, n = 12, 5
    inits = [numpy_helper.from_array(_int8_weights(k, n), "b"), _scalar("sa", 0.013, np.float32),
             numpy_helper.from_array(RNG.uniform(0.001, 0.01, n).astype(np.float32), "sb"),
             _scalar("za", 97, np.uint8), numpy_helper.from_array(RNG.standard_normal(n).astype(np.float32), "bias")]
    node = helper.make_node("MatMulIntegerToFloat", ["a", "b", "sa", "sb", "za", "", "bias"], ["y"], domain=MS)
    model = _model([node], [helper.make_tensor_value_info("a", TensorProto.UINT8, ["batch", "m", k])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    _compare(model, [{"a": _q(np.uint8, 2, 3, k)}, {"a": _q(np.uint8, 1, 7, k)}], exact=False, tolerance_percent=1e-5)


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(24, 32)
        self.fc2 = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(torch.matmul(x, self.fc1.weight.t()) + self.fc1.bias))


def test_dynamic_quantize_matmul_from_quantize_dynamic_and_the_optimizer(tmp_path: Path) -> None:
    """quantize_dynamic writes DynamicQuantizeLinear + MatMulInteger; onnxruntime's optimizer fuses
    them into DynamicQuantizeMatMul and MatMulIntegerToFloat, the form it saves and runs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    source = tmp_path / "mlp.onnx"
    export_torch(_Mlp(), (torch.randn(2, 5, 24),), opset=17, path=source,
                 input_names=["x"])
    quantized = tmp_path / "mlp_int8.onnx"
    quantize_dynamic(source, quantized, weight_type=QuantType.QInt8, **REDUCE_RANGE)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "mlp_fused.onnx")
    ort.InferenceSession(str(quantized), options, providers=["CPUExecutionProvider"])
    fused = onnx.load(str(tmp_path / "mlp_fused.onnx"))
    ops = {n.op_type for n in fused.graph.node}
    assert "DynamicQuantizeMatMul" in ops or "MatMulIntegerToFloat" in ops, ops
    feeds = [{"x": RNG.standard_normal((b, s, 24)).astype(np.float32)} for b, s in ((2, 5), (3, 5))]
    _compare(fused, feeds, exact=False, tolerance_percent=1e-4)
    _compare(onnx.load(str(quantized)), feeds, exact=False, tolerance_percent=1e-4)


def test_dynamic_quantize_matmul_built_by_hand_with_zero_point_and_bias() -> None:
    k, n = 16, 7
    inits = [numpy_helper.from_array(_q(np.uint8, k, n), "b"), _scalar("sb", 0.0071, np.float32),
             _scalar("zb", 131, np.uint8), numpy_helper.from_array(RNG.standard_normal(n).astype(np.float32), "bias")]
    node = helper.make_node("DynamicQuantizeMatMul", ["a", "b", "sb", "zb", "bias"], ["y"], domain=MS)
    model = _model([node], [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["m", k])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    feeds = [{"a": RNG.standard_normal((m, k)).astype(np.float32) * 3} for m in (4, 9)]
    feeds.append({"a": np.abs(RNG.standard_normal((2, k))).astype(np.float32)})  # range without negatives
    _compare(model, feeds, exact=False, tolerance_percent=1e-5)


def test_matmul_nbits_from_the_4_bit_quantizer(tmp_path: Path) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    k, n = 64, 24
    weight = RNG.standard_normal((k, n)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   [numpy_helper.from_array(weight, "w")])
    for symmetric in (True, False):
        quantizer = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=symmetric)
        quantizer.process()
        quantized = quantizer.model.model
        assert [n.op_type for n in quantized.graph.node] == ["MatMulNBits"]
        feeds = [{"x": RNG.standard_normal((b, k)).astype(np.float32)} for b in (1, 6)]
        _compare(quantized, feeds, exact=False, tolerance_percent=1e-4)


@pytest.mark.parametrize("bits", [4, 8])
def test_matmul_nbits_with_packed_zero_points_and_a_partial_last_block(bits: int) -> None:
    k, n, block = 40, 5, 16  # 3 blocks, the last one half used
    blocks = 3
    values = RNG.integers(0, 1 << bits, (n, blocks, block)).astype(np.uint8)
    per_byte = 8 // bits
    packed = np.zeros((n, blocks, block // per_byte), np.uint8)
    for j in range(per_byte):
        packed |= (values[..., j::per_byte] << (j * bits)).astype(np.uint8)
    zps = RNG.integers(0, 1 << bits, (n, blocks)).astype(np.uint8)
    zp_bytes = np.zeros((n, -(-blocks // per_byte)), np.uint8)
    for j in range(blocks):
        zp_bytes[:, j // per_byte] |= (zps[:, j] << ((j % per_byte) * bits)).astype(np.uint8)
    scales = RNG.uniform(0.01, 0.1, (n * blocks,)).astype(np.float32)
    inits = [numpy_helper.from_array(packed, "b"), numpy_helper.from_array(scales, "s"),
             numpy_helper.from_array(zp_bytes.reshape(-1), "z"),
             numpy_helper.from_array(RNG.standard_normal(n).astype(np.float32), "bias")]
    node = helper.make_node("MatMulNBits", ["a", "b", "s", "z", "", "bias"], ["y"], domain=MS, K=k, N=n,
                            bits=bits, block_size=block)
    model = _model([node], [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", "m", k])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    feeds = [{"a": RNG.standard_normal((b, m, k)).astype(np.float32)} for b, m in ((1, 3), (2, 5))]
    _compare(model, feeds, exact=False, tolerance_percent=1e-4)


# ------------------------------------------------------------------------------ recurrent and attention
class _Lstm(torch.nn.Module):
    def __init__(self, inputs: int, hidden: int, bidirectional: bool) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(inputs, hidden, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, (h, c) = self.lstm(x)
        return y, h, c


def _quantized_lstm(tmp_path: Path, inputs: int, hidden: int, bidirectional: bool, weight_type: str = "QInt8",
                    per_channel: bool = False) -> onnx.ModelProto:
    """An LSTM as onnxruntime's quantize_dynamic writes it: DynamicQuantizeLSTM with 8-bit weights (by
    default int8 over the full range, -127..127, with one scale per direction; 7 bits where
    onnxruntime's u8 x s8 kernels clip, see the module's docstring)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(1)
    source, quantized = tmp_path / "lstm.onnx", tmp_path / "lstm_int8.onnx"
    module = _Lstm(inputs, hidden, bidirectional).eval()
    torch.onnx.export(module, (torch.randn(5, 2, inputs),), str(source), dynamo=False, opset_version=14,
                      input_names=["x"], output_names=["y", "h", "c"], dynamic_axes={"x": {0: "seq", 1: "batch"}})
    quantize_dynamic(source, quantized, weight_type=QuantType[weight_type], per_channel=per_channel, **REDUCE_RANGE)
    model = onnx.load(str(quantized))
    assert "DynamicQuantizeLSTM" in {n.op_type for n in model.graph.node}
    return model


def _sequences(inputs: int, sizes: Sequence[tuple[int, int]]) -> list[dict[str, np.ndarray]]:
    return [{"x": (RNG.standard_normal((steps, batch, inputs)) * 2).astype(np.float32)} for steps, batch in sizes]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dynamic_quantize_lstm_from_quantize_dynamic(tmp_path: Path, bidirectional: bool) -> None:
    """Equal to onnxruntime in every bit: the input sequence quantized once, the hidden state at
    each step, MLAS's sigmoid and tanh. With hidden size <= 256 onnxruntime quantizes each of 2+
    batch rows alone when it has a thread per row (4 here)."""
    model = _quantized_lstm(tmp_path, 6, 12, bidirectional)
    _compare(model, _sequences(6, [(1, 1), (5, 1), (20, 1), (9, 2), (7, 3), (5, 4)]), threads=4)


def test_dynamic_quantize_lstm_with_a_wide_hidden_state(tmp_path: Path) -> None:
    """Hidden size > 256: onnxruntime quantizes the whole batch's state as one up to 4 rows, and each
    row alone from 5 rows on (given as many threads)."""
    model = _quantized_lstm(tmp_path, 16, 300, True)
    _compare(model, _sequences(16, [(6, 1), (4, 3)]), threads=1)
    _compare(model, _sequences(16, [(3, 6)]), threads=6)


@pytest.mark.parametrize(("weight_type", "per_channel"), [("QUInt8", False), ("QInt8", True)])
def test_dynamic_quantize_lstm_with_other_weight_quantizations(tmp_path: Path, weight_type: str,
                                                               per_channel: bool) -> None:
    """uint8 weights (a zero point other than 0) and one scale per output column."""
    model = _quantized_lstm(tmp_path, 8, 20, True, weight_type, per_channel)
    _compare(model, _sequences(8, [(7, 1), (5, 3)]), threads=4)


def test_onnxruntime_quantizes_the_lstm_state_per_thread(tmp_path: Path) -> None:
    """Why the lowering has to pick a row grouping: onnxruntime's own result at batch 3 changes with
    its thread count (one range over the 3 rows with 1 thread, one per row with 4)."""
    model = _quantized_lstm(tmp_path, 6, 12, False)
    feeds = _sequences(6, [(9, 3)])[0]
    one, four = _ort(model, feeds, threads=1), _ort(model, feeds, threads=4)
    assert not np.array_equal(one[0], four[0])
    assert np.array_equal(four[0], _ort(model, feeds, threads=8)[0])


def test_dynamic_quantize_lstm_is_one_operator_written_back_as_the_contrib_node(tmp_path: Path) -> None:
    """The lowering runs as a registered operator: torch.export records one node (not the time loop
    unrolled, tens of thousands of operations at a realistic length) and keeps the steps dynamic,
    and ``onnx2fx export`` writes it back as com.microsoft DynamicQuantizeLSTM, whose outputs in
    onnxruntime equal the source's in every bit at any length."""
    from onnx2fx.export import export_onnx

    model = _quantized_lstm(tmp_path, 6, 12, True)
    onnx.save(model, tmp_path / "source.onnx")
    gm = OnnxToFxConverter(tmp_path / "source.onnx").convert()
    feeds = _sequences(6, [(9, 1), (1, 1), (23, 1)])
    program = torch.export.export(gm, (torch.from_numpy(feeds[0]["x"]),), strict=False,
                                  dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    assert [str(n.target) for n in program.graph.nodes if "onnx2fx" in str(n.target)] != []
    assert len(list(program.graph.nodes)) < 40
    exported = export_onnx(gm, tmp_path / "roundtrip.onnx", source=tmp_path / "source.onnx", validate=False)
    written = onnx.load(str(exported.path))
    assert exported.exporter == "dynamo"
    assert [(n.domain, n.op_type) for n in written.graph.node if n.domain] == [(MS, "DynamicQuantizeLSTM")]
    for feed in feeds:
        expected = _ort(model, feed, threads=4)
        assert all(np.array_equal(e, p) for e, p in zip(expected, _ort(written, feed, threads=4)))
        with torch.no_grad():
            assert all(np.array_equal(e, p.numpy()) for e, p in zip(expected, program.module()(
                torch.from_numpy(feed["x"]))))


def test_mlas_logistic_and_tanh_equal_onnxruntime() -> None:
    """``mlas.mlas_logistic`` / ``mlas_tanh`` against onnxruntime's Sigmoid and Tanh, which run the
    same MLAS kernels: every bit, over [-30, 30] (both clamps included) and a dense normal sample."""
    from onnx2fx.ops.mlas import mlas_logistic, mlas_tanh

    x = np.concatenate([np.linspace(-30, 30, 600_001, dtype=np.float32),
                        (RNG.standard_normal(200_000) * 4).astype(np.float32)])
    for op, kernel in (("Sigmoid", mlas_logistic), ("Tanh", mlas_tanh)):
        model = _model([helper.make_node(op, ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
        expected = _ort(model, {"x": x})[0]
        produced = kernel(torch.from_numpy(x)).numpy()
        assert int((produced != expected).sum()) == 0, op
        exact = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh}[op](torch.from_numpy(x)).numpy()
        assert int((exact != expected).sum()) > 100_000  # torch's functions are not what onnxruntime computes


def test_fma32_rounds_once() -> None:
    """A sum that float64 rounds onto a float32 tie the exact value is not on: 128 + 2^-16 +
    2^-17 (1 - 2^-33) is below the tie, so the fused result is 128 + 2^-16 (float64 then float32
    would give 128 + 2^-15)."""
    from onnx2fx.ops.mlas import fma32

    x = torch.tensor(2.0 ** -17 * (1 - 2.0 ** -11), dtype=torch.float32)
    y = torch.tensor(1 + 2.0 ** -11 + 2.0 ** -22, dtype=torch.float32)
    z = torch.tensor(128 + 2.0 ** -16, dtype=torch.float32)
    assert float((x.double() * y.double() + z.double()).float()) == 128 + 2.0 ** -15
    assert float(fma32(x, y, z)) == 128 + 2.0 ** -16


def test_qattention_from_quantize_dynamic(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hidden, heads = 16, 2
    inits = [numpy_helper.from_array(RNG.standard_normal((hidden, 3 * hidden)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(RNG.standard_normal(3 * hidden).astype(np.float32) * 0.1, "bias")]
    node = helper.make_node("Attention", ["x", "w", "bias", "mask"], ["y"], domain=MS, num_heads=heads)
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden]),
                            helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "seq"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    source, quantized = tmp_path / "attention.onnx", tmp_path / "attention_int8.onnx"
    onnx.save(model, str(source))
    quantize_dynamic(source, quantized, weight_type=QuantType.QUInt8)
    q_model = onnx.load(str(quantized))
    assert "QAttention" in {n.op_type for n in q_model.graph.node}
    feeds = []
    for batch, seq in ((2, 5), (1, 8)):
        mask = np.ones((batch, seq), np.int32)
        mask[0, -2:] = 0
        feeds.append({"x": RNG.standard_normal((batch, seq, hidden)).astype(np.float32), "mask": mask})
    _compare(q_model, feeds, exact=False, tolerance_percent=1e-4)


@pytest.mark.parametrize("past", [0, 3])
def test_group_query_attention(past: int) -> None:
    heads, kv_heads, size = 4, 2, 8
    names = ["q", "k", "v", "past_k", "past_v", "seqlens_k", "total"]
    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["batch", "seq", heads * size]),
              helper.make_tensor_value_info("k", TensorProto.FLOAT, ["batch", "seq", kv_heads * size]),
              helper.make_tensor_value_info("v", TensorProto.FLOAT, ["batch", "seq", kv_heads * size]),
              helper.make_tensor_value_info("past_k", TensorProto.FLOAT, ["batch", kv_heads, "past", size]),
              helper.make_tensor_value_info("past_v", TensorProto.FLOAT, ["batch", kv_heads, "past", size]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
              helper.make_tensor_value_info("total", TensorProto.INT32, [])]
    node = helper.make_node("GroupQueryAttention", names, ["y", "present_k", "present_v"], domain=MS,
                            num_heads=heads, kv_num_heads=kv_heads)
    model = _model([node], inputs, [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                    for n in ("y", "present_k", "present_v")])
    feeds = []
    # onnxruntime takes a prompt longer than one token after a past only for one sequence
    for batch, seq in (((1, 4), (2, 1)) if past else ((2, 4), (1, 7))):
        total = past + seq
        feeds.append({"q": RNG.standard_normal((batch, seq, heads * size)).astype(np.float32),
                      "k": RNG.standard_normal((batch, seq, kv_heads * size)).astype(np.float32),
                      "v": RNG.standard_normal((batch, seq, kv_heads * size)).astype(np.float32),
                      "past_k": RNG.standard_normal((batch, kv_heads, past, size)).astype(np.float32),
                      "past_v": RNG.standard_normal((batch, kv_heads, past, size)).astype(np.float32),
                      "seqlens_k": np.full(batch, total - 1, np.int32), "total": np.array(total, np.int32)})
    gm = _compare(model, feeds, exact=False, tolerance_percent=1e-4)
    padded = dict(feeds[0], seqlens_k=np.array([feeds[0]["seqlens_k"][0] - 1] * len(feeds[0]["seqlens_k"]),
                                               np.int32))
    with pytest.raises(RuntimeError, match="seqlens_k must be past \\+ new length - 1"):
        gm(*[torch.from_numpy(v) for v in padded.values()])


# ------------------------------------------------------------------------------ a quantize_static QOperator model
class _SmallCnn(torch.nn.Module):
    """Every operator the QOperator format turns into a com.microsoft QLinear op or QGemm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(8, 4, 1)
        self.pool = torch.nn.AvgPool2d(2)
        self.fc = torch.nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        b = torch.nn.functional.leaky_relu(self.conv2(a), 0.1)
        c = (a + b) * torch.sigmoid(self.conv3(b)).mean(1, keepdim=True)
        d = torch.cat([self.pool(c), self.pool(b)], 1)
        e = torch.nn.functional.adaptive_avg_pool2d(d, 1).flatten(1)
        return torch.softmax(self.fc(e[:, :12]), -1)


def test_quantize_static_qoperator_cnn_is_exact(tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    torch.manual_seed(3)
    source = tmp_path / "cnn.onnx"
    torch.onnx.export(_SmallCnn().eval(), (torch.randn(1, 3, 16, 16),), str(source), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.data = iter([{"x": RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.data, None)

    quantized = tmp_path / "cnn_int8.onnx"
    quantize_static(source, quantized, Reader(), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, **REDUCE_RANGE)
    model = onnx.load(str(quantized))
    ops = {n.op_type for n in model.graph.node}
    expected = {"QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearGlobalAveragePool",
                "QLinearConcat", "QLinearAveragePool", "QLinearSoftmax", "QGemm"}
    assert expected <= ops, f"missing {expected - ops}"
    feeds = [{"x": RNG.standard_normal((b, 3, 16, 16)).astype(np.float32)} for b in (1, 3)]
    _compare(model, feeds, exact=True)


# ------------------------------------------------------------------ attributes left out, as onnxruntime reads them
@pytest.mark.parametrize(("dtype", "opset"), [(np.uint8, 12), (np.int8, 13)])
def test_qlinear_softmax_without_axis_is_exact(dtype: type, opset: int) -> None:
    """onnxruntime's default axis is -1 below opset 13 too (there the input is flattened from it)."""
    t = _ONNX_TYPE[dtype]
    rng = np.random.default_rng(13)  # not the module's generator: the tests above keep their data
    info = np.iinfo(dtype)
    inits = [_scalar("sx", 0.083, np.float32), _scalar("zx", 0, dtype), _scalar("sy", 1 / 256, np.float32),
             _scalar("zy", -128 if dtype == np.int8 else 0, dtype)]
    node = helper.make_node("QLinearSoftmax", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS, opset=opset)
    model = _model([node], [helper.make_tensor_value_info("x", t, ["batch", 5, "n"])],
                   [helper.make_tensor_value_info("y", t, None)], inits)
    _compare(model, [{"x": rng.integers(info.min, info.max + 1, size=shape).astype(dtype)}
                     for shape in ((2, 5, 10), (3, 5, 37))])


@pytest.mark.parametrize("smooth_softmax", [-1, 0, 2, 1])
def test_group_query_attention_smooth_softmax_is_on_only_for_1(smooth_softmax: int) -> None:
    """onnxruntime computes with smooth softmax only when the attribute is 1; -1 (the schema's
    default), 0 and other values are a plain softmax, and converted as one. 1 is refused."""
    heads, kv_heads, size = 4, 2, 8
    names = ["q", "k", "v", "past_k", "past_v", "seqlens_k", "total"]
    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["batch", "seq", heads * size]),
              helper.make_tensor_value_info("k", TensorProto.FLOAT, ["batch", "seq", kv_heads * size]),
              helper.make_tensor_value_info("v", TensorProto.FLOAT, ["batch", "seq", kv_heads * size]),
              helper.make_tensor_value_info("past_k", TensorProto.FLOAT, ["batch", kv_heads, "past", size]),
              helper.make_tensor_value_info("past_v", TensorProto.FLOAT, ["batch", kv_heads, "past", size]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
              helper.make_tensor_value_info("total", TensorProto.INT32, [])]
    node = helper.make_node("GroupQueryAttention", names, ["y", "present_k", "present_v"], domain=MS,
                            num_heads=heads, kv_num_heads=kv_heads, smooth_softmax=smooth_softmax)
    model = _model([node], inputs, [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                    for n in ("y", "present_k", "present_v")])
    if smooth_softmax == 1:
        with pytest.raises(UnsupportedOperatorError, match="GroupQueryAttention with smooth_softmax"):
            OnnxToFxConverter(model).convert()
        return
    batch, seq = 2, 4
    rng = np.random.default_rng(11)  # not the module's generator: the tests above keep their data
    feeds = {"q": rng.standard_normal((batch, seq, heads * size)).astype(np.float32),
             "k": rng.standard_normal((batch, seq, kv_heads * size)).astype(np.float32),
             "v": rng.standard_normal((batch, seq, kv_heads * size)).astype(np.float32),
             "past_k": np.zeros((batch, kv_heads, 0, size), np.float32),
             "past_v": np.zeros((batch, kv_heads, 0, size), np.float32),
             "seqlens_k": np.full(batch, seq - 1, np.int32), "total": np.array(seq, np.int32)}
    _compare(model, [feeds], exact=False, tolerance_percent=1e-4)


# ------------------------------------------------------------------------------ QLinearAdd rounding
def _on_every_pair_of_values(node: onnx.NodeProto, inits: list, broadcast: str) -> tuple[dict, np.ndarray]:
    """Run a binary QLinear op on every (a, b) pair of uint8 values, ``b`` or ``a`` broadcast along
    the last axis or neither; assert the converter equals onnxruntime element for element."""
    rows = np.arange(256, dtype=np.uint8).reshape(256, 1)
    grid = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    feeds = {"none": {"a": np.repeat(rows, 256, 1), "b": grid}, "b": {"a": grid, "b": rows.copy()},
             "a": {"a": rows.copy(), "b": grid}}[broadcast]
    inputs = [helper.make_tensor_value_info(k, TensorProto.UINT8, list(v.shape)) for k, v in feeds.items()]
    model = _model([node], inputs, [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    gm = _compare(model, [feeds])
    with torch.no_grad():
        produced = gm(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
    np.testing.assert_array_equal(produced, _ort(model, feeds)[0])
    return feeds, produced


@pytest.mark.parametrize("broadcast", ["none", "b", "a"])
def test_qlinear_add_rounds_as_onnxruntime_on_every_pair_of_values(broadcast: str) -> None:
    """Every (a, b) pair of uint8 values, with encodings where three pairs land next to a rounding
    tie: the kernel's constant part ``zC - (sA/sC zA + sB/sC zB)`` is one fused multiply-add, and
    a broadcast ``a`` is handed to it as the second operand; rounding either differently moves
    those pairs by one step."""
    inits = [_scalar("sa", 0.00871, np.float32), _scalar("za", 222, np.uint8), _scalar("sb", 0.01371, np.float32),
             _scalar("zb", 149, np.uint8), _scalar("sc", 0.07456, np.float32), _scalar("zc", 10, np.uint8)]
    node = helper.make_node("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["y"], domain=MS)
    feeds, produced = _on_every_pair_of_values(node, inits, broadcast)


@pytest.mark.parametrize("broadcast", ["none", "b", "a"])
def test_qlinear_mul_adds_the_zero_point_before_rounding(broadcast: str) -> None:
    """``sA * sB / sC`` = 0.5 puts every odd product on a tie; with the odd output zero point 101,
    onnxruntime rounds ``p / 2 + 101`` half to even, so 1 * 1 gives 102 and 1 * 3 gives 102 too."""
    inits = [_scalar("sa", 0.5, np.float32), _scalar("za", 128, np.uint8), _scalar("sb", 0.25, np.float32),
             _scalar("zb", 128, np.uint8), _scalar("sc", 0.25, np.float32), _scalar("zc", 101, np.uint8)]
    node = helper.make_node("QLinearMul", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["y"], domain=MS)
    feeds, produced = _on_every_pair_of_values(node, inits, broadcast)
    a, b = np.broadcast_arrays(feeds["a"], feeds["b"])
    assert produced[(a == 129) & (b == 129)].tolist() == [102]
    assert produced[(a == 129) & (b == 131)].tolist() == [102]
