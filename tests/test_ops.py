"""Single-op (and few-op) ONNX graphs built with ``onnx.helper``, each checked against onnxruntime.

These cover operators and attribute combinations that exporters rarely produce for the models in
``test_models.py``. Graph inputs get a dynamic batch dimension unless a case says otherwise, so the
conversion works on symbolic sizes and ``torch.export`` is checked with a dynamic batch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from support import check_conversion, ort_run

from onnx2fx import OnnxToFxConverter
from onnx2fx.errors import ConversionError, UnsupportedOperatorError

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
RNG = np.random.default_rng(0)


def rand(*shape: int, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def floats(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def make_model(nodes: Sequence[onnx.NodeProto], feeds: Mapping[str, np.ndarray], outputs: Mapping[str, Any],
               *, opset: int = 17, initializers: Mapping[str, np.ndarray] | None = None,
               dynamic: bool = True, domains: Mapping[str, int] | None = None,
               check: bool = True) -> onnx.ModelProto:
    """A model whose inputs are typed after ``feeds`` (first dim named ``N`` when ``dynamic``) and
    whose outputs map name -> numpy dtype."""
    inputs = []
    for name, array in feeds.items():
        shape: list[int | str] = list(array.shape)
        if dynamic and shape:
            shape[0] = "N"
        inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), shape))
    outs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None)
            for name, dtype in outputs.items()]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(list(nodes), "test", inputs, outs, initializer=inits)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="onnx2fx-tests")
    model.ir_version = helper.find_min_ir_version_for(opsets[:1], ignore_unknown=True)
    if check:  # catches mistakes in a test's graph before they look like conversion bugs
        onnx.checker.check_model(onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True))
    return model


def run(nodes: Sequence[onnx.NodeProto], feeds: Mapping[str, np.ndarray], outputs: Mapping[str, Any] | None = None,
        *, opset: int = 17, initializers: Mapping[str, np.ndarray] | None = None, dynamic: bool = True,
        **check: Any) -> Any:
    """Build a model from ``nodes`` and assert its conversion with :func:`check_conversion`.

    Most graphs have no weights, so the SGD-step check is off unless ``trainable=True``.
    """
    model = make_model(nodes, feeds, outputs or {"y": np.float32}, opset=opset, initializers=initializers,
                       dynamic=dynamic)
    check.setdefault("trainable", False)
    return check_conversion(model, feeds, **check)


def node(op: str, inputs: Sequence[str], outputs: Sequence[str] = ("y",), **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


# ---------------------------------------------------------------------------------- Resize
RESIZE_CASES = [
    pytest.param(dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
                 floats(1, 1, 2, 3), None, 13, id="nearest-asymmetric-floor-scales"),
    pytest.param(dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
                 floats(1, 1, 0.5, 0.5), None, 13, id="nearest-asymmetric-floor-downscale"),
    pytest.param(dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
                 None, ints(2, 3, 12, 10), 13, id="nearest-asymmetric-floor-sizes"),
    pytest.param(dict(mode="nearest", coordinate_transformation_mode="half_pixel",
                      nearest_mode="round_prefer_ceil"), floats(1, 1, 3, 2), None, 13,
                 id="nearest-half-pixel-round-prefer-ceil"),
    pytest.param(dict(mode="nearest"), floats(1, 1, 2, 3), None, 13, id="nearest-default-integer-upscale"),
    pytest.param(dict(mode="nearest", coordinate_transformation_mode="pytorch_half_pixel"), None,
                 ints(2, 3, 12, 15), 13, id="nearest-pytorch-half-pixel-sizes"),
    pytest.param(dict(mode="linear", coordinate_transformation_mode="half_pixel"), floats(1, 1, 2, 2), None, 13,
                 id="linear-half-pixel-scales"),
    pytest.param(dict(mode="linear", coordinate_transformation_mode="half_pixel"), floats(1, 1, 0.5, 0.5),
                 None, 13, id="linear-half-pixel-downscale"),
    pytest.param(dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
                 floats(1, 1, 1.5, 2.5), None, 13, id="linear-pytorch-half-pixel-scales"),
    pytest.param(dict(mode="linear", coordinate_transformation_mode="align_corners"), None,
                 ints(2, 3, 9, 13), 13, id="linear-align-corners-sizes"),
    pytest.param(dict(mode="linear", coordinate_transformation_mode="align_corners"), floats(1, 1, 2, 3),
                 None, 13, id="linear-align-corners-scales"),
    pytest.param(dict(mode="linear", coordinate_transformation_mode="half_pixel", axes=[2, 3]), None,
                 ints(7, 11), 18, id="linear-half-pixel-sizes-axes-opset18"),
    pytest.param(dict(mode="cubic", coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75),
                 floats(1, 1, 2, 2), None, 13, id="cubic-half-pixel-scales"),
]


@pytest.mark.parametrize(("attrs", "scales", "sizes", "opset"), RESIZE_CASES)
def test_resize(attrs: dict[str, Any], scales: np.ndarray | None, sizes: np.ndarray | None, opset: int) -> None:
    # A constant ``sizes`` that covers every axis fixes the batch, so those graphs are static.
    dynamic = sizes is None or len(sizes) == 2
    inputs = ["x", "", "scales"] if scales is not None else ["x", "", "", "sizes"]
    inits = {"scales": scales} if scales is not None else {"sizes": sizes}
    run([node("Resize", inputs, **attrs)], {"x": rand(2, 3, 6, 5)}, opset=opset, initializers=inits,
        dynamic=dynamic)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_keeps_dynamic_batch_symbolic(mode: str) -> None:
    """A batch read from a Resize output's shape stays ``x.shape[0]`` (YOLO heads reshape with it).

    ``F.interpolate`` with ``scale_factor`` used to fix the dynamic batch to its conversion-time hint,
    so ``Reshape(y, [batch, -1])`` became ``reshape([2, -1])`` and failed for other batch sizes."""
    nodes = [
        node("Resize", ["x", "", "scales"], ["up"], mode=mode),
        node("Shape", ["up"], ["shape"]),
        node("Gather", ["shape", "zero"], ["batch"], axis=0),
        node("Unsqueeze", ["batch", "axes"], ["batch_1d"]),
        node("Concat", ["batch_1d", "minus_one"], ["target"], axis=0),
        node("Reshape", ["up", "target"], ["y"]),
    ]
    inits = {"scales": floats(1, 1, 2, 2), "zero": np.array(0, dtype=np.int64), "axes": ints(0),
             "minus_one": ints(-1)}
    run(nodes, {"x": rand(2, 3, 4, 5)}, initializers=inits)  # exported with a dynamic batch, run at batch 3


@pytest.mark.parametrize(("transform", "sizes"), [("half_pixel", ints(1, 3, 80, 106)),
                                                 ("pytorch_half_pixel", ints(1, 3, 61, 1)),
                                                 ("align_corners", ints(1, 3, 80, 106)),
                                                 ("asymmetric", ints(1, 3, 29, 39))])
def test_resize_bilinear_non_power_of_two_is_bit_exact(transform: str, sizes: np.ndarray) -> None:
    """A bilinear resize by a ratio that is not a power of two (torchvision's detection transform
    resizes 480x640 to 800x1066) computes onnxruntime's source coordinates: ``F.interpolate``'s
    inverse-scale coordinates differ in the last bit, which a noisy image turns into ~1e-4 %."""
    image = RNG.random((1, 3, 48, 64), dtype=np.float32)
    model = make_model([node("Resize", ["x", "", "", "sizes"], mode="linear",
                             coordinate_transformation_mode=transform)], {"x": image}, {"y": np.float32},
                       initializers={"sizes": sizes}, dynamic=False)
    gm = check_conversion(model, {"x": image}, trainable=False)
    np.testing.assert_array_equal(gm(torch.from_numpy(image)).numpy(), ort_run(model, {"x": image})[0])


# ---------------------------------------------------------------------------------- Pad
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_opset11(mode: str) -> None:
    inits: dict[str, np.ndarray] = {"pads": ints(0, 0, 1, 2, 0, 0, 2, 1)}
    inputs = ["x", "pads"]
    if mode == "constant":
        inits["value"] = floats(1.5).reshape(())
        inputs.append("value")
    run([node("Pad", inputs, mode=mode)], {"x": rand(2, 3, 4, 5)}, opset=11, initializers=inits)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_opset18_axes(mode: str) -> None:
    inits = {"pads": ints(1, 2, 2, 0), "value": floats(-0.5).reshape(()), "axes": ints(-1, 1)}
    run([node("Pad", ["x", "pads", "value", "axes"], mode=mode)], {"x": rand(2, 3, 4, 5)}, opset=18,
        initializers=inits)


@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
@pytest.mark.parametrize(("shape", "pads"), [
    ((2, 1, 1, 9), (0, 0, 0, 3, 0, 0, 0, 3)),  # 4-D, last axis only (Silero VAD's STFT front end)
    ((2, 3, 4, 5, 6), (0, 0, 0, 0, 2, 0, 0, 0, 0, 1)),  # 5-D, last axis only
    ((5, 6), (1, 2, 2, 1)),  # 2-D, both axes
    ((7,), (2, 3)),  # 1-D
    ((4, 5, 6), (1, 1, 2, 0, 2, 1)),  # 3-D, every axis
])
def test_pad_non_constant_modes_any_rank(mode: str, shape: tuple[int, ...], pads: tuple[int, ...]) -> None:
    run([node("Pad", ["x", "pads"], mode=mode)], {"x": rand(*shape)}, opset=19, initializers={"pads": ints(*pads)},
        dynamic=False)


def test_pad_non_constant_on_four_axes_is_unsupported() -> None:
    model = make_model([node("Pad", ["x", "pads"], mode="reflect")], {"x": rand(3, 4, 5, 6)}, {"y": np.float32},
                       opset=19, initializers={"pads": ints(1, 1, 1, 1, 1, 1, 1, 1)})
    with pytest.raises(UnsupportedOperatorError, match="pads 4 axes; torch pads at most the last 3"):
        OnnxToFxConverter(model).convert()


def test_pad_legacy_attribute() -> None:
    run([node("Pad", ["x"], pads=[0, 1, 0, 2], mode="constant", value=2.0)], {"x": rand(2, 4)}, opset=2)


# ---------------------------------------------------------------------------------- Split
def test_split_opset13_sizes_input() -> None:
    outputs = {"a": np.float32, "b": np.float32, "c": np.float32}
    run([node("Split", ["x", "split"], list(outputs), axis=1)], {"x": rand(2, 7, 3)}, outputs, opset=13,
        initializers={"split": ints(2, 4, 1)})


def test_split_opset13_equal_parts() -> None:
    outputs = {"a": np.float32, "b": np.float32}
    run([node("Split", ["x"], list(outputs), axis=-1)], {"x": rand(2, 3, 8)}, outputs, opset=13)


@pytest.mark.parametrize("size", [9, 7], ids=["even", "uneven"])
def test_split_opset18_num_outputs(size: int) -> None:
    outputs = {"a": np.float32, "b": np.float32, "c": np.float32}
    run([node("Split", ["x"], list(outputs), axis=1, num_outputs=3)], {"x": rand(2, size)}, outputs, opset=18)


def test_split_opset11_attribute() -> None:
    outputs = {"a": np.float32, "b": np.float32}
    run([node("Split", ["x"], list(outputs), axis=2, split=[1, 3])], {"x": rand(2, 3, 4)}, outputs, opset=11)


# ---------------------------------------------------------------------------------- Slice
# (starts, ends, axes, steps, whether the batch axis keeps its size)
SLICE_CASES = [
    pytest.param(ints(1), ints(INT64_MAX), ints(1), ints(1), True, id="int64-max-end"),
    pytest.param(ints(-1), ints(INT64_MIN), ints(2), ints(-1), True, id="reverse-int64-min-end"),
    pytest.param(ints(-1, 4), ints(INT64_MIN, 0), ints(1, 2), ints(-1, -2), True, id="reverse-two-axes"),
    pytest.param(ints(5, 0), ints(1, INT64_MAX), ints(2, 1), ints(-2, 2), True, id="negative-step-2"),
    pytest.param(ints(INT64_MAX), ints(-100), ints(2), ints(-1), True, id="reverse-clamped-bounds"),
    pytest.param(ints(-3, 1), ints(-1, -1), ints(2, 1), ints(1, 1), True, id="negative-starts"),
    pytest.param(ints(7, 2), ints(INT64_MAX, 2), ints(2, 1), ints(1, 1), True, id="empty-slices"),
    pytest.param(ints(0), ints(INT64_MIN), ints(1), ints(1), True, id="int64-min-end-positive-step"),
    pytest.param(ints(-1), ints(INT64_MIN), ints(0), ints(-1), True, id="reverse-batch-axis"),
    pytest.param(ints(0, 0), ints(INT64_MAX, INT64_MAX), ints(0, 2), ints(1, 2), True, id="batch-axis-step-2"),
    pytest.param(ints(-2, INT64_MAX), ints(INT64_MIN, -3), ints(0, 2), ints(-1, -2), False,
                 id="negative-step-batch-axis"),
    pytest.param(ints(-2), ints(INT64_MAX), ints(0), ints(1), False, id="negative-start-batch-axis"),
]


@pytest.mark.parametrize(("starts", "ends", "axes", "steps", "keeps_batch"), SLICE_CASES)
def test_slice(starts: np.ndarray, ends: np.ndarray, axes: np.ndarray, steps: np.ndarray, keeps_batch: bool) -> None:
    # Slicing a dynamic batch is converted symbolically; only when the batch keeps its size can the
    # torch.export check ("one more input row, one more output row") apply.
    inits = {"starts": starts, "ends": ends, "axes": axes, "steps": steps}
    run([node("Slice", ["x", "starts", "ends", "axes", "steps"])], {"x": rand(3, 6, 7)}, initializers=inits,
        dynamic_batch=keeps_batch)


def test_slice_legacy_attributes() -> None:
    run([node("Slice", ["x"], starts=[1, -3], ends=[INT64_MAX, -1], axes=[1, 2])], {"x": rand(2, 4, 5)}, opset=9)


def test_slice_of_shape() -> None:
    """Shape -> Slice -> Reshape stays Python sizes, including a reversed slice."""
    nodes = [node("Shape", ["x"], ["s"]), node("Slice", ["s", "st", "en", "ax", "sp"], ["r"]),
             node("Reshape", ["x", "r"])]
    inits = {"st": ints(-1), "en": ints(INT64_MIN), "ax": ints(0), "sp": ints(-1)}
    run(nodes, {"x": rand(2, 3, 3)}, initializers=inits, dynamic=False)


# ---------------------------------------------------------------------------------- Gather
GATHER_CASES = [
    pytest.param(np.array(2, dtype=np.int64), 1, id="scalar-index"),
    pytest.param(np.array(-1, dtype=np.int64), 2, id="scalar-negative-index"),
    pytest.param(ints(0, -1, 2), 1, id="1d-negative-indices"),
    pytest.param(np.array([[0, 2], [-1, 1], [3, -4]], dtype=np.int64), 1, id="2d-indices"),
    pytest.param(np.array([[1, -2]], dtype=np.int64), -1, id="2d-indices-last-axis"),
]


@pytest.mark.parametrize(("indices", "axis"), GATHER_CASES)
def test_gather_constant_indices(indices: np.ndarray, axis: int) -> None:
    run([node("Gather", ["x", "i"], axis=axis)], {"x": rand(2, 4, 5)}, initializers={"i": indices})


def test_gather_indices_input() -> None:
    feeds = {"x": rand(2, 4, 5), "i": np.array([[3, -1], [0, -4]], dtype=np.int64)}
    run([node("Gather", ["x", "i"], axis=1)], feeds, dynamic=False)


def test_gather_batch_axis_negative() -> None:
    run([node("Gather", ["x", "i"], axis=0)], {"x": rand(3, 4)}, initializers={"i": ints(-1, 0)},
        dynamic=False)


# ---------------------------------------------------------------------------------- Expand, Where, Equal
def test_expand_broadcast_dims() -> None:
    run([node("Expand", ["x", "shape"])], {"x": rand(2, 1, 4)}, initializers={"shape": ints(1, 3, 1)})


def test_expand_adds_leading_dims() -> None:
    run([node("Expand", ["x", "shape"])], {"x": rand(3, 1)}, initializers={"shape": ints(2, 1, 3, 4)},
        dynamic=False)


def test_expand_to_input_shape() -> None:
    """Expand to a shape read from another input (``Shape``), as exporters write for broadcasting."""
    nodes = [node("Shape", ["x"], ["s"]), node("Expand", ["b", "s"], ["e"]), node("Add", ["x", "e"])]
    run(nodes, {"x": rand(2, 3, 4)}, initializers={"b": rand(1, 4)}, trainable=True)


def test_where_equal() -> None:
    nodes = [node("Equal", ["a", "b"], ["eq"]), node("Where", ["eq", "x", "zero"])]
    feeds = {"x": rand(2, 5), "a": RNG.integers(0, 3, (2, 5)), "b": RNG.integers(0, 3, (2, 5))}
    run(nodes, feeds, initializers={"zero": floats(0.0)})


def test_where_broadcast() -> None:
    nodes = [node("Greater", ["x", "t"], ["c"]), node("Where", ["c", "x", "y0"])]
    run(nodes, {"x": rand(2, 3, 4)}, initializers={"t": floats(0.25), "y0": rand(3, 1)}, trainable=True)


def test_equal_outputs_bool() -> None:
    feeds = {"x": RNG.integers(0, 3, (2, 6)), "z": RNG.integers(0, 3, (2, 6))}
    run([node("Equal", ["x", "z"])], feeds, {"y": np.bool_})


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logical_with_constant(op: str) -> None:
    nodes = [node("Greater", ["x", "t"], ["c"]), node(op, ["c", "k"])]
    run(nodes, {"x": rand(2, 3)}, {"y": np.bool_}, initializers={"t": floats(0.0), "k": np.array([True, False, True])})


def test_expand_with_minus_one_from_equal_where() -> None:
    """TorchScript's ``expand(x.shape[0], -1, -1)``: Equal/Where on shape elements fold away."""
    nodes = [node("Shape", ["x"], ["s"]), node("Gather", ["s", "zero"], ["n"]),
             node("Unsqueeze", ["n", "zero1"], ["n1"]), node("Concat", ["n1", "m1", "m1"], ["target"], axis=0),
             node("ConstantOfShape", ["three"], ["ones"], value=numpy_helper.from_array(ints(1))),
             node("Mul", ["ones", "m1s"], ["neg"]), node("Equal", ["target", "neg"], ["is_neg"]),
             node("Where", ["is_neg", "ones", "target"], ["sizes"]), node("Expand", ["tok", "sizes"], ["e"]),
             node("Add", ["x", "e"])]
    inits = {"zero": np.array(0, dtype=np.int64), "zero1": ints(0), "m1": ints(-1), "three": ints(3),
             "m1s": np.array(-1, dtype=np.int64), "tok": rand(1, 1, 5)}
    gm = run(nodes, {"x": rand(2, 1, 5)}, initializers=inits, trainable=True)
    assert "expand(" in gm.code and "torch.eq" not in gm.code


