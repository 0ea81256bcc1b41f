"""PTQ improvements: cross-layer equalization, bias correction, and the QDQ export of the
initializers they change (quantized weights and biases, and float parameters such as a
BatchNormalization's mean)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from support import convert_and_save
from typer.testing import CliRunner

from onnx2fx import _core
from onnx2fx.cli import app
from onnx2fx.conversion_record import conversion_record
from onnx2fx.errors import QuantizationError
from onnx2fx.quantization import QuantConfig, ptq, qft
from onnx2fx.quantization.bias_correction import find_targets
from onnx2fx.quantization.cle import equalized_copy
from onnx2fx.quantization.fake_quant import insert_fake_quant
from onnx2fx.quantization.initializers import get_tensor
from onnx2fx.quantization.placement import OnnxGraphView, plan_placement
from onnx2fx.quantization.qdq import ort_session
from onnx2fx.validator import load_torch_model

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def _save(nodes: list, arrays: dict[str, np.ndarray], inputs: list, outputs: list, path: Path) -> None:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _sqnr(reference: torch.Tensor, approx: torch.Tensor) -> float:
    noise = float(((reference.double() - approx.double()) ** 2).sum())
    return 10 * np.log10(float((reference.double() ** 2).sum()) / noise)


def _within_one_step(a: np.ndarray, b: np.ndarray, step: float) -> float:
    return float((np.abs(a.astype(np.float64) - b.astype(np.float64)) <= step * (1 + 1e-3)).mean())


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Conv -> Relu -> depthwise Conv -> LeakyRelu -> Conv -> BatchNormalization -> Relu -> Conv whose
    first layer's output channels span a factor of ~400, undone by the third layer's input channels
    (what folding BatchNorm into a convolution typically leaves behind)."""
    root = tmp_path_factory.mktemp("scaled")
    rng = np.random.default_rng(0)
    spread = np.exp(rng.uniform(-3, 3, 8)).astype(np.float32)
    arrays = {
        "w1": (rng.normal(size=(8, 3, 3, 3)) * 0.27 * spread[:, None, None, None]).astype(np.float32),
        "b1": (rng.uniform(0, 1, size=8) * spread).astype(np.float32),
        "w2": (rng.normal(size=(8, 1, 3, 3)) * 0.47).astype(np.float32),
        "b2": rng.uniform(0, 1, 8).astype(np.float32),
        "w3": (rng.normal(size=(8, 8, 1, 1)) * 0.5 / spread[None, :, None, None]).astype(np.float32),
        "b3": rng.normal(size=8).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "beta": rng.normal(size=8).astype(np.float32),
        "mean": (rng.normal(size=8) * 0.1).astype(np.float32),
        "var": rng.uniform(0.5, 2, 8).astype(np.float32),
        "w4": (rng.normal(size=(4, 8, 3, 3)) * 0.17).astype(np.float32),
        "b4": rng.normal(size=4).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="dw", pads=[1, 1, 1, 1], group=8),
             helper.make_node("LeakyRelu", ["c2"], ["r2"], name="leaky", alpha=0.1),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3"),
             helper.make_node("BatchNormalization", ["c3", "gamma", "beta", "mean", "var"], ["n3"], name="bn"),
             helper.make_node("Relu", ["n3"], ["r3"], name="relu3"),
             helper.make_node("Conv", ["r3", "w4", "b4"], ["y"], name="conv4", pads=[1, 1, 1, 1])]
    _save(nodes, arrays, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])], root / "scaled.onnx")
    model = convert_and_save(root / "scaled.onnx", root / "converted")
    calib = np.random.default_rng(1).normal(size=(64, 3, 8, 8)).astype(np.float32)
    held_out = np.random.default_rng(2).normal(size=(64, 3, 8, 8)).astype(np.float32)
    gm = load_torch_model(model)
    with torch.no_grad():
        reference = gm(torch.from_numpy(held_out))
    return SimpleNamespace(root=root, model=model, onnx=root / "scaled.onnx", arrays=arrays, calib=calib,
                           held_out=held_out, reference=reference, gm=gm)


def _held_out(scaled: SimpleNamespace, result) -> torch.Tensor:
    with torch.no_grad():
        return result.sim_model(torch.from_numpy(scaled.held_out))


