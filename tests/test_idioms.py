"""Standard functions written out by exporters come back as one call (``onnx2fx.idioms``).

Each pattern is built as exporters write it, converted, compared with onnxruntime at two sizes of
its dynamic dimension, and its generated code checked for the idiomatic call; near misses (a wrong
constant, an intermediate read elsewhere, axes that are not the trailing ones) stay node by node.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from support import convert_and_save, ort_run

from onnx2fx import OnnxToFxConverter
from onnx2fx.idioms import IDIOM_KINDS
from onnx2fx.quantization import ptq
from onnx2fx.quantization.config import QuantConfig
from onnx2fx.quantization.fake_quant import insert_fake_quant
from onnx2fx.quantization.integer import float_tensors_inside
from onnx2fx.quantization.placement import OnnxGraphView, plan_placement

HIDDEN = 16
# Largest difference from onnxruntime allowed, relative to the output's largest magnitude: float32
# noise (a fused kernel rounds differently from the chain of ONNX ops, by a few units in the last place).
RELATIVE_TOLERANCE = 2e-6
# Every kind, MatMul + Add as nn.Linear included (not fused by default).
ALL = frozenset(IDIOM_KINDS)


def scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


_NODE_NUMBERS = itertools.count()


def node(op: str, inputs: Sequence[str], output: str, **attrs: Any) -> onnx.NodeProto:
    """A node named as PyTorch's exporter names them: the module path, the op and a number."""
    return helper.make_node(op, list(inputs), [output], name=f"/block/{op}_{next(_NODE_NUMBERS)}", **attrs)


def model(nodes: Sequence[onnx.NodeProto], initializers: Sequence[onnx.TensorProto], *, opset: int = 17,
          outputs: Sequence[str] = ("y",), dims: Sequence[int | str] = ("N", "S", HIDDEN)) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "idiom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              initializer=list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx2fx-tests")
    proto.ir_version = 8
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)  # also gives the outputs their shapes
    onnx.checker.check_model(proto)
    return proto


def convert(proto: onnx.ModelProto, **options: Any) -> OnnxToFxConverter:
    converter = OnnxToFxConverter(proto, **options)
    converter.convert()
    return converter


def assert_matches_onnxruntime(converter: OnnxToFxConverter, proto: onnx.ModelProto,
                               sizes: Sequence[tuple[int, ...]] = ((2, 5, HIDDEN), (3, 11, HIDDEN))) -> None:
    """The converted module equals onnxruntime at float32 noise, at each size of the dynamic dims."""
    gm = converter.result.graph_module  # type: ignore[union-attr]
    rng = np.random.default_rng(0)
    for size in sizes:
        x = (rng.standard_normal(size) * 3).astype(np.float32)
        expected = ort_run(proto, {"x": x})
        with torch.no_grad():
            produced = gm(torch.from_numpy(x))
        produced = produced if isinstance(produced, (tuple, list)) else [produced]
        for ref, out in zip(expected, produced):
            scale = float(np.abs(ref).max())
            error = float(np.abs(ref.astype(np.float64) - out.numpy()).max()) / scale
            assert error <= RELATIVE_TOLERANCE, f"size {size}: relative error {error:.3g}"


