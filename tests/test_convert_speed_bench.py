"""The conversion benchmark's table of where onnx2fx's time goes (``benchmarks/convert_speed.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import convert_speed  # noqa: E402


def test_phase_table_gives_each_phase_in_ms_and_the_lowering_per_node() -> None:
    phases = {"read": 0.0002, "weights": 0.0004, "lower": 0.0051, "render": 0.0001, "instantiate": 0.0013,
              "trace": 0.0031}
    rows = [{"name": "oww_alexa", "nodes": 7, "onnx2fx_convert_s": 0.01, "onnx2fx_fx_floor_s": 0.0007,
             "onnx2fx_phase_s": phases, "corpus": True},
            {"name": "failed_one", "nodes": 3, "onnx2fx_convert_s": None, "onnx2fx_error": "boom"}]
    lines = convert_speed._phase_table(rows)
    assert "## Where onnx2fx's time goes" in lines
    assert "| oww_alexa | 7 | 10 | 0.2 | 0.4 | 5.1 | 0.729 | 0.1 | 1.3 | 3.1 | 0.7 |" in lines
    assert not [line for line in lines if line.startswith("| failed_one")]  # no phases: no row
    assert convert_speed._phase_table(rows[1:]) == []


def test_latency_runs_the_converted_model_beside_onnxruntime(tmp_path: Path) -> None:
    """The latency child converts with the same function as the timing child (which also gives the
    phase timings) and reports onnx2fx's error against onnxruntime and its median time."""
    from benchmarks.zoo.registry import export_model

    path = export_model("mnist", tmp_path)
    result = convert_speed._latency("mnist", path, runs=3, threads=1, budget=5.0)
    assert "onnx2fx_error" not in result, result.get("onnx2fx_error")
    assert result["onnx2fx_rel_err_pct"] < 1e-3
    assert result["onnx2fx_ms"] > 0 and result["onnxruntime_ms"] > 0
    assert result["latency_rounds"] == 3
