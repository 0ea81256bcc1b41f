"""The round trip back to ONNX: convert, export with torch.onnx.export, compare with the source.

Each model has dynamic dimensions; the exported file must keep their names and the source's input
and output names, and match the source in onnxruntime at the base sizes and at a second size of
every dynamic dimension.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from support import convert_and_save
from typer.testing import CliRunner

from onnx2fx import ExportError, export_onnx
from onnx2fx.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
GATE_PERCENT = 1e-4


class _Cnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv1(x)))
        y = torch.nn.functional.max_pool2d(torch.relu(self.conv2(y)), 2)
        return torch.softmax(self.fc(y.mean((2, 3))), -1)


class _Segmenter(torch.nn.Module):
    """Dynamic height and width: convolutions, a strided downsample and a resize back up."""

    def __init__(self) -> None:
        super().__init__()
        self.down = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.head = torch.nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(torch.relu(self.down(x)))
        return torch.nn.functional.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)


class _Recurrent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 8, batch_first=True)
        self.gru = torch.nn.GRU(8, 6, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, _ = self.lstm(x)
        z, h = self.gru(y)
        return z, h


def _source(tmp_path: Path, module: torch.nn.Module, example: torch.Tensor, axes: dict[str, dict[int, str]],
            outputs: list[str]) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "source.onnx"
    torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, opset_version=17, input_names=["pixels"],
                      output_names=outputs, dynamic_axes=axes)
    return path


def _dims(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _roundtrip(tmp_path: Path, source: Path, **kwargs: object) -> tuple[onnx.ModelProto, object]:
    out = tmp_path / "converted"
    convert_and_save(source, out)
    result = export_onnx(out, tmp_path / "exported.onnx", **kwargs)
    exported = onnx.load(str(tmp_path / "exported.onnx"))
    original = onnx.load(str(source))
    assert [v.name for v in exported.graph.input] == [v.name for v in original.graph.input]
    assert [v.name for v in exported.graph.output] == [v.name for v in original.graph.output]
    for mine, theirs in zip(exported.graph.input, original.graph.input):
        assert _dims(mine) == _dims(theirs)
    ran = [c for c in result.checks if c.relative_error is not None]
    assert len(ran) == len(result.checks) == 1 + len({p for a in result.dynamic_dims.values() for p in a.values()})
    assert result.relative_error <= GATE_PERCENT, result.checks
    assert not list(tmp_path.glob(".exported.onnx.*")), "temporary file left behind"
    return exported, result


def test_cnn_with_dynamic_batch(tmp_path: Path) -> None:
    source = _source(tmp_path, _Cnn(), torch.randn(2, 3, 16, 16), {"pixels": {0: "batch"}, "probs": {0: "batch"}},
                     ["probs"])
    exported, result = _roundtrip(tmp_path, source)
    assert result.exporter == "dynamo" and result.fallback_reason is None
    assert [c.label for c in result.checks] == ["base sizes", "batch=3"]
    assert result.checks[1].shapes == {"pixels": [3, 3, 16, 16]}
    assert _dims(exported.graph.output[0]) == ["batch", 5]


def test_dynamic_spatial_dims(tmp_path: Path) -> None:
    source = _source(tmp_path, _Segmenter(), torch.randn(1, 3, 20, 24),
                     {"pixels": {0: "n", 2: "height", 3: "width"}, "mask": {0: "n", 2: "height", 3: "width"}},
                     ["mask"])
    exported, result = _roundtrip(tmp_path, source, input_shapes={"pixels": [1, 3, 20, 24]})
    assert result.exporter == "dynamo"
    assert [c.label for c in result.checks] == ["base sizes", "n=3", "height=33", "width=33"]
    assert result.checks[2].shapes == {"pixels": [1, 3, 33, 24]}
    assert _dims(exported.graph.output[0]) == ["n", 2, "height", "width"]


def test_run_time_same_padding_and_an_output_named_like_an_exported_node(tmp_path: Path) -> None:
    """A Keras-style graph: SAME pooling over run-time sizes (its ceil division must stay exact at
    odd sizes once exported, where ONNX's integer Div truncates) and an output called ``conv2d``,
    the name the dynamo exporter gives its first convolution."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["pixels", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
         helper.make_node("Relu", ["p"], ["conv2d"])],
        "keras_like", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, "height", "width"])],
        [helper.make_tensor_value_info("conv2d", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = tmp_path / "source.onnx"
    onnx.save(model, str(source))
    _, result = _roundtrip(tmp_path, source, input_shapes={"pixels": [1, 3, 20, 24]})
    assert result.exporter == "dynamo"
    assert [c.label for c in result.checks] == ["base sizes", "n=3", "height=33", "width=33"]


def test_paddle_style_unknown_sizes(tmp_path: Path) -> None:
    """paddle2onnx writes an unknown batch as ``dim_value: -1`` and every unknown spatial size as
    ``dim_param: "?"``: all three are dynamic, and the two ``?`` are not one size."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    pixels = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "paddle_like", [pixels], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = tmp_path / "source.onnx"
    onnx.save(model, str(source))
    out = tmp_path / "converted"
    convert_and_save(source, out)
    result = export_onnx(out, tmp_path / "exported.onnx", input_shapes={"x": [1, 3, 20, 24]})
    assert result.dynamic_dims == {"x": {0: "x_dim0", 2: "x_dim2", 3: "x_dim3"}}
    assert [c.label for c in result.checks] == ["base sizes", "x_dim0=3", "x_dim2=33", "x_dim3=33"]
    assert result.relative_error <= GATE_PERCENT, result.checks
    session = ort.InferenceSession(str(tmp_path / "exported.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((2, 3, 17, 9), np.float32)})[0].shape == (2, 4, 17, 9)


def test_lstm_and_gru_with_the_torchscript_exporter(tmp_path: Path) -> None:
    source = _source(tmp_path, _Recurrent(), torch.randn(2, 7, 4), {"pixels": {0: "batch"}}, ["sequence", "state"])
    _, result = _roundtrip(tmp_path, source, dynamo=False)
    assert result.exporter == "torchscript" and result.fallback_reason == "dynamo exporter not requested"
    assert [c.label for c in result.checks] == ["base sizes", "batch=3"]


def test_lstm_and_gru_with_dynamic_sequence_length(tmp_path: Path) -> None:
    source = _source(tmp_path, _Recurrent(), torch.randn(2, 7, 4), {"pixels": {0: "batch", 1: "steps"}},
                     ["sequence", "state"])
    _roundtrip(tmp_path, source, dynamo=False)


def test_the_torchscript_exporter_takes_over_when_dynamo_fails(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx2fx.export as export_module

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Constraints violated (batch)\nmore detail")

    monkeypatch.setattr(export_module, "_export_dynamo", refuse)
    source = _source(tmp_path, _Cnn(), torch.randn(2, 3, 16, 16), {"pixels": {0: "batch"}}, ["probs"])
    _, result = _roundtrip(tmp_path, source)
    assert result.exporter == "torchscript"
    assert result.fallback_reason == "RuntimeError: Constraints violated (batch)"


class _Attention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)
        self.out = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, -1)
        probs = torch.softmax(q @ k.transpose(-2, -1) * 0.25, -1)
        return self.out(probs @ v)


def test_a_fused_attention_from_an_opset_13_file_exports_at_opset_14(tmp_path: Path) -> None:
    """The TorchScript exporter writes F.scaled_dot_product_attention from opset 14 only: a source
    older than that is exported at 14 rather than failing."""
    torch.manual_seed(0)
    source = tmp_path / "source.onnx"
    torch.onnx.export(_Attention().eval(), (torch.randn(2, 5, 16),), str(source), dynamo=False, opset_version=13,
                      input_names=["tokens"], output_names=["y"], dynamic_axes={"tokens": {0: "batch", 1: "seq"}})
    exported, result = _roundtrip(tmp_path, source, dynamo=False)
    assert "scaled_dot_product_attention" in (tmp_path / "converted" / "model.py").read_text()
    assert result.exporter == "torchscript"
    assert next(o.version for o in exported.opset_import if o.domain in ("", "ai.onnx")) == 14


def test_zoo_mnist(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.zoo.registry import export_model

    source = export_model("mnist", tmp_path)
    _, result = _roundtrip(tmp_path, Path(source))
    assert result.checks[0].relative_error is not None


def test_cli_export_writes_the_file_and_reports_each_size(tmp_path: Path) -> None:
    source = _source(tmp_path, _Cnn(), torch.randn(2, 3, 16, 16), {"pixels": {0: "batch"}}, ["probs"])
    convert_and_save(source, tmp_path / "out")
    target = tmp_path / "back" / "model.onnx"
    run = CliRunner().invoke(app, ["export", str(tmp_path / "out"), "-o", str(target), "--json",
                                   str(tmp_path / "export.json")])
    assert run.exit_code == 0, run.output
    assert "batch=3" in run.output and "dynamo" in run.output
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"pixels": np.random.default_rng(0).standard_normal((4, 3, 16, 16), np.float32)})[0]
    assert probs.shape == (4, 5)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    import json

    record = json.loads((tmp_path / "export.json").read_text())
    assert record["exporter"] == "dynamo" and record["dynamic_dims"] == {"pixels": {"0": "batch"}}


def test_bad_input_is_a_typed_error_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(tmp_path / "missing", target)
    (tmp_path / "not_converted").mkdir()
    (tmp_path / "not_converted" / "model.py").write_text("")
    with pytest.raises(ExportError, match="is not an onnx2fx convert output folder: model_full.pt, "
                                          "conversion.json missing"):
        export_onnx(tmp_path / "not_converted", target)
    source = _source(tmp_path, _Cnn(), torch.randn(2, 3, 16, 16), {"pixels": {0: "batch"}}, ["probs"])
    convert_and_save(source, tmp_path / "out")
    moved = tmp_path / "elsewhere.onnx"
    source.rename(moved)
    with pytest.raises(ExportError, match="source ONNX model is needed"):
        export_onnx(tmp_path / "out", target)
    assert not target.exists() and not list(tmp_path.glob(".model.onnx.*"))
    run = CliRunner().invoke(app, ["export", str(tmp_path / "missing"), "-o", str(target)])
    assert run.exit_code == 2 and "ExportError" in run.output
    # with the source named explicitly the same folder exports
    result = export_onnx(tmp_path / "out", target, source=moved)
    assert target.is_file() and result.relative_error <= GATE_PERCENT


def test_a_tiny_epsilon_survives_export(tmp_path: Path) -> None:
    """``log(x * x + 1e-10)`` (basic-pitch's log-magnitude): the exporter's optimizer treats
    constants within 1e-8 of 0 as 0 and would drop the Add, so a silent input gives -inf."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["square"]), helper.make_node("Add", ["square", "eps"], ["power"]),
         helper.make_node("Log", ["power"], ["y"])],
        "log_power", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(np.array(1e-10, np.float32), "eps")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = tmp_path / "source.onnx"
    onnx.save(model, str(source))
    out = tmp_path / "converted"
    convert_and_save(source, out)
    export_onnx(out, tmp_path / "exported.onnx", input_shapes={"x": [2, 4]})
    exported = onnx.load(str(tmp_path / "exported.onnx"))
    assert [n.op_type for n in exported.graph.node] == ["Mul", "Add", "Log"]
    silent = np.zeros((3, 4), np.float32)
    session = ort.InferenceSession(str(tmp_path / "exported.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": silent})[0], np.full((3, 4), np.log(np.float32(1e-10))),
                               rtol=1e-6)
