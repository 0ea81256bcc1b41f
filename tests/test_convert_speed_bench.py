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