# ---------------------------------------------------------------------------------- the patterns
def gelu_erf(form: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``0.5 * x * (1 + erf(x / sqrt(2)))`` in the three products exporters write."""
    inits = [scalar("half", 0.5), scalar("one", 1.0), scalar("sqrt2", math.sqrt(2)),
             scalar("inv_sqrt2", 1 / math.sqrt(2))]
    scaled = node("Div", ["x", "sqrt2"], "d") if form != "mul_half_first" else node("Mul", ["x", "inv_sqrt2"], "d")
    head = [scaled, node("Erf", ["d"], "e"), node("Add", ["e", "one"], "a")]
    if form == "torchscript":  # (x * a) * 0.5
        tail = [node("Mul", ["x", "a"], "m"), node("Mul", ["m", "half"], "y")]
    elif form == "mul_half_first":  # (x * 0.5) * a, as transformers' Python writes it
        tail = [node("Mul", ["x", "half"], "h"), node("Mul", ["h", "a"], "y")]
    else:  # x * (a * 0.5)
        tail = [node("Mul", ["a", "half"], "ah"), node("Mul", ["x", "ah"], "y")]
    return head + tail, inits


def gelu_tanh(cube: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))``."""
    inits = [scalar("half", 0.5), scalar("one", 1.0), scalar("three", 3.0), scalar("kappa", 0.044715),
             scalar("beta", math.sqrt(2 / math.pi))]
    cubed = [node("Pow", ["x", "three"], "p")] if cube == "pow" else \
        [node("Mul", ["x", "x"], "sq"), node("Mul", ["sq", "x"], "p")]
    nodes = [*cubed, node("Mul", ["kappa", "p"], "w"), node("Add", ["x", "w"], "v"), node("Mul", ["v", "beta"], "u"),
             node("Tanh", ["u"], "t"), node("Add", ["t", "one"], "a"), node("Mul", ["half", "x"], "h"),
             node("Mul", ["h", "a"], "y")]
    return nodes, inits


def hardswish(form: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], int]:
    if form == "hard_sigmoid":
        return [node("HardSigmoid", ["x"], "h", alpha=1 / 6, beta=0.5), node("Mul", ["x", "h"], "y")], [], 17
    if form == "clip_attributes":  # opset 10: Clip's bounds are attributes
        nodes = [node("Add", ["x", "three"], "a"), node("Clip", ["a"], "c", min=0.0, max=6.0),
                 node("Mul", ["x", "c"], "m"), node("Div", ["m", "six"], "y")]
        return nodes, [scalar("three", 3.0), scalar("six", 6.0)], 10
    constants = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(v, np.float32)))
                 for name, v in (("three", 3.0), ("zero", 0.0), ("six", 6.0), ("sixth", 1 / 6))]
    clip = [node("Add", ["x", "three"], "a"), node("Clip", ["a", "zero", "six"], "c")]
    if form == "div_last":
        return [*constants, *clip, node("Mul", ["c", "x"], "m"), node("Div", ["m", "six"], "y")], [], 17
    return [*constants, *clip, node("Mul", ["c", "sixth"], "d"), node("Mul", ["x", "d"], "y")], [], 17


def layer_norm(opset: int, *, affine: str = "weight_bias", axes: Sequence[int] = (-1,),
               eps: float = 1e-5) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    rng = np.random.default_rng(1)
    inits = [scalar("two", 2.0), scalar("eps", eps),
             numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32), "ln.weight"),
             numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32), "ln.bias")]
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes"))
        mean = [lambda i, o: node("ReduceMean", [i, "axes"], o)]
    else:
        mean = [lambda i, o: node("ReduceMean", [i], o, axes=list(axes))]
    nodes = [mean[0]("x", "mu"), node("Sub", ["x", "mu"], "d"), node("Pow", ["d", "two"], "p"), mean[0]("p", "var"),
             node("Add", ["var", "eps"], "ve"), node("Sqrt", ["ve"], "s")]
    if affine == "none":
        return [*nodes, node("Div", ["d", "s"], "y")], inits
    nodes += [node("Div", ["d", "s"], "n"), node("Mul", ["n", "ln.weight"], "nw" if affine == "weight_bias" else "y")]
    if affine == "weight_bias":
        nodes.append(node("Add", ["nw", "ln.bias"], "y"))
    return nodes, inits


def rms_norm(form: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    rng = np.random.default_rng(2)
    inits = [scalar("two", 2.0), scalar("eps", 1e-6), scalar("one", 1.0),
             numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32), "norm.weight")]
    nodes = [node("Pow", ["x", "two"], "p"), node("ReduceMean", ["p"], "ms", axes=[-1]),
             node("Add", ["ms", "eps"], "a"), node("Sqrt", ["a"], "s")]
    if form == "reciprocal":  # as transformers' x * torch.rsqrt(...) is exported
        nodes += [node("Reciprocal", ["s"], "r"), node("Mul", ["x", "r"], "n")]
    else:
        nodes += [node("Div", ["x", "s"], "n")]
    return [*nodes, node("Mul", ["norm.weight", "n"], "y")], inits


def linear(inputs: int = HIDDEN, outputs: int = 8,
           seed: int = 3) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((inputs, outputs)) / inputs**0.5).astype(np.float32),
                                     "fc.weight"),
             numpy_helper.from_array(rng.standard_normal(outputs).astype(np.float32), "fc.bias")]
    return [node("MatMul", ["x", "fc.weight"], "xw"), node("Add", ["fc.bias", "xw"], "y")], inits