# ---------------------------------------------------------------------------------- cross-layer equalization
def test_cle_keeps_the_float_model_and_equalizes_channel_ranges(scaled: SimpleNamespace) -> None:
    graph = OnnxGraphView.load(scaled.onnx)
    equalized, info = equalized_copy(scaled.gm, graph, plan_placement(graph, QuantConfig()))
    pairs = {(p["first"], p["second"]): p for p in info["pairs"]}
    assert set(pairs) == {("conv1", "dw"), ("dw", "conv3"), ("conv3", "conv4")}
    assert pairs[("conv3", "conv4")]["through"] == ["bn", "relu3"]
    assert pairs[("dw", "conv3")]["through"] == ["leaky"]
    first = pairs[("conv1", "dw")]
    assert first["range_spread_before"] > 100 and first["range_spread_after"] < first["range_spread_before"] / 10
    assert info["initializers"] == sorted(["w1", "b1", "w2", "b2", "w3", "b3", "w4", "beta", "mean"])
    with torch.no_grad():
        out = equalized(torch.from_numpy(scaled.held_out))
    relative = float((out - scaled.reference).abs().max() / scaled.reference.abs().max())
    assert relative < 1e-4
    # the source model is untouched; the copy keeps the ONNX origins
    assert torch.equal(scaled.gm.conv.weight, torch.from_numpy(scaled.arrays["w1"]))
    assert conversion_record(equalized).parameters == conversion_record(scaled.gm).parameters


def test_cle_improves_per_tensor_w8_output_sqnr(scaled: SimpleNamespace) -> None:
    plain = ptq(scaled.model, scaled.calib, samples=64, per_channel=False, progress=False)
    equalized = ptq(scaled.model, scaled.calib, samples=64, per_channel=False, cle=True, progress=False)
    before, after = _sqnr(scaled.reference, _held_out(scaled, plain)), _sqnr(scaled.reference,
                                                                            _held_out(scaled, equalized))
    print(f"W8A8 per-tensor output SQNR on held-out inputs: {before:.2f} dB, with CLE {after:.2f} dB")
    assert after >= before + 15  # measured: 6.0 dB -> 29.9 dB
    assert equalized.output_sqnr_db >= plain.output_sqnr_db + 15
    assert equalized.report["settings"]["cle"] and not plain.report["settings"]["cle"]
    assert plain.report["equalization"] is None and len(equalized.report["equalization"]["pairs"]) == 3


def test_cle_skips_what_it_cannot_scale_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {name: rng.normal(size=(4, 4, 1, 1)).astype(np.float32) for name in ("w1", "w2", "w3", "w4")}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
             helper.make_node("Clip", ["c1"], ["k1"], name="relu6", min=0.0, max=6.0),  # not homogeneous
             helper.make_node("Conv", ["k1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3"),  # r2 is read twice
             helper.make_node("Add", ["c3", "r2"], ["s"], name="add"),
             helper.make_node("Conv", ["s", "w4"], ["y"], name="conv4")]
    _save(nodes, arrays, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 4, 4])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 4, 4])], tmp_path / "m.onnx")
    model = convert_and_save(tmp_path / "m.onnx", tmp_path / "converted")
    result = ptq(model, random_calibration=True, samples=16, cle=True, progress=False)
    assert result.report["equalization"]["pairs"] == [] and result.report["changed_initializers"] == []


# ---------------------------------------------------------------------------------- bias correction
def test_bias_correction_reduces_the_w4_output_mean_error(scaled: SimpleNamespace) -> None:
    errors = {}
    for corrected in (False, True):
        result = ptq(scaled.model, scaled.calib, samples=64, weight_bits=4, per_channel=False, cle=True,
                     bias_correction=corrected, progress=False)
        difference = _held_out(scaled, result).double() - scaled.reference.double()
        errors[corrected] = (float(difference.mean(dim=(0, 2, 3)).abs().mean()),
                             _sqnr(scaled.reference, _held_out(scaled, result)))
    print(f"W4A8 per-tensor (with CLE), held-out output: mean error per channel {errors[False][0]:.4f} -> "
          f"{errors[True][0]:.4f}, SQNR {errors[False][1]:.2f} -> {errors[True][1]:.2f} dB")
    assert errors[True][0] < 0.5 * errors[False][0]  # measured: 0.305 -> 0.033
    assert errors[True][1] > errors[False][1]
    info = result.report["bias_correction"]
    assert [layer["node"] for layer in info["layers"]] == ["conv1", "dw", "conv3", "conv4"]
    assert info["samples"] == 64 and set(info["initializers"]) == {"b1", "b2", "b3", "b4"}


