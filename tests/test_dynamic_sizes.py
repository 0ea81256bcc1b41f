"""Dynamic dimensions stay dynamic: no size chosen during conversion reaches ``model.py``.

Conversion evaluates every emitted call on fake tensors whose dynamic dimensions are symbols with a
hint (``OTHER_DIM_HINT``). Each test converts once, then compares with onnxruntime at several sizes
per dynamic dimension (the hint itself among them, odd sizes, sizes that are not multiples of a
stride), traces with ``torch.fx.symbolic_trace`` and exports with ``torch.export`` with the dynamic
dimensions declared. The failure classes seen on real files:

1. a check torch makes on concrete sizes (reflect padding smaller than the input) applied to a
   symbolic size failed conversion;
2. a dynamic size was frozen to the hint in generated code (a GRU encoder's reshape), or a Resize
   differed from onnxruntime at sizes other than the one tried.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import torch.fx
from onnx import TensorProto, helper, numpy_helper
from support import FLOAT32_TOLERANCE_PERCENT, ort_run, relative_error_percent

from onnx2fx import OnnxToFxConverter
from onnx2fx.errors import ConversionError
from onnx2fx.lowering import OTHER_DIM_HINT

RNG = np.random.default_rng(13)
Dim = torch.export.Dim


def _model(nodes: Sequence[onnx.NodeProto], inputs: Mapping[str, tuple[int, list[int | str]]],
           outputs: Sequence[str] = ("y",), initializers: Mapping[str, np.ndarray] | None = None,
           opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes), "dynamic_sizes",
        [helper.make_tensor_value_info(name, dtype, shape) for name, (dtype, shape) in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _convert(model: onnx.ModelProto, **options: Any) -> tuple[torch.fx.GraphModule, str, list[str]]:
    converter = OnnxToFxConverter(model, **options)
    gm = converter.convert()
    assert converter.result is not None
    return gm, converter.source_code, list(converter.result.emitted.warnings)


def _outputs(result: Any) -> list[torch.Tensor]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _assert_matches_onnxruntime(model: onnx.ModelProto, module: Any, feeds: Mapping[str, np.ndarray]) -> None:
    expected = ort_run(model, feeds)
    with torch.no_grad():
        produced = _outputs(module(*[torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()]))
    assert len(produced) == len(expected)
    for reference, out in zip(expected, produced):
        error = relative_error_percent(reference, out.detach().numpy())
        shapes = {k: v.shape for k, v in feeds.items()}
        assert error <= FLOAT32_TOLERANCE_PERCENT, f"at {shapes}: relative error {error:.3g}%"


def _check_sizes(model: onnx.ModelProto, gm: torch.fx.GraphModule, feeds_per_size: Sequence[Mapping[str, np.ndarray]],
                 dynamic_shapes: Any) -> None:
    """Parity at every size; symbolic_trace; torch.export with the dynamic dims, whose program is
    run at every size too (it must not have specialised them)."""
    for feeds in feeds_per_size:
        _assert_matches_onnxruntime(model, gm, feeds)
    torch.fx.symbolic_trace(gm)
    # torch.export specialises a dynamic dimension whose example size is 0 or 1: export at the first
    # size that has none.
    example_feeds = next(f for f in feeds_per_size
                         if all(v.shape[axis] >= 2 for v, dims in zip(f.values(), dynamic_shapes) for axis in dims))
    example = tuple(torch.from_numpy(v) for v in example_feeds.values())
    program = torch.export.export(gm, example, dynamic_shapes=dynamic_shapes)
    for feeds in feeds_per_size:
        _assert_matches_onnxruntime(model, program.module(), feeds)


def _forward_lines(source: str) -> list[str]:
    """The statements of ``Model.forward`` in the generated source."""
    lines: list[str] = []
    for line in source[source.index("    def forward("):].splitlines()[1:]:
        lines.append(line.strip())
        if line.startswith("        return"):
            return lines
    raise AssertionError("forward has no return statement")


def _hint_literal(line: str) -> bool:
    return re.search(rf"(?<![\w.]){OTHER_DIM_HINT}(?![\w.])", line) is not None


# ------------------------------------------------------------------------------------ class 1: Pad
@pytest.mark.parametrize("pad", [OTHER_DIM_HINT, 100])
def test_reflect_pad_of_dynamic_length_converts_and_stays_dynamic(pad: int) -> None:
    """An STFT front end reflect-pads an input of dynamic length by n_fft // 2. torch requires the
    padding to be smaller than the input; conversion used to apply that check to the hint and fail
    (``Padding size should be less than the corresponding input dimension``); it is now a run-time
    requirement, as in onnxruntime."""
    model = _model([helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")],
                   {"x": (TensorProto.FLOAT, ["batch", "samples"])}, initializers={"pads": np.array([0, pad, 0, pad])})
    gm, source, warnings = _convert(model)
    assert "torch._assert" not in source and not warnings
    feeds = [{"x": RNG.standard_normal((b, n)).astype(np.float32)} for b, n in ((1, pad + 1), (3, 257), (2, 1000))]
    _check_sizes(model, gm, feeds, ({0: Dim("batch", max=64), 1: Dim("samples", min=pad + 1, max=100_000)},))


def test_reflect_pad_inside_if_branch_on_dynamic_length() -> None:
    """The same Pad inside both branches of an If on a run-time condition (reflect or edge)."""
    def branch(name: str, mode: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Pad", ["x", "pads"], [f"{name}_out"], mode=mode)], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])

    model = _model([helper.make_node("If", ["flag"], ["y"], then_branch=branch("then", "reflect"),
                                     else_branch=branch("else", "edge"))],
                   {"x": (TensorProto.FLOAT, ["batch", "samples"]), "flag": (TensorProto.BOOL, [])},
                   initializers={"pads": np.array([0, OTHER_DIM_HINT, 0, OTHER_DIM_HINT])})
    gm, source, _ = _convert(model)
    assert "torch._assert" not in source
    for flag in (True, False):
        for b, n in ((1, OTHER_DIM_HINT + 1), (3, 300)):
            _assert_matches_onnxruntime(model, gm, {"x": RNG.standard_normal((b, n)).astype(np.float32),
                                                    "flag": np.array(flag)})
    torch.fx.symbolic_trace(gm)


# ------------------------------------------------------------------------------ class 2: Reshape, GRU
def test_reshape_built_from_shape_gather_concat_keeps_the_input_sizes() -> None:
    """``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` (how exporters write a reshape that keeps
    batch and length) becomes ``x.shape[0]``, ``x.shape[1]`` in model.py, not the hint."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["b"], axis=0),
             helper.make_node("Gather", ["shape", "one"], ["t"], axis=0),
             helper.make_node("Unsqueeze", ["b", "axis0"], ["b1"]),
             helper.make_node("Unsqueeze", ["t", "axis0"], ["t1"]),
             helper.make_node("Concat", ["t1", "b1", "heads"], ["target"], axis=0),
             helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("Reshape", ["xt", "target"], ["y"])]
    inits = {"zero": np.array(0), "one": np.array(1), "axis0": np.array([0]), "heads": np.array([2, 24])}
    model = _model(nodes, {"x": (TensorProto.FLOAT, ["batch", "time", 48])}, initializers=inits)
    gm, source, _ = _convert(model)
    reshape = [line for line in _forward_lines(source) if ".reshape(" in line]
    assert reshape and all("x.shape[0]" in line and "x.shape[1]" in line for line in reshape), reshape
    assert not any(_hint_literal(line) for line in _forward_lines(source)), source
    feeds = [{"x": RNG.standard_normal((b, t, 48)).astype(np.float32)}
             for b, t in ((1, 12), (3, 5), (2, OTHER_DIM_HINT))]
    _check_sizes(model, gm, feeds, ({0: Dim("batch", max=64), 1: Dim("time", max=4096)},))


class _GruEncoder(torch.nn.Module):
    """A speech/text encoder's core: a bidirectional GRU over (batch, time, features), projected."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = torch.nn.GRU(16, 24, batch_first=True, bidirectional=True)
        self.proj = torch.nn.Linear(48, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = self.gru(x)
        return self.proj(y), h


def _gru_encoder_onnx() -> onnx.ModelProto:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.onnx.export(_GruEncoder().eval(), (torch.randn(2, 10, 16),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y", "h"], dynamic_axes={"x": {0: "batch", 1: "time"}})
    return onnx.load_from_string(buffer.getvalue())


def test_gru_encoder_with_dynamic_batch_and_sequence() -> None:
    """The GRU's output reshape used ``64`` (the hint for the sequence length, fixed by evaluating
    ``nn.GRU`` on fake tensors, whose decomposition loops over the time steps): the model converted
    and failed at run time (``shape '[64, 1, 2, 128]' is invalid``). The layer's result sizes are now
    written out, so the reshape follows the input."""
    model = _gru_encoder_onnx()
    gm, source, warnings = _convert(model)
    assert "torch._assert" not in source and not any("fixed to" in w for w in warnings)
    lines = _forward_lines(source)
    assert not any(_hint_literal(line) for line in lines), source
    assert any(".reshape(" in line and ".shape[0]" in line for line in lines), lines
    feeds = [{"x": RNG.standard_normal((b, t, 16)).astype(np.float32)}
             for b, t in ((1, 12), (3, 5), (2, OTHER_DIM_HINT))]
    for f in feeds:
        _assert_matches_onnxruntime(model, gm, f)
    torch.fx.symbolic_trace(gm)
    # torch.export's own decomposition of nn.GRU unrolls the time steps: only the batch stays dynamic.
    example = (torch.from_numpy(feeds[1]["x"]),)
    program = torch.export.export(gm, example, dynamic_shapes=({0: Dim("batch", max=64)},))
    _assert_matches_onnxruntime(model, program.module(), {"x": RNG.standard_normal((7, 5, 16)).astype(np.float32)})


# ------------------------------------------------------------------------- class 2: Resize at odd sizes
_RESIZE_CASES = [
    ("nearest", "asymmetric", "floor", [2.0, 2.0]),
    ("nearest", "asymmetric", "floor", [0.5, 0.5]),
    ("nearest", "asymmetric", "floor", [1.5, 3.0]),
    ("nearest", "half_pixel", "round_prefer_floor", [2.0, 2.0]),
    ("nearest", "half_pixel", "round_prefer_floor", [1.5, 3.0]),
    ("linear", "half_pixel", "round_prefer_floor", [2.0, 2.0]),
    ("linear", "half_pixel", "round_prefer_floor", [0.5, 0.5]),
    ("linear", "half_pixel", "round_prefer_floor", [1.5, 3.0]),
    ("linear", "half_pixel", "round_prefer_floor", [0.75, 1.25]),
    ("linear", "pytorch_half_pixel", "round_prefer_floor", [1.5, 3.0]),
    ("linear", "align_corners", "round_prefer_floor", [2.0, 2.0]),
    ("linear", "align_corners", "round_prefer_floor", [0.5, 0.5]),
    ("linear", "align_corners", "round_prefer_floor", [1.5, 3.0]),
    ("linear", "asymmetric", "round_prefer_floor", [1.5, 3.0]),
    ("cubic", "half_pixel", "round_prefer_floor", [2.0, 2.0]),
    ("cubic", "half_pixel", "round_prefer_floor", [0.5, 0.5]),
]


@pytest.mark.parametrize(("mode", "transform", "nearest_mode", "scales"), _RESIZE_CASES,
                         ids=[f"{m}-{t}-{s[0]}x{s[1]}" for m, t, _, s in _RESIZE_CASES])
def test_resize_with_scales_on_odd_dynamic_sizes(mode: str, transform: str, nearest_mode: str,
                                                  scales: list[float]) -> None:
    """Resize by constant scales of an input whose height and width are dynamic, at sizes that are
    odd and not multiples of 2 (33x47, 15x10, 60x40): the output size is ``floor(n * scale)`` and the
    sampling positions are onnxruntime's at every size, not only at the hint."""
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode,
                            coordinate_transformation_mode=transform, nearest_mode=nearest_mode)
    model = _model([node], {"x": (TensorProto.FLOAT, ["batch", 3, "height", "width"])},
                   initializers={"scales": np.array([1.0, 1.0, *scales], np.float32)}, opset=13)
    gm, source, _ = _convert(model)
    assert "torch._assert" not in source
    assert not any(_hint_literal(line) for line in _forward_lines(source)), source
    feeds = [{"x": RNG.standard_normal((b, 3, h, w)).astype(np.float32)} for b, h, w in ((1, 33, 47), (2, 15, 10),
                                                                                          (1, 60, 40))]
    _check_sizes(model, gm, feeds, ({0: Dim("batch", max=16), 2: Dim("height", min=8, max=2048),
                                     3: Dim("width", min=8, max=2048)},))


def test_fpn_upsampling_matches_at_sizes_other_than_the_one_tried() -> None:
    """A DBNet-style FPN: stride-2 features upsampled by Resize (scales 2, nearest and bilinear)
    and added to the finer level, at 640x640, 480x320 and 320x480 (the sizes a text detector sees)."""
    nodes = [helper.make_node("AveragePool", ["x"], ["half"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["half"], ["quarter"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Resize", ["quarter", "", "two"], ["up_nearest"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
             helper.make_node("Add", ["up_nearest", "half"], ["merged"]),
             helper.make_node("Resize", ["merged", "", "two"], ["up_linear"], mode="linear",
                              coordinate_transformation_mode="half_pixel"),
             helper.make_node("Sub", ["up_linear", "x"], ["y"])]
    model = _model(nodes, {"x": (TensorProto.FLOAT, ["batch", 1, "height", "width"])},
                   initializers={"two": np.array([1, 1, 2, 2], np.float32)}, opset=13)
    gm, source, _ = _convert(model)
    assert "torch._assert" not in source
    feeds = [{"x": RNG.standard_normal((b, 1, h, w)).astype(np.float32)} for b, h, w in ((1, 640, 640), (2, 480, 320),
                                                                                         (1, 320, 480))]
    _check_sizes(model, gm, feeds, ({0: Dim("batch", max=16), 2: 4 * Dim("h4", min=1, max=1024),
                                     3: 4 * Dim("w4", min=1, max=1024)},))


def test_resize_to_the_size_of_another_input_stays_symbolic() -> None:
    """Resize with ``sizes`` taken from the finer level's Shape (the FPN pattern of many exporters)
    writes that input's sizes, at lateral sizes that are not twice the coarse ones."""
    nodes = [helper.make_node("Shape", ["lateral"], ["target"]),
             helper.make_node("Resize", ["x", "", "", "target"], ["up"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
             helper.make_node("Add", ["up", "lateral"], ["y"])]
    model = _model(nodes, {"x": (TensorProto.FLOAT, ["batch", 4, "h", "w"]),
                           "lateral": (TensorProto.FLOAT, ["batch", 4, "H", "W"])}, opset=13)
    gm, source, _ = _convert(model)
    assert any("size=[lateral.shape[2], lateral.shape[3]]" in line for line in _forward_lines(source)), source
    feeds = [{"x": RNG.standard_normal((1, 4, h, w)).astype(np.float32),
              "lateral": RNG.standard_normal((1, 4, 2 * h + 1, 2 * w)).astype(np.float32)}
             for h, w in ((15, 10), (7, 9), (20, 20))]
    for f in feeds:
        _assert_matches_onnxruntime(model, gm, f)
    torch.fx.symbolic_trace(gm)


# --------------------------------------------------------------------- a size an op truly fixes
def _fixed_width_model() -> onnx.ModelProto:
    """An input declared dynamic whose width a MatMul with a 32-row weight fixes to 32."""
    weight = RNG.standard_normal((32, 8)).astype(np.float32)
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": (TensorProto.FLOAT, ["batch", "width"])},
                  initializers={"w": weight})


def test_a_dimension_an_op_fixes_is_checked_at_run_time() -> None:
    """When an op needs a dynamic dimension to be one size, model.py asserts it with an error that
    names the input, the dimension, the size and the node, and says how to choose the size; the
    conversion warns. The batch stays dynamic."""
    model = _fixed_width_model()
    converter = OnnxToFxConverter(model)
    gm = converter.convert()
    assert converter.result is not None
    source, warnings = converter.source_code, converter.result.emitted.warnings
    assert converter.result.info["specialised_dimensions"] == [{"input": "x", "axis": 1, "size": 32,
                                                               "node": "MatMul_0"}]
    assert "torch._assert(x.shape[1] == 32," in source
    assert warnings == ["dynamic dimension 1 of input 'x' must be 32 (required by node 'MatMul_0' (MatMul)); "
                        "model.py checks it at run time (choose the sizes with --shape x=...)"]
    for batch in (1, 3):
        _assert_matches_onnxruntime(model, gm, {"x": RNG.standard_normal((batch, 32)).astype(np.float32)})
    message = ("input 'x' dimension 1 must be 32: node 'MatMul_0' (MatMul) required it during conversion; "
               "convert with --shape x=... to choose the sizes")
    with pytest.raises(AssertionError, match=re.escape(message)):
        gm(torch.zeros(2, 20))
    traced = torch.fx.symbolic_trace(gm)
    with pytest.raises(AssertionError, match=re.escape(message)):
        traced(torch.zeros(2, 20))


def test_a_size_given_with_input_shapes_needs_no_run_time_check() -> None:
    model = _fixed_width_model()
    gm, source, warnings = _convert(model, input_shapes={"x": [4, 32]})
    assert "torch._assert" not in source and not warnings
    _assert_matches_onnxruntime(model, gm, {"x": RNG.standard_normal((4, 32)).astype(np.float32)})


def test_two_dimensions_an_op_equates_are_checked_at_run_time() -> None:
    """Adding a matrix to its transpose requires it to be square: the two dynamic dimensions become
    one symbol during conversion, and model.py checks that they are equal (onnxruntime rejects a
    non-square input too)."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]), helper.make_node("Add", ["x", "t"], ["y"])]
    model = _model(nodes, {"x": (TensorProto.FLOAT, ["batch", "rows", "cols"])})
    gm, source, warnings = _convert(model)
    assert "torch._assert(x.shape[1] == x.shape[2]," in source
    assert warnings == ["dynamic dimension 1 of input 'x' must be equal to input 'x' dimension 2 (required by "
                        "node 'Add_1' (Add)); model.py checks it at run time (choose the sizes with --shape x=...)"]
    for shape in ((2, 5, 5), (1, 7, 7)):
        _assert_matches_onnxruntime(model, gm, {"x": RNG.standard_normal(shape).astype(np.float32)})
    with pytest.raises(AssertionError, match=re.escape("input 'x' dimension 1 must be equal to input 'x' dimension 2")):
        gm(torch.zeros(1, 5, 6))
    converter = OnnxToFxConverter(model)
    converter.convert()
    assert converter.conversion_record()["specialised_dimensions"] == [
        {"input": "x", "axis": 1, "size": {"input": "x", "axis": 2}, "node": "Add_1"}]


def test_a_kernel_longer_than_the_first_assumed_length_converts() -> None:
    """An STFT-like front end: a 200-tap strided convolution of a dynamic length. Torch checks the
    kernel against the assumed length (64), so lowering starts over at the next assumed size."""
    weight = RNG.standard_normal((8, 1, 200)).astype(np.float32)
    nodes = [helper.make_node("Unsqueeze", ["x", "axis"], ["u"]),
             helper.make_node("Conv", ["u", "w"], ["y"], strides=[50])]
    model = _model(nodes, {"x": (TensorProto.FLOAT, ["batch", "samples"])},
                   initializers={"axis": np.array([1]), "w": weight})
    gm, source, warnings = _convert(model)
    assert warnings == [] and "_assert" not in source
    feeds = [{"x": RNG.standard_normal((b, n)).astype(np.float32)} for b, n in ((1, 251), (3, 457), (2, 1601))]
    _check_sizes(model, gm, feeds, ({0: Dim.DYNAMIC, 1: Dim.DYNAMIC},))


def test_a_size_check_failing_at_every_assumed_length_names_the_sizes_tried() -> None:
    weight = RNG.standard_normal((1, 1, 5000)).astype(np.float32)
    nodes = [helper.make_node("Unsqueeze", ["x", "axis"], ["u"]), helper.make_node("Conv", ["u", "w"], ["y"])]
    model = _model(nodes, {"x": (TensorProto.FLOAT, ["batch", "samples"])},
                   initializers={"axis": np.array([1]), "w": weight})
    with pytest.raises(ConversionError, match=r"Kernel size can't be greater than actual input size \(dynamic "
                                              r"dimensions were traced at 64, 256, 512, 1024 in turn and failed at "
                                              r"each; --shape NAME=\.\.\. fixes an input's sizes\)"):
        OnnxToFxConverter(model).convert()
    gm = OnnxToFxConverter(model, input_shapes={"x": [1, 6000]}).convert()
    assert tuple(gm(torch.zeros(1, 6000)).shape) == (1, 1, 1001)


def test_a_float_range_over_a_size_is_an_arange_of_that_size() -> None:
    """YOLO's anchor grid: ``Range(0.0, Cast(Shape(x)[3]), 1.0)``. Its length is the input's size, so
    it is ``torch.arange`` of that size, not a run-time helper whose length only data would tell
    (which torch.export could not relate to the sizes it is added to)."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "three"], ["width"], axis=0),
             helper.make_node("Cast", ["width"], ["width_f"], to=TensorProto.FLOAT),
             helper.make_node("Range", ["zero", "width_f", "one"], ["grid"]),
             helper.make_node("Add", ["grid", "half"], ["centres"]),
             helper.make_node("Mul", ["x", "centres"], ["y"])]
    model = _model(nodes, {"x": (TensorProto.FLOAT, ["batch", 3, "h", "w"])},
                   initializers={"three": np.array(3), "zero": np.array(0.0, np.float32),
                                 "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)})
    gm, source, warnings = _convert(model)
    assert warnings == [] and "_range(" not in source
    assert "torch.arange(x.shape[3], dtype=torch.float32)" in source
    feeds = [{"x": RNG.standard_normal((b, 3, h, w)).astype(np.float32)} for b, h, w in ((1, 5, 7), (2, 64, 64),
                                                                                         (3, 33, 97))]
    _check_sizes(model, gm, feeds, ({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},))


def test_a_reshape_merging_whole_dynamic_dims_is_plain_only_where_no_merged_dim_can_be_1() -> None:
    """``(n, c, h, w) -> (n, c, -1)``: the target size is the product of the dims it merges, written
    the same. Where ``w`` is at least 2 for every size, torch's view merges them without a decision,
    so it is a plain reshape. After a stride-32 convolution ``w'`` may be 1, where ``h' * w'``
    equals ``h'``: torch's view would decide on it, so that reshape goes through a flatten. A 1-D
    tensor reshaped to ``(1, -1)`` is not flattened (it is already flat). (The sizes leave ``h'``
    and ``w'`` at least 2: torch.export guards a stride-32 convolution's output length against 1
    whatever follows it.)"""
    nodes = [helper.make_node("Reshape", ["x", "heads"], ["merged"]),
             helper.make_node("Mul", ["merged", "merged"], ["y"]),
             helper.make_node("Conv", ["x", "w"], ["c"], strides=[32, 32]),
             helper.make_node("Reshape", ["c", "heads"], ["r"]),
             helper.make_node("Shape", ["r"], ["r_shape"]),
             helper.make_node("Gather", ["r_shape", "two"], ["cells"], axis=0),
             helper.make_node("Cast", ["cells"], ["cells_f"], to=TensorProto.FLOAT),
             helper.make_node("Range", ["zero", "cells_f", "one"], ["index"]),
             helper.make_node("Reshape", ["index", "row"], ["index_row"]),
             helper.make_node("Mul", ["r", "index_row"], ["z"])]
    model = _model(nodes, {"x": (TensorProto.FLOAT, ["batch", 3, "h", "w"])}, outputs=("y", "z"),
                   initializers={"w": RNG.standard_normal((3, 3, 1, 1)).astype(np.float32),
                                 "heads": np.array([0, 3, -1]), "two": np.array(2), "row": np.array([1, -1]),
                                 "zero": np.array(0.0, np.float32), "one": np.array(1.0, np.float32)})
    gm, source, warnings = _convert(model)
    lines = _forward_lines(source)
    assert warnings == []
    assert "merged = x.reshape([x.shape[0], 3, -1])" in lines
    assert "r = torch.flatten(c)" in lines and "r_1 = r.reshape([c.shape[0], 3, -1])" in lines
    assert "index_row = index.reshape([1, -1])" in lines
    feeds = [{"x": RNG.standard_normal((b, 3, h, w)).astype(np.float32)} for b, h, w in ((1, 40, 70), (2, 64, 96),
                                                                                         (3, 100, 33))]
    _check_sizes(model, gm, feeds, ({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},))
