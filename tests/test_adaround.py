"""AdaRound (learned weight rounding): the layer reconstruction it optimises, the grid its weights
land on, the end-to-end gain on the digits CNN at W4A8, and the options that turn it on."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from digits import train_digits
from onnx import TensorProto, helper, numpy_helper
from support import convert_and_save
from torch import nn
from typer.testing import CliRunner

from onnx2fx.cli import app
from onnx2fx.errors import QuantizationError
from onnx2fx.quantization import QuantConfig, ptq
from onnx2fx.quantization.adaround import beta_at, round_layer
from onnx2fx.quantization.config import QuantSpec
from onnx2fx.quantization.fake_quant import FakeQuantize, QuantConv2d, QuantLinear
from onnx2fx.quantization.grid import Encoding, QuantGrid
from onnx2fx.quantization.qdq import ort_session

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def _sqnr(reference: np.ndarray, approx: np.ndarray) -> float:
    noise = float(((reference.astype(np.float64) - approx.astype(np.float64)) ** 2).sum())
    return 10 * np.log10(float((reference.astype(np.float64) ** 2).sum()) / noise)


def _quantized(layer: nn.Module, bits: int, symmetric: bool, axis: int | None) -> FakeQuantize:
    """Turn a float layer into its quantized subclass with a min-max weight encoding (per channel
    along ``axis``, or per tensor)."""
    weight = layer.weight.detach().numpy()
    reduce = tuple(d for d in range(weight.ndim) if d != axis) if axis is not None else None
    lo, hi = weight.min(axis=reduce), weight.max(axis=reduce)
    channels = weight.shape[axis] if axis is not None else 1
    quantizer = FakeQuantize("w", "weight", QuantSpec(bits, symmetric, axis is not None), axis, axis, channels)
    quantizer.set_encoding(Encoding.from_range(lo, hi, QuantGrid(bits, symmetric), symmetric, axis))
    layer.__class__ = {nn.Linear: QuantLinear, nn.Conv2d: QuantConv2d}[type(layer)]
    layer.add_module("weight_quantizer", quantizer)
    return quantizer


def _correlated(rows: int, features: int, seed: int) -> torch.Tensor:
    """Inputs whose features are correlated (as real activations are): where rounding errors
    can cancel, which round to nearest ignores."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(features, features, generator=torch.Generator().manual_seed(99)) / features ** 0.5
    return torch.relu(torch.randn(rows, features, generator=generator) @ mixing + 0.3)


# ---------------------------------------------------------------------------------- one layer
def test_adaround_reconstructs_a_layer_better_than_round_to_nearest() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(64, 32, bias=False)
    quantizer = _quantized(layer, 4, True, 0)
    x, held_out = _correlated(512, 64, 1), _correlated(512, 64, 2)
    weight = layer.weight.detach().clone()
    hard, figures = round_layer(layer, quantizer, x, 300, torch.Generator().manual_seed(0))
    nearest = quantizer(weight)

    def mse(inputs: torch.Tensor, rounded: torch.Tensor) -> float:
        return float(((inputs @ rounded.t() - inputs @ weight.t()).double() ** 2).mean())

    print(f"Linear 64->32 W4 per channel, reconstruction MSE: nearest {mse(x, nearest):.6f}, AdaRound "
          f"{mse(x, hard):.6f}; held-out inputs {mse(held_out, nearest):.6f} -> {mse(held_out, hard):.6f}; "
          f"{figures['flipped']:.3f} of the weights rounded the other way")
    assert mse(x, hard) < 0.5 * mse(x, nearest)  # measured: 0.00136 -> 0.00053
    assert mse(held_out, hard) < 0.6 * mse(held_out, nearest)  # it generalises: 0.00135 -> 0.00057
    assert figures["mse_nearest"] == pytest.approx(mse(x, nearest), rel=1e-5)
    assert figures["mse_adaround"] == pytest.approx(mse(x, hard), rel=1e-5)
    assert 0 < figures["flipped"] < 0.5
    assert torch.equal(layer.weight.detach(), weight)  # round_layer leaves the layer to its caller


