"""Post-training quantization: calibrators, placement, encodings, QDQ export, accuracy, CLI, bad input."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from digits import train_digits, within_one_step
from onnx import TensorProto, helper, numpy_helper
from support import convert_and_save
from typer.testing import CliRunner

from onnx2fx import OnnxToFxConverter
from onnx2fx.cli import app
from onnx2fx.conversion_record import conversion_record
from onnx2fx.errors import QuantizationError
from onnx2fx.quantization import Encoding, QuantConfig, QuantGrid, ptq
from onnx2fx.quantization.calibrators import (
    EntropyCalibrator,
    MinMaxCalibrator,
    MSECalibrator,
    PercentileCalibrator,
    rebin,
    weight_ranges,
)
from onnx2fx.quantization.fake_quant import FakeQuantize, QuantConv2d
from onnx2fx.quantization.ort_cpu import u8s8_saturates
from onnx2fx.quantization.placement import OnnxGraphView, plan_placement
from onnx2fx.quantization.qdq import ort_session
from onnx2fx.validator import load_torch_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("tiny")
    model = convert_and_save(EXAMPLE, root / "converted")
    calib = np.random.default_rng(0).normal(size=(48, 3, 32, 32)).astype(np.float32)
    np.savez(root / "calib.npz", image=calib)
    return SimpleNamespace(root=root, model=model, calib=calib)


@pytest.fixture(scope="module")
def tiny_ptq(tiny: SimpleNamespace) -> SimpleNamespace:
    out = tiny.root / "quantized"
    result = ptq(tiny.model, tiny.calib, output_dir=out, samples=48, progress=False)
    return SimpleNamespace(result=result, out=out)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A small CNN trained here on scikit-learn's 8x8 digits (fixed seeds), exported and converted."""
    return train_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def digits_ptq(digits: SimpleNamespace) -> SimpleNamespace:
    out = digits.root / "quantized"
    calib = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(digits.x_train)),
                                        batch_size=25)
    result = ptq(digits.model, calib, output_dir=out, samples=200, progress=False)
    return SimpleNamespace(result=result, out=out)


# ---------------------------------------------------------------------------------- accuracy on real data
def test_digits_w8a8_accuracy_and_qdq(digits: SimpleNamespace, digits_ptq: SimpleNamespace) -> None:
    result = digits_ptq.result
    assert result.report["calibration"]["samples"] == 200
    with torch.no_grad():
        sim_logits = result.sim_model(torch.from_numpy(digits.x_test)).numpy()
    sim_acc = float((sim_logits.argmax(1) == digits.y_test).mean())
    print(f"digits: float {digits.float_acc:.4f}, PTQ sim {sim_acc:.4f}, output SQNR {result.output_sqnr_db} dB")
    assert digits.float_acc >= 0.95
    assert (digits.float_acc - sim_acc) * 100 <= 0.5
    assert result.output_sqnr_db is not None and result.output_sqnr_db > 30
    onnx_path = digits_ptq.out / "model_ptq.onnx"
    reference = ort_session(onnx_path, optimized=False).run(None, {"image": digits.x_test})[0]
    optimized = ort_session(onnx_path, optimized=True).run(None, {"image": digits.x_test})[0]
    ort_acc = float((reference.argmax(1) == digits.y_test).mean())
    fused_acc = float((optimized.argmax(1) == digits.y_test).mean())
    print(f"digits: QDQ in onnxruntime {ort_acc:.4f} (fused integer kernels {fused_acc:.4f})")
    assert abs(ort_acc - sim_acc) * 100 <= 0.2
    step = float(result.activation_encodings["logits"].scale[0])
    assert within_one_step(reference, sim_logits, step) >= 0.999


