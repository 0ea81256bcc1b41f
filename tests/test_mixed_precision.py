"""Per-layer sensitivity analysis and mixed precision on the digits CNN: the table, the promoted
layers, their encodings and integer types, and the QDQ model against the simulation."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from digits import train_digits, within_one_step
from typer.testing import CliRunner

from onnx2fx.cli import app
from onnx2fx.errors import QuantizationError
from onnx2fx.quantization import ptq
from onnx2fx.quantization.fake_quant import FakeQuantize
from onnx2fx.quantization.qdq import ort_session
from onnx2fx.quantization.sensitivity import quantizers_switched, write_plot
from onnx2fx.validator import load_torch_model

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()

NODES = ["/features/features.0/Conv", "/features/features.2/Conv", "/classifier/classifier.1/Gemm",
         "/classifier/classifier.3/Gemm"]
WEIGHTS = ["features.0.weight", "features.2.weight", "classifier.1.weight", "classifier.3.weight"]
WEIGHT_SIZES = [16 * 1 * 3 * 3, 32 * 16 * 3 * 3, 64 * 512, 10 * 64]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    data = train_digits(tmp_path_factory.mktemp("digits"))
    with torch.no_grad():
        data.reference = load_torch_model(data.model)(torch.from_numpy(data.x_test)).numpy()
    data.calib = data.x_train[:200]
    data.eval = data.x_test[:256]  # held out from calibration
    return data


def _ptq(digits: SimpleNamespace, folder: Path | None = None, **options):
    return ptq(digits.model, digits.calib, samples=200, eval_data=digits.eval, eval_samples=256, output_dir=folder,
               progress=False, **options)


@pytest.fixture(scope="module")
def sqnr_w4a8_w8a8(digits: SimpleNamespace) -> tuple[float, float]:
    return _ptq(digits, weight_bits=4).output_sqnr_db, _ptq(digits, weight_bits=8).output_sqnr_db


def _sqnr(reference: np.ndarray, approx: np.ndarray) -> float:
    noise = float(np.square(reference.astype(np.float64) - approx).sum())
    return 10 * math.log10(float(np.square(reference.astype(np.float64)).sum()) / noise)


def test_sensitivity_table_plot_and_report(digits: SimpleNamespace, tmp_path: Path) -> None:
    result = _ptq(digits, tmp_path / "q", weight_bits=4, sensitivity=True)
    section = result.report["sensitivity"]
    rows = section["layers"]
    print("sensitivity:", json.dumps(rows, indent=1))
    assert [r["node"] for r in rows] == NODES and [r["weight"] for r in rows] == WEIGHTS
    assert [r["output"] for r in rows] == ["/features/features.1/Relu_output_0", "/features/features.3/Relu_output_0",
                                           "/classifier/classifier.2/Relu_output_0", "logits"]
    assert all(r["weight_bits"] == 4 and r["activation_bits"] == 8 for r in rows)
    assert section["samples"] == 256 and section["all_quantized_sqnr_db"] == result.output_sqnr_db
    everything = section["all_quantized_sqnr_db"]
    for row in rows:
        alone, without = row["only_this_layer_sqnr_db"], row["all_but_this_layer_sqnr_db"]
        assert all(isinstance(v, float) and math.isfinite(v) for v in (alone, without))
        assert alone > everything  # one layer's quantization costs less than all of them
        assert row["all_but_this_layer_gain_db"] == pytest.approx(without - everything, abs=2e-3)
    # errors of different layers can cancel (measured: leaving the second Conv in float loses 0.06 dB), but both
    # figures name the same most sensitive layer: the last Gemm (measured: 22.70 dB alone, +3.90 dB in float)
    least_alone = min(rows, key=lambda r: r["only_this_layer_sqnr_db"])
    largest_gain = max(rows, key=lambda r: r["all_but_this_layer_gain_db"])
    assert least_alone["node"] == largest_gain["node"] == "/classifier/classifier.3/Gemm"
    assert largest_gain["all_but_this_layer_gain_db"] > 3

    # the figures switch quantizers off, nothing else: with all of them off the simulation is the float model
    quantizers = [m for m in result.sim_model.modules() if isinstance(m, FakeQuantize)]
    images = torch.from_numpy(digits.eval)
    with torch.no_grad(), quantizers_switched(quantizers, set()):
        assert torch.equal(result.sim_model(images), load_torch_model(digits.model)(images))
    assert all(q.enabled for q in quantizers)

    saved = json.loads((tmp_path / "q" / "report.json").read_text())["quantization"]["ptq"]["sensitivity"]
    markdown = (tmp_path / "q" / "report.md").read_text()
    assert "Per-layer sensitivity (4 weight layer(s)" in markdown
    assert all(f"| `{node}` |" in markdown for node in NODES)
    if importlib.util.find_spec("matplotlib") is not None:
        assert saved["plot"] == "sensitivity.png" and saved["plot_note"] is None
        assert (tmp_path / "q" / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "![per-layer sensitivity](sensitivity.png)" in markdown
    else:
        assert saved["plot"] is None and saved["plot_note"].startswith("matplotlib is not installed")
        assert not (tmp_path / "q" / "sensitivity.png").exists()
    # without the option the section is null and nothing more is computed
    assert _ptq(digits, weight_bits=4).report["sensitivity"] is None


def test_mixed_precision_w4a8_reaches_a_target_between_w4a8_and_w8a8(digits: SimpleNamespace, tmp_path: Path,
                                                                     sqnr_w4a8_w8a8: tuple[float, float]) -> None:
    low, high = sqnr_w4a8_w8a8
    target = (low + high) / 2
    result = _ptq(digits, tmp_path / "q", weight_bits=4, mixed_precision_target_db=target)
    mixed = result.report["mixed_precision"]
    print(f"W4A8 {low} dB, W8A8 {high} dB, target {target:.3f} dB:", json.dumps(mixed, indent=1))
    assert mixed["target_db"] == target and mixed["reached"]
    assert mixed["sqnr_db_before"] == low and mixed["sqnr_db_after"] >= target
    assert mixed["sqnr_db_after"] == result.output_sqnr_db  # the report's figure is of the chosen model
    promoted = [step["tensor"] for step in mixed["promoted"]]
    assert 0 < len(promoted) < len(WEIGHTS)
    assert all(step["kind"] == "weights" and step["bits"] == [4, 8] for step in mixed["promoted"])
    # measured: the last Gemm's and the first Conv's 8-bit weights give 29.97 dB; the next in the ranking, the
    # 32,768-weight Gemm, would reach 34.67 dB, but the 4,608-weight Conv reaches the target too (30.43 dB)
    assert [r["node"] for r in mixed["ranking"]] == [NODES[3], NODES[0], NODES[2], NODES[1]]
    assert promoted == [WEIGHTS[3], WEIGHTS[0], WEIGHTS[1]]
    assert [step.get("instead_of") for step in mixed["promoted"]] == [None, None, NODES[2]]
    assert mixed["promoted"][-1]["sqnr_db"] == mixed["sqnr_db_after"]
    bits = {name: 8 if name in promoted else 4 for name in WEIGHTS}
    assert mixed["weight_bytes"] == {
        "requested": sum(math.ceil(n * 4 / 8) for n in WEIGHT_SIZES),
        "chosen": sum(math.ceil(n * bits[name] / 8) for name, n in zip(WEIGHTS, WEIGHT_SIZES)),
        "all_8_bit": sum(WEIGHT_SIZES)}
    assert mixed["weight_bytes"]["chosen"] == 19080 + 72 + 2304 + 320

    # the config, encodings.json and the QDQ model all carry the chosen bit widths
    nodes = dict(zip(WEIGHTS, NODES))
    assert {node: specs["weights"].bits for node, specs in result.config.nodes.items()} == \
        {nodes[name]: 8 for name in promoted}
    folder = tmp_path / "q"
    encodings = json.loads((folder / "encodings.json").read_text())
    params = {e["name"]: e["bw"] for e in encodings["param_encodings"]}
    assert {name: params[name] for name in WEIGHTS} == bits
    assert all(e["bw"] == 8 for e in encodings["activation_encodings"])
    settings = json.loads((folder / "report.json").read_text())["quantization"]["ptq"]["settings"]
    assert {node: spec["weights"]["bits"] for node, spec in settings["nodes"].items()} == \
        {nodes[name]: 8 for name in promoted}
    initializers = {t.name: t.data_type for t in onnx.load(str(folder / "model_ptq.onnx")).graph.initializer}
    types = {8: onnx.TensorProto.INT8, 4: onnx.TensorProto.INT4}
    assert {name: initializers[f"{name}_quantized"] for name in WEIGHTS} == {n: types[b] for n, b in bits.items()}

    # onnxruntime runs the mixed 4/8-bit QDQ model, and it computes what the simulation computes
    assert result.report["qdq"]["within_one_step"] >= 0.999
    qdq_logits = ort_session(folder / "model_ptq.onnx", optimized=False).run(None, {"image": digits.x_test})[0]
    with torch.no_grad():
        simulated = result.sim_model(torch.from_numpy(digits.x_test)).numpy()
    assert within_one_step(qdq_logits, simulated, float(result.activation_encodings["logits"].scale[0])) >= 0.999
    held_out = _sqnr(digits.reference, qdq_logits)
    print(f"QDQ output SQNR on the 899 test images: {held_out:.2f} dB")
    assert held_out > low

    markdown = (folder / "report.md").read_text()
    assert f"Mixed precision, target {target:.3g} dB (reached)" in markdown
    assert f"| 1 | `{NODES[3]}` | weights | `{WEIGHTS[3]}` | 4 -> 8 |" in markdown
    assert f"| 3 | `{NODES[1]}` (instead of `{NODES[2]}`) | weights | `{WEIGHTS[1]}` | 4 -> 8 |" in markdown


def test_mixed_precision_promotes_outputs_to_16_bits_once_weights_are_8(digits: SimpleNamespace, tmp_path: Path,
                                                                        sqnr_w4a8_w8a8: tuple[float, float]) -> None:
    high = sqnr_w4a8_w8a8[1]
    result = _ptq(digits, tmp_path / "q", weight_bits=8, mixed_precision_target_db=high + 3)
    mixed = result.report["mixed_precision"]
    print(json.dumps(mixed, indent=1))
    assert mixed["reached"] and mixed["sqnr_db_after"] >= high + 3 and mixed["promoted"]
    assert all(step["kind"] == "activations" and step["bits"] == [8, 16] for step in mixed["promoted"])
    outputs = {step["tensor"] for step in mixed["promoted"]}
    encodings = json.loads((tmp_path / "q" / "encodings.json").read_text())
    widths = {e["name"]: e["bw"] for e in encodings["activation_encodings"]}
    assert {name for name, bw in widths.items() if bw == 16} >= outputs
    assert mixed["weight_bytes"]["chosen"] == mixed["weight_bytes"]["all_8_bit"] == sum(WEIGHT_SIZES)
    assert result.report["qdq"]["within_one_step"] >= 0.999
    model = onnx.load(str(tmp_path / "q" / "model_ptq.onnx"))
    zero_points = {t.name: t.data_type for t in model.graph.initializer if t.name.endswith("_zero_point")}
    assert onnx.TensorProto.UINT16 in zero_points.values()


def test_target_already_met_promotes_nothing(digits: SimpleNamespace, sqnr_w4a8_w8a8: tuple[float, float]) -> None:
    low = sqnr_w4a8_w8a8[0]
    result = _ptq(digits, weight_bits=4, mixed_precision_target_db=low - 1)
    mixed = result.report["mixed_precision"]
    assert mixed["reached"] and mixed["promoted"] == [] and mixed["ranking"] == []
    assert mixed["weight_bytes"]["chosen"] == mixed["weight_bytes"]["requested"]
    assert result.config.nodes == {}


@pytest.mark.parametrize("target", [0, -3.0, math.inf, math.nan, True, "30"])
def test_bad_target_is_a_quantization_error(digits: SimpleNamespace, target: object) -> None:
    with pytest.raises(QuantizationError, match=r"^the mixed-precision target must be a positive output SQNR in dB, "
                       rf"got {__import__('re').escape(repr(target))}$"):
        _ptq(digits, weight_bits=4, mixed_precision_target_db=target)


def test_cli_sensitivity_and_mixed_precision(digits: SimpleNamespace, tmp_path: Path,
                                             sqnr_w4a8_w8a8: tuple[float, float]) -> None:
    np.save(tmp_path / "calib.npy", digits.calib)
    target = round(sum(sqnr_w4a8_w8a8) / 2, 2)
    out = tmp_path / "q"
    result = runner.invoke(app, ["ptq", str(digits.model), "-o", str(out), "--calib-data", str(tmp_path / "calib.npy"),
                                 "--samples", "200", "--w-bits", "4", "--sensitivity", "--mixed-precision",
                                 str(target)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())["quantization"]["ptq"]
    assert report["mixed_precision"]["target_db"] == target and report["mixed_precision"]["reached"]
    assert len(report["sensitivity"]["layers"]) == 4
    assert "mixed precision" in result.output and "sensitivity" in result.output

    for value in ("0", "-1.5"):
        bad = runner.invoke(app, ["ptq", str(digits.model), "-o", str(tmp_path / "bad"), "--calib-data",
                                  str(tmp_path / "calib.npy"), "--mixed-precision", value])
        assert bad.exit_code == 2
        assert bad.output.strip() == ("error: QuantizationError: the mixed-precision target must be a positive "
                                      f"output SQNR in dB, got {float(value)!r}")
        assert not (tmp_path / "bad").exists()
    not_a_number = runner.invoke(app, ["ptq", str(digits.model), "--mixed-precision", "high"], env={"COLUMNS": "200"})
    assert not_a_number.exit_code == 2
    assert "Invalid value for '--mixed-precision': Input should be a valid number, unable to parse string as a " \
        "number" in not_a_number.output


def test_qft_from_a_mixed_precision_folder_keeps_the_chosen_widths(digits: SimpleNamespace, tmp_path: Path) -> None:
    from onnx2fx.quantization import qft

    chosen = _ptq(digits, tmp_path / "ptq", weight_bits=4, mixed_precision_target_db=30.0)
    promoted = {step["tensor"] for step in chosen.report["mixed_precision"]["promoted"]}
    assert 0 < len(promoted) < len(WEIGHTS)
    tuned = qft(digits.model, digits.x_train[:256], from_ptq=tmp_path / "ptq", epochs=1, lr=1e-5,
                output_dir=tmp_path / "qft", progress=False)
    encodings = json.loads((tmp_path / "qft" / "encodings.json").read_text())
    params = {e["name"]: e["bw"] for e in encodings["param_encodings"]}
    assert {name: params[name] for name in WEIGHTS} == {name: 8 if name in promoted else 4 for name in WEIGHTS}
    assert tuned.report["qdq"]["within_one_step"] >= 0.999


def test_plot_is_skipped_with_a_note_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    section = {"layers": [], "all_quantized_sqnr_db": 20.0}
    assert write_plot(section, tmp_path / "sensitivity.png") == \
        "matplotlib is not installed (pip install matplotlib): no plot"
    assert not (tmp_path / "sensitivity.png").exists()
