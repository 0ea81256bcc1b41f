"""The native QDQ writer (_core.write_qdq_model): checker-valid output, onnxruntime parity with
fake-quantized NumPy math, exact integer initializers, verbatim copies, and plan errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2fx import _core

RANGES = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "uint16": (0, 65535),
    "int16": (-32768, 32767),
    "uint4": (0, 15),
    "int4": (-8, 7),
    "int32": (-(2**31), 2**31 - 1),
}


# --- NumPy quantization --------------------------------------------------------------------------


def channel_shape(ndim: int, axis: int | None) -> list[int]:
    shape = [1] * ndim
    if axis is not None:
        shape[axis] = -1
    return shape


def quantize(w: np.ndarray, scale, zero_point, dtype: str, axis: int | None = None) -> np.ndarray:
    """round_half_to_even(w / scale) + zero_point, saturated, in float32 as QuantizeLinear computes it."""
    shape = channel_shape(w.ndim, axis)
    s = np.asarray(scale, np.float32).reshape(shape)
    zp = np.asarray(zero_point, np.float32).reshape(shape)
    lo, hi = RANGES[dtype]
    return np.clip(np.rint(w.astype(np.float32) / s) + zp, lo, hi).astype(np.int64)


def dequantize(q: np.ndarray, scale, zero_point, axis: int | None = None) -> np.ndarray:
    shape = channel_shape(q.ndim, axis)
    s = np.asarray(scale, np.float32).reshape(shape)
    zp = np.asarray(zero_point, np.int64).reshape(shape)
    return ((q - zp).astype(np.float32) * s).astype(np.float32)


def fake_quant(x: np.ndarray, scale, zero_point, dtype: str, axis: int | None = None) -> np.ndarray:
    return dequantize(quantize(x, scale, zero_point, dtype, axis), scale, zero_point, axis)


def asymmetric(values: np.ndarray, dtype: str = "uint8") -> tuple[float, int]:
    """Per-tensor scale and zero point covering [min(values, 0), max(values, 0)]."""
    lo, hi = RANGES[dtype]
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    scale = float(np.float32((high - low) / (hi - lo)))
    return scale, int(np.clip(round(lo - low / scale), lo, hi))


def symmetric(w: np.ndarray, axis: int, dtype: str = "int8") -> list[float]:
    """Per-channel scales mapping max |w| along every other axis to the top of the range."""
    reduce = tuple(d for d in range(w.ndim) if d != axis)
    return [float(s) for s in (np.abs(w).max(axis=reduce) / np.float32(RANGES[dtype][1])).astype(np.float32)]


def bias_scales(input_scale: float, weight_scales: list[float]) -> list[float]:
    return [float(s) for s in np.float32(input_scale) * np.asarray(weight_scales, np.float32)]


# --- helpers -------------------------------------------------------------------------------------


def run(path: Path, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
    """Runs a model with graph optimizations off, so Q/DQ pairs are computed as written, not fused."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(outputs, feeds)


def check(path: Path) -> onnx.ModelProto:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return model


