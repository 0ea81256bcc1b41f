"""Fixed-point and QOperator ONNX from PTQ (``quantization/integer.py``, ``cpp/writer/integer_writer.cc``):
on the trained digits CNN and on a small model with every lowered op, against the QDQ model in onnxruntime
and against the integer simulation, plus the errors and the CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from digits import train_digits
from onnx import numpy_helper
from support import convert_and_save
from torch import nn
from typer.testing import CliRunner

from onnx2fx.cli import app
from onnx2fx.errors import QuantizationError
from onnx2fx.quantization import ptq
from onnx2fx.quantization.integer import IntegerExportError, float_tensors_inside
from onnx2fx.quantization.qdq import ort_session

pytestmark = pytest.mark.usefixtures("one_thread")

FORMATS = ["qdq", "fixed-point", "qoperator"]


def _run(path: Path, x: np.ndarray, optimized: bool = False) -> np.ndarray:
    session = ort_session(path, optimized)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    d = train_digits(tmp_path_factory.mktemp("digits"))
    out = d.root / "quantized"
    d.result = ptq(d.model, d.x_train[:200], batch_size=50, progress=False, output_dir=out, formats=FORMATS)
    d.out = out
    return d


def test_digits_integer_models_match_the_qdq_model(digits: SimpleNamespace) -> None:
    """W8A8 digits CNN: both integer forms run in onnxruntime with basic and full optimizations, and their
    test accuracy is within 0.3 points of the QDQ model's."""
    qdq = _run(digits.out / "model_ptq.onnx", digits.x_test)
    qdq_accuracy = float((qdq.argmax(1) == digits.y_test).mean())
    assert qdq_accuracy > 0.95
    for name in ("model_ptq_fixed_point.onnx", "model_ptq_qoperator.onnx"):
        for optimized in (False, True):
            logits = _run(digits.out / name, digits.x_test, optimized)
            accuracy = float((logits.argmax(1) == digits.y_test).mean())
            assert abs(accuracy - qdq_accuracy) <= 0.003, (name, optimized, accuracy, qdq_accuracy)
            step = float(digits.result.activation_encodings["logits"].scale[0])
            assert np.mean(np.abs(logits - qdq) <= step * 1.001) >= 0.999, (name, optimized)
    report = json.loads((digits.out / "report.json").read_text())["quantization"]["ptq"]
    assert report["files"]["fixed_point_onnx"] == "model_ptq_fixed_point.onnx"
    assert report["fixed_point"]["within_one_step_of_qdq"] >= 0.999
    assert report["qoperator"]["writer"]["float_islands"] == []


def test_fixed_point_equals_its_integer_simulation(digits: SimpleNamespace) -> None:
    """Every test-set logit of the fixed-point model in onnxruntime equals the torch integer simulation."""
    simulation = digits.result.integer_model("fixed-point")
    with torch.no_grad():
        simulated = simulation(torch.from_numpy(digits.x_test)).numpy()
    for optimized in (False, True):
        logits = _run(digits.out / "model_ptq_fixed_point.onnx", digits.x_test, optimized)
        assert np.mean(logits == simulated) >= 0.999
    report = json.loads((digits.out / "report.json").read_text())["quantization"]["ptq"]["fixed_point"]
    assert report["reference"]["equal_to_simulation"] >= 0.999
    assert report["optimized"]["equal_to_simulation"] >= 0.999