@pytest.mark.parametrize("case", ["conv int4 per channel", "linear int8 per tensor", "linear uint8 asymmetric"])
def test_adarounded_weights_lie_on_the_grid_one_step_from_nearest(case: str) -> None:
    torch.manual_seed(1)
    if case.startswith("conv"):
        layer: nn.Module = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        quantizer = _quantized(layer, 4, True, 0)
        x = torch.relu(torch.randn(24, 8, 6, 6) + 0.2)
    else:
        layer = nn.Linear(48, 24, bias=False)
        quantizer = _quantized(layer, 8, case.endswith("per tensor"), None)
        x = _correlated(256, 48, 3)
    weight = layer.weight.detach().clone()
    hard, figures = round_layer(layer, quantizer, x, 60, torch.Generator().manual_seed(0))
    encoding = quantizer.encoding()
    # on the grid: quantize-dequantize (the quantizer's and the encoding's own) gives it back exactly
    assert torch.equal(quantizer(hard), hard)
    assert np.array_equal(encoding.quantize_dequantize(hard.numpy()), hard.numpy())
    shape = [-1 if d == 0 and encoding.axis is not None else 1 for d in range(weight.dim())]
    scale = torch.from_numpy(encoding.scale).reshape(shape)
    zero_point = torch.from_numpy(encoding.zero_point.astype(np.float32)).reshape(shape)
    integers = torch.round(hard / scale) + zero_point
    assert torch.equal((integers - zero_point) * scale, hard)  # dequantizing the integers gives the weight
    assert integers.min() >= encoding.grid.qmin and integers.max() <= encoding.grid.qmax
    nearest = torch.clamp(torch.round(weight / scale) + zero_point, encoding.grid.qmin, encoding.grid.qmax)
    steps = (integers - nearest).abs()
    assert steps.max() <= 1 and 0 < float((steps == 1).float().mean()) == pytest.approx(figures["flipped"], abs=1e-6)
    # each weight is its floor or its ceiling on the grid
    floor = torch.floor(weight / scale) + zero_point
    assert bool(((integers == floor) | (integers == floor + 1) | (integers == encoding.grid.qmin)
                 | (integers == encoding.grid.qmax)).all())
    assert figures["mse_adaround"] <= figures["mse_nearest"]


def test_beta_schedule() -> None:
    assert [beta_at(i, 100) for i in (0, 19)] == [None, None]  # 20 % warm-up without the regulariser
    assert beta_at(20, 100) == 20.0 and beta_at(60, 100) == pytest.approx(11.0) and beta_at(99, 100) == \
        pytest.approx(2.225)


# ---------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    data = train_digits(tmp_path_factory.mktemp("digits"))
    from onnx2fx.validator import load_torch_model

    with torch.no_grad():
        data.reference = load_torch_model(data.model)(torch.from_numpy(data.x_test)).numpy()
    data.calib = data.x_train[:256]
    return data


def _qdq_logits(folder: Path, digits: SimpleNamespace) -> np.ndarray:
    return ort_session(folder / "model_ptq.onnx", optimized=False).run(None, {"image": digits.x_test})[0]


def test_adaround_improves_the_w4a8_digits_qdq_model(digits: SimpleNamespace, tmp_path: Path) -> None:
    plain = ptq(digits.model, digits.calib, samples=256, weight_bits=4, output_dir=tmp_path / "plain", progress=False)
    rounded = ptq(digits.model, digits.calib, samples=256, weight_bits=4, adaround=True, adaround_iterations=200,
                  output_dir=tmp_path / "adaround", progress=False)
    before, after = (_sqnr(digits.reference, _qdq_logits(tmp_path / name, digits)) for name in ("plain", "adaround"))
    info = rounded.report["adaround"]
    print(f"digits W4A8 QDQ output SQNR on the test half: nearest {before:.2f} dB, AdaRound {after:.2f} dB; "
          "reconstruction MSE per layer: " + ", ".join(f"{r['mse_nearest']:.3g} -> {r['mse_adaround']:.3g}"
                                                       for r in info["layers"]))
    assert after >= before + 2  # measured: 20.77 -> 25.76 dB
    assert rounded.output_sqnr_db > plain.output_sqnr_db
    assert rounded.report["qdq"]["within_one_step"] >= 0.999
    with torch.no_grad():  # the QDQ model agrees with the simulation on the held-out half too
        simulated_logits = rounded.sim_model(torch.from_numpy(digits.x_test)).numpy()
    step = float(rounded.activation_encodings["logits"].scale[0])
    difference = np.abs(_qdq_logits(tmp_path / "adaround", digits).astype(np.float64) - simulated_logits)
    assert float((difference <= step * (1 + 1e-3)).mean()) >= 0.999
    assert [r["node"] for r in info["layers"]] == ["/features/features.0/Conv", "/features/features.2/Conv",
                                                   "/classifier/classifier.1/Gemm", "/classifier/classifier.3/Gemm"]
    assert all(r["mse_adaround"] < r["mse_nearest"] and r["rounding"] == "adaround" for r in info["layers"])
    assert info["iterations"] == 200 and info["samples"] == 128 and info["skipped"] == []
    weights = [r["initializer"] for r in info["layers"]]
    assert info["initializers"] == sorted(weights) and set(weights) <= set(rounded.report["changed_initializers"])

    # the encodings are the calibrated ones: only the integers changed, each by at most one step
    written = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "adaround" / "model_ptq.onnx"))
               .graph.initializer}
    source = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(digits.root / "digits.onnx")).graph.initializer}
    for name in weights:
        encoding = rounded.param_encodings[name]
        assert encoding.same_as(plain.param_encodings[name])
        assert np.array_equal(written[f"{name}_scale"], encoding.scale)
        integers = written[f"{name}_quantized"].astype(np.int64)
        nearest = np.rint(source[name] / encoding.scale.reshape(-1, *[1] * (source[name].ndim - 1))).astype(np.int64)
        assert np.abs(integers - np.clip(nearest, -8, 7)).max() == 1
        module = name.replace(".", "_").rsplit("_", 1)[0]
        simulated = getattr(rounded.sim_model, module).weight.detach().numpy()
        assert np.array_equal(integers.astype(np.float32) * encoding.scale.reshape(-1, *[1] * (integers.ndim - 1)),
                              simulated)
    # the weight figures compare the QDQ weights with the float ones (not with themselves)
    assert all(row["sqnr_db"] is not None and row["sqnr_db"] < 30 for row in rounded.report["weights"])