# ---------------------------------------------------------------------------------- Range, ConstantOfShape
def test_range_dynamic_limit() -> None:
    nodes = [node("Shape", ["x"], ["s"]), node("Gather", ["s", "zero"], ["n"]),
             node("Range", ["start", "n", "step"], ["r"]), node("Cast", ["r"], to=TensorProto.FLOAT)]
    inits = {"zero": np.array(0, dtype=np.int64), "start": np.array(0, dtype=np.int64),
             "step": np.array(1, dtype=np.int64)}
    run(nodes, {"x": rand(3, 2)}, initializers=inits)


def test_range_float_constant() -> None:
    nodes = [node("Range", ["a", "b", "d"], ["r"]), node("Add", ["x", "r"])]
    inits = {"a": np.array(0.5, np.float32), "b": np.array(2.5, np.float32), "d": np.array(0.25, np.float32)}
    gm = run(nodes, {"x": rand(2, 8)}, initializers=inits)
    assert not list(gm.parameters())  # a constant computation, not a trainable parameter


def test_range_float_from_input() -> None:
    feeds = {"a": np.array(-1.0, np.float32), "b": np.array(1.2, np.float32), "d": np.array(0.3, np.float32)}
    run([node("Range", ["a", "b", "d"])], feeds, dynamic=False)