def test_fixed_point_graph_is_integer_between_quantize_and_dequantize(digits: SimpleNamespace) -> None:
    """Shape inference walks the fixed-point graph: no float tensor between the input's QuantizeLinear and the
    output's DequantizeLinear, and only integer operators there. The QDQ model, for contrast, is full of them."""
    path = digits.out / "model_ptq_fixed_point.onnx"
    assert float_tensors_inside(path) == []
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1
    assert ops["ConvInteger"] == 2 and ops["MatMulInteger"] == 2
    assert set(ops) <= {"QuantizeLinear", "DequantizeLinear", "ConvInteger", "MatMulInteger", "Add", "Cast", "Mul",
                        "Mod", "Sub", "Div", "Clip", "MaxPool", "Flatten"}
    assert len(float_tensors_inside(digits.out / "model_ptq.onnx")) > 10
    qoperator_model = onnx.load(str(digits.out / "model_ptq_qoperator.onnx"))
    qoperator = Counter(n.op_type for n in qoperator_model.graph.node)
    assert qoperator == {"QuantizeLinear": 1, "QLinearConv": 2, "MaxPool": 1, "Flatten": 1, "QGemm": 2,
                         "DequantizeLinear": 1}
    # the symmetric int8 weights are stored as uint8 + 128 with zero points of 128, for onnxruntime's
    # u8 x u8 kernels (exact on every CPU): the QDQ model's int8 values, each shifted by 128
    qdq = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(digits.out / "model_ptq.onnx")).graph.initializer}
    inits = {t.name: numpy_helper.to_array(t) for t in qoperator_model.graph.initializer}
    for node in (n for n in qoperator_model.graph.node if n.op_type in ("QLinearConv", "QGemm")):
        weight, zero = inits[node.input[3]], inits[node.input[5]]
        assert weight.dtype == np.uint8 and zero.dtype == np.uint8 and set(zero.ravel().tolist()) == {128}
        signed = qdq[node.input[3]]
        assert signed.dtype == np.int8
        signed = signed if signed.shape == weight.shape else signed.T  # QGemm may hold the transpose
        assert np.array_equal(weight.astype(np.int16) - 128, signed.astype(np.int16))


def test_requantization_multipliers_and_shifts(digits: SimpleNamespace) -> None:
    """The report's multiplier and shift per layer reproduce the float rescale input scale x weight scale /
    output scale (per output channel) to 31 bits."""
    rows = digits.result.report["fixed_point"]["writer"]["requantizations"]
    assert [r["node"] for r in rows] == ["/features/features.1/Relu", "/features/features.3/Relu",
                                         "/classifier/classifier.2/Relu", "/classifier/classifier.3/Gemm"]
    enc = digits.result.activation_encodings
    params = digits.result.param_encodings
    weight = next(name for name in params if name.endswith("features.0.weight"))
    expected = (np.float64(enc["image"].scale[0]) * params[weight].scale.astype(np.float64)
                / np.float64(enc["/features/features.1/Relu_output_0"].scale[0]))
    np.testing.assert_allclose(rows[0]["rescale"], expected, rtol=1e-15)
    for row in rows:
        m, n, r = np.array(row["multiplier"]), np.array(row["shift"]), np.array(row["rescale"])
        assert ((m >= 2**30) & (m <= 2**31)).all() and (n >= 1).all()
        error = np.abs(m * np.exp2(-n.astype(np.float64)) - r) / r
        assert error.max() == pytest.approx(row["max_relative_error"], rel=1e-6)
        assert row["max_relative_error"] < 2**-30