def default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def initializers(model: onnx.ModelProto) -> dict[str, TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def int_array(tensor: TensorProto) -> np.ndarray:
    return numpy_helper.to_array(tensor).astype(np.int64)


def node_by_output(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if name in n.output)


def with_values(
    model: onnx.ModelProto, values: dict[str, np.ndarray], path: Path, extra_outputs: tuple[str, ...] = ()
) -> Path:
    """A copy of `model` with some initializers replaced (and some values exposed as outputs)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in copy.graph.initializer:
        if tensor.name in values:
            tensor.CopyFrom(numpy_helper.from_array(values[tensor.name].astype(np.float32), tensor.name))
    for name in extra_outputs:
        copy.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    onnx.save(copy, str(path))
    return path


def assert_no_temporaries(folder: Path, expected: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == expected


# --- Conv -> Relu -> Gemm --------------------------------------------------------------------------


def conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {
        "W": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
        "B": rng.normal(0, 0.1, 4).astype(np.float32),
        "W2": rng.normal(0, 0.1, (5, 144)).astype(np.float32),
        "B2": rng.normal(0, 0.1, 5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name="relu", doc_string="relu doc"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W2", "B2"], ["y"], name="gemm", transB=1),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "shape"))
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        inits,
        doc_string="graph doc",
        value_info=[helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 4, 6, 6])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6, producer_name="tests", doc_string="model doc"
    )
    helper.set_model_props(model, {"author": "tests"})
    return model


@pytest.fixture
def conv(tmp_path: Path):
    """The Conv model, an input, and a plan with its fake-quantized reference output."""
    model = conv_model()
    source = tmp_path / "conv.onnx"
    onnx.save(model, str(source))
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    x_scale, x_zp = asymmetric(x)
    w_scales = symmetric(w["W"], 0)
    w2_scales = symmetric(w["W2"], 0)
    b_scales = bias_scales(x_scale, w_scales)
    dequantized = {
        "W": fake_quant(w["W"], w_scales, [0] * 4, "int8", 0),
        "B": fake_quant(w["B"], b_scales, [0] * 4, "int32", 0),
    }
    # Stage 1 in onnxruntime: the original model on dequantized weights and input, up to r.
    x_dq = fake_quant(x, x_scale, x_zp, "uint8")
    reference = with_values(model, dequantized, tmp_path / "reference.onnx", ("r",))
    (r,) = run(reference, {"x": x_dq}, ["r"])
    r_scale, r_zp = asymmetric(r)
    b2_scales = bias_scales(r_scale, w2_scales)
    # Stage 2 by hand: Reshape and Gemm on the fake-quantized r.
    w2_dq = fake_quant(w["W2"], w2_scales, [0] * 5, "int8", 0)
    b2_dq = fake_quant(w["B2"], b2_scales, [0] * 5, "int32", 0)
    r_dq = fake_quant(r, r_scale, r_zp, "uint8").reshape(1, -1)
    y = (r_dq.astype(np.float64) @ w2_dq.T.astype(np.float64) + b2_dq).astype(np.float32)

    plan = {
        "min_opset": 13,
        "activations": [
            {"tensor": "x", "scale": [x_scale], "zero_point": [x_zp], "dtype": "uint8"},
            {"tensor": "r", "scale": [r_scale], "zero_point": [r_zp], "dtype": "uint8"},
        ],
        "weights": [
            {"initializer": "W", "scale": w_scales, "zero_point": [0] * 4, "dtype": "int8", "axis": 0, "values": None},
            {"initializer": "W2", "scale": w2_scales, "zero_point": [0] * 5, "dtype": "int8", "axis": 0},
        ],
        "biases": [
            {"initializer": "B", "scale": b_scales, "axis": 0},
            {"initializer": "B2", "scale": b2_scales, "axis": 0},
        ],
    }
    return {"model": model, "source": source, "x": x, "y": y, "w": w, "plan": plan}


def test_conv_relu_gemm(conv, tmp_path: Path):
    out = tmp_path / "conv_qdq.onnx"
    stats = _core.write_qdq_model(str(conv["source"]), str(out), conv["plan"])
    assert stats == {
        "quantized_activations": 2,
        "quantized_weights": 2,
        "quantized_biases": 2,
        "bytes_written": out.stat().st_size,
    }
    model = check(out)

    (y,) = run(out, {"x": conv["x"]})
    np.testing.assert_allclose(y, conv["y"], rtol=0, atol=1e-5)

    # Integer initializers are exactly the NumPy quantization.
    inits = initializers(model)
    plan = conv["plan"]
    w = conv["w"]
    for entry in plan["weights"]:
        name = entry["initializer"]
        q = inits[f"{name}_quantized"]
        assert q.data_type == TensorProto.INT8
        np.testing.assert_array_equal(int_array(q), quantize(w[name], entry["scale"], entry["zero_point"], "int8", 0))
        assert name not in inits
        np.testing.assert_array_equal(
            numpy_helper.to_array(inits[f"{name}_scale"]), np.asarray(entry["scale"], np.float32)
        )
    for entry in plan["biases"]:
        name = entry["initializer"]
        q = inits[f"{name}_quantized"]
        assert q.data_type == TensorProto.INT32
        np.testing.assert_array_equal(int_array(q), quantize(w[name], entry["scale"], 0, "int32", 0))
        np.testing.assert_array_equal(int_array(inits[f"{name}_zero_point"]), np.zeros(len(entry["scale"])))
    x_zp = inits["x_zero_point"]
    assert x_zp.data_type == TensorProto.UINT8 and list(x_zp.dims) == []
    assert int_array(x_zp) == plan["activations"][0]["zero_point"][0]

    # Structure: DQ of each weight, consumers read the dequantized activations, names unique.
    dq_w = node_by_output(model, "W")
    assert dq_w.op_type == "DequantizeLinear" and list(dq_w.input) == ["W_quantized", "W_scale", "W_zero_point"]
    assert helper.get_attribute_value(dq_w.attribute[0]) == 0
    assert list(node_by_output(model, "c").input) == ["x_dequantized", "W", "B"]
    assert list(node_by_output(model, "f").input) == ["r_dequantized", "shape"]
    q_r = node_by_output(model, "r_quantized")
    assert q_r.op_type == "QuantizeLinear" and list(q_r.input) == ["r", "r_scale", "r_zero_point"]
    names = [n.name for n in model.graph.node]
    assert len(names) == len(set(names))

    # Opset raised for per-axis quantization, IR version with it; everything else kept.
    assert default_opset(model) == 13 and model.ir_version == 7
    assert {p.key: p.value for p in model.metadata_props} == {"author": "tests", "onnx2fx.quantized": "qdq"}
    assert model.doc_string == "model doc" and model.graph.doc_string == "graph doc"
    assert model.producer_name == "tests"
    assert [v.name for v in model.graph.value_info] == ["c"]
    assert node_by_output(model, "r").doc_string == "relu doc"


def test_untouched_messages_are_copied_verbatim(conv, tmp_path: Path):
    out = tmp_path / "conv_qdq.onnx"
    _core.write_qdq_model(conv["source"], out, conv["plan"])
    source = conv["model"]
    model = onnx.load(str(out))
    shape = initializers(source)["shape"]
    assert initializers(model)["shape"].SerializeToString() == shape.SerializeToString()
    data = out.read_bytes()
    # The serialized messages appear byte for byte in the output file.
    assert shape.SerializeToString() in data
    relu = next(n for n in source.graph.node if n.name == "relu")
    assert relu.SerializeToString() in data
    assert source.graph.input[0].SerializeToString() in data


def test_values_replace_the_initializer_data(conv, tmp_path: Path):
    plan = conv["plan"]
    w2 = conv["w"]["W2"] * np.float32(0.5)
    plan["weights"][1]["values"] = w2
    out = tmp_path / "tuned.onnx"
    _core.write_qdq_model(conv["source"], out, plan)
    model = check(out)
    q = initializers(model)["W2_quantized"]
    np.testing.assert_array_equal(int_array(q), quantize(w2, plan["weights"][1]["scale"], [0] * 5, "int8", 0))
    run(out, {"x": conv["x"]})


def test_per_tensor_weights_and_biases(conv, tmp_path: Path):
    plan = conv["plan"]
    w = conv["w"]
    x_scale = plan["activations"][0]["scale"][0]
    w_scale = float(np.float32(np.abs(w["W"]).max() / 127))
    plan["weights"][0].update(scale=[w_scale], zero_point=[3], axis=None)
    plan["biases"][0].update(scale=bias_scales(x_scale, [w_scale]), axis=None)
    out = tmp_path / "per_tensor.onnx"
    _core.write_qdq_model(conv["source"], out, plan)
    model = check(out)
    inits = initializers(model)
    assert list(inits["W_scale"].dims) == [] and list(inits["W_zero_point"].dims) == []
    assert list(node_by_output(model, "W").attribute) == []
    np.testing.assert_array_equal(int_array(inits["W_quantized"]), quantize(w["W"], w_scale, 3, "int8"))
    np.testing.assert_array_equal(
        int_array(inits["B_quantized"]), quantize(w["B"], plan["biases"][0]["scale"], 0, "int32")
    )
    run(out, {"x": conv["x"]})


# --- MatMul + Add, graph output quantized, int4 / int16 ----------------------------------------


def matmul_model(opset: int = 13) -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.5, (4, 3)).astype(np.float32)
    b = rng.normal(0, 0.2, 3).astype(np.float32)
    double = helper.make_function(
        "local",
        "Double",
        ["X"],
        ["Y"],
        [helper.make_node("Add", ["X", "X"], ["Y"])],
        [helper.make_opsetid("", opset)],
        doc_string="doubles its input",
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b"], ["a"], name="add"),
        helper.make_node("Double", ["a"], ["y"], name="double", domain="local"),
    ]
    graph = helper.make_graph(
        nodes,
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(
        graph,
        functions=[double],
        ir_version=8,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("local", 1)],
    )


def matmul_case(
    model: onnx.ModelProto, source: Path, tmp_path: Path, act_dtype: str = "uint8", weight_dtype: str = "int8"
):
    """A plan quantizing x, w (axis 1), b (int32) and the graph output y, with its reference output."""
    x = np.random.default_rng(3).uniform(-2, 2, (2, 4)).astype(np.float32)
    w = numpy_helper.to_array(initializers(model)["w"])
    b = numpy_helper.to_array(initializers(model)["b"])
    x_scale, x_zp = asymmetric(x, act_dtype)
    w_scales = symmetric(w, 1, weight_dtype)
    b_scales = bias_scales(x_scale, w_scales)
    dequantized = {
        "w": fake_quant(w, w_scales, [0] * 3, weight_dtype, 1),
        "b": fake_quant(b, b_scales, [0] * 3, "int32", 0),
    }
    (y_float,) = run(
        with_values(model, dequantized, tmp_path / "reference.onnx"), {"x": fake_quant(x, x_scale, x_zp, act_dtype)}
    )
    y_scale, y_zp = asymmetric(y_float, act_dtype)
    plan = {
        "min_opset": 21 if act_dtype not in ("uint8", "int8") or weight_dtype not in ("uint8", "int8") else 13,
        "activations": [
            {"tensor": "x", "scale": [x_scale], "zero_point": [x_zp], "dtype": act_dtype},
            {"tensor": "y", "scale": [y_scale], "zero_point": [y_zp], "dtype": act_dtype},
        ],
        "weights": [{"initializer": "w", "scale": w_scales, "zero_point": [0] * 3, "dtype": weight_dtype, "axis": 1}],
        "biases": [{"initializer": "b", "scale": b_scales, "axis": 0}],
    }
    return x, plan, fake_quant(y_float, y_scale, y_zp, act_dtype)


def test_graph_output_keeps_its_name(tmp_path: Path):
    model = matmul_model()
    source = tmp_path / "matmul.onnx"
    onnx.save(model, str(source))
    x, plan, expected = matmul_case(model, source, tmp_path)
    out = tmp_path / "matmul_qdq.onnx"
    _core.write_qdq_model(source, out, plan)
    quantized = check(out)

    assert [o.name for o in quantized.graph.output] == ["y"]
    dq_y = node_by_output(quantized, "y")
    assert dq_y.op_type == "DequantizeLinear" and dq_y.input[0] == "y_quantized"
    assert list(node_by_output(quantized, "y_float").input) == ["a"]  # the producer's output was renamed
    assert node_by_output(quantized, "y_float").op_type == "Double"
    assert quantized.functions[0].SerializeToString() == model.functions[0].SerializeToString()
    assert {o.domain: o.version for o in quantized.opset_import} == {"": 13, "local": 1}

    (y,) = run(out, {"x": x})
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("act_dtype", "weight_dtype"), [("uint16", "int4"), ("int16", "uint4"), ("int8", "int4")])
def test_wide_and_narrow_types_raise_opset_21(tmp_path: Path, act_dtype: str, weight_dtype: str):
    model = matmul_model()
    source = tmp_path / "matmul.onnx"
    onnx.save(model, str(source))
    x, plan, expected = matmul_case(model, source, tmp_path, act_dtype, weight_dtype)
    plan["min_opset"] = 13  # the writer raises it as far as the types need
    out = tmp_path / "matmul_qdq.onnx"
    _core.write_qdq_model(source, out, plan)
    quantized = check(out)
    assert default_opset(quantized) == 21 and quantized.ir_version == 10
    assert default_opset(quantized.functions[0]) == 21  # functions must import the model's version

    inits = initializers(quantized)
    w = numpy_helper.to_array(initializers(model)["w"])
    entry = plan["weights"][0]
    q = inits["w_quantized"]
    assert q.data_type == {"int4": TensorProto.INT4, "uint4": TensorProto.UINT4}[weight_dtype]
    np.testing.assert_array_equal(int_array(q), quantize(w, entry["scale"], [0] * 3, weight_dtype, 1))
    assert inits["x_zero_point"].data_type == getattr(TensorProto, act_dtype.upper())

    (y,) = run(out, {"x": x})
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


def test_opset_is_never_lowered(tmp_path: Path):
    model = matmul_model(opset=18)
    source = tmp_path / "matmul.onnx"
    onnx.save(model, str(source))
    _, plan, _ = matmul_case(model, source, tmp_path)
    out = tmp_path / "out.onnx"
    _core.write_qdq_model(source, out, plan)
    quantized = check(out)
    assert default_opset(quantized) == 18 and quantized.ir_version == 8


# --- external data -------------------------------------------------------------------------------


def test_external_data_is_embedded(tmp_path: Path):
    model = matmul_model()
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    source = source_dir / "model.onnx"
    external = onnx.ModelProto()
    external.CopyFrom(model)  # saving with external data moves the copy's tensors out
    onnx.save(
        external,
        str(source),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert onnx.load(str(source), load_external_data=False).graph.initializer[0].data_location == TensorProto.EXTERNAL
    x, plan, expected = matmul_case(model, source, tmp_path)
    plan["biases"] = []  # b stays float: its external data must be embedded unchanged
    plan["activations"] = plan["activations"][:1]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "model.onnx"
    _core.write_qdq_model(source, out, plan)
    assert_no_temporaries(out_dir, {"model.onnx"})

    quantized = check(out)
    inits = initializers(quantized)
    assert all(t.data_location == TensorProto.DEFAULT and not t.external_data for t in inits.values())
    np.testing.assert_array_equal(numpy_helper.to_array(inits["b"]), numpy_helper.to_array(initializers(model)["b"]))

    w = numpy_helper.to_array(initializers(model)["w"])
    entry = plan["weights"][0]
    np.testing.assert_array_equal(int_array(inits["w_quantized"]), quantize(w, entry["scale"], [0] * 3, "int8", 1))
    (y,) = run(out, {"x": x})
    x_entry = plan["activations"][0]
    x_dq = fake_quant(x, x_entry["scale"], x_entry["zero_point"], "uint8")
    (reference,) = run(
        with_values(model, {"w": fake_quant(w, entry["scale"], [0] * 3, "int8", 1)}, tmp_path / "reference.onnx"),
        {"x": x_dq},
    )
    np.testing.assert_allclose(y, reference, rtol=0, atol=1e-5)


# --- If with a branch capturing the quantized tensor --------------------------------------------


def if_model() -> onnx.ModelProto:
    then_graph = helper.make_graph(
        [helper.make_node("Add", ["r", "one"], ["t"], name="then_add")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["r"], ["e"], name="else_neg")],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 3])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("If", ["cond"], ["z"], name="if", then_branch=then_graph, else_branch=else_graph),
    ]
    graph = helper.make_graph(
        nodes,
        "branches",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_if_branch_reads_the_dequantized_capture(tmp_path: Path):
    source = tmp_path / "if.onnx"
    onnx.save(if_model(), str(source))
    x = np.random.default_rng(4).uniform(-1, 3, (2, 3)).astype(np.float32)
    scale, zp = asymmetric(np.maximum(x, 0))
    out = tmp_path / "if_qdq.onnx"
    plan = {"min_opset": 13, "activations": [{"tensor": "r", "scale": [scale], "zero_point": [zp], "dtype": "uint8"}]}
    assert _core.write_qdq_model(source, out, plan)["quantized_activations"] == 1
    model = check(out)
    if_node = node_by_output(model, "z")
    branches = {a.name: a.g for a in if_node.attribute}
    assert list(branches["then_branch"].node[0].input) == ["r_dequantized", "one"]
    assert list(branches["else_branch"].node[0].input) == ["r_dequantized"]

    r_dq = fake_quant(np.maximum(x, 0), scale, zp, "uint8")
    for cond, expected in ((True, r_dq + 1), (False, -r_dq)):
        (z,) = run(out, {"x": x, "cond": np.array(cond)})
        np.testing.assert_allclose(z, expected, rtol=0, atol=1e-5)


def test_subgraph_names_that_shadow_are_left_alone(tmp_path: Path):
    # The Loop body declares its own input "r", which hides the outer r inside the body.
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Relu", ["r"], ["s"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [2]),
        ],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Loop", ["", "cond", "r"], ["out"], name="loop", body=body),
    ]
    graph = helper.make_graph(
        nodes,
        "loop",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
    )
    source = tmp_path / "loop.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    out = tmp_path / "loop_qdq.onnx"
    plan = {"activations": [{"tensor": "r", "scale": [0.1], "zero_point": [0], "dtype": "uint8"}]}
    _core.write_qdq_model(source, out, plan)
    model = onnx.load(str(out))
    loop = node_by_output(model, "out")
    assert list(loop.input) == ["", "cond", "r_dequantized"]
    assert list(loop.attribute[0].g.node[1].input) == ["r"]


# --- errors --------------------------------------------------------------------------------------


def plan_with(conv, section: str, index: int, **changes):
    plan = conv["plan"]
    plan[section][index].update(changes)
    return plan


@pytest.mark.parametrize(
    ("section", "index", "changes", "message"),
    [
        ("activations", 0, {"tensor": "missing_tensor"}, "activation tensor 'missing_tensor' is not produced"),
        ("activations", 1, {"scale": [0.0]}, "activation 'r': scale 0 is not a finite float32 > 0"),
        ("activations", 1, {"scale": [-0.5]}, "activation 'r': scale -0.5"),
        ("activations", 1, {"scale": [float("nan")]}, "activation 'r': scale nan"),
        ("activations", 1, {"scale": [float("inf")]}, "activation 'r': scale inf"),
        ("activations", 1, {"scale": [0.1, 0.2]}, "activation 'r': activations are quantized per tensor"),
        ("activations", 1, {"zero_point": [256]}, "activation 'r': zero point 256 is outside the range of uint8"),
        ("activations", 1, {"dtype": "uint7"}, "activation 'r': unknown dtype 'uint7'"),
        ("weights", 0, {"initializer": "missing_weight"}, "weight initializer 'missing_weight' not found"),
        ("weights", 0, {"initializer": "shape"}, "weight initializer 'shape' has data type INT64"),
        ("weights", 0, {"zero_point": [0, 0, 200, 0]}, "weight 'W': zero point 200 is outside the range of int8"),
        ("weights", 0, {"scale": [0.1] * 3}, "weight 'W': 3 scales given, expected 4"),
        ("weights", 0, {"zero_point": [0] * 3}, "weight 'W': 3 zero points given for 4 scales"),
        ("weights", 0, {"axis": 4}, "weight 'W': axis 4 is out of range"),
        (
            "weights",
            0,
            {"values": np.zeros((4, 3, 3), np.float32)},
            "weight 'W': values have shape [4, 3, 3] but the initializer has dims [4, 3, 3, 3]",
        ),
        ("weights", 1, {"values": np.full((5, 144), np.nan, np.float32)}, "weight 'W2': element 0 is NaN"),
        ("biases", 0, {"scale": [1e-3, 0.0, 1e-3, 1e-3]}, "bias 'B': scale 0 is not"),
        ("biases", 1, {"initializer": "B"}, "initializer 'B' appears more than once"),
    ],
)
def test_plan_errors_name_the_entry_and_write_nothing(conv, tmp_path: Path, section, index, changes, message):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _core.write_qdq_model(conv["source"], out_dir / "model.onnx", plan_with(conv, section, index, **changes))
    assert_no_temporaries(out_dir, set())


def test_plan_shape_errors(conv, tmp_path: Path):
    out = tmp_path / "out.onnx"
    with pytest.raises(ValueError, match="unknown key 'zero_points'"):
        _core.write_qdq_model(
            conv["source"],
            out,
            {"activations": [{"tensor": "x", "scale": [0.1], "zero_points": [0], "dtype": "uint8"}]},
        )
    with pytest.raises(ValueError, match=r"activation 'x' lacks 'dtype'"):
        _core.write_qdq_model(
            conv["source"], out, {"activations": [{"tensor": "x", "scale": [0.1], "zero_point": [0]}]}
        )
    with pytest.raises(ValueError, match=r"activation 'x': zero_point\[0\] must be an integer"):
        _core.write_qdq_model(
            conv["source"],
            out,
            {"activations": [{"tensor": "x", "scale": [0.1], "zero_point": [1.5], "dtype": "uint8"}]},
        )
    with pytest.raises(ValueError, match="activation 'W' is also quantized as a weight or bias"):
        _core.write_qdq_model(
            conv["source"],
            out,
            {
                "activations": [{"tensor": "W", "scale": [0.1], "zero_point": [0], "dtype": "uint8"}],
                "weights": [{"initializer": "W", "scale": [0.1], "zero_point": [0], "dtype": "int8"}],
            },
        )
    assert not out.exists()
    with pytest.raises(FileNotFoundError):
        _core.write_qdq_model(tmp_path / "missing.onnx", out, {})
    with pytest.raises(FileNotFoundError):
        _core.write_qdq_model(conv["source"], tmp_path / "missing" / "out.onnx", {})


def test_in_place_and_empty_plan(conv, tmp_path: Path):
    source = conv["source"]
    stats = _core.write_qdq_model(source, source, {"min_opset": 0, "activations": [], "weights": [], "biases": []})
    assert stats["quantized_activations"] == stats["quantized_weights"] == stats["quantized_biases"] == 0
    model = check(source)
    assert default_opset(model) == 11  # nothing to quantize: the opset stays
    assert {p.key: p.value for p in model.metadata_props}["onnx2fx.quantized"] == "qdq"
    _core.write_qdq_model(source, source, {})  # the metadata entry is replaced, not repeated
    assert [p.key for p in onnx.load(str(source)).metadata_props].count("onnx2fx.quantized") == 1
    assert_no_temporaries(tmp_path, {"conv.onnx", "reference.onnx"})


# --- the typed plan --------------------------------------------------------------------------------


def typed_plan(plan: dict) -> _core.QdqPlan:
    """The dict plan of the fixtures built from the plan's classes."""
    return _core.QdqPlan(
        activations=[_core.QdqActivation(**entry) for entry in plan.get("activations", [])],
        weights=[_core.QdqWeight(**entry) for entry in plan.get("weights", [])],
        biases=[_core.QdqBias(**entry) for entry in plan.get("biases", [])],
        floats=[_core.QdqFloat(**entry) for entry in plan.get("floats", [])],
        min_opset=plan.get("min_opset", 0),
    )


def test_typed_plan_writes_what_the_dict_plan_writes(conv, tmp_path: Path):
    plan = conv["plan"]
    w2 = conv["w"]["W2"] * 2
    plan["weights"][1]["values"] = w2
    typed = typed_plan(plan)
    assert np.shares_memory(typed.weights[1].values, w2)  # a C-order float32 array is kept, not copied
    assert typed.weights[1].values.shape == (5, 144) and not typed.weights[1].values.flags.writeable
    assert [a.dtype for a in typed.activations] == [_core.QuantType.uint8] * 2
    np.testing.assert_array_equal(typed.weights[0].zero_point, np.zeros(4, np.int64))
    _core.write_qdq_model(conv["source"], tmp_path / "typed.onnx", typed)
    _core.write_qdq_model(conv["source"], tmp_path / "dict.onnx", plan)
    assert (tmp_path / "typed.onnx").read_bytes() == (tmp_path / "dict.onnx").read_bytes()
    assert _core.QdqPlan.from_dict(plan).required_opset == typed.required_opset == 13


@pytest.mark.parametrize(
    ("entries", "min_opset", "expected"),
    [
        ({}, 0, 0),  # nothing to insert: the writer leaves the opset alone
        ({}, 17, 17),
        ({"activations": [("x", "uint8")]}, 0, 10),
        ({"activations": [("x", "int8")], "biases": [("B", 0)]}, 0, 13),
        ({"weights": [("W", "int8", None)], "biases": [("B", None)]}, 0, 10),
        ({"weights": [("W", "int8", 0)]}, 0, 13),
        ({"weights": [("W", "uint4", None)]}, 0, 21),
        ({"activations": [("x", _core.QuantType.int16)]}, 18, 21),
        ({"activations": [("x", "uint8")]}, 18, 18),
    ],
)
def test_required_opset_is_the_core_rule(entries, min_opset, expected):
    plan = _core.QdqPlan(
        activations=[_core.QdqActivation(name, [0.1], [0], dtype) for name, dtype in entries.get("activations", [])],
        weights=[_core.QdqWeight(name, [0.1], [0], dtype, axis) for name, dtype, axis in entries.get("weights", [])],
        biases=[_core.QdqBias(name, [0.1], axis) for name, axis in entries.get("biases", [])],
        min_opset=min_opset,
    )
    assert plan.required_opset == expected


def test_typed_plan_entries_convert_when_made():
    activation = _core.QdqActivation("x", np.float32(0.5), [np.int64(3)], "int8")
    assert activation.scale.tolist() == [0.5] and activation.zero_point.tolist() == [3]
    activation.dtype = "uint16"
    assert activation.dtype is _core.QuantType.uint16
    with pytest.raises(ValueError, match=r"activation 'x': zero_point\[0\] must be an integer"):
        activation.zero_point = [1.5]
    with pytest.raises(ValueError, match="weight 'w': unknown dtype 'int32'"):
        _core.QdqWeight("w", [0.1], [0], "int32")
    with pytest.raises(ValueError, match="float initializer 'f': values cannot be converted to a float32 array"):
        _core.QdqFloat("f", ["not a number"])
    plan = _core.QdqPlan(activations=[activation])
    with pytest.raises(AttributeError):
        plan.activations.append(activation)  # a tuple of copies: the plan changes by assignment only
    plan.activations = [*plan.activations, _core.QdqActivation("y", [0.1], [0], "uint8")]
    assert [a.tensor for a in plan.activations] == ["x", "y"]
    with pytest.raises(TypeError, match="QdqPlan.weights holds dict"):
        plan.weights = [{"initializer": "w"}]