def test_range_negative_delta_from_input() -> None:
    feeds = {"a": np.array(10, np.int64), "b": np.array(1, np.int64), "d": np.array(-3, np.int64)}
    gm = run([node("Range", ["a", "b", "d"])], feeds, {"y": np.int64}, dynamic=False)
    assert "_range(" in gm.code


@pytest.mark.parametrize(("value", "dtype"), [(None, np.float32), (ints(7), np.int64), (floats(1.5), np.float32)],
                         ids=["default-zeros", "int64", "float"])
def test_constant_of_shape(value: np.ndarray | None, dtype: Any) -> None:
    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    run([node("Shape", ["x"], ["s"]), node("ConstantOfShape", ["s"], **attrs)], {"x": rand(2, 3)}, {"y": dtype})


def test_constant_of_shape_static() -> None:
    nodes = [node("ConstantOfShape", ["shape"], ["c"], value=numpy_helper.from_array(floats(2.0))),
             node("Mul", ["x", "c"])]
    gm = run(nodes, {"x": rand(2, 3, 4)}, initializers={"shape": ints(3, 4)})
    assert not list(gm.parameters())  # a constant computation, not a trainable parameter


# ---------------------------------------------------------------------------------- elementwise
def test_clip_opset6_attributes() -> None:
    run([node("Clip", ["x"], min=-0.5, max=0.75)], {"x": rand(2, 3, 4)}, opset=6)