def test_qdq_matches_simulation_within_one_step(tiny: SimpleNamespace, tiny_ptq: SimpleNamespace) -> None:
    onnx_path = tiny_ptq.out / "model_ptq.onnx"
    onnx.checker.check_model(str(onnx_path))
    x = np.random.default_rng(1).normal(size=(32, 3, 32, 32)).astype(np.float32)
    ort_out = ort_session(onnx_path, optimized=False).run(None, {"image": x})[0]
    sim = load_torch_model(tiny_ptq.out / "model_ptq.pt")
    with torch.no_grad():
        sim_out = sim(torch.from_numpy(x)).numpy()
    step = float(tiny_ptq.result.activation_encodings["logits"].scale[0])
    assert within_one_step(ort_out, sim_out, step) >= 0.999
    assert tiny_ptq.result.report["qdq"]["within_one_step"] >= 0.999
    # the QDQ graph keeps the original names and quantizes what the plan says
    model = onnx.load(str(onnx_path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == len(tiny_ptq.result.plan.activations)
    assert [o.name for o in model.graph.output] == ["logits"]


# ---------------------------------------------------------------------------------- outputs and report
def test_fake_quant_rounds_like_onnxruntime(tmp_path: Path) -> None:
    """Values exactly at rounding ties (and one float step either side), NaN and infinities: the fake-quant
    module gives onnxruntime's QuantizeLinear -> DequantizeLinear to the bit, per tensor and per channel."""
    scale = np.float32(0.0123)
    ties = ((np.arange(-140, 140, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.float32)
    row = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                          np.array([np.nan, np.inf, -np.inf, 0.0], np.float32)])
    x = np.stack([row, row * np.float32(0.37)]).astype(np.float32)
    cases = [(Encoding(np.array([scale], np.float32), np.array([128]), QuantGrid(8, False), False), None),
             (Encoding(np.array([scale, scale * np.float32(0.37)], np.float32), np.array([0, 0]), QuantGrid(8, True),
                       True, 0), 0)]
    for encoding, axis in cases:
        zero_point = encoding.zero_point.astype(np.int8 if encoding.grid.signed else np.uint8)
        nodes = [helper.make_node(op, [i, "s", "z"], [o], **({} if axis is None else {"axis": axis}))
                 for op, i, o in (("QuantizeLinear", "x", "q"), ("DequantizeLinear", "q", "y"))]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
                                  [numpy_helper.from_array(encoding.scale if axis is not None else encoding.scale[0],
                                                           "s"),
                                   numpy_helper.from_array(zero_point if axis is not None else zero_point[0], "z")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        path = tmp_path / f"qdq_{axis}.onnx"
        onnx.save(model, str(path))
        expected = ort_session(path, optimized=False).run(None, {"x": x})[0]
        fq = FakeQuantize("x", "weight" if axis is not None else "activation",
                          QuantConfig().weights if axis is not None else QuantConfig().activations,
                          axis=axis, onnx_axis=axis, channels=encoding.channels)
        fq.set_encoding(encoding)
        with torch.no_grad():
            actual = fq(torch.from_numpy(x)).numpy()
        assert np.array_equal(actual, expected), int((actual != expected).sum())
        assert np.array_equal(encoding.quantize_dequantize(x[:, :-4]), expected[:, :-4])


class _AttentionBlock(torch.nn.Module):
    """One pre-norm ViT block on 8x8 images (patch 4, CLS token, 2 heads, GELU MLP), with its own
    random weights and biases: LayerNorm, attention MatMuls between activations, Softmax, Erf."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.patch = torch.nn.Conv2d(3, dim, 4, stride=4)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = torch.nn.Parameter(torch.randn(1, 5, dim) * 0.02)
        self.norm1, self.norm2, self.norm = (torch.nn.LayerNorm(dim) for _ in range(3))
        self.q, self.k, self.v, self.o = (torch.nn.Linear(dim, dim) for _ in range(4))
        self.fc1, self.fc2 = torch.nn.Linear(dim, 4 * dim), torch.nn.Linear(4 * dim, dim)
        self.head = torch.nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

        h = self.norm1(x)
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        attention = torch.softmax(q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5, -1)
        x = x + self.o((attention @ v).transpose(1, 2).reshape(b, n, d))
        x = x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))
        return self.head(self.norm(x)[:, 0])


@pytest.mark.parametrize("opset", [13, 17])  # LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div, and as LayerNormalization
def test_attention_block_qdq_matches_simulation(tmp_path: Path, opset: int) -> None:
    """The simulation quantizes what the QDQ model quantizes, with the same arithmetic: the int32
    Conv/Gemm biases included, rounding ties and the NaN of a 0/0 (the CLS row's variance rounds to
    zero in the decomposed LayerNorm) included."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_AttentionBlock().eval(), (torch.zeros(1, 3, 8, 8),), str(tmp_path / "block.onnx"),
                          dynamo=False, opset_version=opset, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    ops = {n.op_type for n in onnx.load(str(tmp_path / "block.onnx")).graph.node}
    assert {"Softmax", "Erf", "Conv", "Gemm"} <= ops and ("LayerNormalization" in ops) == (opset >= 17)
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(64, 3, 8, 8)).astype(np.float32)
    held_out = rng.normal(size=(256, 3, 8, 8)).astype(np.float32)
    result = ptq(convert_and_save(tmp_path / "block.onnx", tmp_path / "converted"), calib, output_dir=tmp_path / "q",
                 samples=64, eval_data=held_out, eval_samples=256, progress=False)
    assert {b.initializer for b in result.plan.biases} == {"patch.bias", "head.bias"}
    assert result.report["qdq"]["within_one_step"] >= 0.999
    ort_out = ort_session(tmp_path / "q" / "model_ptq.onnx", optimized=False).run(None, {"x": held_out})[0]
    with torch.no_grad():
        sim_out = result.sim_model(torch.from_numpy(held_out)).numpy()
    assert within_one_step(ort_out, sim_out, float(result.activation_encodings["y"].scale[0])) >= 0.999


def test_softmax_keeps_its_observed_range_under_clipping_schemes(tmp_path: Path) -> None:
    """Attention probabilities are bounded and carry their information in the rare large values:
    under entropy (KL) calibration the Softmax output keeps its full observed range (config
    ``minmax_ops``), while other tensors are still clipped; ``minmax_ops: []`` lets KL clip it too."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_AttentionBlock().eval(), (torch.zeros(1, 3, 8, 8),), str(tmp_path / "block.onnx"),
                          dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    softmax = next(n.output[0] for n in onnx.load(str(tmp_path / "block.onnx")).graph.node if n.op_type == "Softmax")
    calib = np.random.default_rng(0).normal(size=(64, 3, 8, 8)).astype(np.float32)
    model = convert_and_save(tmp_path / "block.onnx", tmp_path / "converted")
    minmax = ptq(model, calib, samples=64, scheme="minmax", progress=False).activation_encodings
    full = minmax[softmax]
    kept = ptq(model, calib, samples=64, scheme="entropy", progress=False)
    clipped = ptq(model, calib, samples=64, config=QuantConfig(scheme="entropy", minmax_ops=()), progress=False)
    assert kept.report["calibration"]["minmax_tensors"] == 1 and clipped.report["calibration"]["minmax_tensors"] == 0
    assert kept.activation_encodings[softmax].same_as(full)
    assert any(not e.same_as(minmax[t]) for t, e in kept.activation_encodings.items() if t != softmax)
    assert float(clipped.activation_encodings[softmax].max[0]) < 0.9 * float(full.max[0])
    assert QuantConfig.from_dict({"minmax_ops": []}).minmax_ops == ()


def test_output_folder_report_and_reload(tiny: SimpleNamespace, tiny_ptq: SimpleNamespace) -> None:
    import jsonschema

    from onnx2fx.reports import schema

    out = tiny_ptq.out
    expected = {"model_ptq.pt", "encodings.json", "report.json", "report.md", "report.html", "model_ptq.onnx"}
    assert {p.name for p in out.iterdir()} == expected
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, schema())
    ptq_report = report["quantization"]["ptq"]
    assert ptq_report["status"] == "ok" and ptq_report["calibration"]["scheme"] == "minmax"
    assert ptq_report["calibration"]["samples"] == 48 and ptq_report["calibration"]["seconds"] >= 0
    assert 0 <= ptq_report["calibration"]["range_search_seconds"] < report["quantization"]["ptq"]["seconds"]
    assert ptq_report["per_layer"] and all("sqnr_db" in row for row in ptq_report["per_layer"])
    assert ptq_report["outputs"][0]["name"] == "logits" and ptq_report["sqnr_db"] > 20
    markdown = (out / "report.md").read_text()
    assert "Post-training quantization" in markdown
    # the fused-kernel figure records whether this CPU's onnxruntime clips u8 x s8 sums; the text says so there
    assert ptq_report["qdq"]["optimized"]["u8s8_saturates"] is u8s8_saturates()
    assert ("clipped to 16 bits" in markdown) is u8s8_saturates()

    sim = load_torch_model(out / "model_ptq.pt")
    assert isinstance(sim.stem_0, QuantConv2d) and isinstance(sim.stem_0.weight_quantizer, FakeQuantize)
    assert conversion_record(sim).parameters["stem_0.weight"].initializer == "onnx::Conv_35"
    quantized = {n.meta.get("quantizes") for n in sim.graph.nodes if n.op == "call_module"}
    assert {"image", "/Relu_output_0", "logits"} <= quantized
    x = torch.from_numpy(tiny.calib[:4])
    with torch.no_grad():
        assert torch.equal(sim(x), tiny_ptq.result.sim_model(x))
    # trainable: gradients reach the float weights through the fake-quant (straight-through)
    sim.train()
    sim(x).square().mean().backward()
    assert sim.stem_0.weight.grad is not None and sim.head.weight.grad is not None


def test_placement_fuses_shares_and_quantizes_inputs(tiny_ptq: SimpleNamespace) -> None:
    report = tiny_ptq.result.report
    assert set(report["fused"]) == {"/stem/stem.0/Conv_output_0", "/block/block.0/Conv_output_0", "/Add_output_0"}
    assert report["shared"] == {"/pool/MaxPool_output_0": "/Relu_output_0"}
    encodings = tiny_ptq.result.activation_encodings
    assert encodings["/pool/MaxPool_output_0"].same_as(encodings["/Relu_output_0"])
    planned = {a.tensor for a in tiny_ptq.result.plan.activations}
    assert "image" in planned and "/pool/MaxPool_output_0" not in planned and "/Add_output_0" not in planned
    biases = {b.initializer: b for b in tiny_ptq.result.plan.biases}
    weights = tiny_ptq.result.param_encodings
    image_scale = np.float32(encodings["image"].scale[0])
    expected = image_scale * weights["onnx::Conv_35"].scale
    assert np.allclose(biases["onnx::Conv_36"].scale, expected, rtol=1e-6)


def test_conv_batchnorm_relu_group_when_batchnorm_stays() -> None:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    bn = [numpy_helper.from_array(np.ones(4, np.float32) * v, n) for n, v in
          (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], name="bn"),
         helper.make_node("Relu", ["n"], ["r"], name="relu"),
         helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["n2"], name="bn2"),
         helper.make_node("Relu", ["n2"], ["y"], name="relu2")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, *bn])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    from onnx2fx import _core

    view = OnnxGraphView.from_core(_core.load_model_from_bytes(model.SerializeToString()))
    placement = plan_placement(view, QuantConfig())
    assert placement.fused == {"c": "bn", "n": "relu"}
    # a BatchNormalization that is not inside a convolution's group is requantized before its Relu
    assert [a.tensor for a in placement.activations] == ["x", "r", "n2", "y"]
    assert [w.initializer for w in placement.weights] == ["w"]
    unfused = plan_placement(view, QuantConfig.from_dict({"fuse": False}))
    assert unfused.fused == {} and len(unfused.activations) == 6


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """MatMul with a constant (K, N) weight, Relu, and Gemm with transB=0 (nn.Linear weight = B.T)."""
    root = tmp_path_factory.mktemp("mlp")
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(8, 6)).astype(np.float32) * np.linspace(0.1, 2.0, 6, dtype=np.float32)
    b = rng.normal(size=(6, 4)).astype(np.float32) * np.linspace(0.2, 3.0, 4, dtype=np.float32)
    c = rng.normal(size=(4,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Gemm", ["r", "b", "c"], ["y"], name="gemm", transB=0)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(c, "c")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(root / "mlp.onnx"))
    return SimpleNamespace(root=root, model=convert_and_save(root / "mlp.onnx", root / "converted"), w1=w1, b=b,
                           x=rng.normal(size=(64, 8)).astype(np.float32))


@pytest.mark.parametrize("bits", [8, 16])
def test_matmul_and_transposed_gemm_weights_use_the_onnx_channel_axis(mlp: SimpleNamespace, tmp_path: Path,
                                                                      bits: int) -> None:
    gm = load_torch_model(mlp.model)
    assert next(v for v in conversion_record(gm).parameters.values() if v.initializer == "b").transform == "transpose"
    result = ptq(mlp.model, random_calibration=True, samples=64, output_dir=tmp_path / "q", progress=False,
                 activation_bits=bits)
    params = result.param_encodings
    assert params["w1"].axis == 1 and np.allclose(params["w1"].scale, np.abs(mlp.w1).max(0) / 127, rtol=1e-6)
    assert params["b"].axis == 1 and np.allclose(params["b"].scale, np.abs(mlp.b).max(0) / 127, rtol=1e-6)
    assert params["c"].grid.bits == 32 and params["c"].axis == 0 and params["c"].channels == 4
    # the fused MatMul+Relu output has no quantizer; the Gemm output and the input do
    assert set(result.activation_encodings) == {"x", "r", "y"}
    assert result.activation_encodings["y"].grid.dtype == f"uint{bits}"
    assert result.plan.required_opset == (13 if bits == 8 else 21)
    ort_out = ort_session(tmp_path / "q" / "model_ptq.onnx", optimized=False).run(None, {"x": mlp.x})[0]
    with torch.no_grad():
        sim_out = result.sim_model(torch.from_numpy(mlp.x)).numpy()
    assert within_one_step(ort_out, sim_out, float(result.activation_encodings["y"].scale[0])) >= 0.999


def test_config_file_bits_and_float_nodes(tiny: SimpleNamespace, tmp_path: Path) -> None:
    config = tmp_path / "quant.yaml"
    config.write_text("activations: {bits: 16}\nweights: {bits: 8, per_channel: false}\nscheme: percentile\n"
                      "float_nodes: [/head/Gemm]\nop_types: {Relu: {activations: {bits: 8}}}\n")
    result = ptq(tiny.model, tiny.calib, config=config, samples=16, progress=False)
    encodings = result.activation_encodings
    assert encodings["image"].grid.dtype == "uint16" and encodings["/Relu_output_0"].grid.dtype == "uint8"
    assert "logits" not in encodings and "head.weight" not in result.param_encodings
    assert all(e.axis is None for e in result.param_encodings.values())
    assert result.plan.required_opset == 21 and result.report["calibration"]["scheme"] == "percentile"
    # 16-bit QDQ needs opset 21; this opset-17 model has a ReduceMean whose axes moved to an input
    with pytest.raises(QuantizationError, match="re-export it at a newer opset"):
        result.save(tmp_path / "q")
    _no_output(tmp_path)


def test_concat_shares_only_when_its_inputs_agree_and_fixed_batch_models(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid"),
         helper.make_node("Concat", ["r", "r"], ["same"], name="concat_same", axis=1),
         helper.make_node("Concat", ["r", "s"], ["mixed"], name="concat_mixed", axis=1),
         helper.make_node("Add", ["same", "mixed"], ["y"], name="add")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "cat.onnx"))
    model = convert_and_save(tmp_path / "cat.onnx", tmp_path / "converted")
    data = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    result = ptq(model, data, samples=7, progress=False)
    assert result.report["shared"]["same"] == "r" and "mixed" not in result.report["shared"]
    assert {a.tensor for a in result.plan.activations} == {"x", "r", "s", "mixed", "y"}
    # the graph fixes the batch size to 2: calibration runs on full batches of 2 only
    assert result.report["calibration"]["samples"] == 6 and result.report["calibration"]["batches"] == 3


# ---------------------------------------------------------------------------------- encodings
def test_encodings_formats(tiny_ptq: SimpleNamespace, tiny: SimpleNamespace) -> None:
    result = tiny_ptq.result
    source = onnx.load(str(EXAMPLE))
    names = {i.name for i in source.graph.input} | {i.name for i in source.graph.initializer} | \
        {o for n in source.graph.node for o in n.output}

    v1 = json.loads((tiny_ptq.out / "encodings.json").read_text())
    assert v1["version"] == "1.0.0" and set(v1) >= {"activation_encodings", "param_encodings", "excluded_layers",
                                                     "quantizer_args"}
    for entry in v1["activation_encodings"] + v1["param_encodings"]:
        assert set(entry) == {"name", "dtype", "enc_type", "is_sym", "bw", "scale", "offset"}
        assert entry["name"] in names and entry["dtype"] == "INT"
        assert isinstance(entry["is_sym"], bool) and isinstance(entry["bw"], int)
        assert entry["enc_type"] in ("PER_TENSOR", "PER_CHANNEL")
        assert all(isinstance(s, float) for s in entry["scale"]) and all(isinstance(o, int) for o in entry["offset"])
        assert len(entry["scale"]) == len(entry["offset"]) == (1 if entry["enc_type"] == "PER_TENSOR" else
                                                               len(entry["scale"]))
    params = {e["name"]: e for e in v1["param_encodings"]}
    conv = params["onnx::Conv_35"]
    assert conv["enc_type"] == "PER_CHANNEL" and len(conv["scale"]) == 16 and conv["is_sym"] and conv["bw"] == 8
    assert set(conv["offset"]) == {-128}
    assert params["onnx::Conv_36"]["bw"] == 32 and set(params["onnx::Conv_36"]["offset"]) == {-(2 ** 31)}
    acts = {e["name"]: e for e in v1["activation_encodings"]}
    assert acts["image"]["offset"] == [-int(result.activation_encodings["image"].zero_point[0])]

    v061 = result.encodings("0.6.1")
    assert v061["version"] == "0.6.1" and isinstance(v061["activation_encodings"], dict)
    for section in ("activation_encodings", "param_encodings"):
        for name, entries in v061[section].items():
            assert name in names and isinstance(entries, list)
            for e in entries:
                assert set(e) == {"bitwidth", "dtype", "is_symmetric", "max", "min", "offset", "scale"}
                assert e["dtype"] == "int" and e["is_symmetric"] in ("True", "False")
                assert isinstance(e["offset"], int) and isinstance(e["bitwidth"], int)
                assert e["min"] == pytest.approx(e["offset"] * e["scale"])
                assert e["max"] == pytest.approx(e["min"] + (2 ** e["bitwidth"] - 1) * e["scale"])
    assert len(v061["param_encodings"]["onnx::Conv_35"]) == 16
    assert set(v061["quantizer_args"]) == {"activation_bitwidth", "dtype", "is_symmetric", "param_bitwidth",
                                           "per_channel_quantization", "quant_scheme"}

    v2 = result.encodings("2.0.0")
    assert set(v2) == {"version", "encodings"} and v2["version"] == "2.0.0"
    by_name = {e["name"]: e for e in v2["encodings"]}
    assert set(by_name) <= names
    assert by_name["onnx::Conv_35"]["output_dtype"] == "int8" and by_name["onnx::Conv_35"]["axis"] == 0
    assert len(by_name["onnx::Conv_35"]["y_scale"]) == 16 and "y_zero_point" not in by_name["onnx::Conv_35"]
    image = by_name["image"]
    assert image["output_dtype"] == "uint8" and isinstance(image["y_scale"], float) and "axis" not in image
    assert image["y_zero_point"] == int(result.activation_encodings["image"].zero_point[0])
    assert by_name["onnx::Conv_36"]["output_dtype"] == "int32"


def test_encoding_version_option_and_names_exist(tiny: SimpleNamespace, tmp_path: Path) -> None:
    result = ptq(tiny.model, tiny.calib, encoding_version="2.0.0", samples=16, output_dir=tmp_path / "q",
                 progress=False)
    document = json.loads((tmp_path / "q" / "encodings.json").read_text())
    assert document["version"] == "2.0.0"
    from onnx2fx.quantization.ptq import encodings_names_exist

    assert encodings_names_exist(document, OnnxGraphView.load(EXAMPLE)) == []
    assert result.encodings("1.0.0")["version"] == "1.0.0"


# ---------------------------------------------------------------------------------- calibrators
def _feed(calibrator, values: np.ndarray, chunks: int = 10):
    for part in np.array_split(values, chunks):
        calibrator.observe(torch.from_numpy(part))
    return calibrator


def test_minmax_is_exact() -> None:
    values = np.random.default_rng(0).normal(size=10_000).astype(np.float32)
    calibrator = _feed(MinMaxCalibrator(), values)
    assert calibrator.compute_range(QuantGrid(8, False), False) == (float(values.min()), float(values.max()))
    enc = calibrator.encoding(QuantGrid(8, False), False)
    assert enc.min[0] <= values.min() + enc.scale[0] and enc.max[0] >= values.max() - enc.scale[0]
    assert enc.zero_point[0] == round(-float(values.min()) / float(enc.scale[0]))


def test_percentile_of_a_known_distribution_with_a_growing_histogram() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=400_000).astype(np.float32)
    values = np.concatenate([values[:1000] * 0.1, values[1000:]])  # the first batch has a narrow range
    calibrator = _feed(PercentileCalibrator(99.9, bins=2048), values, chunks=40)
    assert calibrator.hist.size == 2048 and calibrator.hist.sum() == pytest.approx(values.size)
    # p keeps the central p % (onnxruntime's meaning): an asymmetric grid cuts 0.05 % per tail...
    lo, hi = calibrator.compute_range(QuantGrid(8, False), False)
    assert hi == pytest.approx(np.percentile(values, 99.95), rel=0.02)
    assert lo == pytest.approx(np.percentile(values, 0.05), rel=0.02)
    # ...and a symmetric one cuts 0.1 % of the largest magnitudes.
    lo, hi = calibrator.compute_range(QuantGrid(8, True), True)
    assert hi == pytest.approx(np.percentile(np.abs(values), 99.9), rel=0.02) and lo == -hi


def test_native_histogram_bins_like_torch_histc() -> None:
    """The observers' one-pass kernel gives torch.histc's counts (values on bin edges, outside the range,
    several threads) and the exact zeros; NaN and infinities are counted apart and leave the state alone."""
    from onnx2fx import _core

    rng = np.random.default_rng(0)
    cases = [(rng.normal(size=200_000), 2048, None), (np.maximum(rng.normal(size=70_001), 0), 128, None),
             (rng.integers(-50, 51, size=300_000) * 0.1, 1000, None),
             (rng.laplace(size=5_000) * 1e-3, 7, (-2e-3, 1e-3))]
    for values, bins, limits in cases:
        x = values.astype(np.float32)
        lo, hi = limits or (float(x.min()), float(x.max()))
        for threads in (1, 3):
            counts = np.zeros(bins)
            zeros = _core.add_to_histogram(x, lo, hi, counts, threads)
            assert np.array_equal(counts, torch.histc(torch.from_numpy(x), bins, lo, hi).double().numpy())
            assert zeros == int((x == 0).sum())
    with pytest.raises(ValueError, match="lo < hi"):
        _core.add_to_histogram(np.ones(3, np.float32), 1.0, 1.0, np.zeros(4), 1)
    with pytest.raises(ValueError, match=r"at most 2\^24 bins"):  # refused before a count is touched
        _core.add_to_histogram(np.ones(3, np.float32), 0.0, 1.0, np.empty((1 << 24) + 1), 1)

    clean = rng.normal(size=10_000).astype(np.float32)
    dirty = np.concatenate([clean, np.array([np.nan, np.inf, -np.inf], np.float32)])
    a, b = _feed(PercentileCalibrator(), clean, chunks=1), _feed(PercentileCalibrator(), dirty, chunks=1)
    assert b.non_finite == 3 and a.non_finite == 0 and (a.min, a.max, a.count) == (b.min, b.max, b.count)
    assert np.array_equal(a.hist, b.hist) and (a.lo, a.hi, a.zeros) == (b.lo, b.hi, b.zeros)


def test_mse_range_is_tighter_than_minmax_for_heavy_tails() -> None:
    rng = np.random.default_rng(0)
    values = rng.laplace(size=200_000).astype(np.float32)
    lo, hi = _feed(MSECalibrator(), values).compute_range(QuantGrid(8, True), True)
    # clipping a Laplace(1) tensor to +-9.89 minimises the 8-bit squared error (ACIQ, Banner et al.)
    assert -lo == hi and 8.9 < hi < 10.9 and hi < min(-values.min(), values.max())
    uniform = rng.uniform(-1, 1, size=100_000).astype(np.float32)
    lo, hi = _feed(MSECalibrator(), uniform).compute_range(QuantGrid(8, False), False)
    assert hi > 0.9 and lo < -0.9  # nothing to clip: keep the range


def test_mse_refines_between_coarse_candidates() -> None:
    """The fine search never does worse than the best coarse candidate, and on a Gaussian it finds
    a strictly better range than the coarse grid's 2.5 % steps allow."""
    values = np.random.default_rng(1).normal(size=200_000).astype(np.float32)
    calibrator = _feed(MSECalibrator(), values)
    grid = QuantGrid(8, False)

    def error(lo: float, hi: float) -> float:
        enc = Encoding.from_range(lo, hi, grid, False)
        return float(calibrator.expected_errors(enc.min, enc.max, enc.scale.astype(np.float64))[0])

    coarse = np.linspace(1 / 40, 1, 40)
    best_coarse = min(error(calibrator.min * f, calibrator.max * g) for f in coarse for g in coarse)
    assert error(*calibrator.compute_range(grid, False)) < best_coarse


def test_entropy_threshold_is_finite_and_inside_the_observed_range() -> None:
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.normal(size=100_000), 0).astype(np.float32)  # half exact zeros
    calibrator = _feed(EntropyCalibrator(), relu)
    lo, hi = calibrator.compute_range(QuantGrid(8, False), False)
    assert np.isfinite(hi) and lo == 0.0 and np.percentile(relu, 90) < hi <= relu.max()
    signed = rng.standard_t(3, size=100_000).astype(np.float32)
    lo, hi = _feed(EntropyCalibrator(), signed).compute_range(QuantGrid(8, True), True)
    assert signed.min() <= lo < 0 < hi <= signed.max() and np.isfinite(lo)


def test_rebin_keeps_counts_and_weight_ranges() -> None:
    hist = np.arange(16, dtype=np.float64)
    assert rebin(hist, 0.0, 1.0, -1.0, 2.0, 16).sum() == pytest.approx(hist.sum())
    w = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    lo, hi = weight_ranges(w, 0, QuantGrid(8, True), True)
    assert lo.tolist() == [-2.0, 0.0] and hi.tolist() == [1.0, 0.5]
    mse_lo, mse_hi = weight_ranges(torch.randn(4, 256), 0, QuantGrid(4, True), True, scheme="mse")
    assert (mse_hi > 0).all()


def test_encoding_grid_and_fake_quant_agree() -> None:
    enc = Encoding.from_range(-1.0, 3.0, QuantGrid(8, False), False)
    # zero is exact, so the grid may shift by less than one step against the requested range
    assert enc.zero_point[0] == 64 and enc.scale[0] == np.float32(4.0 / 255)
    assert abs(enc.min[0] + 1.0) < enc.scale[0] and abs(enc.max[0] - 3.0) < enc.scale[0]
    sym = Encoding.from_range([-1.0, -0.5], [2.0, 0.25], QuantGrid(8, True), True, axis=0)
    assert sym.zero_point.tolist() == [0, 0] and np.allclose(sym.scale, [2 / 127, 0.5 / 127])
    assert sym.unsigned_offset.tolist() == [-128, -128]
    x = np.random.default_rng(0).normal(size=(2, 50)).astype(np.float32)
    fq = FakeQuantize("t", "weight", QuantConfig().weights, axis=0, onnx_axis=0, channels=2)
    fq.set_encoding(sym)
    assert np.array_equal(fq(torch.from_numpy(x)).numpy(), sym.quantize_dequantize(x))


# ---------------------------------------------------------------------------------- calibration data
def test_calibration_sources(tiny: SimpleNamespace, tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(5):
        np.save(folder / f"{i:02d}.npy", tiny.calib[i])  # one sample per file, no batch dim
    from_folder = ptq(tiny.model, folder, samples=4, batch_size=3, progress=False)
    assert from_folder.report["calibration"]["samples"] == 4 and from_folder.report["calibration"]["batches"] == 2
    from_npz = ptq(tiny.model, tiny.root / "calib.npz", samples=8, progress=False)
    loader = [(torch.from_numpy(tiny.calib[i:i + 4]), torch.zeros(4)) for i in range(0, 8, 4)]  # (image, label)
    from_loader = ptq(tiny.model, loader, samples=8, progress=False)
    a = from_npz.activation_encodings["/Relu_output_0"]
    assert a.same_as(from_loader.activation_encodings["/Relu_output_0"])
    assert from_loader.report["warnings"] == []
    random = ptq(tiny.model, random_calibration=True, input_shapes={"": [1, 3, 32, 32]}, samples=8, progress=False)
    assert random.report["calibration"]["source"] == "random" and "random" in random.report["warnings"][0]


# ---------------------------------------------------------------------------------- bad input
def _no_output(tmp_path: Path) -> None:
    assert not (tmp_path / "q").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".q.")]