class AllOps(nn.Module):
    """Residual Add + ReLU, lookup-table functions, Concat, Slice, GlobalAveragePool and Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.c1(x))
        y = torch.relu(a + self.c2(a))
        z = torch.cat([torch.sigmoid(self.c3(y)), nn.functional.hardswish(y), torch.tanh(y)], 1)[:, :16]
        return self.fc(nn.functional.adaptive_avg_pool2d(z, 1).flatten(1))


class WithSoftmax(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x), -1)


def _converted(model: nn.Module, example: torch.Tensor, root: Path, idioms: bool = True) -> Path:
    torch.manual_seed(0)
    torch.onnx.export(model.eval(), (example,), str(root / "m.onnx"), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    return convert_and_save(root / "m.onnx", root / "converted", idioms=idioms)


def test_every_lowered_op_matches_the_qdq_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _converted(AllOps(), torch.zeros(1, 3, 8, 8), tmp_path)
    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    out = tmp_path / "q"
    result = ptq(model, x, batch_size=32, progress=False, output_dir=out, formats=FORMATS)
    fixed = Counter(n.op_type for n in onnx.load(str(out / "model_ptq_fixed_point.onnx")).graph.node)
    assert fixed["Gather"] == 3 and fixed["ReduceSum"] == 1 and fixed["ConvInteger"] == 3
    assert float_tensors_inside(out / "model_ptq_fixed_point.onnx") == []
    qoperator = Counter(n.op_type for n in onnx.load(str(out / "model_ptq_qoperator.onnx")).graph.node)
    assert {"QLinearAdd", "QLinearSigmoid", "QLinearConcat", "QLinearGlobalAveragePool", "QGemm"} <= set(qoperator)
    # ops without a QOperator form run in float between DequantizeLinear and QuantizeLinear
    assert result.report["qoperator"]["writer"]["float_islands"] == ["/HardSwish (HardSwish)", "/Tanh (Tanh)"]
    qdq = _run(out / "model_ptq.onnx", x)
    step = float(result.activation_encodings["y"].scale[0])
    for name in ("model_ptq_fixed_point.onnx", "model_ptq_qoperator.onnx"):
        assert np.mean(np.abs(_run(out / name, x) - qdq) <= step * 1.001) >= 0.999, name
    assert result.report["fixed_point"]["equal_to_simulation"] == 1.0
    add = next(r for r in result.report["fixed_point"]["writer"]["requantizations"] if r["node"] == "/Relu_1")
    assert len(add["multiplier"]) == 2 and add["shift"][0] == add["shift"][1]  # both Add terms, one shift


def test_op_without_integer_form(tmp_path: Path) -> None:
    """Softmax has no fixed-point form: a typed error naming the node and no output folder; with float
    islands it runs in float between DequantizeLinear and QuantizeLinear and is listed."""
    torch.manual_seed(0)
    model = _converted(WithSoftmax(), torch.zeros(1, 6), tmp_path)
    x = np.random.default_rng(1).standard_normal((32, 6)).astype(np.float32)
    with pytest.raises(IntegerExportError, match=r"node '/Softmax' \(Softmax\): the operator has no integer form "
                                                 r"in the fixed-point format"):
        ptq(model, x, progress=False, output_dir=tmp_path / "q", formats=["fixed-point"])
    assert not (tmp_path / "q").exists()
    result = ptq(model, x, progress=False, output_dir=tmp_path / "q", formats=["fixed-point"], float_islands=True)
    assert result.report["fixed_point"]["writer"]["float_islands"] == ["/Softmax (Softmax)"]
    assert result.report["qdq"] is None and not (tmp_path / "q" / "model_ptq.onnx").exists()
    assert result.report["fixed_point"]["equal_to_simulation"] == 1.0, result.report["fixed_point"]
    probabilities = _run(tmp_path / "q" / "model_ptq_fixed_point.onnx", x)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=0.02)
    with pytest.raises(QuantizationError, match=r"format 'int8' is not one of \['qdq', 'qoperator', 'fixed-point'\]"):
        ptq(model, x, progress=False, formats=["int8"])


def test_cli_format_option(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _converted(WithSoftmax(), torch.zeros(1, 6), tmp_path)
    np.save(tmp_path / "calib.npy", np.random.default_rng(2).standard_normal((16, 6)).astype(np.float32))
    result = CliRunner().invoke(app, ["ptq", str(model), "-o", str(tmp_path / "q"), "--calib-data",
                                      str(tmp_path / "calib.npy"), "--format", "qdq", "--format", "fixed-point",
                                      "--float-islands"])
    assert result.exit_code == 0, result.output
    assert "fixed-point ONNX" in result.output
    report = json.loads((tmp_path / "q" / "report.json").read_text())["quantization"]["ptq"]
    assert report["fixed_point"]["writer"]["float_islands"] == ["/Softmax (Softmax)"]
    assert (tmp_path / "q" / "model_ptq.onnx").is_file() and (tmp_path / "q" / "model_ptq_fixed_point.onnx").is_file()
    bad = CliRunner().invoke(app, ["ptq", str(model), "-o", str(tmp_path / "r"), "--calib-data",
                                   str(tmp_path / "calib.npy"), "--format", "fixed-point"])
    assert bad.exit_code != 0 and "'/Softmax'" in " ".join(bad.output.split())
    assert not (tmp_path / "r").exists()


def test_qft_writes_the_fine_tuned_fixed_point_model(digits: SimpleNamespace, tmp_path: Path) -> None:
    from onnx2fx.quantization import qft

    result = qft(digits.model, digits.x_train[:256], from_ptq=digits.result, epochs=1, lr=1e-4, batch_size=64,
                 eval_samples=64, output_dir=tmp_path / "qft", progress=False, formats=["fixed-point"])
    path = tmp_path / "qft" / "model_qft_fixed_point.onnx"
    assert result.report["qdq"] is None and not (tmp_path / "qft" / "model_qft.onnx").exists()
    assert result.report["fixed_point"]["equal_to_simulation"] >= 0.999
    assert float_tensors_inside(path) == []
    accuracy = float((_run(path, digits.x_test).argmax(1) == digits.y_test).mean())
    assert accuracy > 0.95


def test_batch_config_formats(tmp_path: Path) -> None:
    """``formats`` in the batch config: each model's ptq/ folder holds the QDQ and fixed-point models."""
    from onnx2fx.batch import run_batch
    from onnx2fx.errors import BatchError

    models = tmp_path / "models"
    models.mkdir()
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    torch.onnx.export(mlp, (torch.zeros(1, 6),), str(models / "mlp.onnx"), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32))
    config = tmp_path / "batch.yaml"
    config.write_text("defaults:\n  calibration: calib.npy\n  formats: [fixed-point, qdq]\n")
    summary = run_batch(models, tmp_path / "out", config=config, jobs=1, ptq=True)
    assert summary.passed
    ptq_report = json.loads((tmp_path / "out" / "mlp" / "report.json").read_text())["quantization"]["ptq"]
    assert ptq_report["status"] == "ok" and ptq_report["fixed_point"]["equal_to_simulation"] == 1.0
    assert float_tensors_inside(tmp_path / "out" / "mlp" / "ptq" / "model_ptq_fixed_point.onnx") == []
    assert (tmp_path / "out" / "mlp" / "ptq" / "model_ptq.onnx").is_file()
    config.write_text("defaults:\n  formats: [int8]\n")
    with pytest.raises(BatchError, match="formats"):
        run_batch(models, tmp_path / "out2", config=config, jobs=1, ptq=True)