def test_clip_opset6_relu() -> None:
    run([node("Clip", ["x"], min=0.0)], {"x": rand(2, 3)}, opset=6)


@pytest.mark.parametrize("bounds", [("lo", "hi"), ("lo", ""), ("", "hi"), ("",)],
                         ids=["min-max", "min", "max", "none"])
def test_clip_opset13_inputs(bounds: tuple[str, ...]) -> None:
    inits = {"lo": np.array(-0.5, np.float32), "hi": np.array(1.0, np.float32)}
    inits = {k: v for k, v in inits.items() if k in bounds}
    run([node("Clip", ["x", *bounds])], {"x": rand(2, 3, 4)}, opset=13, initializers=inits)


def test_clip_int_input() -> None:
    feeds = {"x": RNG.integers(-10, 10, (2, 5))}
    inits = {"lo": np.array(-3, np.int64), "hi": np.array(4, np.int64)}
    run([node("Clip", ["x", "lo", "hi"])], feeds, {"y": np.int64}, opset=13, initializers=inits)


def test_clip_bounds_from_inputs() -> None:
    feeds = {"x": rand(2, 5), "lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)}
    run([node("Clip", ["x", "lo", "hi"])], feeds, opset=13, dynamic=False)


@pytest.mark.parametrize("hi", [np.inf, 0.25, -1.0], ids=["inf", "finite", "below-min"])
def test_clip_computed_min_constant_max(hi: float) -> None:
    """A computed min with a constant max (log-mel's ``clip(x, max(x) - 80, inf)``): torch.clamp
    rejects a tensor and a number together under torch.export, and a min above the max gives the max."""
    nodes = [node("ReduceMax", ["x"], ["m"], keepdims=0), node("Sub", ["m", "eighty"], ["lo"]),
             node("Clip", ["x", "lo", "hi"])]
    run(nodes, {"x": rand(2, 5, low=-100, high=10)}, opset=13,
        initializers={"eighty": np.array(80.0, np.float32), "hi": np.array(hi, np.float32)}, dynamic=False)


@pytest.mark.parametrize("attrs", [{}, {"alpha": 1 / 6, "beta": 0.5}, {"alpha": 0.3, "beta": 0.4}],
                         ids=["default", "torch-hardsigmoid", "custom"])
def test_hard_sigmoid(attrs: dict[str, float]) -> None:
    run([node("HardSigmoid", ["x"], **attrs)], {"x": rand(2, 3, 4, low=-5, high=5)})


def test_hard_sigmoid_one_sixth_is_onnxruntime_bit_for_bit() -> None:
    """alpha = 1/6 is computed as ``alpha * x + beta``, not as torch's ``relu6(x + 3) / 6``, which
    rounds differently in a quarter of the values (PP-OCRv6 rec was 1.8e-3 % off a float64 run
    through its five gates, against onnxruntime's 1.9e-4 %)."""
    x = (np.random.default_rng(6).standard_normal(200_000) * 4).astype(np.float32)
    model = make_model([node("HardSigmoid", ["x"], alpha=1 / 6, beta=0.5)], {"x": x}, {"y": np.float32})
    gm = OnnxToFxConverter(model).convert()
    assert "hardsigmoid" not in gm.code
    (expected,) = ort_run(model, {"x": x})
    np.testing.assert_array_equal(gm(torch.from_numpy(x)).numpy(), expected)
    assert (torch.nn.functional.hardsigmoid(torch.from_numpy(x)).numpy() != expected).mean() > 0.2


def test_hard_swish() -> None:
    run([node("HardSwish", ["x"])], {"x": rand(2, 3, 4, low=-5, high=5)}, opset=14)


@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (1, 3, 1, 1), (5,)],
                         ids=["per-channel", "single", "per-channel-4d", "last-axis"])
def test_prelu(slope_shape: tuple[int, ...]) -> None:
    gm = run([node("PRelu", ["x", "slope"])], {"x": rand(2, 3, 4, 5)}, initializers={"slope": rand(*slope_shape)},
             trainable=True)
    assert ("PReLU" in str(gm)) == (slope_shape != (5,))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset20(approximate: str) -> None:
    run([node("Gelu", ["x"], approximate=approximate)], {"x": rand(2, 3, 4, low=-4, high=4)}, opset=20)


@pytest.mark.parametrize("op", ["Erf", "Exp", "Neg", "Sqrt", "Reciprocal", "Log", "Abs", "Tanh", "Sigmoid"])
def test_unary(op: str) -> None:
    positive = op in ("Sqrt", "Log", "Reciprocal")
    x = rand(2, 3, 4, low=0.1, high=3.0) if positive else rand(2, 3, 4)
    run([node(op, ["x"])], {"x": x})


@pytest.mark.parametrize("exponent", [2.0, 0.5, 3.0, -1.0], ids=["square", "sqrt", "cube", "inverse"])
def test_pow_constant_exponent(exponent: float) -> None:
    run([node("Pow", ["x", "e"])], {"x": rand(2, 3, low=0.5, high=2.0)},
        initializers={"e": np.array(exponent, np.float32)})


def test_pow_tensor_exponent() -> None:
    feeds = {"x": rand(2, 3, low=0.5, high=2.0), "e": rand(2, 3, low=-2.0, high=2.0)}
    run([node("Pow", ["x", "e"])], feeds)


def test_pow_int_exponent() -> None:
    """Pow-15 allows an int exponent on a float base; the result keeps the base's type."""
    run([node("Pow", ["x", "e"])], {"x": rand(2, 3)}, opset=15, initializers={"e": ints(3)})


def test_arithmetic_chain() -> None:
    nodes = [node("Mul", ["x", "w"], ["m"]), node("Sub", ["m", "x"], ["s"]), node("Div", ["s", "d"], ["q"]),
             node("Add", ["q", "w"])]
    run(nodes, {"x": rand(2, 4)}, initializers={"w": rand(4), "d": floats(2.0)}, trainable=True)


def test_int_div_truncates() -> None:
    feeds = {"x": RNG.integers(-20, 20, (2, 6)), "z": RNG.choice([-3, -2, 2, 5], (2, 6))}
    run([node("Div", ["x", "z"])], feeds, {"y": np.int64})