@pytest.mark.parametrize("case", ["missing", "empty-folder", "empty-list", "wrong-shape", "wrong-shape-option",
                                  "bad-config", "unknown-scheme"])
def test_bad_input_is_a_typed_error_without_output(tiny: SimpleNamespace, tmp_path: Path, case: str) -> None:
    (tmp_path / "empty").mkdir()
    config = tmp_path / "bad.json"
    config.write_text('{"weights": {"bitz": 8}}')
    kwargs = {
        "missing": {},
        "empty-folder": {"calibration_data": tmp_path / "empty"},
        "empty-list": {"calibration_data": []},
        "wrong-shape": {"calibration_data": np.zeros((4, 3, 16, 16), np.float32)},
        "wrong-shape-option": {"random_calibration": True, "input_shapes": {"": [1, 3, 224, 224]}},
        "bad-config": {"calibration_data": tiny.calib, "config": config},
        "unknown-scheme": {"calibration_data": tiny.calib, "scheme": "magic"},
    }[case]
    with pytest.raises(QuantizationError) as info:
        ptq(tiny.model, output_dir=tmp_path / "q", progress=False, **kwargs)
    message = str(info.value)
    assert {"missing": "--random-calibration", "empty-folder": "holds no", "empty-list": "empty",
            "wrong-shape": "expects shape", "wrong-shape-option": "fixes it to 32", "bad-config": "bitz",
            "unknown-scheme": "magic"}[case] in message
    _no_output(tmp_path)


