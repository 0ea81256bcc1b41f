"""The public conversion API: GraphModule, origins, saved outputs, sanitised names, failure modes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from support import check_conversion, ort_run, relative_error_percent

from onnx2fx import OnnxToFxConverter, UnsupportedOperatorError, convert_onnx_to_fx
from onnx2fx.conversion_record import ParameterOrigin, conversion_record

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"


def _mlp(rng: np.random.Generator, name_prefix: str = "") -> onnx.ModelProto:
    w1 = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), f"{name_prefix}w1")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), f"{name_prefix}b1")
    w2 = numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32), f"{name_prefix}w2")
    nodes = [
        helper.make_node("Gemm", ["x", f"{name_prefix}w1", f"{name_prefix}b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        helper.make_node("Gemm", ["r", f"{name_prefix}w2"], ["y"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [w1, b1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_example_model_converts_with_parity_and_origins() -> None:
    rng = np.random.default_rng(0)
    feeds = {"image": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}
    gm = check_conversion(EXAMPLE, feeds)
    computing = [n for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    assert computing and all("onnx_node" in n.meta for n in computing)
    convs = [n for n in computing if n.meta["onnx_op_type"] == "Conv"]
    assert len(convs) == 3 and all(isinstance(gm.get_submodule(n.target), torch.nn.Conv2d) for n in convs)
    assert [n.meta["onnx_outputs"] for n in computing][-1] == ["logits"]


def test_convert_onnx_to_fx_accepts_proto_and_path_and_debug_prints(capsys: pytest.CaptureFixture[str]) -> None:
    proto = onnx.load(str(EXAMPLE))
    x = torch.randn(2, 3, 32, 32)
    from_proto = convert_onnx_to_fx(proto)
    from_path = convert_onnx_to_fx(str(EXAMPLE), debug=True)
    assert "graph():" in capsys.readouterr().out
    torch.testing.assert_close(from_proto(x), from_path(x), rtol=0, atol=0)


def test_gemm_becomes_linear_with_initializer_mapping(tmp_path: Path) -> None:
    model = _mlp(np.random.default_rng(1))
    converter = OnnxToFxConverter(model)
    gm = converter.convert()
    assert isinstance(gm.fc1, torch.nn.Linear) and gm.fc1.in_features == 4 and gm.fc1.out_features == 8
    assert isinstance(gm.fc2, torch.nn.Linear) and gm.fc2.bias is None
    record = converter.conversion_record()
    assert record["parameters"]["fc1.weight"] == {"initializer": "w1", "transform": None, "shape": [8, 4],
                                                 "dtype": "torch.float32"}
    assert record["parameters"]["fc1.bias"]["initializer"] == "b1"
    assert record["modules"] == {"fc1": "fc1", "fc2": "fc2"}
    assert record["tensors"]["y"] != ""
    phases = record["phase_seconds"]  # where the conversion's time went
    assert list(phases) == ["read", "weights", "lower", "render", "instantiate", "trace"]
    assert all(v >= 0 for v in phases.values()) and phases["lower"] > 0 and phases["trace"] > 0
    assert sum(phases.values()) <= record["conversion_seconds"] + 0.001  # each rounded to 0.1 ms


def test_save_writes_standalone_model_py(tmp_path: Path) -> None:
    converter = OnnxToFxConverter(EXAMPLE)
    gm = converter.convert()
    paths = converter.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(paths)
    source = paths["model.py"].read_text()
    imported = {a.name.split(".")[0] for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(ast.parse(source))
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported == {"json", "mmap", "os", "torch"}
    x = torch.randn(3, 3, 32, 32)
    np.save(tmp_path / "x.npy", x.numpy())
    expected = gm(x).detach().numpy()
    # A fresh interpreter where onnx2fx cannot be imported loads model.py + weights.safetensors.
    script = (
        "import sys, importlib.util, numpy as np, torch\n"
        "sys.modules['onnx2fx'] = None; sys.modules['safetensors'] = None\n"
        f"spec = importlib.util.spec_from_file_location('model', {str(paths['model.py'])!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"y = m.load_model()(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r})))\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, y.detach().numpy())\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)
    full = torch.load(paths["model_full.pt"], weights_only=False)
    np.testing.assert_array_equal(full(x).detach().numpy(), expected)
    assert conversion_record(full).source == str(EXAMPLE)
    from safetensors.torch import load_file  # the reference reader agrees with our streaming writer

    weights = load_file(str(paths["weights.safetensors"]))
    assert sorted(weights) == sorted(gm.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in gm.state_dict().items())
    assert conversion_record(full).parameters["head.weight"] == ParameterOrigin("head.weight", transform=None)
    record = json.loads(paths["conversion.json"].read_text())
    assert record["inputs"] == ["image"] and record["outputs"] == ["logits"]
    assert record["op_counts"]["Conv"] == 3


def test_failed_conversion_leaves_no_output(tmp_path: Path) -> None:
    node = helper.make_node("ImageDecoder", ["encoded"], ["image"], name="decoder")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("encoded", TensorProto.UINT8, [64])],
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, [None, None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    converter = OnnxToFxConverter(model)
    with pytest.raises(UnsupportedOperatorError) as info:
        converter.save(tmp_path / "out")
    assert str(info.value) == "node 'decoder': operator ImageDecoder (domain 'ai.onnx', opset 20) is not supported"
    assert (info.value.node, info.value.op_type, info.value.opset) == ("decoder", "ImageDecoder", 20)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_folder_is_updated_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    OnnxToFxConverter(EXAMPLE).save(out)
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "model.py").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_hostile_names_never_become_code(tmp_path: Path) -> None:
    evil = 'x"]); import os; os.system("touch PWNED") #\n\tdel self'
    rng = np.random.default_rng(2)
    model = _mlp(rng, name_prefix=evil)
    for node in model.graph.node:
        node.name = evil + node.name
    model.graph.input[0].name = evil
    model.graph.node[0].input[0] = evil
    model.graph.node[1].output[0] = "class"
    model.graph.node[2].input[0] = "class"
    converter = OnnxToFxConverter(model)
    gm = converter.convert()
    converter.save(tmp_path / "out")
    source = (tmp_path / "out" / "model.py").read_text()
    tree = ast.parse(source)  # still valid Python; the names survive only as identifiers and comments
    assert not any(isinstance(n, ast.Attribute) and n.attr == "system" for n in ast.walk(tree))
    assert not any(isinstance(n, ast.Delete) for n in ast.walk(tree))
    assert all(part.isidentifier() for key in gm.state_dict() for part in key.split("."))
    assert not (tmp_path / "PWNED").exists()
    x = rng.standard_normal((5, 4)).astype(np.float32)
    expected = ort_run(model, {evil: x})[0]
    assert relative_error_percent(expected, gm(torch.from_numpy(x)).detach().numpy()) <= 1e-4


def test_unsorted_graph_converts() -> None:
    model = _mlp(np.random.default_rng(3))
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    x = np.random.default_rng(4).standard_normal((2, 4)).astype(np.float32)
    check_conversion(model, {"x": x})


def test_external_data_model_converts(tmp_path: Path) -> None:
    model = _mlp(np.random.default_rng(5))
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    assert (path.parent / "weights.bin").stat().st_size > 0
    x = np.random.default_rng(6).standard_normal((3, 4)).astype(np.float32)
    check_conversion(path, {"x": x})


def test_layers_named_like_module_attributes_do_not_replace_them() -> None:
    """A Gemm node called "forward" becomes a layer attribute; it must not shadow nn.Module.forward
    (found by the converter fuzz harness: the traced forward called itself)."""
    import torch
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 4], [0.1] * 8)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["forward"], name="forward", transB=1),
             helper.make_node("Relu", ["forward"], ["y"], name="training")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])
    gm = OnnxToFxConverter(model).convert()
    torch.testing.assert_close(gm(torch.ones(1, 4)), torch.full((1, 2), 0.4))
