"""Operator gap analysis (scan_onnx_operators, `onnx2fx analyze`) and the extension decorators."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from onnx2fx import OnnxToFxConverter, add_converter, onnx_op, scan_onnx_operators
from onnx2fx.cli import app
from onnx2fx.ops import registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"


def _model(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto] | None = None,
           opsets: dict[str, int] | None = None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializers or [])
    imports = [helper.make_opsetid(d, v) for d, v in (opsets or {"": 17}).items()]
    return helper.make_model(graph, opset_imports=imports)


def _mixed_model() -> onnx.ModelProto:
    """relu -> custom op (unknown domain) -> sigmoid; a bit shift with an unsupported attribute value."""
    return _model([
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Mystery", ["a"], ["b"], name="mystery", domain="com.example", alpha=2.0),
        helper.make_node("Sigmoid", ["b"], ["c"], name="after_mystery"),
        helper.make_node("BitShift", ["a", "a"], ["d"], name="shift_up", direction="UP"),
        helper.make_node("Add", ["c", "a"], ["y"], name="add"),
    ], opsets={"": 20, "com.example": 1})


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = {key: list(impls) for key, impls in registry._TABLE.items()}
    yield
    registry._TABLE.clear()
    registry._TABLE.update(saved)


def test_fully_supported_model() -> None:
    report = scan_onnx_operators(EXAMPLE)
    assert report.coverage_percent == 100.0 and report.fully_supported
    assert report.op_counts == {"Conv": 3, "Relu": 3, "Add": 1, "Gemm": 1, "MaxPool": 1, "ReduceMean": 1}
    assert {s.status for s in report.operators} == {"supported"}
    assert report.unsupported_nodes == {}


def test_unknown_domain_and_attribute_value_are_reported_per_node() -> None:
    report = scan_onnx_operators(_mixed_model())
    assert report.total_nodes == 5 and report.supported_nodes == 3
    assert report.coverage_percent == pytest.approx(60.0)
    assert report.unsupported_nodes == {"com.example::Mystery": ["mystery"], "BitShift": ["shift_up"]}
    by_name = {n.name: n for n in report.nodes}
    assert by_name["mystery"].reason == "no converter for Mystery in domain 'com.example' at opset 1"
    # The reason names the attribute and its value.
    assert by_name["shift_up"].reason.startswith("BitShift direction=UP: attribute direction")
    assert "'UP'" in by_name["shift_up"].reason
    # Nodes fed by an unconvertible node are checked statically: op registered, attributes handled.
    assert by_name["after_mystery"].checked == "static"
    assert by_name["after_mystery"].status == "supported with caveat"
    assert by_name["add"].checked == "static"
    assert by_name["relu"].status == "supported" and by_name["relu"].checked == "lowered"


def test_static_check_names_unhandled_attribute() -> None:
    report = scan_onnx_operators(_model([
        helper.make_node("Mystery", ["x"], ["a"], name="mystery", domain="com.example"),
        helper.make_node("Relu", ["a"], ["y"], name="relu", bogus=3),
    ], opsets={"": 17, "com.example": 1}))
    relu = report.nodes[1]
    assert relu.checked == "static" and relu.status == "unsupported"
    assert relu.reason == "attribute bogus=3 is not handled"


def test_report_formats() -> None:
    report = scan_onnx_operators(_mixed_model())
    record = report.to_dict()
    json.dumps(record)
    assert record["coverage_percent"] == 60.0 and record["total_nodes"] == 5
    ops = {o["op_type"]: o for o in record["operators"]}
    assert ops["Mystery"]["domain"] == "com.example" and ops["Mystery"]["status"] == "unsupported"
    assert ops["Relu"]["status"] == "supported" and ops["Relu"]["count"] == 1
    assert ops["BitShift"]["reasons"][0]["nodes"] == ["shift_up"]
    text = report.to_markdown()
    assert "**60.0 %**" in text and "| Mystery | com.example | 1 | unsupported |" in text
    assert "### com.example::Mystery" in text and "`mystery`" in text


def test_function_body_conversion_is_a_caveat() -> None:
    """An op converted through its ONNX function body (no direct lowering) says so."""
    model = _model([helper.make_node("Shrink", ["x"], ["y"], name="shrink", lambd=1.5, bias=0.5)],
                   opsets={"": 18})
    saved = registry._TABLE.pop(("", "Shrink"))
    try:
        node = scan_onnx_operators(model).nodes[0]
    finally:
        registry._TABLE[("", "Shrink")] = saved
    assert node.status == "supported with caveat" and "function body" in node.reason


def test_matches_what_convert_does() -> None:
    """A node that converts only when its input is a constant is judged exactly as convert does."""
    shape = numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape")
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")], [shape])
    assert scan_onnx_operators(model).fully_supported
    OnnxToFxConverter(model).convert()


def test_weights_are_never_read(tmp_path: Path) -> None:
    """A 512 MB external weight that is all holes: scanning must not touch its pages."""
    size = 1 << 27  # float32 elements
    weight = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[size // 1024, 1024])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(size * 4))):
        weight.external_data.add(key=key, value=value)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", size // 1024])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx")
    with open(tmp_path / "w.bin", "wb") as f:
        f.truncate(size * 4)  # sparse: reading it would fault in 512 MB of zero pages
    script = textwrap.dedent(f"""
        import resource
        from onnx2fx import scan_onnx_operators
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report = scan_onnx_operators({str(tmp_path / "big.onnx")!r})
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert report.fully_supported, report.to_markdown()
        print(grown // 1024)
    """)
    grown_mb = int(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                                  text=True).stdout.split()[-1])
    assert grown_mb < 128


# ---------------------------------------------------------------------------------- extension API
def test_onnx_op_registers_custom_domain(clean_registry: None) -> None:
    @onnx_op("Mystery", since_version=1, domain="com.example")
    def mystery(g, x, *, alpha: float = 1.0):
        return g.call("torch.mul", x, alpha)

    model = _mixed_model()
    model.graph.node.remove(model.graph.node[3])  # drop the BitShift
    report = scan_onnx_operators(model)
    assert report.fully_supported and report.coverage_percent == 100.0
    gm = OnnxToFxConverter(model).convert()
    x = torch.randn(2, 3, 8, 8)
    a = torch.relu(x)
    torch.testing.assert_close(gm(x), torch.sigmoid(a * 2.0) + a)


def test_add_converter_onnx2torch_style(clean_registry: None) -> None:
    @add_converter(operation_type="Mystery", version=1, domain="com.example")
    def mystery(g, x, **attributes):
        return g.call("torch.mul", x, float(attributes.get("alpha", 1.0)))

    model = _model([helper.make_node("Mystery", ["x"], ["y"], domain="com.example", alpha=3.0)],
                   opsets={"": 17, "com.example": 1})
    assert scan_onnx_operators(model).fully_supported
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(OnnxToFxConverter(model).convert()(x), x * 3.0)


def test_add_converter_overrides_builtin_for_newer_opsets(clean_registry: None) -> None:
    @add_converter(operation_type="Relu", version=14)
    def relu_as_clamp(g, x):
        return g.call("torch.clamp", x, min=0.0)

    model = _model([helper.make_node("Relu", ["x"], ["y"])], opsets={"": 17})
    converter = OnnxToFxConverter(model)
    converter.convert()
    assert "torch.clamp(" in converter.source_code
    old = _model([helper.make_node("Relu", ["x"], ["y"])], opsets={"": 13})
    old_converter = OnnxToFxConverter(old)
    old_converter.convert()
    assert "torch.relu(" in old_converter.source_code


# ---------------------------------------------------------------------------------- CLI
runner = CliRunner()


def test_cli_analyze_writes_reports_and_exits_0_with_unsupported_ops(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_mixed_model(), path)
    md, js = tmp_path / "operator_report.md", tmp_path / "report.json"
    result = runner.invoke(app, ["analyze", str(path), "-o", str(md), "--json", str(js)])
    assert result.exit_code == 0, result.output
    assert "3/5 nodes convert" in result.output
    assert "Mystery" in md.read_text()
    assert json.loads(js.read_text())["unsupported_nodes"]["BitShift"] == ["shift_up"]


def test_cli_analyze_bad_input_is_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    result = runner.invoke(app, ["analyze", str(bad), "-o", str(tmp_path / "r.md")])
    assert result.exit_code == 2 and "ModelFormatError" in result.output
    result = runner.invoke(app, ["analyze", str(tmp_path / "missing.onnx")])
    assert result.exit_code == 2 and "does not exist" in result.output
