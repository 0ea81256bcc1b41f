"""Attention written out as MatMul / Softmax / MatMul comes back as ``F.scaled_dot_product_attention``.

Each form is built as an exporter writes it (torch.onnx's ``scaled_dot_product_attention`` with its
scale computed from the head size and applied to both operands, transformers' eager attention with
the scale after the product and Casts around the probabilities, ``nn.MultiheadAttention``'s 3-D form
with the scale on the query), converted, compared with onnxruntime at two sequence lengths and its
generated code checked for the one call; near misses (softmax over another axis, a key that is not
transposed) stay node by node.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from support import convert_and_save
from test_idioms import HIDDEN, assert_matches_onnxruntime, convert, model, node, scalar

from onnx2fx.conversion_record import conversion_record
from onnx2fx.quantization import ptq
from onnx2fx.validator import load_torch_model

HEADS = 2
HEAD_SIZE = HIDDEN // HEADS


def projections(rank: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """q, k and v of ``x`` (N, S, HIDDEN): three matrix products, split into heads for ``rank`` 4
    ((N, HEADS, S, HEAD_SIZE); k as (N, S, HEADS, HEAD_SIZE), its heads moved by the Transpose that
    also transposes it)."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array((rng.standard_normal((HIDDEN, HIDDEN)) / HIDDEN**0.5).astype(np.float32),
                                     f"w{name}") for name in "qkv"]
    nodes = [node("MatMul", ["x", f"w{name}"], f"{name}_flat" if rank == 4 else name) for name in "qkv"]
    if rank == 4:
        inits.append(numpy_helper.from_array(np.array([0, 0, HEADS, HEAD_SIZE], np.int64), "heads"))
        nodes += [node("Reshape", [f"{name}_flat", "heads"], f"{name}_split") for name in "qkv"]
        nodes += [node("Transpose", ["q_split"], "q", perm=[0, 2, 1, 3]),
                  node("Transpose", ["v_split"], "v", perm=[0, 2, 1, 3])]
    return nodes, inits


def padding_mask() -> list[onnx.NodeProto]:
    """An additive float mask of shape (N, 1, 1, S), from the data: what a padding mask broadcasts as."""
    return [node("ReduceMax", ["x"], "row_max", axes=[-1], keepdims=0),
            node("Unsqueeze", ["row_max", "mask_axes"], "mask")]


def attention(form: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    if form == "torch_sdpa":  # torch.onnx: scale = 1/sqrt(E) from q's shape, sqrt(scale) on q and on k^T
        nodes, inits = projections(4)
        inits += [numpy_helper.from_array(np.array([-1], np.int64), "last"),
                  numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "end"),
                  scalar("one", 1.0), numpy_helper.from_array(np.array([1, 2], np.int64), "mask_axes")]
        nodes += [node("Shape", ["q"], "q_shape"), node("Slice", ["q_shape", "last", "end"], "e"),
                  node("Cast", ["e"], "e_float", to=TensorProto.FLOAT), node("Sqrt", ["e_float"], "sqrt_e"),
                  node("Div", ["one", "sqrt_e"], "scale"), node("Cast", ["scale"], "scale_cast", to=TensorProto.FLOAT),
                  node("Transpose", ["k_split"], "k_t", perm=[0, 2, 3, 1]),
                  node("Sqrt", ["scale_cast"], "root_q"), node("Mul", ["q", "root_q"], "q_scaled"),
                  node("Sqrt", ["scale_cast"], "root_k"), node("Mul", ["k_t", "root_k"], "k_scaled"),
                  node("MatMul", ["q_scaled", "k_scaled"], "scores"), *padding_mask(),
                  node("Add", ["scores", "mask"], "masked"), node("Softmax", ["masked"], "p", axis=-1),
                  node("MatMul", ["p", "v"], "y")]
        return nodes, inits
    if form == "eager":  # transformers: (q @ k^T) * scaling + mask, softmax(dtype=float32).to(q.dtype)
        nodes, inits = projections(4)
        inits += [scalar("scaling", HEAD_SIZE**-0.5), numpy_helper.from_array(np.array([1, 2], np.int64), "mask_axes")]
        nodes += [node("Transpose", ["k_split"], "k_t", perm=[0, 2, 3, 1]),
                  node("MatMul", ["q", "k_t"], "scores"), node("Mul", ["scores", "scaling"], "scaled"),
                  *padding_mask(), node("Add", ["mask", "scaled"], "masked"),
                  node("Softmax", ["masked"], "p", axis=-1), node("Cast", ["p"], "p32", to=TensorProto.FLOAT),
                  node("Cast", ["p32"], "p_q", to=TensorProto.FLOAT), node("MatMul", ["p_q", "v"], "y")]
        return nodes, inits
    if form == "vit_div":  # ViT: (q @ k^T) / sqrt(head size), no mask, softmax axis 3 of 4
        nodes, inits = projections(4)
        inits.append(scalar("root", HEAD_SIZE**0.5))
        nodes += [node("Transpose", ["k_split"], "k_t", perm=[0, 2, 3, 1]), node("MatMul", ["q", "k_t"], "scores"),
                  node("Div", ["scores", "root"], "scaled"), node("Softmax", ["scaled"], "p", axis=3),
                  node("MatMul", ["p", "v"], "y")]
        return nodes, inits
    # multi_head_attention_forward's 3-D form: (q * (1/sqrt(E))) @ k.transpose(-2, -1), softmax, @ v
    nodes, inits = projections(3)
    inits.append(scalar("q_scaling", HIDDEN**-0.5))
    nodes += [node("Mul", ["q", "q_scaling"], "q_scaled"), node("Transpose", ["k"], "k_t", perm=[0, 2, 1]),
              node("MatMul", ["q_scaled", "k_t"], "scores"), node("Softmax", ["scores"], "p", axis=2),
              node("MatMul", ["p", "v"], "y")]
    return nodes, inits