def test_example_script(tmp_path: Path) -> None:
    """examples/digits_fixed_point.py end to end (5 epochs): accuracies in onnxruntime and the simulation."""
    import importlib.util

    path = Path(__file__).parents[1] / "examples" / "digits_fixed_point.py"
    spec = importlib.util.spec_from_file_location("digits_fixed_point", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.main(["--out", str(tmp_path), "--epochs", "5"])
    assert figures["float"] > 0.9
    for name in ("qoperator", "fixed-point", "fixed-point (all optimizations)"):
        assert abs(figures[name] - figures["qdq"]) <= 0.003, name
    assert figures["fixed-point = integer simulation"] >= 0.999


def test_qlinear_conv_model_converts_back_exactly(tmp_path: Path) -> None:
    """A QOperator model of standard-domain ops only (QLinearConv, MaxPool on uint8), converted back by
    onnx2fx, computes the same integers as onnxruntime with basic and full optimizations."""
    from onnx2fx.quantization.integer import compare_integer

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1), nn.MaxPool2d(2))
    model = _converted(cnn, torch.zeros(1, 3, 8, 8), tmp_path)
    x = np.random.default_rng(0).standard_normal((256, 3, 8, 8)).astype(np.float32)
    result = ptq(model, x, batch_size=64, progress=False, output_dir=tmp_path / "q", formats=["qoperator"])
    path = tmp_path / "q" / "model_ptq_qoperator.onnx"
    assert Counter(n.op_type for n in onnx.load(str(path)).graph.node) == {
        "QuantizeLinear": 1, "QLinearConv": 2, "MaxPool": 1, "DequantizeLinear": 1}
    batches = [(torch.from_numpy(x[i:i + 64]),) for i in range(0, 256, 64)]
    check = compare_integer(path, batches, ["x"], ["y"], {"y": result.activation_encodings["y"]})
    assert check["reference"]["equal_to_simulation"] == 1.0 and check["optimized"]["equal_to_simulation"] == 1.0