# ---------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("form", ["torchscript", "mul_half_first", "half_inside"])
def test_gelu_erf_becomes_f_gelu(form: str) -> None:
    proto = model(*gelu_erf(form))
    converter = convert(proto)
    assert "F.gelu(x)" in converter.source_code
    assert "erf" not in converter.source_code
    assert converter.conversion_record()["idioms"] == {"gelu": 1}
    assert_matches_onnxruntime(converter, proto)


@pytest.mark.parametrize("cube", ["pow", "mul"])
def test_gelu_tanh_becomes_f_gelu_tanh(cube: str) -> None:
    proto = model(*gelu_tanh(cube))
    converter = convert(proto)
    assert "F.gelu(x, approximate='tanh')" in converter.source_code
    assert_matches_onnxruntime(converter, proto)


def test_silu_becomes_f_silu() -> None:
    proto = model([node("Sigmoid", ["x"], "s"), node("Mul", ["s", "x"], "y")], [])
    converter = convert(proto)
    assert "F.silu(x)" in converter.source_code
    assert "sigmoid" not in converter.source_code
    assert_matches_onnxruntime(converter, proto)


@pytest.mark.parametrize("form", ["div_last", "sixth_inside", "clip_attributes", "hard_sigmoid"])
def test_hardswish_becomes_f_hardswish(form: str) -> None:
    nodes, inits, opset = hardswish(form)
    proto = model(nodes, inits, opset=opset)
    converter = convert(proto)
    assert "F.hardswish(x)" in converter.source_code
    assert "clamp" not in converter.source_code and "hardsigmoid" not in converter.source_code
    assert_matches_onnxruntime(converter, proto)


@pytest.mark.parametrize("opset", [17, 18])
def test_layer_norm_becomes_nn_layer_norm(opset: int) -> None:
    proto = model(*layer_norm(opset), opset=opset)
    converter = convert(proto)
    source = converter.source_code
    assert "self.block = nn.LayerNorm(16)" in source
    assert "y = self.block(x)" in source
    record = converter.conversion_record()
    assert record["parameters"]["block.weight"]["initializer"] == "ln.weight"
    assert record["parameters"]["block.bias"]["initializer"] == "ln.bias"
    assert record["idioms"] == {"layer_norm": 1}
    assert (record["node_count"], record["forward_lines"]) == (9, 1)
    assert_matches_onnxruntime(converter, proto)


@pytest.mark.parametrize("affine", ["none", "weight"])
def test_layer_norm_without_bias(affine: str) -> None:
    proto = model(*layer_norm(17, affine=affine, eps=1e-6))
    converter = convert(proto)
    expected = "F.layer_norm(x, [16], eps=1e-06)" if affine == "none" else "nn.LayerNorm(16, eps=1e-06, bias=False)"
    assert expected in converter.source_code
    assert_matches_onnxruntime(converter, proto)


def test_layer_norm_over_two_trailing_axes() -> None:
    proto = model(*layer_norm(17, affine="none", axes=(-2, -1)), dims=("N", 4, HIDDEN))
    converter = convert(proto)
    assert "F.layer_norm(x, [4, 16], eps=1e-05)" in converter.source_code
    assert_matches_onnxruntime(converter, proto, sizes=((2, 4, HIDDEN), (5, 4, HIDDEN)))


@pytest.mark.parametrize("form", ["reciprocal", "div"])
def test_rms_norm_becomes_nn_rms_norm(form: str) -> None:
    proto = model(*rms_norm(form))
    converter = convert(proto)
    assert "self.block = nn.RMSNorm(16, eps=1e-06)" in converter.source_code
    assert converter.conversion_record()["parameters"]["block.weight"]["initializer"] == "norm.weight"
    assert_matches_onnxruntime(converter, proto)


def test_matmul_and_bias_become_nn_linear_on_request() -> None:
    proto = model(*linear())
    converter = convert(proto, idioms=ALL)
    source = converter.source_code
    assert "self.block = nn.Linear(16, 8)" in source
    assert "y = self.block(x)" in source
    record = converter.conversion_record()["parameters"]
    assert record["block.weight"] == {"initializer": "fc.weight", "transform": "transpose", "shape": [8, 16],
                                      "dtype": "torch.float32"}
    assert record["block.bias"]["initializer"] == "fc.bias"
    assert_matches_onnxruntime(converter, proto)