@pytest.fixture(scope="module")
def matmul_add(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """MatMul -> Add(constant) -> Relu -> Gemm: the MatMul's bias is a float Add constant."""
    root = tmp_path_factory.mktemp("matmul_add")
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(8, 6)).astype(np.float32), "b": rng.normal(size=6).astype(np.float32),
              "w2": rng.normal(size=(6, 4)).astype(np.float32), "c": rng.normal(size=4).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "c"], ["y"], name="gemm")]
    _save(nodes, arrays, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], root / "mm.onnx")
    return SimpleNamespace(root=root, model=convert_and_save(root / "mm.onnx", root / "converted"), arrays=arrays,
                           x=rng.normal(size=(64, 8)).astype(np.float32))


def test_bias_correction_of_a_matmul_writes_its_float_add_constant(matmul_add: SimpleNamespace,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "q"
    result = ptq(matmul_add.model, matmul_add.x, samples=64, weight_bits=4, per_channel=False, bias_correction=True,
                 output_dir=out, progress=False)
    assert [(layer["node"], layer["bias"]) for layer in result.report["bias_correction"]["layers"]] == \
        [("mm", "b"), ("gemm", "c")]
    assert [entry.initializer for entry in result.plan.floats] == ["b"]  # the Add constant stays float
    model = onnx.load(str(out / "model_ptq.onnx"))
    written = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert np.array_equal(written["b"], result.sim_model.b.detach().numpy())
    assert not np.array_equal(written["b"], matmul_add.arrays["b"])
    sim = result.sim_model(torch.from_numpy(matmul_add.x)).detach().numpy()
    qdq = ort_session(out / "model_ptq.onnx", optimized=False).run(None, {"x": matmul_add.x})[0]
    assert _within_one_step(qdq, sim, float(result.activation_encodings["y"].scale[0])) >= 0.999


def test_bias_correction_leaves_shared_biases_alone(tmp_path: Path) -> None:
    bias = np.ones(4, np.float32)
    arrays = {"w1": np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1), "w2": np.eye(4, dtype=np.float32)[::-1].copy()
              .reshape(4, 4, 1, 1), "b": bias}
    nodes = [helper.make_node("Conv", ["x", "w1", "b"], ["c1"], name="conv1"),
             helper.make_node("Conv", ["c1", "w2", "b"], ["y"], name="conv2")]
    _save(nodes, arrays, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 2, 2])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 2, 2])], tmp_path / "m.onnx")
    gm = load_torch_model(convert_and_save(tmp_path / "m.onnx", tmp_path / "converted"))
    graph = OnnxGraphView.load(tmp_path / "m.onnx")
    placement = plan_placement(graph, QuantConfig())
    sim = insert_fake_quant(gm, graph, placement)
    for quantizer in sim.weights.values():
        quantizer.initialized = True
    assert find_targets(sim, graph, placement) == []  # "b" is read by both convolutions


# ---------------------------------------------------------------------------------- export
def test_qdq_with_cle_and_bias_correction_matches_the_simulation(scaled: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "q"
    result = ptq(scaled.model, scaled.calib, samples=64, per_channel=False, cle=True, bias_correction=True,
                 output_dir=out, progress=False)
    report = result.report
    assert report["settings"]["cle"] and report["settings"]["bias_correction"]
    assert set(report["changed_initializers"]) == {"w1", "b1", "w2", "b2", "w3", "b3", "w4", "b4", "beta", "mean"}
    assert report["qdq"]["within_one_step"] >= 0.999
    sim = _held_out(scaled, result).numpy()
    qdq = ort_session(out / "model_ptq.onnx", optimized=False).run(None, {"x": scaled.held_out})[0]
    step = float(result.activation_encodings["y"].scale[0])
    within = _within_one_step(qdq, sim, step)
    print(f"QDQ (CLE + bias correction) vs simulation on held-out inputs: {within:.5f} within one output step")
    assert within >= 0.999
    # the file holds the equalized weights and corrected biases, and the BatchNormalization's new mean
    model = onnx.load(str(out / "model_ptq.onnx"))
    written = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    conv = result.sim_model.conv
    with torch.no_grad():
        simulated = conv.weight_quantizer(conv.weight).numpy()
    assert np.allclose(written["w1_quantized"].astype(np.float32) * written["w1_scale"], simulated, rtol=0, atol=0)
    assert np.array_equal(written["mean"], result.sim_model.bn.running_mean.numpy())
    assert np.array_equal(written["beta"], result.sim_model.bn.bias.detach().numpy())
    b4 = next(name for name, origin in conversion_record(result.sim_model).parameters.items()
              if origin.initializer == "b4")
    bias = written["b4_quantized"].astype(np.float64) * written["b4_scale"]
    assert np.allclose(bias, get_tensor(result.sim_model, b4).detach().numpy(), atol=float(written["b4_scale"].max()))
    assert not np.allclose(bias, scaled.arrays["b4"], atol=float(written["b4_scale"].max()))
    saved = json.loads((out / "report.json").read_text())["quantization"]["ptq"]
    assert saved["changed_initializers"] == report["changed_initializers"]
    markdown = (out / "report.md").read_text()
    assert "cross-layer equalization: 3 convolution pair(s)" in markdown and "bias correction: 4 layer(s)" in markdown


def test_qft_after_cle_and_bias_correction_exports_the_changed_initializers(scaled: SimpleNamespace,
                                                                           tmp_path: Path) -> None:
    start = ptq(scaled.model, scaled.calib, samples=64, per_channel=False, cle=True, bias_correction=True,
                output_dir=tmp_path / "ptq", progress=False)
    result = qft(scaled.model, scaled.calib, from_ptq=tmp_path / "ptq", epochs=1, lr=1e-4, batch_size=16,
                 eval_samples=32, output_dir=tmp_path / "qft", progress=False)
    assert result.report["qdq"]["within_one_step"] >= 0.999
    written = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "qft" / "model_qft.onnx"))
               .graph.initializer}
    assert np.array_equal(written["mean"], start.sim_model.bn.running_mean.numpy())
    assert not np.array_equal(written["mean"], scaled.arrays["mean"])