# ---------------------------------------------------------------------------------- reductions
# (op, opset, attributes, axes input, whether the batch axis survives the reduction)
REDUCE_CASES = [
    pytest.param("ReduceMean", 13, dict(axes=[1]), None, True, id="mean-attr"),
    pytest.param("ReduceMean", 13, dict(axes=[-1, 1], keepdims=0), None, True, id="mean-attr-keepdims0"),
    pytest.param("ReduceMean", 13, {}, None, False, id="mean-attr-all"),
    pytest.param("ReduceMean", 18, {}, ints(2), True, id="mean-input"),
    pytest.param("ReduceMean", 18, dict(keepdims=0), ints(1, 2), True, id="mean-input-keepdims0"),
    pytest.param("ReduceMean", 18, dict(noop_with_empty_axes=1), None, True, id="mean-noop-no-axes"),
    pytest.param("ReduceMean", 18, dict(noop_with_empty_axes=1), np.zeros(0, np.int64), True,
                 id="mean-noop-empty-axes"),
    pytest.param("ReduceMean", 18, dict(keepdims=0), np.zeros(0, np.int64), False, id="mean-empty-axes-reduces-all"),
    pytest.param("ReduceSum", 11, dict(axes=[0, 2]), None, False, id="sum-attr-opset11"),
    pytest.param("ReduceSum", 13, dict(keepdims=0), ints(-1), True, id="sum-input-keepdims0"),
    pytest.param("ReduceSum", 13, dict(noop_with_empty_axes=1), None, True, id="sum-noop"),
    pytest.param("ReduceSum", 13, {}, None, False, id="sum-all"),
    pytest.param("ReduceMax", 13, dict(axes=[1], keepdims=0), None, True, id="max-attr-keepdims0"),
    pytest.param("ReduceMax", 13, dict(axes=[1, 2]), None, True, id="max-attr-two-axes"),
    pytest.param("ReduceMax", 18, {}, ints(-2), True, id="max-input"),
    pytest.param("ReduceMax", 18, dict(keepdims=0), ints(1, 2), True, id="max-input-two-axes-keepdims0"),
    pytest.param("ReduceMax", 18, dict(noop_with_empty_axes=1), None, True, id="max-noop"),
]


@pytest.mark.parametrize(("op", "opset", "attrs", "axes", "keeps_batch"), REDUCE_CASES)
def test_reduce(op: str, opset: int, attrs: dict[str, Any], axes: np.ndarray | None, keeps_batch: bool) -> None:
    inputs = ["x"] if axes is None else ["x", "axes"]
    inits = {} if axes is None else {"axes": axes}
    # Reducing over the batch axis leaves no batch dimension to check a dynamic export against.
    run([node(op, inputs, **attrs)], {"x": rand(2, 3, 4)}, opset=opset, initializers=inits,
        dynamic_batch=keeps_batch)


# ---------------------------------------------------------------------------------- Reshape, Flatten, ...
RESHAPE_CASES = [
    pytest.param(ints(0, -1), 0, (2, 3, 4), id="zero-copies-and-minus-one"),
    pytest.param(ints(0, 2, -1, 2), 0, (2, 3, 4), id="zero-minus-one-middle"),
    pytest.param(ints(-1, 6), 1, (2, 3, 4), id="allowzero-without-zero"),
    pytest.param(ints(0, 4, 3), 0, (2, 3, 4), id="zero-first"),
    pytest.param(ints(-1, 4), 1, (2, 3, 4), id="merge-batch"),
    pytest.param(ints(0, 3, 1, 4), 0, (2, 12), id="split-with-unit-dim"),
    pytest.param(ints(3, -1, 4), 0, (2, 3, 4), id="move-batch"),
]


@pytest.mark.parametrize(("shape", "allowzero", "dims"), RESHAPE_CASES)
def test_reshape(shape: np.ndarray, allowzero: int, dims: tuple[int, ...]) -> None:
    # The result is reshaped back to the input's shape as a first output, so that the dynamic-batch
    # export check (which looks at the first output's leading dim) applies to every case.
    nodes = [node("Reshape", ["x", "shape"], ["r"], allowzero=allowzero), node("Shape", ["x"], ["s"]),
             node("Reshape", ["r", "s"])]
    run(nodes, {"x": rand(*dims)}, {"y": np.float32, "r": np.float32}, opset=14, initializers={"shape": shape})


def test_reshape_shape_from_input() -> None:
    """The target shape is another input's shape: ``z.shape`` sizes in the generated code."""
    nodes = [node("Shape", ["z"], ["s"]), node("Reshape", ["x", "s"])]
    run(nodes, {"x": rand(2, 12), "z": rand(2, 3, 4)})


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_flatten(axis: int) -> None:
    # The batch is dynamic in the ONNX graph; only axis 1 keeps it as the first output dim.
    run([node("Flatten", ["x"], axis=axis)], {"x": rand(2, 3, 4, 5)}, dynamic_batch=axis == 1)


def test_squeeze_unsqueeze_attributes() -> None:
    nodes = [node("Unsqueeze", ["x"], ["u"], axes=[1, -1]), node("Squeeze", ["u"], ["s"], axes=[1]),
             node("Squeeze", ["s"], axes=[-1])]
    run(nodes, {"x": rand(2, 3, 4)}, opset=11)


def test_squeeze_unsqueeze_inputs() -> None:
    nodes = [node("Unsqueeze", ["x", "ua"], ["u"]), node("Squeeze", ["u", "sa"])]
    run(nodes, {"x": rand(2, 3, 4)}, opset=13, initializers={"ua": ints(0, 3), "sa": ints(0)})


def test_squeeze_without_axes() -> None:
    run([node("Squeeze", ["x"])], {"x": rand(2, 1, 3, 1)}, opset=13, dynamic=False)


@pytest.mark.parametrize(("to", "dtype", "feed"), [
    (TensorProto.INT32, np.int32, rand(2, 5, low=-50, high=50)),
    (TensorProto.FLOAT, np.float32, RNG.integers(-50, 50, (2, 5))),
    (TensorProto.BOOL, np.bool_, np.round(rand(2, 5))),
    (TensorProto.DOUBLE, np.float64, rand(2, 5)),
    (TensorProto.FLOAT, np.float32, rand(2, 5)),
], ids=["float-to-int32", "int64-to-float", "float-to-bool", "float-to-double", "float-to-float"])
def test_cast(to: int, dtype: Any, feed: np.ndarray) -> None:
    run([node("Cast", ["x"], to=to)], {"x": feed}, {"y": dtype})


def test_identity_and_dropout() -> None:
    nodes = [node("Identity", ["x"], ["i"]), node("Dropout", ["i", "ratio"], ["d"]), node("Relu", ["d"])]
    run(nodes, {"x": rand(2, 3)}, opset=13, initializers={"ratio": np.array(0.3, np.float32)})


def test_dropout_mask_output() -> None:
    outputs = {"y": np.float32, "mask": np.bool_}
    run([node("Dropout", ["x"], ["y", "mask"])], {"x": rand(2, 3)}, outputs, opset=13)


def test_dropout_legacy_ratio_attribute() -> None:
    run([node("Dropout", ["x"], ratio=0.2)], {"x": rand(2, 3)}, opset=10)


# ---------------------------------------------------------------------------------- Conv, ConvTranspose
CONV_CASES = [
    pytest.param(dict(pads=[1, 0, 2, 1]), 1, id="asymmetric-pads"),
    pytest.param(dict(pads=[1, 2, 1, 2], strides=[2, 1], dilations=[1, 2]), 1, id="symmetric-stride-dilation"),
    pytest.param(dict(auto_pad="SAME_UPPER", strides=[2, 2]), 1, id="same-upper"),
    pytest.param(dict(auto_pad="SAME_LOWER", strides=[2, 2]), 1, id="same-lower"),
    pytest.param(dict(auto_pad="SAME_UPPER"), 1, id="same-upper-stride1"),
    pytest.param(dict(auto_pad="VALID", strides=[2, 1]), 1, id="valid"),
    pytest.param(dict(group=2, pads=[1, 1, 1, 1]), 2, id="groups"),
]