def test_matmul_and_bias_stay_two_steps_by_default() -> None:
    """F.linear adds the bias inside the product, which rounds a third of the elements differently
    from MatMul then Add: by default the bias is added after a bias-free nn.Linear, as in ONNX."""
    proto = model(*linear())
    converter = convert(proto)
    assert "nn.Linear(16, 8, bias=False)" in converter.source_code
    assert converter.conversion_record()["idioms"] == {}
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 11, HIDDEN)).astype(np.float32))
    weight, bias = (torch.from_numpy(numpy_helper.to_array(t)) for t in linear()[1])
    with torch.no_grad():
        produced = converter.result.graph_module(x)  # type: ignore[union-attr]
    assert torch.equal(produced, torch.matmul(x, weight) + bias)
    assert not torch.equal(produced, torch.nn.functional.linear(x, weight.t(), bias))


def test_matmul_and_bias_through_identities_become_nn_linear() -> None:
    """Exporters keep one copy of identical tensors (all-zero biases, tied weights) and name each
    use with an Identity node: the constant behind the Identities is the layer's parameter."""
    nodes, inits = linear()
    nodes = [node("Identity", ["fc.weight"], "onnx::MatMul_9"), node("Identity", ["fc.bias"], "layer.bias"),
             node("MatMul", ["x", "onnx::MatMul_9"], "xw"), node("Add", ["xw", "layer.bias"], "y")]
    proto = model(nodes, inits)
    converter = convert(proto, idioms=ALL)
    assert "self.block = nn.Linear(16, 8)" in converter.source_code
    assert converter.conversion_record()["idioms"] == {"linear": 1}
    record = converter.conversion_record()["parameters"]
    assert (record["block.weight"]["initializer"], record["block.bias"]["initializer"]) == ("fc.weight", "fc.bias")
    assert_matches_onnxruntime(converter, proto)


# ---------------------------------------------------------------------------------- near misses
def test_gelu_with_another_constant_is_not_fused() -> None:
    nodes, inits = gelu_erf("torchscript")
    inits = [scalar("sqrt2", 1.5) if i.name == "sqrt2" else i for i in inits]
    proto = model(nodes, inits)
    converter = convert(proto)
    assert "F.gelu" not in converter.source_code and "torch.erf" in converter.source_code
    assert converter.conversion_record()["idioms"] == {}
    assert_matches_onnxruntime(converter, proto)


def test_silu_whose_sigmoid_is_also_an_output_is_not_fused() -> None:
    proto = model([node("Sigmoid", ["x"], "s"), node("Mul", ["x", "s"], "y")], [], outputs=("y", "s"))
    converter = convert(proto)
    assert "F.silu" not in converter.source_code
    assert_matches_onnxruntime(converter, proto)


def test_layer_norm_whose_difference_has_another_consumer_is_not_fused() -> None:
    nodes, inits = layer_norm(17)
    nodes.append(node("Relu", ["d"], "other"))
    proto = model(nodes, inits, outputs=("y", "other"))
    converter = convert(proto)
    assert "LayerNorm" not in converter.source_code and "layer_norm" not in converter.source_code
    assert_matches_onnxruntime(converter, proto)


def test_hardswish_clipped_at_five_is_not_fused() -> None:
    nodes, inits, opset = hardswish("clip_attributes")
    nodes[1] = node("Clip", ["a"], "c", min=0.0, max=5.0)
    proto = model(nodes, inits, opset=opset)
    converter = convert(proto)
    assert "hardswish" not in converter.source_code
    assert_matches_onnxruntime(converter, proto)


def test_layer_norm_over_a_leading_axis_stays_node_by_node() -> None:
    """The graph matches, but axis 1 of a rank-3 input is not a trailing axis: lowering declines."""
    proto = model(*layer_norm(17, affine="none", axes=(1,)), dims=("N", 6, HIDDEN))
    converter = convert(proto)
    assert "layer_norm" not in converter.source_code and "torch.mean" in converter.source_code
    assert converter.conversion_record()["idioms"] == {}
    assert_matches_onnxruntime(converter, proto, sizes=((2, 6, HIDDEN), (3, 6, HIDDEN)))


def test_no_idioms_converts_node_by_node() -> None:
    proto = model(*gelu_erf("torchscript"))
    converter = convert(proto, idioms=False)
    assert "F.gelu" not in converter.source_code
    record = converter.conversion_record()
    assert (record["idioms"], record["node_count"], record["forward_lines"]) == ({}, 5, 5)
    assert_matches_onnxruntime(converter, proto)


# ---------------------------------------------------------------------------------- quantization
Section = tuple[str, list[onnx.NodeProto], list[onnx.TensorProto]]