# ---------------------------------------------------------------------------------- options
def test_config_file_and_cli_flags(scaled: SimpleNamespace, tmp_path: Path) -> None:
    config = tmp_path / "quant.yaml"
    config.write_text("cle: true\nbias_correction: true\nweights: {per_channel: false}\n")
    loaded = QuantConfig.load(config)
    assert loaded.cle and loaded.bias_correction
    assert not loaded.with_overrides(cle=False).cle and loaded.with_overrides().bias_correction
    with pytest.raises(QuantizationError, match="cle must be true or false"):
        QuantConfig.from_dict({"cle": "sometimes"})
    result = ptq(scaled.model, scaled.calib, samples=32, config=config, bias_correction=False, progress=False)
    assert result.report["equalization"]["pairs"] and result.report["bias_correction"] is None

    out = tmp_path / "cli"
    invoked = runner.invoke(app, ["ptq", str(scaled.model), "-o", str(out), "--random-calibration", "--samples", "32",
                                  "--per-tensor", "--cle", "--bias-correction"])
    assert invoked.exit_code == 0, invoked.output
    assert "equalization" in invoked.output and "bias correction" in invoked.output
    settings = json.loads((out / "report.json").read_text())["quantization"]["ptq"]["settings"]
    assert settings["cle"] is True and settings["bias_correction"] is True


# ---------------------------------------------------------------------------------- the writer
def test_writer_replaces_bias_and_float_initializer_values(scaled: SimpleNamespace, tmp_path: Path) -> None:
    mean = np.arange(8, dtype=np.float32)
    b1 = np.linspace(-1, 1, 8, dtype=np.float32)
    plan = {"biases": [{"initializer": "b1", "scale": [0.01] * 8, "axis": 0, "values": b1}],
            "floats": [{"initializer": "mean", "values": mean}]}
    out = tmp_path / "out.onnx"
    _core.write_qdq_model(scaled.onnx, out, plan)
    written = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    assert np.array_equal(written["mean"], mean)
    assert np.array_equal(written["b1_quantized"], np.round(b1 / np.float32(0.01)).astype(np.int32))
    onnx.checker.check_model(str(out))

    bad = [({"floats": [{"initializer": "mean", "values": np.zeros(7, np.float32)}]},
            r"float initializer 'mean': values have shape \[7\] but the initializer has dims \[8\]"),
           ({"floats": [{"initializer": "nope", "values": mean}]}, "float initializer 'nope' not found"),
           ({"floats": [{"initializer": "b1", "values": b1}], "biases": plan["biases"]},
            "initializer 'b1' appears more than once"),
           ({"floats": [{"initializer": "mean"}]}, "lacks 'values'"),
           ({"biases": [{**plan["biases"][0], "values": np.zeros((2, 4), np.float32)}]},
            r"bias 'b1': values have shape \[2, 4\]")]
    for wrong, message in bad:
        with pytest.raises(ValueError, match=message):
            _core.write_qdq_model(scaled.onnx, tmp_path / "bad.onnx", wrong)
        assert not (tmp_path / "bad.onnx").exists()