def test_adaround_then_bias_correction_corrects_against_the_float_weights(digits: SimpleNamespace,
                                                                          tmp_path: Path) -> None:
    result = ptq(digits.model, digits.calib, samples=256, weight_bits=4, adaround=True, adaround_iterations=50,
                 bias_correction=True, output_dir=tmp_path / "q", progress=False)
    corrections = result.report["bias_correction"]["layers"]
    assert len(corrections) == 4 and all(layer["largest_correction"] > 0 for layer in corrections)
    assert result.report["qdq"]["within_one_step"] >= 0.999
    saved = json.loads((tmp_path / "q" / "report.json").read_text())["quantization"]["ptq"]
    assert saved["adaround"]["iterations"] == 50 and saved["bias_correction"]["samples"] == 128


@pytest.fixture(scope="module")
def matmuls(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """MatMul (2-D constant: a transposed nn.Linear) -> Add -> Relu -> Gemm -> MatMul (3-D constant)."""
    root = tmp_path_factory.mktemp("matmuls")
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(16, 12)).astype(np.float32), "b": rng.normal(size=12).astype(np.float32),
              "w2": rng.normal(size=(12, 8)).astype(np.float32), "c": rng.normal(size=8).astype(np.float32),
              "w3": rng.normal(size=(2, 8, 4)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "c"], ["g"], name="gemm"),
             helper.make_node("MatMul", ["g", "w3"], ["y"], name="mm3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "n", 4])],
                              [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(root / "mm.onnx"))
    return SimpleNamespace(model=convert_and_save(root / "mm.onnx", root / "converted"), arrays=arrays,
                           x=rng.normal(size=(128, 16)).astype(np.float32))


def test_adaround_of_transposed_matmul_weights_is_exported(matmuls: SimpleNamespace, tmp_path: Path) -> None:
    result = ptq(matmuls.model, matmuls.x, samples=128, weight_bits=4, adaround=True, adaround_iterations=300,
                 output_dir=tmp_path / "q", progress=False)
    info = result.report["adaround"]
    print("random MatMul/Gemm layers, reconstruction MSE: " + ", ".join(
        f"{r['node']} {r['mse_nearest']:.4g} -> {r['mse_adaround']:.4g} ({r['rounding']})" for r in info["layers"]))
    assert [s["initializer"] for s in info["skipped"]] == ["w3"]  # a batched MatMul constant is not a layer
    # measured: mm 0.0905 -> 0.0894; the Gemm's large outputs outweigh the rounding regulariser in 300 steps
    # (0.604 -> 0.615), so it keeps round to nearest and its float weight
    assert [(r["node"], r["rounding"]) for r in info["layers"]] == [("mm", "adaround"), ("gemm", "nearest")]
    assert info["initializers"] == ["w"] and result.report["changed_initializers"] == ["w"]
    assert result.report["qdq"]["within_one_step"] >= 0.999
    written = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "q" / "model_ptq.onnx"))
               .graph.initializer}
    # MatMul's weight is the transposed nn.Linear weight, quantized per column (ONNX axis 1)
    stored = written["w_quantized"].astype(np.float32) * written["w_scale"]
    assert np.array_equal(stored, result.sim_model.mm.weight.detach().numpy().T)
    assert not np.array_equal(stored, result.sim_model.mm.weight_quantizer(
        torch.from_numpy(matmuls.arrays["w"].T.copy())).numpy().T)
    assert torch.equal(result.sim_model.fc.weight.detach(), torch.from_numpy(matmuls.arrays["w2"].T.copy()))


