"""Memory safety of the zero-copy path: arrays and parameters that view the model's memory map
keep it alive after the model is gone, and writing to them never reaches the source files
(the maps are private and copy-on-write). The same drop-the-model-then-read check runs in C++ under
AddressSanitizer (cpp/tests/zero_copy_test.cc, via tests/test_core_sanitizers.py)."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data

from onnx2fx import OnnxToFxConverter, _core


def _linear_model(weights: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weights, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _save_external(model: onnx.ModelProto, path: Path) -> None:
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    onnx.save(model, path)


def test_external_data_views_outlive_the_model_and_writes_stay_private(tmp_path: Path):
    weights = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)
    path = tmp_path / "model.onnx"
    _save_external(_linear_model(weights), path)
    original = (tmp_path / "w.bin").read_bytes()

    model = _core.load_model(str(path))
    view = model.graph.initializers[0].numpy()
    del model
    gc.collect()
    np.testing.assert_array_equal(view, weights)  # the view holds the external file's map
    view[:] = -3.0
    assert (view == -3.0).all()
    assert (tmp_path / "w.bin").read_bytes() == original
    assert _core.load_model(str(path)).graph.initializers[0].numpy()[0, 0] == 0.0  # a fresh map sees the file


def test_training_the_converted_model_never_writes_the_source(tmp_path: Path):
    rng = np.random.default_rng(1)
    weights = rng.standard_normal((64, 16)).astype(np.float32)
    for external in (False, True):
        folder = tmp_path / ("external" if external else "embedded")
        folder.mkdir()
        path = folder / "model.onnx"
        if external:
            _save_external(_linear_model(weights), path)
        else:
            onnx.save(_linear_model(weights), path)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}

        converter = OnnxToFxConverter(path)
        gm = converter.convert()
        del converter
        gc.collect()
        parameter = next(gm.parameters())  # nn.Linear's weight: the initializer, transposed (a view)
        np.testing.assert_array_equal(parameter.detach().numpy().T, weights)
        optimizer = torch.optim.SGD(gm.parameters(), lr=0.5)
        x = torch.ones(1, 64)
        gm.train()
        gm(x).sum().backward()
        optimizer.step()
        with torch.no_grad():
            parameter.add_(1.0)  # an in-place write through the view
        assert not np.array_equal(parameter.detach().numpy().T, weights)
        np.testing.assert_allclose(gm(x).detach().numpy(), x.numpy() @ parameter.detach().numpy().T, rtol=1e-5)
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, external