def chain(*sections: Section) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The sections (name, nodes from x to y, initializers) one after the other, from x to y; every
    other tensor and initializer of a section is prefixed with its name."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    for position, (prefix, section_nodes, section_inits) in enumerate(sections):
        ends = {"x": "x" if position == 0 else f"{sections[position - 1][0]}_out",
                "y": "y" if position == len(sections) - 1 else f"{prefix}_out"}

        def renamed(name: str, prefix: str = prefix, ends: dict[str, str] = ends) -> str:
            return ends.get(name, f"{prefix}.{name}" if name else name)

        for i in section_inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(i)
            copy.name = renamed(i.name)
            inits.append(copy)
        for n in section_nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.input[:] = [renamed(i) for i in copy.input]
            copy.output[:] = [renamed(o) for o in copy.output]
            copy.name = f"/{prefix}/{copy.op_type}_{len(nodes)}"
            nodes.append(copy)
    return nodes, inits


def _block() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """LayerNorm -> Linear -> GELU: every idiom's inner tensors are absent from the module."""
    return chain(("ln", *layer_norm(17)), ("fc", *linear()), ("gelu", *gelu_erf("torchscript")))


def test_placement_skips_the_tensors_inside_fused_functions(tmp_path: Path) -> None:
    proto = model(*_block())
    path = tmp_path / "block.onnx"
    onnx.save(proto, path)
    converter = convert(str(path), idioms=ALL)
    gm = converter.result.graph_module  # type: ignore[union-attr]
    assert converter.conversion_record()["idioms"] == {"gelu": 1, "layer_norm": 1, "linear": 1}
    assert_matches_onnxruntime(converter, proto)
    record = gm._onnx2fx_conversion
    graph = OnnxGraphView.load(path)
    placement = plan_placement(graph, QuantConfig(), idioms=record.idioms)
    sim = insert_fake_quant(gm, graph, placement)
    assert sim.unmapped == []
    assert sorted(sim.activations) == ["fc_out", "ln_out", "x", "y"]
    assert sorted(placement.fused) == ["fc.xw", "gelu.a", "gelu.d", "gelu.e", "gelu.m", "ln.d", "ln.mu", "ln.n",
                                       "ln.nw", "ln.p", "ln.s", "ln.var", "ln.ve"]
    # the Linear's bias takes the int32 convention, as a Gemm's
    assert [(w.initializer, w.bias) for w in placement.weights] == [("fc.fc.weight", "fc.fc.bias")]
    # node by node, every intermediate tensor is quantized
    unfused = plan_placement(graph, QuantConfig())
    assert len(unfused.activations) > len(placement.activations)


def test_conversion_json_counts_nodes_lines_and_idioms(tmp_path: Path) -> None:
    proto = model(*_block())
    converter = convert(proto, idioms=ALL)
    converter.save(tmp_path / "out")
    record = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert (record["node_count"], record["forward_lines"]) == (16, 3)
    assert record["idioms"] == {"gelu": 1, "layer_norm": 1, "linear": 1}


# ---------------------------------------------------------------------------------- learned scalars
def test_a_learned_one_element_scale_stays_a_parameter() -> None:
    """A layer scale exported as a one-number initializer named after the module's parameter stays
    trainable; a constant the exporter named itself is still written as a number."""
    nodes = [node("Mul", ["x", "blocks.0.ls1.gamma"], "scaled"), node("Mul", ["scaled", "onnx::Mul_7"], "y")]
    proto = model(nodes, [scalar("blocks.0.ls1.gamma", 0.1), scalar("onnx::Mul_7", 0.5)])
    converter = convert(proto)
    source = converter.source_code
    assert "self.blocks_0_ls1_gamma = nn.Parameter(torch.empty((), dtype=torch.float32))" in source, source
    assert "x * self.blocks_0_ls1_gamma" in source and "* 0.5" in source
    parameters = dict(converter.result.graph_module.named_parameters())  # type: ignore[union-attr]
    assert list(parameters) == ["blocks_0_ls1_gamma"]
    assert converter.conversion_record()["parameters"]["blocks_0_ls1_gamma"]["initializer"] == "blocks.0.ls1.gamma"
    assert_matches_onnxruntime(converter, proto)