@pytest.mark.parametrize(("form", "expected"), [
    ("torch_sdpa", "F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.35355335)"),
    ("eager", "F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.35355338)"),
    ("vit_div", "F.scaled_dot_product_attention(q, k, v, scale=0.35355338)"),
    ("multi_head_3d", "F.scaled_dot_product_attention(q, k, v, scale=0.25)"),
])
def test_attention_becomes_scaled_dot_product_attention(form: str, expected: str) -> None:
    proto = model(*attention(form))
    converter = convert(proto)
    source = converter.source_code
    assert converter.conversion_record()["idioms"] == {"attention": 1}
    call = next(line.split("= ", 1)[1] for line in source.splitlines() if "scaled_dot_product_attention" in line)
    for name in ("q", "k", "v", "mask"):  # the operands' variable names depend on the form; their roles do not
        call = call.replace(_variable(source, name), name) if _variable(source, name) else call
    assert call == expected, source
    assert "softmax" not in source and "torch.matmul" not in source
    assert_matches_onnxruntime(converter, proto)


def _variable(source: str, role: str) -> str | None:
    """The variable the generated code holds ``role`` in: q and v as the first and third operands
    of the call, k as the second, the mask as ``attn_mask``."""
    line = next(line for line in source.splitlines() if "scaled_dot_product_attention(" in line)
    args = line.split("(", 1)[1].rstrip(")").split(", ")
    positional = {"q": 0, "k": 1, "v": 2}
    if role in positional:
        return args[positional[role]]
    return next((a.split("=", 1)[1] for a in args if a.startswith("attn_mask=")), None)


def test_a_per_channel_multiplier_is_no_scale() -> None:
    """``q * gamma`` with one factor per channel, between the scaled query and the product, is no
    scale: it stays its own line and the attention takes its result as the query, with scale 1."""
    nodes, inits = attention("multi_head_3d")
    inits.append(numpy_helper.from_array(np.linspace(0.5, 1.5, HIDDEN).astype(np.float32), "gamma"))
    nodes = [node("Mul", ["q_scaled", "gamma"], "q_gamma") if n.op_type == "Transpose" else n for n in nodes[:-3]] + [
        node("Transpose", ["k"], "k_t", perm=[0, 2, 1]), node("MatMul", ["q_gamma", "k_t"], "scores"), *nodes[-2:]]
    proto = model(nodes, inits)
    converter = convert(proto)
    assert converter.conversion_record()["idioms"] == {"attention": 1}
    source = converter.source_code
    assert "q_scaled = q * 0.25" in source and "q_gamma = q_scaled * self.gamma" in source, source
    assert "F.scaled_dot_product_attention(q_gamma, k, v, scale=1.0)" in source
    assert_matches_onnxruntime(converter, proto)


def test_attention_is_not_fused_without_idioms() -> None:
    proto = model(*attention("eager"))
    converter = convert(proto, idioms=False)
    assert "scaled_dot_product_attention" not in converter.source_code
    assert_matches_onnxruntime(converter, proto)


def test_softmax_over_another_axis_is_not_attention() -> None:
    """Normalising over the queries (axis -2) is not what scaled_dot_product_attention computes."""
    nodes, inits = attention("vit_div")
    nodes = [node("Softmax", ["scaled"], "p", axis=-2) if n.op_type == "Softmax" else n for n in nodes]
    proto = model(nodes, inits)
    converter = convert(proto)
    assert "scaled_dot_product_attention" not in converter.source_code
    assert "softmax(" in converter.source_code
    assert converter.conversion_record()["idioms"] == {}
    assert_matches_onnxruntime(converter, proto)


def test_a_key_that_is_not_transposed_is_not_attention() -> None:
    """``softmax(q^T @ k) @ v^T`` (attention across channels) multiplies an untransposed key."""
    nodes, inits = projections(3)
    nodes += [node("Transpose", ["q"], "q_t", perm=[0, 2, 1]), node("MatMul", ["q_t", "k"], "scores"),
              node("Softmax", ["scores"], "p", axis=-1), node("Transpose", ["v"], "v_t", perm=[0, 2, 1]),
              node("MatMul", ["p", "v_t"], "y")]
    proto = model(nodes, inits)
    converter = convert(proto)
    assert "scaled_dot_product_attention" not in converter.source_code
    assert converter.conversion_record()["idioms"] == {}
    assert_matches_onnxruntime(converter, proto)