def test_adaround_of_a_conv_transpose_is_exported(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {"w1": (rng.normal(size=(4, 6, 3, 3)) * 0.3).astype(np.float32),
              "b1": rng.normal(size=6).astype(np.float32),
              "w2": (rng.normal(size=(5, 6, 3, 3)) * 0.2).astype(np.float32)}
    nodes = [helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["c1"], name="deconv", strides=[2, 2],
                              pads=[1, 1, 1, 1], output_padding=[1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5, 12, 12])],
                              [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    model = convert_and_save(tmp_path / "m.onnx", tmp_path / "converted")
    x = rng.normal(size=(64, 4, 6, 6)).astype(np.float32)
    plain = ptq(model, x, samples=64, weight_bits=4, progress=False)
    result = ptq(model, x, samples=64, weight_bits=4, adaround=True, adaround_iterations=200,
                 output_dir=tmp_path / "q", progress=False)
    layers = {r["node"]: r for r in result.report["adaround"]["layers"]}
    print(f"ConvTranspose -> Conv W4A8 output SQNR: nearest {plain.output_sqnr_db:.2f} dB, AdaRound "
          f"{result.output_sqnr_db:.2f} dB; deconv MSE {layers['deconv']['mse_nearest']:.4g} -> "
          f"{layers['deconv']['mse_adaround']:.4g}")
    assert layers["deconv"]["rounding"] == "adaround" and layers["deconv"]["flipped"] > 0
    assert layers["deconv"]["mse_adaround"] < layers["deconv"]["mse_nearest"]
    assert result.output_sqnr_db > plain.output_sqnr_db  # measured: 16.54 -> 19.01 dB
    assert result.report["qdq"]["within_one_step"] >= 0.999
    written = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "q" / "model_ptq.onnx"))
               .graph.initializer}
    stored = written["w1_quantized"].astype(np.float32) * written["w1_scale"].reshape(1, -1, 1, 1)  # axis 1
    deconv = next(m for m in result.sim_model.modules() if isinstance(m, nn.ConvTranspose2d))
    assert np.array_equal(stored, deconv.weight.detach().numpy())


# ---------------------------------------------------------------------------------- options
def test_adaround_config_and_cli(digits: SimpleNamespace, tmp_path: Path) -> None:
    config = tmp_path / "quant.yaml"
    config.write_text("adaround: true\nadaround_iterations: 40\n")
    loaded = QuantConfig.load(config)
    assert loaded.adaround and loaded.adaround_iterations == 40
    assert not QuantConfig().adaround and QuantConfig().adaround_iterations == 500
    assert loaded.with_overrides(adaround_iterations=7).adaround_iterations == 7
    assert not loaded.with_overrides(adaround=False).adaround
    with pytest.raises(QuantizationError, match="adaround_iterations 0 must be at least 1"):
        QuantConfig.from_dict({"adaround_iterations": 0})
    with pytest.raises(QuantizationError, match="adaround must be true or false"):
        QuantConfig.from_dict({"adaround": "maybe"})

    out = tmp_path / "cli"
    invoked = runner.invoke(app, ["ptq", str(digits.model), "-o", str(out), "--random-calibration", "--samples", "32",
                                  "--w-bits", "4", "--adaround", "--adaround-iterations", "20"])
    assert invoked.exit_code == 0, invoked.output
    assert "AdaRound" in invoked.output and "20 iterations each" in invoked.output
    saved = json.loads((out / "report.json").read_text())["quantization"]["ptq"]
    assert saved["settings"]["adaround"] is True and saved["settings"]["adaround_iterations"] == 20
    section = saved["adaround"]
    assert section["iterations"] == 20 and section["samples"] == 32 and len(section["layers"]) == 4
    assert {"node", "initializer", "mse_nearest", "mse_adaround", "flipped", "rounding", "seconds"} <= \
        set(section["layers"][0])
    assert "AdaRound: " in (out / "report.md").read_text()

    off = tmp_path / "off"
    invoked = runner.invoke(app, ["ptq", str(digits.model), "-o", str(off), "--random-calibration", "--samples", "16",
                                  "--config", str(config), "--no-adaround"])
    assert invoked.exit_code == 0, invoked.output
    assert json.loads((off / "report.json").read_text())["quantization"]["ptq"]["adaround"] is None