def _quantized(sections: Sequence[Section], tmp_path: Path, formats: tuple[str, ...], hidden: int = HIDDEN,
               float_islands: bool = False) -> Any:
    proto = model(*chain(*sections), dims=("N", hidden))
    onnx.save(proto, tmp_path / "m.onnx")
    converted = convert_and_save(tmp_path / "m.onnx", tmp_path / "converted", idioms=ALL)
    x = (np.random.default_rng(5).standard_normal((64, hidden)) * 2).astype(np.float32)
    return ptq(converted, x, batch_size=32, progress=False, output_dir=tmp_path / "q", formats=formats,
               float_islands=float_islands)


def test_fused_activations_and_linears_quantize_to_every_format(tmp_path: Path) -> None:
    """Linear -> GELU -> Linear -> SiLU -> Linear -> HardSwish: each fused function has encodings at
    its input and result only; the integer forms compute each activation as one table (fixed point)
    or one float node (QOperator), and each Linear as one integer layer with an int32 bias."""
    sections: list[Section] = [("fc1", *linear(HIDDEN, 12, seed=1)), ("gelu", *gelu_tanh("mul")),
                               ("fc2", *linear(12, 12, seed=2)), ("silu", [node("Sigmoid", ["x"], "s"),
                                                                        node("Mul", ["x", "s"], "y")], []),
                               ("fc3", *linear(12, 8, seed=3)), ("hardswish", *hardswish("div_last")[:2])]
    result = _quantized(sections, tmp_path, ("qdq", "qoperator", "fixed-point"))
    report = result.report
    assert report["unmapped"] == []
    assert sorted(result.activation_encodings) == ["fc1_out", "fc2_out", "fc3_out", "gelu_out", "silu_out", "x", "y"]
    assert sorted(result.param_encodings) == sorted(f"fc{i}.fc.{p}" for i in (1, 2, 3) for p in ("weight", "bias"))
    assert report["qdq"]["within_one_step"] >= 0.999
    for key in ("fixed_point", "qoperator"):
        assert report[key]["status"] == "ok"
        assert report[key]["equal_to_simulation"] >= 0.99, (key, report[key])
    fixed = {n.op_type for n in onnx.load(str(tmp_path / "q" / "model_ptq_fixed_point.onnx")).graph.node}
    assert {"MatMulInteger", "Gather"} <= fixed
    assert not fixed & {"Tanh", "Sigmoid", "FastGelu", "QuickGelu", "HardSwish"}
    assert float_tensors_inside(tmp_path / "q" / "model_ptq_fixed_point.onnx") == []
    qoperator = Counter(n.op_type for n in onnx.load(str(tmp_path / "q" / "model_ptq_qoperator.onnx")).graph.node)
    assert (qoperator["FastGelu"], qoperator["QuickGelu"], qoperator["HardSwish"]) == (1, 1, 1)


def test_a_fused_layer_norm_runs_in_float_between_its_encodings(tmp_path: Path) -> None:
    result = _quantized([("ln", *layer_norm(17)), ("fc", *linear(HIDDEN, 8))], tmp_path, ("qdq", "qoperator"))
    assert result.report["unmapped"] == []
    assert sorted(result.activation_encodings) == ["ln_out", "x", "y"]
    assert result.report["qdq"]["within_one_step"] >= 0.999
    assert result.report["qoperator"]["equal_to_simulation"] >= 0.99


def test_silu_whose_sigmoid_a_subgraph_reads_is_not_fused() -> None:
    """An If branch reading the Sigmoid's output is a second consumer, though no node lists it."""
    branch = [helper.make_graph([helper.make_node("Identity", [source], [name])], name, [],
                                [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)])
              for source, name in (("s", "then_out"), ("x", "else_out"))]
    nodes = [node("Sigmoid", ["x"], "s"), node("Mul", ["x", "s"], "y"),
             helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True))),
             helper.make_node("If", ["cond"], ["z"], then_branch=branch[0], else_branch=branch[1])]
    proto = model(nodes, [], outputs=("y", "z"))
    converter = convert(proto)
    assert "F.silu" not in converter.source_code
    assert_matches_onnxruntime(converter, proto)


def test_cli_convert_no_idioms(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from onnx2fx.cli import app

    onnx.save(model(*gelu_erf("torchscript")), tmp_path / "m.onnx")
    for flag, expected in (([], {"gelu": 1}), (["--no-idioms"], {})):
        out = tmp_path / f"out{len(flag)}"
        result = CliRunner().invoke(app, ["convert", str(tmp_path / "m.onnx"), "-o", str(out), *flag])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "conversion.json").read_text())["idioms"] == expected
