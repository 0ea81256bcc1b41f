"""ONNX If on a condition known only at run time whose branches hold weights of their own (a
network per branch, as silero-vad has one per sample rate): each branch becomes a generated
``nn.Module`` held by the model, and only the chosen one runs, in eager mode, after
``torch.fx.symbolic_trace``, under ``torch.compile`` and, through ``torch.cond``, in ``torch.export``
and the ONNX it writes back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.fx
from onnx import TensorProto, helper, numpy_helper
from support import ort_run

from onnx2fx import OnnxToFxConverter
from onnx2fx.export import export_onnx

RNG = np.random.default_rng(7)
SIZES = ((2, 3, 20), (3, 3, 37))
RATES = (16000, 8000)


def _conv_if_model() -> onnx.ModelProto:
    """``if rate == 16000: Conv(k=3, pad 1) else: Conv(k=5, stride 2)``: weights of each branch's own
    (a Constant node in one, a branch initializer in the other), outputs of different lengths."""
    then_weight = numpy_helper.from_array(RNG.standard_normal((4, 3, 3)).astype(np.float32), "then_weight")
    then_bias = numpy_helper.from_array(RNG.standard_normal(4).astype(np.float32), "then_bias")
    else_weight = numpy_helper.from_array(RNG.standard_normal((4, 3, 5)).astype(np.float32), "else_weight")
    then = helper.make_graph([helper.make_node("Constant", [], ["w16"], value=then_weight),
                              helper.make_node("Constant", [], ["b16"], value=then_bias),
                              helper.make_node("Conv", ["x", "w16", "b16"], ["y16"], pads=[1, 1])],
                             "then", [], [helper.make_tensor_value_info("y16", TensorProto.FLOAT, ["N", 4, "T"])])
    other = helper.make_graph([helper.make_node("Conv", ["x", "else_weight"], ["y8"], strides=[2])],
                              "else", [], [helper.make_tensor_value_info("y8", TensorProto.FLOAT, ["N", 4, "E"])],
                              [else_weight])
    nodes = [helper.make_node("Equal", ["rate", "sixteen_k"], ["is_16k"]),
             helper.make_node("If", ["is_16k"], ["y"], name="rate_if", then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "L"]),
                                           helper.make_tensor_value_info("rate", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "Y"])],
                              [numpy_helper.from_array(np.array(16000, np.int64), "sixteen_k")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(shape: tuple[int, ...], rate: int) -> dict[str, np.ndarray]:
    return {"x": RNG.standard_normal(shape).astype(np.float32), "rate": np.array(rate, np.int64)}


def _run(module: torch.nn.Module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return module(*(torch.from_numpy(a) for a in feeds.values())).numpy()


@pytest.fixture(scope="module")
def converted() -> tuple[onnx.ModelProto, torch.fx.GraphModule, str]:
    model = _conv_if_model()
    converter = OnnxToFxConverter(model)
    return model, converter.convert(), converter.source_code


def test_only_the_chosen_branch_runs_and_equals_onnxruntime(converted) -> None:
    model, gm, source = converted
    assert "class _then_branch_layer(nn.Module):" in source and "class _else_branch_layer(nn.Module):" in source
    assert "torch.where" not in source
    assert "y = _if(is_16k, self.rate_if_then_branch, self.rate_if_else_branch, x, x)" in source
    lengths = set()
    for shape in SIZES:
        for rate in RATES:
            feeds = _feeds(shape, rate)
            expected = ort_run(model, feeds)[0]
            produced = _run(gm, feeds)
            assert produced.shape == expected.shape
            np.testing.assert_allclose(produced, expected, rtol=1e-5, atol=1e-5)
            lengths.add(produced.shape[2])
    assert lengths == {20, 8, 37, 17}  # (L + 2 - 3) + 1 and (L - 5) // 2 + 1


def test_branch_weights_are_trainable_parameters_of_the_model(converted) -> None:
    """The weights belong to the branch modules: parameters of the whole model, in its state dict;
    a backward step reaches the branch that ran and leaves the other without a gradient."""
    _, gm, _ = converted
    names = ["rate_if_then_branch.conv.weight", "rate_if_then_branch.conv.bias", "rate_if_else_branch.conv.weight"]
    assert [n for n, _ in gm.named_parameters()] == names
    assert list(gm.state_dict()) == names
    model = OnnxToFxConverter(_conv_if_model()).convert().train()
    out = model(torch.randn(2, 3, 20), torch.tensor(8000))
    out.square().mean().backward()
    grads = {n: p.grad is not None for n, p in model.named_parameters()}
    assert grads == {names[0]: False, names[1]: False, names[2]: True}


def test_symbolic_trace_records_one_call_with_the_branch_modules(converted) -> None:
    model, gm, _ = converted
    traced = torch.fx.symbolic_trace(gm)
    calls = [(n.op, str(n.target)) for n in traced.graph.nodes if n.op in ("call_function", "get_attr")]
    assert [op for op, _ in calls] == ["call_function", "get_attr", "get_attr", "call_function"]
    assert calls[1][1] == "rate_if_then_branch" and calls[2][1] == "rate_if_else_branch"
    for rate in RATES:
        feeds = _feeds(SIZES[1], rate)
        np.testing.assert_allclose(_run(traced, feeds), ort_run(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_torch_compile_runs_the_chosen_branch(converted) -> None:
    model, gm, _ = converted
    compiled = torch.compile(gm, backend="aot_eager")
    for shape in SIZES:
        for rate in RATES:
            feeds = _feeds(shape, rate)
            np.testing.assert_allclose(_run(compiled, feeds), ort_run(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_torch_export_takes_either_branch_through_torch_cond(converted) -> None:
    model, gm, _ = converted
    dims = ({0: torch.export.Dim("n", max=64), 2: torch.export.Dim("l", min=8, max=4096)}, None)
    program = torch.export.export(gm, (torch.randn(2, 3, 20), torch.tensor(16000)), dynamic_shapes=dims)
    assert [n.target for n in program.graph.nodes if n.op == "call_function"].count(torch.ops.higher_order.cond) == 1
    for shape in SIZES:
        for rate in RATES:
            feeds = _feeds(shape, rate)
            produced = _run(program.module(), feeds)
            np.testing.assert_allclose(produced, ort_run(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_export_back_to_onnx_writes_an_if(converted, tmp_path: Path) -> None:
    model, gm, _ = converted
    source = tmp_path / "rate_if.onnx"
    onnx.save(model, str(source))
    result = export_onnx(gm, tmp_path / "back.onnx", source=source)
    assert (result.exporter, result.fallback_reason) == ("dynamo", None)
    assert result.relative_error < 1e-4
    back = onnx.load(str(result.path))
    assert "If" in [n.op_type for n in back.graph.node]
    for shape in SIZES:
        for rate in RATES:
            feeds = _feeds(shape, rate)
            np.testing.assert_allclose(ort_run(back, feeds)[0], ort_run(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_torch_jit_trace_is_refused_rather_than_keeping_one_branch(converted) -> None:
    _, gm, _ = converted
    with pytest.raises(RuntimeError, match="^ONNX If 'rate_if': torch.jit.trace would record only the branch that "
                                           "these inputs take$"):
        torch.jit.trace(gm, (torch.randn(2, 3, 20), torch.tensor(16000)))


def test_saved_model_py_loads_both_branches(converted, tmp_path: Path) -> None:
    """model.py and weights.safetensors alone (no onnx2fx) give the same model."""
    model = _conv_if_model()
    converter = OnnxToFxConverter(model)
    converter.convert()
    converter.save(tmp_path / "out")
    spec = importlib.util.spec_from_file_location("saved_rate_if", tmp_path / "out" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loaded = module.load_model()
    for rate in RATES:
        feeds = _feeds(SIZES[0], rate)
        np.testing.assert_allclose(_run(loaded, feeds), ort_run(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_branches_reading_the_models_weights_stay_on_torch_where() -> None:
    """Branches without weights of their own (they read the model's initializer) are cheap to run
    both: straight-line code with ``torch.where``, as before."""
    weight = numpy_helper.from_array(RNG.standard_normal((3, 3)).astype(np.float32), "weight")
    then = helper.make_graph([helper.make_node("MatMul", ["x", "weight"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 3])])
    other = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["N", 3])])
    graph = helper.make_graph([helper.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
                               helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    converter = OnnxToFxConverter(model)
    gm = converter.convert()
    assert "torch.where" in converter.source_code and "nn.Module):" not in converter.source_code.split("class Model")[0]
    for flag in (True, False):
        feeds = {"x": RNG.standard_normal((4, 3)).astype(np.float32), "flag": np.array(flag)}
        np.testing.assert_allclose(_run(gm, feeds), ort_run(model, feeds)[0], rtol=1e-5, atol=1e-6)


def _lstm_branch(name: str, hidden: int) -> onnx.GraphProto:
    gates = 4 * hidden
    w = numpy_helper.from_array(RNG.standard_normal((1, gates, 3)).astype(np.float32) * 0.5, f"{name}_w")
    r = numpy_helper.from_array(RNG.standard_normal((1, gates, hidden)).astype(np.float32) * 0.5, f"{name}_r")
    return helper.make_graph([helper.make_node("LSTM", ["x", f"{name}_w", f"{name}_r"], [f"{name}_y"],
                                               hidden_size=hidden)],
                             name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT,
                                                                      [5, 1, "N", hidden])], [w, r])


def test_recurrent_layers_in_branches_export_through_torch_cond() -> None:
    """nn.LSTM in a branch: torch.cond traces it under torch.export (recurrent layers refresh their
    flat weights outside the branch, and Dynamo is allowed to trace them)."""
    graph = helper.make_graph([helper.make_node("If", ["flag"], ["y"], name="pick", then_branch=_lstm_branch("a", 4),
                                                else_branch=_lstm_branch("b", 6))], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "N", 3]),
                               helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 1, "N", "H"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    converter = OnnxToFxConverter(model)
    gm = converter.convert()
    assert "self.lstm = nn.LSTM(3, 4, bias=False)" in converter.source_code
    assert "self.lstm = nn.LSTM(3, 6, bias=False)" in converter.source_code
    x = RNG.standard_normal((5, 2, 3)).astype(np.float32)
    program = torch.export.export(gm, (torch.from_numpy(x), torch.tensor(True)),
                                  dynamic_shapes=({1: torch.export.Dim("n", max=64)}, None))
    for batch in (2, 3):
        for flag in (True, False):
            feeds = {"x": RNG.standard_normal((5, batch, 3)).astype(np.float32), "flag": np.array(flag)}
            expected = ort_run(model, feeds)[0]
            assert expected.shape == (5, 1, batch, 4 if flag else 6)
            np.testing.assert_allclose(_run(gm, feeds), expected, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(_run(program.module(), feeds), expected, rtol=1e-5, atol=1e-5)


def test_traceability_report_counts_the_branch_not_taken_as_not_run(converted) -> None:
    """The training check of the report: the weights of the branch these inputs do not take get
    no gradient, and are counted apart instead of failing it."""
    from onnx2fx.fx_tracer import check_traceability

    _, gm, _ = converted
    report = check_traceability(gm, (torch.randn(2, 3, 20), torch.tensor(8000)), dynamic_batch=False, compile=False)
    assert (report.symbolic_trace.ok, report.export_static.ok, report.backward.ok) == (True, True, True)
    assert report.backward.detail == "1 parameters receive gradients (2 more in modules these inputs do not run)"


def test_a_one_channel_bias_read_by_a_branch_stays_a_parameter(tmp_path: Path) -> None:
    """A learned one-element initializer of the outer graph (a one-channel Conv's bias) reaches the
    branch as the model's parameter, not as a literal copied into the branch: it trains, and the
    dynamo exporter, which cannot lift a tensor literal inside a torch.cond branch, writes the file."""
    weight = numpy_helper.from_array(RNG.standard_normal((1, 3, 3)).astype(np.float32), "head.weight")
    bias = numpy_helper.from_array(np.array([-0.25], np.float32), "head.bias")
    then = helper.make_graph([helper.make_node("Conv", ["x", "head.weight", "head.bias"], ["t"], pads=[1, 1])],
                             "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 1, "L"])])
    other = helper.make_graph([helper.make_node("Conv", ["x", "head.weight", "head.bias"], ["e"], strides=[2])],
                              "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["N", 1, "E"])])
    nodes = [helper.make_node("Equal", ["rate", "sixteen_k"], ["is_16k"]),
             helper.make_node("If", ["is_16k"], ["y"], name="rate_if", then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "L"]),
                                           helper.make_tensor_value_info("rate", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "Y"])],
                              [weight, bias, numpy_helper.from_array(np.array(16000, np.int64), "sixteen_k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    converter = OnnxToFxConverter(model)
    gm = converter.convert()
    assert "torch.tensor([" not in converter.source_code
    assert sorted(n for n, _ in gm.named_parameters()) == ["head_bias", "head_weight"]
    source = tmp_path / "bias_if.onnx"
    onnx.save(model, str(source))
    result = export_onnx(gm, tmp_path / "back.onnx", source=source)
    assert (result.exporter, result.fallback_reason) == ("dynamo", None)
    back = onnx.load(str(result.path))
    for shape in SIZES:
        for rate in RATES:
            feeds = _feeds(shape, rate)
            expected = ort_run(model, feeds)[0]
            np.testing.assert_allclose(_run(gm, feeds), expected, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ort_run(back, feeds)[0], expected, rtol=1e-5, atol=1e-5)
