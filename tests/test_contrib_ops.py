"""onnxruntime's com.microsoft operators, each converted and compared with onnxruntime's CPU kernel."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.fx
from onnx import TensorProto, helper

from onnx2fx import OnnxToFxConverter

MS = "com.microsoft"
rng = np.random.default_rng(0)


def _f(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _check(op: str, inputs: dict[str, np.ndarray], n_outputs: int = 1, domain: str = MS, atol: float = 1e-5,
           opset: int = 17, **attrs: object) -> None:
    infos = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
             for name, a in inputs.items()]
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(n_outputs)]
    node = helper.make_node(op, list(inputs), [f"y{i}" for i in range(n_outputs)], domain=domain, **attrs)
    model = helper.make_model(helper.make_graph([node], "g", infos, outs),
                              opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, inputs)
    gm = OnnxToFxConverter(model).convert()
    with torch.no_grad():
        produced = gm(*[torch.from_numpy(a) for a in inputs.values()])
    produced = list(produced) if isinstance(produced, (tuple, list)) else [produced]
    for ref, out in zip(expected, produced):
        np.testing.assert_allclose(out.numpy(), ref.reshape(out.shape) if ref.size == out.numel() else ref,
                                   rtol=1e-4, atol=atol)
    torch.fx.symbolic_trace(gm)


def test_gelu() -> None:
    _check("Gelu", {"x": _f(2, 4, 8)})


def test_fast_gelu_with_bias() -> None:
    _check("FastGelu", {"x": _f(2, 4, 8), "bias": _f(8)})


def test_bias_gelu() -> None:
    _check("BiasGelu", {"a": _f(2, 4, 8), "b": _f(8)})


def test_quick_gelu() -> None:
    _check("QuickGelu", {"x": _f(2, 4, 8)}, alpha=1.5)


def test_skip_layer_normalization_all_outputs() -> None:
    _check("SkipLayerNormalization", {"x": _f(2, 4, 8), "skip": _f(2, 4, 8), "gamma": _f(8), "beta": _f(8),
                                      "bias": _f(8)}, n_outputs=4, epsilon=1e-5)


def test_skip_simplified_layer_normalization() -> None:
    _check("SkipSimplifiedLayerNormalization", {"x": _f(2, 4, 8), "skip": _f(2, 4, 8), "gamma": _f(8)},
           epsilon=1e-5)


def test_layer_normalization_before_opset_17() -> None:
    """onnxruntime's LayerNormalization kernel, in models of opsets before ONNX defined the op."""
    _check("LayerNormalization", {"x": _f(2, 4, 8), "scale": _f(8), "bias": _f(8)}, n_outputs=3, domain="",
           opset=13, epsilon=1e-5)


def test_simplified_layer_normalization_default_domain() -> None:
    _check("SimplifiedLayerNormalization", {"x": _f(2, 4, 8), "scale": _f(8)}, domain="", epsilon=1e-5)


@pytest.mark.parametrize("trans", [(0, 0), (1, 0), (0, 1)])
def test_fused_matmul(trans: tuple[int, int]) -> None:
    a = _f(2, 8, 4) if trans[0] else _f(2, 4, 8)
    b = _f(2, 3, 8) if trans[1] else _f(2, 8, 3)
    _check("FusedMatMul", {"a": a, "b": b}, alpha=0.5, transA=trans[0], transB=trans[1])


def test_bias_add_matches_its_definition() -> None:
    """onnxruntime has no CPU kernel for BiasAdd: checked against x + bias + skip."""
    x, bias, skip = _f(2, 4, 8), _f(8), _f(2, 4, 8)
    infos = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
             for n, a in (("x", x), ("bias", bias), ("skip", skip))]
    node = helper.make_node("BiasAdd", ["x", "bias", "skip"], ["y"], domain=MS)
    model = helper.make_model(helper.make_graph([node], "g", infos, [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    out = OnnxToFxConverter(model).convert()(torch.from_numpy(x), torch.from_numpy(bias), torch.from_numpy(skip))
    np.testing.assert_allclose(out.numpy(), x + bias + skip, rtol=1e-6)


@pytest.mark.parametrize("unidirectional", [0, 1])
def test_attention_with_mask(unidirectional: int) -> None:
    mask = np.ones((2, 4), dtype=np.int32)
    mask[1, 3] = 0
    _check("Attention", {"x": _f(2, 4, 8), "weights": _f(8, 24), "bias": _f(24), "mask_index": mask},
           num_heads=2, unidirectional=unidirectional, atol=1e-4)


def test_multi_head_attention_with_bias_and_padding_mask() -> None:
    mask = np.ones((2, 5), dtype=np.int32)
    mask[0, 4] = 0
    _check("MultiHeadAttention", {"q": _f(2, 4, 8), "k": _f(2, 5, 8), "v": _f(2, 5, 8), "bias": _f(24),
                                  "key_padding_mask": mask}, num_heads=2, atol=1e-4)


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_embedding(interleaved: int) -> None:
    positions = np.array([[0, 1, 2, 3], [2, 3, 4, 5]], dtype=np.int64)
    _check("RotaryEmbedding", {"x": _f(2, 4, 16), "position_ids": positions, "cos": _f(8, 4), "sin": _f(8, 4)},
           interleaved=interleaved, num_heads=2)


def test_generated_code_is_readable() -> None:
    """Contrib ops become torch calls, not opaque helpers."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    node = helper.make_node("FastGelu", ["x"], ["y"], domain=MS)
    model = helper.make_model(helper.make_graph([node], "g", [x], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    converter = OnnxToFxConverter(model)
    converter.convert()
    assert "F.gelu(x, approximate='tanh')" in converter.source_code
    assert onnx.checker is not None