def test_images_need_pillow(tiny: SimpleNamespace, tmp_path: Path) -> None:
    if importlib.util.find_spec("PIL") is not None:
        pytest.skip("Pillow is installed")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(QuantizationError, match="Pillow"):
        ptq(tiny.model, tmp_path / "images", output_dir=tmp_path / "q", progress=False)
    _no_output(tmp_path)


def test_model_without_recorded_source_needs_onnx_option(tiny: SimpleNamespace, mlp: SimpleNamespace,
                                                         tmp_path: Path) -> None:
    gm = OnnxToFxConverter(onnx.load(str(EXAMPLE))).convert()  # converted from memory: no source path
    assert conversion_record(gm).source is None
    with pytest.raises(QuantizationError, match="--onnx"):
        ptq(gm, tiny.calib, output_dir=tmp_path / "q", progress=False)
    _no_output(tmp_path)
    with pytest.raises(QuantizationError, match="does not exist"):
        ptq(gm, tiny.calib, onnx_path=tmp_path / "nowhere.onnx", progress=False)
    with pytest.raises(QuantizationError, match="converted from"):
        ptq(gm, tiny.calib, onnx_path=mlp.root / "mlp.onnx", progress=False)
    result = ptq(gm, tiny.calib, onnx_path=EXAMPLE, samples=8, progress=False)
    assert result.source_onnx == EXAMPLE.resolve()
    assert not any(isinstance(m, FakeQuantize) for m in gm.modules())  # the float model is left as it was
    with pytest.raises(QuantizationError, match="does not exist"):
        ptq(tmp_path / "missing.pt", tiny.calib, progress=False)