@pytest.mark.parametrize(("attrs", "group"), CONV_CASES)
def test_conv(attrs: dict[str, Any], group: int) -> None:
    inits = {"w": rand(6, 4 // group, 3, 2), "b": rand(6)}
    # 8 x 7 makes every SAME padding asymmetric (odd totals) for stride 2.
    run([node("Conv", ["x", "w", "b"], **attrs)], {"x": rand(2, 4, 8, 7)}, initializers=inits, trainable=True)


@pytest.mark.parametrize(("op", "attrs"), [
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")),  # MTCNN's P-Net (Keras)
    ("MaxPool", dict(kernel_shape=[3, 2], strides=[2, 3], auto_pad="SAME_LOWER")),
    ("Conv", dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ("Conv", dict(strides=[3, 2], auto_pad="SAME_LOWER")),  # onnxruntime rejects SAME with dilation
])
def test_same_padding_over_run_time_spatial_sizes(op: str, attrs: dict[str, Any]) -> None:
    """auto_pad SAME with stride > 1 over spatial dims the model leaves open: the padding depends
    on each size's remainder, so it is computed at run time; one conversion matches onnxruntime
    at even and odd sizes, and traces and exports with those dims dynamic."""
    inputs = ["x", "w"] if op == "Conv" else ["x"]
    inits = [numpy_helper.from_array(rand(4, 3, 3, 2), "w")] if op == "Conv" else []
    graph = helper.make_graph([node(op, inputs, **attrs)], "same", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 3, "H", "W"])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    gm = OnnxToFxConverter(model).convert()
    traced = torch.fx.symbolic_trace(gm)
    big = torch.from_numpy(rand(2, 3, 13, 16))
    dynamic = {"x": {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}
    exported = torch.export.export(gm, (big,), dynamic_shapes=dynamic).module()
    for shape in [(2, 3, 13, 16), (1, 3, 8, 7), (3, 3, 11, 10)]:
        x = rand(*shape)
        expected = ort_run(model, {"x": x})[0]
        for module in (gm, traced, exported):
            np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_conv1d_no_bias() -> None:
    run([node("Conv", ["x", "w"], pads=[2, 1])], {"x": rand(2, 3, 9)}, initializers={"w": rand(5, 3, 3)},
        trainable=True)


def test_conv_weight_from_input() -> None:
    feeds = {"x": rand(2, 3, 6, 6), "w": rand(4, 3, 3, 3)}
    run([node("Conv", ["x", "w"], pads=[1, 1, 1, 1])], feeds, dynamic=False)


CONV_TRANSPOSE_CASES = [
    pytest.param(dict(pads=[1, 1, 1, 1], strides=[2, 2]), 1, id="symmetric-pads"),
    pytest.param(dict(pads=[0, 1, 1, 2], strides=[2, 2]), 1, id="asymmetric-pads"),
    pytest.param(dict(pads=[1, 1, 1, 1], strides=[2, 3], output_padding=[1, 2]), 1, id="output-padding"),
    pytest.param(dict(pads=[1, 0, 0, 1], strides=[2, 2], output_padding=[1, 1]), 1,
                 id="asymmetric-pads-output-padding"),
    pytest.param(dict(group=2, strides=[2, 2]), 2, id="groups"),
    pytest.param(dict(group=2, pads=[1, 1, 1, 1], dilations=[2, 1]), 2, id="groups-dilation"),
    pytest.param(dict(strides=[2, 2], output_shape=[9, 10]), 1, id="output-shape"),
    pytest.param(dict(strides=[2, 2], output_shape=[8, 9]), 1, id="output-shape-odd-crop"),
    pytest.param(dict(strides=[2, 2], output_shape=[8, 9], auto_pad="SAME_UPPER"), 1, id="output-shape-same-upper"),
    pytest.param(dict(strides=[2, 2], auto_pad="SAME_UPPER"), 1, id="same-upper"),
    pytest.param(dict(strides=[2, 2], auto_pad="SAME_LOWER"), 1, id="same-lower"),
]


@pytest.mark.parametrize(("attrs", "group"), CONV_TRANSPOSE_CASES)
def test_conv_transpose(attrs: dict[str, Any], group: int) -> None:
    inits = {"w": rand(4, 6 // group, 3, 3), "b": rand(6)}
    run([node("ConvTranspose", ["x", "w", "b"], **attrs)], {"x": rand(2, 4, 4, 5)}, initializers=inits,
        trainable=True)


def test_conv_transpose_1d_no_bias() -> None:
    run([node("ConvTranspose", ["x", "w"], strides=[3], pads=[1, 0])], {"x": rand(2, 3, 5)},
        initializers={"w": rand(3, 2, 4)}, trainable=True)


# ---------------------------------------------------------------------------------- Attention
ATTENTION_CASES = [
    pytest.param({}, (2, 2, 5, 8), (2, 2, 7, 8), None, id="4d-cross"),
    pytest.param(dict(is_causal=1, scale=0.2), (2, 2, 6, 8), (2, 2, 6, 8), None, id="4d-causal-scale"),
    pytest.param(dict(q_num_heads=4, kv_num_heads=2), (2, 5, 32), (2, 7, 16), None, id="3d-grouped-query"),
    pytest.param(dict(q_num_heads=2, kv_num_heads=2, is_causal=1), (2, 6, 16), (2, 6, 16), None, id="3d-causal"),
    pytest.param({}, (2, 2, 5, 8), (2, 2, 7, 8), np.bool_, id="bool-mask"),
    pytest.param({}, (2, 2, 5, 8), (2, 2, 7, 8), np.float32, id="float-mask"),
]


@pytest.mark.parametrize(("attrs", "q_shape", "kv_shape", "mask"), ATTENTION_CASES)
def test_attention(attrs: dict[str, Any], q_shape: tuple[int, ...], kv_shape: tuple[int, ...],
                   mask: Any) -> None:
    feeds = {"q": rand(*q_shape), "k": rand(*kv_shape), "v": rand(*kv_shape)}
    inputs = ["q", "k", "v"]
    inits = {}
    if mask is not None:
        values = RNG.uniform(size=(q_shape[-2], kv_shape[-2]))
        inits["mask"] = (values > 0.3) if mask is np.bool_ else (values * -4).astype(np.float32)
        inputs.append("mask")
    run([node("Attention", inputs, **attrs)], feeds, opset=23, initializers=inits)


# ---------------------------------------------------------------------------------- pooling, softmax
POOL_CASES = [
    pytest.param(dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0), id="pads-exclude"),
    pytest.param(dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1), id="pads-include"),
    pytest.param(dict(kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1), id="ceil-mode"),
    pytest.param(dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                      count_include_pad=0), id="ceil-mode-pads-exclude"),
    pytest.param(dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                      count_include_pad=1), id="ceil-mode-pads-include"),
    pytest.param(dict(kernel_shape=[2, 3], pads=[0, 1, 1, 0], count_include_pad=1), id="asymmetric-pads-include"),
    pytest.param(dict(kernel_shape=[2, 3], pads=[0, 1, 1, 0], count_include_pad=0), id="asymmetric-pads-exclude"),
    pytest.param(dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]), id="same-upper"),
]