class PoolMul(nn.Module):
    """AveragePool (with counted padding) and a Mul of two quantized tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = nn.functional.avg_pool2d(torch.relu(self.conv(x)), 3, stride=2, padding=1)
        return self.fc((t * torch.sigmoid(t)).flatten(1))


def test_average_pool_and_mul(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # node by node: t * sigmoid(t) would be one F.silu, written as one table instead of QLinearMul and QLinearSigmoid
    model = _converted(PoolMul(), torch.zeros(1, 3, 8, 8), tmp_path, idioms=False)
    x = np.random.default_rng(3).standard_normal((64, 3, 8, 8)).astype(np.float32)
    out = tmp_path / "q"
    result = ptq(model, x, batch_size=32, progress=False, output_dir=out, formats=FORMATS)
    fixed = Counter(n.op_type for n in onnx.load(str(out / "model_ptq_fixed_point.onnx")).graph.node)
    assert fixed["ConvInteger"] == 2 and fixed["Gather"] == 1  # the convolution and the pooling's ones kernel
    assert float_tensors_inside(out / "model_ptq_fixed_point.onnx") == []
    qoperator = Counter(n.op_type for n in onnx.load(str(out / "model_ptq_qoperator.onnx")).graph.node)
    assert {"QLinearAveragePool", "QLinearMul", "QLinearSigmoid"} <= set(qoperator)
    qdq = _run(out / "model_ptq.onnx", x)
    step = float(result.activation_encodings["y"].scale[0])
    for name in ("model_ptq_fixed_point.onnx", "model_ptq_qoperator.onnx"):
        for optimized in (False, True):
            assert np.mean(np.abs(_run(out / name, x, optimized) - qdq) <= step * 1.001) >= 0.99, (name, optimized)
    assert result.report["fixed_point"]["equal_to_simulation"] == 1.0
    pool = next(r for r in result.report["fixed_point"]["writer"]["requantizations"] if r["node"] == "/AveragePool")
    enc = result.activation_encodings
    expected = np.float64(enc["/Relu_output_0"].scale[0]) / (np.float64(enc["/AveragePool_output_0"].scale[0]) * 9)
    assert pool["rescale"] == [pytest.approx(expected, rel=1e-15)]


class ShapeReshape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.fc(x))
        return y.reshape(y.shape[0], 2, -1)  # Shape -> Gather -> Concat -> Reshape, Shape on the 8-bit tensor


def test_shape_of_a_quantized_tensor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _converted(ShapeReshape(), torch.zeros(2, 4), tmp_path)
    x = np.random.default_rng(4).standard_normal((16, 4)).astype(np.float32)
    result = ptq(model, x, progress=False, output_dir=tmp_path / "q", formats=FORMATS)
    path = tmp_path / "q" / "model_ptq_fixed_point.onnx"
    assert "Shape" in {n.op_type for n in onnx.load(str(path)).graph.node}
    assert float_tensors_inside(path) == []
    np.testing.assert_array_equal(_run(path, x), _run(tmp_path / "q" / "model_ptq.onnx", x))
    assert result.report["fixed_point"]["equal_to_simulation"] == 1.0, result.report["fixed_point"]


class AnchorOffset(nn.Module):
    """A detector head's decode in miniature: a grid of cell centres built from the feature map's
    width (Shape, Gather, Cast, Range: sizes alone) added to the convolution's output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + (torch.arange(y.shape[3], dtype=torch.float32) + 0.5)