def test_attention_whose_probabilities_are_an_output_is_not_fused() -> None:
    proto = model(*attention("vit_div"), outputs=("y", "p"))
    converter = convert(proto)
    assert "scaled_dot_product_attention" not in converter.source_code
    assert_matches_onnxruntime(converter, proto)


def test_a_mask_larger_than_the_scores_stays_node_by_node() -> None:
    """A mask of shape (2, N, HEADS, S, S) broadcasts the scores up, which the fused call cannot."""
    nodes, inits = attention("vit_div")
    inits.append(numpy_helper.from_array(np.zeros((2, 1, 1, 1, 1), np.float32), "big_mask"))
    nodes = [*nodes[:-2], node("Add", ["scaled", "big_mask"], "masked"), node("Softmax", ["masked"], "p", axis=-1),
             nodes[-1]]
    proto = model(nodes, inits)
    converter = convert(proto)
    assert "scaled_dot_product_attention" not in converter.source_code
    assert_matches_onnxruntime(converter, proto)


def test_ptq_quantizes_a_fused_attention_node_by_node(tmp_path: Path) -> None:
    """Inside F.scaled_dot_product_attention the scores and probabilities are never materialised,
    so PTQ quantizes a copy converted without the attention fusion: they get quantizers, as
    integer targets need. The integer forms run the scaling by a float constant and the two
    products of activations in float (and the Softmax too in fixed point)."""
    proto = model(*attention("multi_head_3d"))
    onnx.save(proto, tmp_path / "m.onnx")
    converted = convert_and_save(tmp_path / "m.onnx", tmp_path / "converted")
    assert "scaled_dot_product_attention" in (tmp_path / "converted" / "model.py").read_text()
    x = (np.random.default_rng(5).standard_normal((64, 5, HIDDEN)) * 2).astype(np.float32)
    result = ptq(converted, x, batch_size=32, progress=False, output_dir=tmp_path / "q",
                 formats=("qdq", "qoperator", "fixed-point"), float_islands=True)
    assert result.report["unmapped"] == []
    assert sorted(result.activation_encodings) == ["k", "k_t", "p", "q", "q_scaled", "scores", "v", "x", "y"]
    assert [w for w in result.report["warnings"] if "attention" in w] == []
    assert result.report["qdq"]["within_one_step"] >= 0.999
    expected = {"qoperator": ["(Mul)", "(MatMul)", "(MatMul)"],
                "fixed_point": ["(Mul)", "(MatMul)", "(Softmax)", "(MatMul)"]}
    for key, islands in expected.items():
        assert result.report[key]["equal_to_simulation"] >= 0.99, (key, result.report[key])
        assert [island.split(" ")[1] for island in result.report[key]["writer"]["float_islands"]] == islands


def test_ptq_keeps_the_given_values_when_it_unfuses_attention(tmp_path: Path) -> None:
    """A fine-tuned model's values reach the unfused copy (by the initializer each came from)."""
    proto = model(*attention("multi_head_3d"))
    onnx.save(proto, tmp_path / "m.onnx")
    gm = load_torch_model(convert_and_save(tmp_path / "m.onnx", tmp_path / "converted"))
    record = conversion_record(gm)
    name = next(n for n, _ in gm.named_parameters() if record.initializer_of(n) is not None)
    with torch.no_grad():
        gm.get_parameter(name).add_(0.25)
    x = (np.random.default_rng(5).standard_normal((64, 5, HIDDEN)) * 2).astype(np.float32)
    result = ptq(gm, x, batch_size=32, progress=False)
    sim_record = conversion_record(result.sim_model)
    initializer = record.initializer_of(name)
    sim_name = next(n for n, _ in result.sim_model.named_parameters() if sim_record.initializer_of(n) == initializer)
    assert torch.equal(result.sim_model.get_parameter(sim_name), gm.get_parameter(name))
    assert "scaled_dot_product_attention" in gm.code  # the given model itself is left as it was


def test_ptq_says_so_when_the_attention_stays_fused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx2fx.quantization.unfused_attention as unfusing

    monkeypatch.setattr(unfusing, "_copy_values", lambda gm, copy: "w has no counterpart")
    proto = model(*attention("multi_head_3d"))
    onnx.save(proto, tmp_path / "m.onnx")
    converted = convert_and_save(tmp_path / "m.onnx", tmp_path / "converted")
    x = (np.random.default_rng(5).standard_normal((64, 5, HIDDEN)) * 2).astype(np.float32)
    result = ptq(converted, x, batch_size=32, progress=False)
    assert sorted(result.activation_encodings) == ["k", "q", "v", "x", "y"]
    fused = [w for w in result.report["warnings"] if "attention" in w]
    assert len(fused) == 1 and re.fullmatch(
        r"1 attention\(s\) fused into F\.scaled_dot_product_attention \(ending at /block/MatMul_\d+\): their "
        r"scores and probabilities stay float in the quantized model: w has no counterpart", fused[0]), fused