@pytest.mark.parametrize("attrs", POOL_CASES)
def test_average_pool(attrs: dict[str, Any]) -> None:
    run([node("AveragePool", ["x"], **attrs)], {"x": rand(2, 3, 7, 8)}, opset=19)


def test_max_pool_asymmetric_pads() -> None:
    run([node("MaxPool", ["x"], kernel_shape=[3, 3], pads=[0, 1, 2, 1], strides=[2, 2])], {"x": rand(2, 3, 7, 8)})


def test_global_max_pool() -> None:
    run([node("GlobalMaxPool", ["x"])], {"x": rand(2, 3, 5, 4)})


def test_global_average_pool_1d() -> None:
    run([node("GlobalAveragePool", ["x"])], {"x": rand(2, 3, 5)})


@pytest.mark.parametrize(("opset", "axis", "rank"), [
    (11, 1, 4), (11, -1, 4), (11, 2, 3), (11, None, 3), (13, 1, 4), (13, None, 4), (13, 0, 2),
], ids=["opset11-axis1-4d", "opset11-last", "opset11-axis2-3d", "opset11-default", "opset13-axis1-4d",
        "opset13-default", "opset13-axis0"])
def test_softmax(opset: int, axis: int | None, rank: int) -> None:
    attrs = {} if axis is None else {"axis": axis}
    x = rand(*(2, 3, 4, 5)[:rank], low=-4, high=4)
    # Softmax over the batch axis (legacy axis 0 or opset 13 axis 0) couples batch rows together.
    run([node("Softmax", ["x"], **attrs)], {"x": x}, opset=opset, dynamic_batch=axis != 0)


def test_log_softmax_legacy() -> None:
    run([node("LogSoftmax", ["x"], axis=1)], {"x": rand(2, 3, 4)}, opset=11)


@pytest.mark.parametrize(("op", "opset", "axis"), [("Softmax", 13, 2), ("LogSoftmax", 13, -3), ("Softmax", 11, 5)])
def test_softmax_axis_out_of_range_is_a_conversion_error(op: str, opset: int, axis: int) -> None:
    """torch's shape-only softmax accepts any ``dim``; the model would fail only when run."""
    model = make_model([helper.make_node(op, ["x"], ["y"], name="sm", axis=axis)], {"x": rand(2, 3)},
                       {"y": np.float32}, opset=opset, check=False)
    with pytest.raises(ConversionError, match=rf"^node 'sm' \({op}, .*\): .*ValueError: axis {axis} is out of range "
                                              r"for an input of rank 2 \(allowed: \[-2, 1\]\)$"):
        OnnxToFxConverter(model).convert()


def test_top_k_with_a_run_time_k_checks_its_axis() -> None:
    """The sizes of TopK with ``k`` known only at run time are written out, so no torch run would
    notice an impossible axis."""
    model = make_model([helper.make_node("TopK", ["x", "k"], ["v", "i"], name="tk", axis=2)],
                       {"x": rand(2, 3), "k": np.array([1], np.int64)}, {"v": np.float32, "i": np.int64},
                       opset=17, check=False)
    with pytest.raises(ConversionError, match=r"^node 'tk' \(TopK, .*ValueError: axis 2 is out of range for an input "
                                              r"of rank 2 \(allowed: \[-2, 1\]\)$"):
        OnnxToFxConverter(model).convert()


def test_axis_index_counts_from_the_front_within_the_rank() -> None:
    from onnx2fx.ops.axes import axis_index

    assert [axis_index(a, 3) for a in (-3, -1, 0, 2)] == [0, 2, 0, 2]
    assert axis_index(3, 3, end_included=True) == 3 and axis_index(-3, 3, end_included=True) == 0
    assert axis_index(0, 0) == 0 and axis_index(-1, 0) == 0  # a 0-d input: torch's dim 0 or -1
    with pytest.raises(ValueError, match=r"^axis 3 is out of range for an input of rank 3 \(allowed: \[-3, 2\]\)$"):
        axis_index(3, 3)
    with pytest.raises(ValueError, match=r"^axis -5 is out of range for an input of rank 3 \(allowed: \[-4, 3\]\)$"):
        axis_index(-5, 3, end_included=True)


# ---------------------------------------------------------------------------------- detection
def _random_boxes(count: int, width: float, height: float) -> np.ndarray:
    corner = RNG.uniform(-8, [width, height], size=(count, 2))
    return np.concatenate([corner, corner + RNG.uniform(0.5, 60, size=(count, 2))], 1).astype(np.float32)


