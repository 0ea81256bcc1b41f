"""Per-layer divergence finding and traceability checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from onnx2fx import OnnxToFxConverter
from onnx2fx.cli import app
from onnx2fx.fx_tracer import check_traceability
from onnx2fx.layer_compare import compare_layers, format_report

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"
FEED = {"image": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)}


def test_faithful_conversion_has_no_divergence() -> None:
    gm = OnnxToFxConverter(EXAMPLE).convert()
    report = compare_layers(EXAMPLE, gm, FEED, tolerance=1e-3)
    assert report.first_divergence is None
    assert [lm.op_type for lm in report.layers] == ["Conv", "Relu", "Conv", "Relu", "Conv", "Add", "Relu",
                                                    "MaxPool", "ReduceMean", "Gemm"]
    assert all(lm.metrics.relative_error < 1e-4 for lm in report.layers)


def test_perturbed_weight_is_named_first_with_its_inputs() -> None:
    gm = OnnxToFxConverter(EXAMPLE).convert()
    with torch.no_grad():
        gm.block_3.weight[0, 0, 1, 1] += 0.5
    report = compare_layers(EXAMPLE, gm, FEED, tolerance=1e-3, tensors_per_run=3)
    d = report.first_divergence
    assert d is not None
    assert (d.node, d.op_type, d.tensor) == ("/block/block.3/Conv", "Conv", "/block/block.3/Conv_output_0")
    assert d.attributes["kernel_shape"] == [3, 3] and d.attributes["pads"] == [1, 1, 1, 1]
    activation, *initializers = d.input_errors
    assert activation == "/block/block.2/Relu_output_0" and d.input_errors[activation] < 1e-4
    assert [d.input_errors[i] for i in initializers] == [None, None]  # weights: not intermediate tensors
    assert format_report(report)[0].startswith("first divergence: node '/block/block.3/Conv' (Conv)")
    assert json.loads(json.dumps(report.to_dict()))["first_divergence"]["node"] == "/block/block.3/Conv"


def test_cli_per_layer_exit_code_and_json(tmp_path: Path) -> None:
    converter = OnnxToFxConverter(EXAMPLE)
    converter.convert()
    with torch.no_grad():
        converter.result.graph_module.stem_0.bias[3] += 1.0
    converter.save(tmp_path / "out")
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE), str(tmp_path / "out" / "model_full.pt"),
                                      "--per-layer", "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 1
    assert "first divergence: node '/stem/stem.0/Conv' (Conv)" in result.output
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["per_layer"]["first_divergence"]["op_type"] == "Conv"


def test_traceability_report() -> None:
    gm = OnnxToFxConverter(EXAMPLE).convert()
    before = {k: v.clone() for k, v in gm.state_dict().items()}
    report = check_traceability(gm, (torch.randn(2, 3, 32, 32),), compile=False)
    assert report.ok
    assert report.symbolic_trace.ok and report.export_static.ok and report.export_dynamic_batch.ok
    assert report.compile.ok is None and report.compile.detail == "skipped"
    assert report.backward.detail == "8 parameters receive gradients"
    assert all(torch.equal(before[k], v) for k, v in gm.state_dict().items())
    assert not gm.training


def test_traceability_reports_the_failing_tool() -> None:
    class DataDependent(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x

    report = check_traceability(DataDependent(), (torch.ones(2, 3),), compile=False)
    assert report.symbolic_trace.ok is False
    assert report.symbolic_trace.error.startswith("TraceError: symbolically traced variables cannot be used")
    assert not report.ok
