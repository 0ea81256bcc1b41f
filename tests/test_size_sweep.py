"""Size sweeps in validation: which dimensions are swept, at which sizes, and how each size is judged
(a conversion that only works at one size fails; a size onnxruntime rejects is no failure)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from onnx2fx import AccuracyValidator, OnnxToFxConverter, ValidationInputError
from onnx2fx.cli import app
from onnx2fx.pipeline import PipelineOptions, run_model
from onnx2fx.reports import render_markdown, schema
from onnx2fx.size_sweep import DynamicDimension, dynamic_dimensions

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def _flatten_model(target: list[int] | None = None) -> onnx.ModelProto:
    """``y = reshape(x, [N, -1]) * 2`` for ``x`` of shape [N, 3, L] (or reshape to ``target``)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "L"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    shape = helper.make_tensor("s", TensorProto.INT64, [len(target or [0, -1])], target or [0, -1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Mul", ["r", "two"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [shape, two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class FrozenLength(torch.nn.Module):
    """What a conversion that fixed L to its base size 64 would compute: right at 64 only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 3 * 64) * 2


class WrongAtOddLengths(torch.nn.Module):
    """Silently wrong (no error) where L is odd."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.reshape(x.shape[0], -1) * 2
        return y + 1 if x.shape[2] % 2 else y


def test_dynamic_dimensions_group_named_dims_and_keep_unnamed_ones_apart() -> None:
    specs = [SimpleNamespace(name="ids", shape=["batch", "seq"]), SimpleNamespace(name="mask", shape=["batch", "seq"]),
             SimpleNamespace(name="image", shape=[None, 3, None, 32])]
    dims = dynamic_dimensions(specs, {"image": [4, 3, 48, 32]})
    assert dims == [DynamicDimension("batch", (("ids", 0), ("mask", 0)), 2),
                    DynamicDimension("seq", (("ids", 1), ("mask", 1)), 64),
                    DynamicDimension("image[0]", (("image", 0),), 4),
                    DynamicDimension("image[2]", (("image", 2),), 48)]
    assert [d.sizes() for d in dims] == [[1, 2, 3, 8], [1, 7, 32, 64, 97], [1, 3, 4, 9], [1, 7, 24, 48, 73]]
    assert DynamicDimension("h", (("image", 2),), 640).sizes() == [1, 7, 320, 640, 961]


def test_sweep_of_a_correct_conversion_passes_at_every_size() -> None:
    model = _flatten_model()
    metrics = AccuracyValidator(model, OnnxToFxConverter(model).convert(), num_samples=1, sweep=True).validate()
    assert [(p.dimension, p.size, p.status) for p in metrics.sweep] == [
        ("N", 1, "passed"), ("N", 3, "passed"), ("N", 8, "passed"),
        ("L", 1, "passed"), ("L", 7, "passed"), ("L", 32, "passed"), ("L", 97, "passed")]
    assert metrics.sweep[4].input_shapes == {"x": [2, 3, 7]} and metrics.sweep[4].relative_error == 0.0
    assert metrics.passed


def test_a_size_fixed_at_conversion_fails_the_sweep_but_not_the_base_size() -> None:
    metrics = AccuracyValidator(_flatten_model(), FrozenLength(), num_samples=1, sweep=True).validate()
    assert metrics.outputs[0].passed  # at the base size (L = 64) everything looks right
    by_size = {(p.dimension, p.size): p for p in metrics.sweep}
    assert by_size[("N", 3)].status == "passed"
    assert by_size[("L", 7)].status == "error"
    assert by_size[("L", 7)].note.startswith("RuntimeError: shape '[2, 192]' is invalid for input of size 42")
    assert not metrics.passed


def test_a_silently_wrong_size_fails_with_its_error() -> None:
    metrics = AccuracyValidator(_flatten_model(), WrongAtOddLengths(), num_samples=1, sweep=True).validate()
    failed = [(p.dimension, p.size) for p in metrics.sweep if p.status == "failed"]
    assert failed == [("L", 1), ("L", 7), ("L", 97)]  # L = 32 is even: right there
    assert all(p.relative_error > 1.0 for p in metrics.sweep if p.status == "failed")
    assert not metrics.passed


def test_sizes_onnxruntime_rejects_are_reported_not_failed() -> None:
    model = _flatten_model(target=[-1, 3, 8, 8])  # N * L must be a multiple of 64
    metrics = AccuracyValidator(model, OnnxToFxConverter(model).convert(), num_samples=1, sweep=True).validate()
    statuses = {(p.dimension, p.size): p.status for p in metrics.sweep}
    assert {statuses[("L", n)] for n in (1, 7, 97)} == {"onnxruntime_rejects"}
    assert statuses[("L", 32)] == statuses[("N", 3)] == "passed"
    assert metrics.passed


def test_sweep_with_real_inputs_is_a_clear_error() -> None:
    with pytest.raises(ValidationInputError, match="a size sweep generates its inputs at every size"):
        AccuracyValidator(_flatten_model(), FrozenLength(), inputs={"x": np.zeros((1, 3, 4), np.float32)}, sweep=True)


def test_cli_sweep_exit_code_and_json(tmp_path: Path) -> None:
    onnx.save(_flatten_model(), tmp_path / "m.onnx")
    torch.save(FrozenLength(), tmp_path / "frozen.pt")
    result = runner.invoke(app, ["validate", str(tmp_path / "m.onnx"), str(tmp_path / "frozen.pt"), "--sweep",
                                 "-n", "1", "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 1, result.output
    assert "size sweep" in result.output and "ERROR" in result.output
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["passed"] is False
    assert [p["status"] for p in record["sweep"]] == ["passed"] * 3 + ["error"] * 4
    result = runner.invoke(app, ["validate", str(tmp_path / "m.onnx"), str(tmp_path / "frozen.pt"), "--sweep",
                                 "--inputs", str(tmp_path / "m.json")])
    assert result.exit_code == 2 and "a size sweep generates its inputs" in result.output


def test_pipeline_report_records_the_sweep(tmp_path: Path) -> None:
    onnx.save(_flatten_model(), tmp_path / "m.onnx")
    report = run_model(tmp_path / "m.onnx", tmp_path / "out", PipelineOptions(samples=1, sweep=True,
                                                                              traceability=False))
    jsonschema.validate(report, schema())
    assert [p["status"] for p in report["accuracy"]["sweep"]] == ["passed"] * 7
    markdown = render_markdown(report)
    assert "### Size sweep" in markdown and "| L | 97 | x [2, 3, 97] | 0 | pass |" in markdown