def test_tensors_computed_from_sizes_alone_are_not_quantized(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.onnx.export(AnchorOffset().eval(), (torch.zeros(1, 3, 4, 6),), str(tmp_path / "m.onnx"), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}})
    source = onnx.load(str(tmp_path / "m.onnx"))
    from_sizes = {o for n in source.graph.node if n.op_type in ("Cast", "Range") for o in n.output}
    grid = next(n for n in source.graph.node if n.op_type == "Add" and set(n.input) & from_sizes).output[0]
    add = next(n for n in source.graph.node if n.op_type == "Add" and grid in n.input)
    model = convert_and_save(tmp_path / "m.onnx", tmp_path / "converted")
    x = np.random.default_rng(5).standard_normal((16, 3, 4, 6)).astype(np.float32)
    with pytest.raises(IntegerExportError, match=rf"node '{add.name}' \(Add\): an operand has no encoding \(a float "
                                                 r"tensor, such as one computed from sizes alone\)"):
        ptq(model, x, progress=False, output_dir=tmp_path / "q", formats=["fixed-point"])
    result = ptq(model, x, progress=False, output_dir=tmp_path / "q", formats=FORMATS, float_islands=True)
    assert not (from_sizes | {grid}) & set(result.activation_encodings)
    assert set(result.activation_encodings) >= {"x", "y"}
    for fmt in ("qoperator", "fixed_point"):
        assert result.report[fmt]["writer"]["float_islands"] == [f"{add.name} (Add)"]
    qdq = _run(tmp_path / "q" / "model_ptq.onnx", x)
    step = float(result.activation_encodings["y"].scale[0])
    for name in ("model_ptq_fixed_point.onnx", "model_ptq_qoperator.onnx"):
        assert np.mean(np.abs(_run(tmp_path / "q" / name, x) - qdq) <= step * 1.001) >= 0.999, name
    assert result.report["fixed_point"]["equal_to_simulation"] == 1.0, result.report["fixed_point"]


class NearestUpsample(nn.Module):
    """A detector neck's upsampling: nearest Resize between two convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.down, self.up = nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(nn.functional.interpolate(torch.relu(self.down(x)), scale_factor=2.0, mode="nearest"))


def test_nearest_resize_runs_on_the_integers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _converted(NearestUpsample(), torch.zeros(1, 3, 8, 8), tmp_path)
    x = np.random.default_rng(6).standard_normal((16, 3, 8, 8)).astype(np.float32)
    result = ptq(model, x, progress=False, output_dir=tmp_path / "q", formats=FORMATS)
    for fmt, file in (("qoperator", "model_ptq_qoperator.onnx"), ("fixed_point", "model_ptq_fixed_point.onnx")):
        assert result.report[fmt]["writer"]["float_islands"] == [], fmt
        nodes = onnx.load(str(tmp_path / "q" / file)).graph.node
        resize = next(n for n in nodes if n.op_type == "Resize")
        producer = next(n for n in nodes if resize.input[0] in n.output)
        assert producer.op_type != "DequantizeLinear", (fmt, producer.op_type)
    assert float_tensors_inside(tmp_path / "q" / "model_ptq_fixed_point.onnx") == []
    qdq = _run(tmp_path / "q" / "model_ptq.onnx", x)
    step = float(result.activation_encodings["y"].scale[0])
    for name in ("model_ptq_fixed_point.onnx", "model_ptq_qoperator.onnx"):
        assert np.mean(np.abs(_run(tmp_path / "q" / name, x) - qdq) <= step * 1.001) >= 0.999, name
    assert result.report["fixed_point"]["equal_to_simulation"] == 1.0, result.report["fixed_point"]