def test_failed_export_leaves_no_partial_folder(tiny: SimpleNamespace, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ptq_module = importlib.import_module("onnx2fx.quantization.ptq")  # the package's `ptq` is the function

    def fail(*args, **kwargs):
        raise QuantizationError("writer failed")

    monkeypatch.setattr(ptq_module, "write_qdq_model", fail)
    with pytest.raises(QuantizationError, match="writer failed"):
        ptq(tiny.model, tiny.calib, samples=8, output_dir=tmp_path / "q", progress=False)
    _no_output(tmp_path)


# ---------------------------------------------------------------------------------- CLI
def test_cli_ptq_end_to_end(tmp_path: Path, tiny: SimpleNamespace) -> None:
    converted = tmp_path / "output"
    assert runner.invoke(app, ["convert", str(EXAMPLE), "-o", str(converted)]).exit_code == 0
    result = runner.invoke(app, ["ptq", str(converted / "model_full.pt"), "-o", str(tmp_path / "quantized"),
                                 "--shape", "1,3,32,32", "--calib-data", str(tiny.root / "calib.npz"),
                                 "--samples", "32", "--scheme", "mse", "--encoding-version", "0.6.1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "quantized"
    assert {"model_ptq.pt", "encodings.json", "report.json", "report.md"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "encodings.json").read_text())["version"] == "0.6.1"
    report = json.loads((out / "report.json").read_text())["quantization"]["ptq"]
    assert report["calibration"]["scheme"] == "mse" and report["calibration"]["samples"] == 32
    assert "SQNR" in result.output

    bad = runner.invoke(app, ["ptq", str(converted / "model_full.pt"), "-o", str(tmp_path / "q")])
    assert bad.exit_code == 2
    assert bad.output.startswith("error: QuantizationError: no calibration data") and "Traceback" not in bad.output
    assert not (tmp_path / "q").exists()
    missing = runner.invoke(app, ["ptq", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "q")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
