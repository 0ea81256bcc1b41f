"""Per-model pipeline reports: schema, content, regeneration, failure records."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
from onnx import TensorProto, helper

from onnx2fx.pipeline import PipelineOptions, report_passed, run_model
from onnx2fx.reports import regenerate, schema

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"


def test_example_report_is_complete_and_valid(tmp_path: Path) -> None:
    report = run_model(EXAMPLE, tmp_path, PipelineOptions(per_layer=True, samples=2))
    saved = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(saved, schema())
    assert saved == json.loads(json.dumps(report))
    assert report_passed(report)
    assert saved["model"]["name"] == "tiny_cnn" and saved["model"]["opset"] == 17
    assert saved["conversion"]["op_counts"] == {"Add": 1, "Conv": 3, "Gemm": 1, "MaxPool": 1, "ReduceMean": 1,
                                                "Relu": 3}
    assert saved["conversion"]["parameters"] == 5258
    assert saved["accuracy"]["num_samples"] == 2 and saved["accuracy"]["relative_error"] < 1e-4
    histogram = saved["accuracy"]["outputs"][0]["error_histogram"]
    assert sum(histogram) == 2 * 10 and len(histogram) == 16
    assert saved["accuracy"]["per_layer"]["first_divergence"] is None
    assert {k: v["ok"] for k, v in saved["traceability"].items()} == {
        "symbolic_trace": True, "export_static": True, "export_dynamic_batch": True, "compile": None,
        "backward": True}
    markdown = (tmp_path / "report.md").read_text()
    assert "| logits | [2, 10] |" in markdown and "| export dynamic batch | pass |" in markdown
    assert "<svg" in (tmp_path / "report.html").read_text()
    (tmp_path / "report.md").unlink()
    regenerate(tmp_path)
    assert (tmp_path / "report.md").read_text() == markdown
    assert {p.name for p in tmp_path.iterdir()} == {"model.py", "weights.safetensors", "model_full.pt",
                                                    "conversion.json", "report.json", "report.md", "report.html"}


def test_failed_conversion_is_reported(tmp_path: Path) -> None:
    node = helper.make_node("ImageDecoder", ["encoded"], ["image"], name="decoder")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("encoded", TensorProto.UINT8, [64])],
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, [None, None, 3])])
    path = tmp_path / "decoder.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString())
    report = run_model(path, tmp_path / "out", PipelineOptions())
    jsonschema.validate(json.loads((tmp_path / "out" / "report.json").read_text()), schema())
    assert report["conversion"]["status"] == "failed"
    assert report["conversion"]["error"]["type"] == "UnsupportedOperatorError"
    assert report["conversion"]["unsupported_ops"] == ["ImageDecoder"]
    assert report["accuracy"] is None and not report_passed(report)
    assert "**Failed**" in (tmp_path / "out" / "report.md").read_text()
    assert not (tmp_path / "out" / "model.py").exists()


def test_report_records_failed_validation(tmp_path: Path) -> None:
    bad_inputs = tmp_path / "in.npz"
    np.savez(bad_inputs, wrong_name=np.zeros((1, 3, 32, 32), np.float32))
    report = run_model(EXAMPLE, tmp_path / "out", PipelineOptions(inputs=str(bad_inputs)))
    jsonschema.validate(json.loads((tmp_path / "out" / "report.json").read_text()), schema())
    assert report["conversion"]["status"] == "ok"
    assert report["accuracy"]["error"]["type"] == "ValidationInputError"
    assert report["traceability"] is None and not report_passed(report)