@pytest.mark.parametrize(("attrs", "opset"), [
    pytest.param(dict(sampling_ratio=2, spatial_scale=0.25, output_height=7, output_width=7), 16, id="fixed-grid"),
    pytest.param(dict(sampling_ratio=0, spatial_scale=0.25, output_height=5, output_width=4), 16, id="adaptive"),
    pytest.param(dict(sampling_ratio=2, spatial_scale=0.25, mode="max"), 16, id="max"),
    pytest.param(dict(sampling_ratio=0, spatial_scale=0.125, coordinate_transformation_mode="output_half_pixel"),
                 16, id="output-half-pixel"),
    pytest.param(dict(sampling_ratio=2, spatial_scale=0.25), 10, id="opset10"),
])
def test_roi_align_many_regions_is_bit_exact(attrs: dict[str, Any], opset: int) -> None:
    """Hundreds of regions over two images, as a detector's box head pools them: every region
    matches onnxruntime to the bit (its features feed fully connected layers that amplify a
    last-bit difference) and the regions are computed together, not in a Python loop."""
    feeds = {"x": RNG.standard_normal((2, 8, 40, 50)).astype(np.float32), "rois": _random_boxes(300, 200, 160),
             "batch_indices": RNG.integers(0, 2, 300).astype(np.int64)}
    model = make_model([node("RoiAlign", ["x", "rois", "batch_indices"], **attrs)], feeds, {"y": np.float32},
                       opset=opset, dynamic=False)
    # the adaptive grid groups regions by their grid size, which is data: torch.export cannot trace it
    gm = check_conversion(model, feeds, trainable=False, export=attrs["sampling_ratio"] > 0)
    produced = gm(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
    np.testing.assert_array_equal(produced, ort_run(model, feeds)[0])


@pytest.mark.parametrize("center_point_box", [0, 1])
def test_non_max_suppression_thousands_of_boxes(center_point_box: int) -> None:
    """Region-proposal scale NMS (3000 boxes, two batches, three classes, some corners flipped)
    selects exactly onnxruntime's boxes in its order."""
    corner = RNG.uniform(0, 500, size=(2, 3000, 2))
    boxes = np.concatenate([corner, corner + RNG.uniform(5, 80, size=(2, 3000, 2))], -1).astype(np.float32)
    boxes[0, ::7] = boxes[0, ::7][:, [2, 3, 0, 1]]
    feeds = {"boxes": boxes, "scores": RNG.random((2, 3, 3000), dtype=np.float32)}
    inits = {"max_out": ints(200), "iou": floats(0.5), "score": floats(0.2)}
    model = make_model([node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score"],
                             center_point_box=center_point_box)], feeds, {"y": np.int64}, initializers=inits,
                       opset=11, dynamic=False)
    gm = OnnxToFxConverter(model).convert()
    selected = gm(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
    np.testing.assert_array_equal(selected, ort_run(model, feeds)[0])


# ---------------------------------------------------------------------------------- errors
def test_unsupported_operator_names_node_op_domain_and_opset() -> None:
    nodes = [node("ImageDecoder", ["encoded"], ["y"], name="decoder")]
    feeds = {"encoded": np.zeros(64, np.uint8)}
    model = make_model(nodes, feeds, {"y": np.uint8}, opset=20, dynamic=False)
    with pytest.raises(UnsupportedOperatorError) as info:
        OnnxToFxConverter(model).convert()
    assert str(info.value) == "node 'decoder': operator ImageDecoder (domain 'ai.onnx', opset 20) is not supported"
    assert (info.value.node, info.value.op_type, info.value.domain, info.value.opset) == \
        ("decoder", "ImageDecoder", "", 20)


def test_unsupported_custom_domain_operator() -> None:
    nodes = [helper.make_node("FancyOp", ["x"], ["y"], name="custom_1", domain="com.example")]
    model = make_model(nodes, {"x": rand(2, 3)}, {"y": np.float32}, domains={"com.example": 3}, check=False)
    with pytest.raises(UnsupportedOperatorError,
                       match=re.escape("node 'custom_1': operator FancyOp (domain 'com.example', opset 3) "
                                       "is not supported")):
        OnnxToFxConverter(model).convert()


def test_unhandled_attribute_value_is_named() -> None:
    nodes = [node("GridSample", ["x", "grid"], name="sample", mode="cubic")]
    model = make_model(nodes, {"x": rand(1, 2, 3, 4, 5), "grid": rand(1, 3, 4, 5, 3)}, {"y": np.float32},
                       opset=20, check=False)
    with pytest.raises(UnsupportedOperatorError) as info:
        OnnxToFxConverter(model).convert()
    assert str(info.value) == ("node 'sample' (GridSample, domain 'ai.onnx', opset 20): attribute mode: "
                               "'cubic' on a 5-D input")
    assert info.value.attribute == "mode"


def test_unknown_attribute_is_named() -> None:
    model = make_model([node("Relu", ["x"], name="act", slope=0.5)], {"x": rand(2, 3)}, {"y": np.float32},
                       check=False)
    with pytest.raises(UnsupportedOperatorError) as info:
        OnnxToFxConverter(model).convert()
    assert str(info.value) == ("node 'act' (Relu, domain 'ai.onnx', opset 17): attribute slope: "
                               "is not handled (value 0.5)")
    assert info.value.attribute == "slope"


# ------------------------------------------------------------------------------ requantization rounding
def _requantization_tie_model(op: str, x: np.ndarray) -> onnx.ModelProto:
    """``op`` with a rescale of float32(0.1) and a weight of one: ``acc * 0.1`` lies just above a
    half for odd multiples of 5, and onnxruntime rounds the float32 product, which is the half itself."""
    if op == "QLinearMatMul":
        inits = dict(x_scale=np.float32(0.1), x_zp=np.uint8(0), w=np.ones((1, 1), np.int8), w_scale=np.float32(1.0),
                     w_zp=np.int8(0), y_scale=np.float32(1.0), y_zp=np.uint8(0))
        names = ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp"]
    else:  # 1x1 QLinearConv, per-channel weight scale, int32 bias 10: 0.5 * 0.2 is float32(0.1) too
        inits = dict(x_scale=np.float32(0.5), x_zp=np.uint8(0), w=np.ones((1, 1, 1, 1), np.int8),
                     w_scale=np.array([0.2], np.float32), w_zp=np.zeros(1, np.int8), y_scale=np.float32(1.0),
                     y_zp=np.uint8(0), bias=np.array([10], np.int32))
        names = ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "bias"]
    return make_model([node(op, names, ["y"])], {"x": x}, {"y": np.uint8}, initializers=inits)


@pytest.mark.parametrize("op", ["QLinearMatMul", "QLinearConv"])
def test_qlinear_requantization_rounds_the_float32_product(op: str) -> None:
    """The int32 accumulator times the float32 rescale is rounded to float32 before rounding half to
    even: 25 * float32(0.1) becomes 2.5 and then 2 (in float64 it is above 2.5 and would give 3)."""
    values = np.arange(256, dtype=np.uint8)
    x = values.reshape(256, 1) if op == "QLinearMatMul" else values.reshape(1, 1, 16, 16)
    model = _requantization_tie_model(op, x)
    expected = ort_run(model, {"x": x})[0]
    with torch.no_grad():
        produced = OnnxToFxConverter(model).convert()(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(produced, expected)
    accumulators = values.astype(np.int64) + (10 if op == "QLinearConv" else 0)
    produced = produced.reshape(-1)
    assert produced[accumulators == 25].tolist() == [2] and produced[accumulators == 45].tolist() == [4]
    assert produced[accumulators == 15].tolist() == [2]


# ---------------------------------------------------------------------------------- Max / Min bounds
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int32])
def test_max_min_against_constants_are_clamps(dtype: type) -> None:
    """Max and Min with a one-element constant become ``torch.clamp`` bounds, on either side and
    among several operands, with the values onnxruntime gives at two batch sizes."""
    x = (rand(2, 3, 5) * 4).astype(dtype)
    z = (rand(2, 3, 5) * 4).astype(dtype)
    inits = {"lo": np.full((1, 1, 1), -1.5, dtype), "hi": np.array(2.5, dtype)}
    nodes = [node("Max", ["x", "lo"], ["a"]), node("Min", ["hi", "a"], ["b"]), node("Max", ["b", "lo", "z"])]
    gm = run(nodes, {"x": x, "z": z}, {"y": dtype}, initializers=inits)
    code = gm.code
    assert code.count("torch.clamp(") == 3 and "torch.tensor" not in code and "_tensor_constant" not in code
    assert "torch.maximum(" in code  # the operand that is not a constant
    bigger = {"x": np.concatenate([x, x]), "z": np.concatenate([z, z])}
    check_conversion(make_model(nodes, bigger, {"y": dtype}, initializers=inits), bigger, trainable=False)


def test_max_min_clamps_keep_nans_and_signed_zeros_as_maximum_does() -> None:
    x = np.array([np.nan, -1.0, -0.0, 0.0, 3.0], np.float32)
    nodes = [node("Max", ["x", "zero"], ["m"]), node("Min", ["m", "nzero"])]
    model = make_model(nodes, {"x": x}, {"y": np.float32},
                       initializers={"zero": np.array(0.0, np.float32), "nzero": np.array(-0.0, np.float32)})
    gm = OnnxToFxConverter(model).convert()
    assert "torch.clamp(" in gm.code
    t = torch.from_numpy(x)
    expected = torch.minimum(torch.maximum(t, torch.tensor(0.0)), torch.tensor(-0.0))
    produced = gm(t)
    np.testing.assert_array_equal(produced.numpy(), expected.numpy())
    assert torch.equal(torch.signbit(produced), torch.signbit(expected))


def test_max_of_a_learned_scalar_stays_a_parameter() -> None:
    """A one-element initializer that training would change stays a tensor operand: onnxruntime's
    values, and one SGD step moves it."""
    gm = run([node("Max", ["x", "blocks.0.floor"])], {"x": rand(2, 4)},
             initializers={"blocks.0.floor": np.array([0.1], np.float32)}, trainable=True)
    assert "torch.clamp(" not in gm.code and "torch.maximum(" in gm.code
