"""The shape rules (``codegen/shape_rules.py``) give the sizes torch's own fake evaluation gives.

Each case builds fake tensors whose sizes are symbols of one shape environment (batch ``n``,
lengths ``h``, ``w``, ``t`` and expressions of them), asks the rule, then runs torch on the same
fakes and compares: same rank and dtype, and every size equal when the symbols are given several
values (the hint and odd sizes). Torch's run must not have fixed any symbol (a rule answers only
where torch takes no decision); the cases a rule must decline return ``None``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.experimental.symbolic_shapes import DimDynamic, StatelessSymbolicContext
from torch.utils._sympy.numbers import int_oo

from onnx2fx.codegen.fake_eval import as_fakes, evaluate_on_fakes
from onnx2fx.codegen.shape_env import ConversionShapeEnv
from onnx2fx.codegen.shape_rules import (
    PendingFake,
    exact_quotient,
    fake_of,
    module_result_sizes,
    result_by_rule,
    subscript,
)
from onnx2fx.ops.sliding_window import _same_pad, _same_padded_sizes

# Values given to the symbols when sizes are compared: the hints, then odd and uneven sizes.
POINTS = ({"n": 2, "h": 64, "w": 64, "t": 64}, {"n": 3, "h": 97, "w": 130, "t": 17},
          {"n": 5, "h": 33, "w": 255, "t": 100})


class Sizes:
    """One shape environment with the dynamic sizes ``n``, ``h``, ``w`` and ``t``."""

    def __init__(self) -> None:
        self.env = ConversionShapeEnv()
        self.mode = FakeTensorMode(shape_env=self.env, allow_non_fake_inputs=True)
        self.mode.cache_enabled = False
        base = self.mode.from_tensor(torch.empty(2, 64, 64, 64), symbolic_context=StatelessSymbolicContext(
            dynamic_sizes=[DimDynamic.DYNAMIC] * 4))
        self.n, self.h, self.w, self.t = base.shape
        self.symbols = {name: size.node.expr for name, size in zip("nhwt", base.shape)}

    def tensor(self, *sizes: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        with self.mode:
            return torch.empty(list(sizes), dtype=dtype)

    def at(self, size: Any, point: dict[str, int]) -> int:
        if isinstance(size, int):
            return size
        return int(size.node.expr.xreplace({self.symbols[k]: v for k, v in point.items()}))

    def assert_same(self, ruled: torch.Tensor, real: torch.Tensor,
                    points: tuple[dict[str, int], ...] = POINTS) -> None:
        assert (ruled.dtype, ruled.dim()) == (real.dtype, real.dim())
        for point in points:
            assert [self.at(s, point) for s in ruled.shape] == [self.at(s, point) for s in real.shape], point
        assert self.env.replacements == {}, "torch fixed a size where the rule answered"


@pytest.fixture
def s() -> Sizes:
    return Sizes()


def _check_function(s: Sizes, target: Callable[..., Any], *args: Any,
                    points: tuple[dict[str, int], ...] = POINTS, **kwargs: Any) -> None:
    ruled = result_by_rule(s.mode, target, args, kwargs)
    assert ruled is not None, "the rule declined"
    with s.mode:
        real = target(*args, **kwargs)
    for r, t in zip(ruled if isinstance(ruled, tuple) else (ruled,), real if isinstance(real, tuple) else (real,),
                    strict=True):
        s.assert_same(r, t, points)


# ------------------------------------------------------------------------------ elementwise
@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.mul])
def test_same_sizes_and_broadcast_ones(s: Sizes, op: Callable[..., Any]) -> None:
    x = s.tensor(s.n, 32, s.h, s.w)
    _check_function(s, op, x, s.tensor(s.n, 32, s.h, s.w))
    _check_function(s, op, x, s.tensor(32, 1, 1))
    _check_function(s, op, s.tensor(s.n, 1, s.h, 1), s.tensor(1, 8, 1, s.w))
    _check_function(s, op, x, 2.0)
    _check_function(s, op, 3, x)


@pytest.mark.parametrize("op", [torch.maximum, torch.minimum])
def test_maximum_and_minimum_of_two_tensors(s: Sizes, op: Callable[..., Any]) -> None:
    x = s.tensor(s.n, 32, s.h, s.w)
    _check_function(s, op, x, s.tensor(32, 1, 1))
    _check_function(s, op, s.tensor(s.n, 1, s.h, 1), s.tensor(1, 8, 1, s.w))
    assert result_by_rule(s.mode, op, (x, 2.0), {}) is None  # not a tensor: torch refuses it


def test_layer_and_rms_norm_functions_keep_the_sizes(s: Sizes) -> None:
    x = s.tensor(s.n, s.t, 64)
    _check_function(s, F.layer_norm, x, [64], eps=1e-6)
    _check_function(s, F.layer_norm, x, [64], s.tensor(64), s.tensor(64))
    _check_function(s, F.rms_norm, x, [64])
    assert result_by_rule(s.mode, F.layer_norm, (x, [32]), {}) is None
    assert result_by_rule(s.mode, F.layer_norm, (s.tensor(s.n, 64, s.t), [64]), {}) is None


def test_attention_takes_the_query_sizes_and_the_value_width(s: Sizes) -> None:
    q, k, v = s.tensor(s.n, 4, s.t, 16), s.tensor(s.n, 4, s.h, 16), s.tensor(s.n, 4, s.h, 8)
    _check_function(s, F.scaled_dot_product_attention, q, k, v)
    _check_function(s, F.scaled_dot_product_attention, q, k, v, scale=0.25)
    _check_function(s, F.scaled_dot_product_attention, q, k, v, attn_mask=s.tensor(s.t, s.h, dtype=torch.bool))
    _check_function(s, F.scaled_dot_product_attention, q, q, q, is_causal=True)
    assert result_by_rule(s.mode, F.scaled_dot_product_attention, (q, k, s.tensor(s.n, 4, s.t, 8)), {}) is None
    assert result_by_rule(s.mode, F.scaled_dot_product_attention, (q, s.tensor(s.n, 4, s.h, 8), v), {}) is None


def test_constant_padding_adds_the_pads(s: Sizes) -> None:
    """Compared with torch's symbolic decomposition: its C++ kernel would fix the sizes to their hints
    (the conversion takes the decomposition after it refused that)."""
    from torch._dispatch.python import enable_python_dispatcher

    x = s.tensor(s.n, 8, s.h, s.w)
    for args, kwargs in (((x, [1, 2, 0, 3]), {}), ((x, [0, 0, 2, 2, 0, 1]), {"value": -1.0}),
                         ((s.tensor(s.n, s.t, dtype=torch.int64), [3, 0]), {"mode": "constant", "value": 0})):
        ruled = result_by_rule(s.mode, F.pad, args, kwargs)
        assert ruled is not None
        with s.mode, enable_python_dispatcher():
            s.assert_same(ruled, F.pad(*args, **kwargs))
    assert result_by_rule(s.mode, F.pad, (x, [-1, 2]), {}) is None  # a crop: torch checks it against the size
    assert result_by_rule(s.mode, F.pad, (x, [1, 1]), {"mode": "reflect"}) is None


def test_reflect_replicate_and_circular_padding_of_static_sizes(s: Sizes) -> None:
    """basic-pitch's reflect pads of a dynamic batch of fixed-length signals."""
    signal = s.tensor(s.n, 1, 300)
    _check_function(s, F.pad, signal, [128, 128], mode="reflect")
    _check_function(s, F.pad, s.tensor(s.n, 171, 1), [0, 0, 128, 128], mode="reflect")
    _check_function(s, F.pad, s.tensor(s.n, 4, 5, 6), [1, 2, 3, 4], mode="replicate")
    _check_function(s, F.pad, s.tensor(s.n, 4, 5, 6), [5, 6, 0, 5], mode="circular")
    for args, kwargs in (((signal, [300, 0]), {"mode": "reflect"}),  # as long as the size: torch refuses
                         ((s.tensor(s.n, 4, 5, 6), [7, 0]), {"mode": "circular"}),
                         ((s.tensor(s.n, 4, s.t), [1, 1]), {"mode": "reflect"}),  # a dynamic padded size
                         ((s.tensor(s.n, 1, 2, 3, 4), [1, 1]), {"mode": "reflect"}),  # 1-D pads of a 4-D tensor
                         ((s.tensor(s.n, 1, 30, dtype=torch.int64), [1, 1]), {"mode": "reflect"}),
                         ((signal, [1, 1]), {"mode": "reflect", "value": 0.0})):
        assert result_by_rule(s.mode, F.pad, args, kwargs) is None, (args[1], kwargs)


@pytest.mark.parametrize(("function", "args"), [
    (F.leaky_relu, (0.2,)), (torch.clamp, (0.0, 6.0)), (F.hardtanh, (-1.0, 1.0)), (F.gelu, ()),
    (F.elu, ()), (torch.pow, (2.0,)), (torch.square, ()), (torch.floor, ())])
def test_activations_with_number_arguments_keep_the_sizes(s: Sizes, function: Callable[..., Any],
                                                           args: tuple[Any, ...]) -> None:
    x = s.tensor(s.n, 8, s.h, s.w).permute(0, 2, 3, 1)
    _check_function(s, function, x, *args)
    assert result_by_rule(s.mode, function, (x, *args), {"inplace": True}) is None
    assert result_by_rule(s.mode, function, (s.tensor(s.n, s.h, dtype=torch.int64), *args), {}) is None


def test_clip_with_scalar_tensor_bounds_keeps_the_sizes(s: Sizes) -> None:
    x = s.tensor(s.n, 1, s.t, 32)
    low, high = s.tensor(), s.tensor()
    _check_function(s, torch.clamp, x, low)
    _check_function(s, torch.clamp, x, min=low, max=high)
    _check_function(s, torch.clamp, x, None, 6.0)
    assert result_by_rule(s.mode, torch.clamp, (x, s.tensor(dtype=torch.float16)), {}) is None  # promotes
    assert result_by_rule(s.mode, torch.clamp, (x, s.tensor(32)), {}) is None  # a bound that is not 0-dim
    assert result_by_rule(s.mode, torch.clamp, (x,), {}) is None  # no bound: torch's error


def test_flip_keeps_the_sizes(s: Sizes) -> None:
    _check_function(s, torch.flip, s.tensor(s.n, 1, s.t // 64 - 1), [2])
    _check_function(s, torch.flip, s.tensor(s.n, s.h, dtype=torch.int64), (0, -1))
    assert result_by_rule(s.mode, torch.flip, (s.tensor(s.n, s.h), [1, -1]), {}) is None  # one axis twice
    assert result_by_rule(s.mode, torch.flip, (s.tensor(s.n, s.h), [2]), {}) is None


def test_a_zero_dim_tensor_operand_promotes_as_torch_does(s: Sizes) -> None:
    """A dequantization's ``x - zero_point`` with a uint8 0-dim zero point: float32, as torch gives."""
    x = s.tensor(1, 24, 32, (s.t - 1) // 2 + 1)
    _check_function(s, operator.add, x, torch.tensor(3, dtype=torch.uint8))
    _check_function(s, operator.sub, torch.tensor(1.5, dtype=torch.float64), x)
    _check_function(s, operator.mul, s.tensor(s.n, s.t, dtype=torch.int32), torch.tensor(2, dtype=torch.int64))
    assert result_by_rule(s.mode, operator.add, (x, s.tensor(1, dtype=torch.uint8)), {}) is None  # both sized
    four_bit = s.tensor(s.n, s.t, dtype=torch.int4)  # torch has no promotion for it: its own run raises
    assert result_by_rule(s.mode, operator.add, (four_bit, torch.tensor(1.5)), {}) is None


def test_integer_and_bitwise_operators_keep_the_dtype(s: Sizes) -> None:
    _check_function(s, operator.add, s.tensor(s.n, s.t, dtype=torch.int64), 1)
    _check_function(s, operator.and_, s.tensor(s.n, s.t, dtype=torch.int32), s.tensor(1, s.t, dtype=torch.int32))


def test_fpn_levels_broadcast_as_torch_assumes_them(s: Sizes) -> None:
    """An upsampled coarse level against the next finer one: equal at the hint, written differently."""
    upsampled = s.tensor(s.n, 32, 2 * ((s.h - 1) // 16) + 2, 2 * ((s.w - 1) // 16) + 2)
    finer = s.tensor(s.n, 32, (s.h - 1) // 8 + 1, (s.w - 1) // 8 + 1)
    _check_function(s, operator.add, upsampled, finer)
    _check_function(s, torch.cat, [upsampled, finer], 1)


def test_binary_declines_what_needs_a_decision(s: Sizes) -> None:
    x = s.tensor(s.n, s.h)
    assert result_by_rule(s.mode, operator.add, (x, s.tensor(s.n, s.w)), {}) is None  # would equate h and w
    assert result_by_rule(s.mode, operator.add, (x, s.tensor(s.n, 5)), {}) is None  # would fix h to 5
    assert result_by_rule(s.mode, operator.add, (x, s.tensor(s.n, s.h, dtype=torch.float16)), {}) is None
    assert result_by_rule(s.mode, operator.truediv, (s.tensor(s.n, dtype=torch.int64), 2), {}) is None
    assert result_by_rule(s.mode, operator.add, (x, 2.0), {"alpha": 2}) is None


# ------------------------------------------------------------------------------ matmul and layout
def test_matmul_attention_scores_and_values(s: Sizes) -> None:
    q = s.tensor(s.n, 4, s.t, 16)
    _check_function(s, torch.matmul, q, s.tensor(s.n, 4, 16, s.t))
    _check_function(s, operator.matmul, s.tensor(s.n, 4, s.t, s.t), q)
    _check_function(s, torch.matmul, s.tensor(s.n, s.t, 64), s.tensor(64, 32))
    assert result_by_rule(s.mode, torch.matmul, (q, s.tensor(s.n, 4, s.t, 16)), {}) is None  # 16 against t


def test_reshape_splits_and_merges_written_factors(s: Sizes) -> None:
    _check_function(s, torch.Tensor.reshape, s.tensor(s.n, s.t, 192), [s.n, s.t, 3, 4, 16])
    _check_function(s, torch.Tensor.reshape, s.tensor(s.n, 64, s.h, s.w), [s.n, 64, -1])
    _check_function(s, torch.Tensor.reshape, s.tensor(64 * s.n * s.h * s.w), [s.n, 64, -1])
    _check_function(s, torch.Tensor.reshape, s.tensor(s.n, 6, s.t), [-1, 2, s.t])
    _check_function(s, torch.Tensor.reshape, s.tensor(s.n, s.t, 4, 16), s.n, s.t, 64)
    _check_function(s, torch.Tensor.reshape, s.tensor(s.n, s.h, 8), [s.n * s.h, 8])
    # pixel unshuffle: -1 is h // 2, h * w // 4, at every size the reshape takes (h a multiple of 4)
    even = ({"n": 2, "h": 64, "w": 64, "t": 64}, {"n": 3, "h": 100, "w": 131, "t": 17},
            {"n": 5, "h": 36, "w": 255, "t": 100})
    _check_function(s, torch.Tensor.reshape, s.tensor(3 * s.n * s.h * s.w), [s.n, 3, -1, 2, s.w], points=even)
    _check_function(s, torch.Tensor.reshape, s.tensor(s.n, 3, s.h, s.w), [s.n, 12, -1], points=even)


def test_reshape_dropping_a_factor_that_is_one_records_that_it_is_one(s: Sizes) -> None:
    """A height pooled to one row (1 at the hint) reshaped away: the target's sizes, valid where the
    height is 1, and that condition recorded as torch's count check records it."""
    one_row = ((s.h - 1) // 16 - 2) // 3 + 1  # 1 at h = 64 and h = 33, 2 at h = 97
    width = ((s.w - 1) // 4 - 1) // 2 + 1
    rows_of_one = (POINTS[0], POINTS[2])
    x = s.tensor(120 * s.n * one_row * width)
    guards = len(s.env.guards)
    assert result_by_rule(s.mode, torch.Tensor.reshape, (x, [s.n, 1, width, 120]), {}) is not None
    assert [g.expr for g in s.env.guards[guards:]] == [sympy.Eq(one_row.node.expr, 1)]
    _check_function(s, torch.Tensor.reshape, x, [s.n, 1, width, 120], points=rows_of_one)
    # a factor that is not 1 at its hint, or a bare input size: left to torch
    assert result_by_rule(s.mode, torch.Tensor.reshape, (s.tensor(s.n, (s.h - 1) // 16 + 1), [s.n]), {}) is None
    assert result_by_rule(s.mode, torch.Tensor.reshape, (s.tensor(s.n, s.t // 64), [s.n]), {}) is not None
    assert result_by_rule(s.mode, torch.Tensor.reshape, (s.tensor(s.n, s.t), [s.n]), {}) is None


def test_reshape_declines_what_it_cannot_see(s: Sizes) -> None:
    x = s.tensor(s.n, s.h)
    assert result_by_rule(s.mode, torch.Tensor.reshape, (x, [s.h * 3, -1]), {}) is None  # n / 3: not at the hint
    assert result_by_rule(s.mode, torch.Tensor.reshape, (x, [s.n * s.w]), {}) is None  # w is no input factor
    assert result_by_rule(s.mode, torch.Tensor.reshape, (x, [s.w, -1]), {}) is None
    assert result_by_rule(s.mode, torch.Tensor.reshape, (x, [-1, -1]), {}) is None


def test_exact_quotient_of_sizes(s: Sizes) -> None:
    quotient = exact_quotient([s.n, 64, s.h, s.w], [s.n, 16])
    assert quotient is not None
    assert [s.at(quotient, p) for p in POINTS] == [4 * p["h"] * p["w"] for p in POINTS]
    half = exact_quotient([s.n, 6], [4])  # what a reshape's -1 is for every n it takes (an even one)
    assert half is not None and [s.at(half, p) for p in POINTS] == [3 * p["n"] // 2 for p in POINTS]
    assert exact_quotient([s.n, 6], [5]) is None  # not even at the hint
    assert exact_quotient([s.n, 6], [s.h]) is None


def test_permute_flatten_unsqueeze_squeeze_expand_to(s: Sizes) -> None:
    x = s.tensor(s.n, 1, s.t, 16)
    _check_function(s, torch.Tensor.permute, x, [0, 2, 3, 1])
    _check_function(s, torch.Tensor.permute, x, 3, 2, 1, 0)
    _check_function(s, torch.flatten, x, 1)
    _check_function(s, torch.flatten, x, 1, 2)
    _check_function(s, torch.unsqueeze, x, -1)
    _check_function(s, torch.squeeze, x, 1)
    _check_function(s, torch.squeeze, x, (1, 3))
    _check_function(s, torch.Tensor.expand, x, [s.n, 4, s.t, 16])
    _check_function(s, torch.Tensor.expand, x, [2, -1, -1, -1, -1])
    _check_function(s, torch.Tensor.to, x, torch.int64)
    _check_function(s, torch.softmax, x, -1)
    assert result_by_rule(s.mode, torch.squeeze, (x, 2), {}) is None  # whether t is 1: torch decides


def test_cat_and_split_along_a_dynamic_axis(s: Sizes) -> None:
    _check_function(s, torch.cat, [s.tensor(s.n, 64, s.h), s.tensor(s.n, 80, s.h)], 1)
    _check_function(s, torch.cat, [s.tensor(s.n, s.h), s.tensor(s.n, s.w), s.tensor(s.n, 3)], dim=1)
    _check_function(s, torch.split, s.tensor(s.n, 144, s.t), [64, 80], dim=1)
    _check_function(s, torch.split, s.tensor(s.n, 2 * s.t), [s.t, s.t], 1)
    assert result_by_rule(s.mode, torch.cat, ([s.tensor(s.n, s.h), s.tensor(s.n, s.w)], 0), {}) is None
    assert result_by_rule(s.mode, torch.split, (s.tensor(s.n, s.t), 16, 1), {}) is None


def test_grid_sample_takes_the_grid_positions(s: Sizes) -> None:
    values = s.tensor(8 * s.n, 32, s.h, s.w)
    _check_function(s, F.grid_sample, values, s.tensor(8 * s.n, 300, 4, 2), mode="bilinear",
                    padding_mode="zeros", align_corners=False)
    _check_function(s, F.grid_sample, s.tensor(s.n, 4, s.t, s.h, s.w), s.tensor(s.n, 2, s.h, 3, 3),
                    align_corners=True)
    assert result_by_rule(s.mode, F.grid_sample, (values, s.tensor(s.n, 300, 4, 2)), {}) is None  # 8n against n


def test_reductions_over_static_axes(s: Sizes) -> None:
    x = s.tensor(s.n, 32, s.t, 12)
    _check_function(s, torch.sum, x, 3)
    _check_function(s, torch.mean, x, (1, -1), keepdim=True)
    _check_function(s, torch.amax, x, 2)
    assert result_by_rule(s.mode, torch.sum, (x,), {}) is None  # over everything: no axis given
    assert result_by_rule(s.mode, torch.sum, (s.tensor(s.n, s.t, dtype=torch.int32), 1), {}) is None  # to int64


# ------------------------------------------------------------------------------ layers
LAYERS = [
    (nn.Conv2d(3, 16, 3, stride=2, padding=1), (3,)),
    (nn.Conv2d(16, 32, 1), (16,)),
    (nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16), (16,)),
    (nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False), (3,)),
    (nn.Conv2d(3, 8, (3, 1), stride=(1, 2), padding=(1, 0)), (3,)),
    (nn.Conv1d(4, 8, 5, stride=3, padding=2), (4,)),
    (nn.Conv3d(2, 4, 3, stride=2, padding=1), (2,)),
    (nn.MaxPool2d(3, 2, 1), (8,)),
    (nn.MaxPool2d(2), (8,)),
    (nn.AvgPool2d(3, stride=2, padding=1), (8,)),
    (nn.BatchNorm2d(8), (8,)),
    (nn.GroupNorm(4, 8), (8,)),
    (nn.PReLU(8), (8,)),
    (nn.PReLU(), (8,)),
    (nn.ConvTranspose2d(8, 4, 2, stride=2), (8,)),
    (nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1, groups=2), (8,)),
    (nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, dilation=2, bias=False), (8,)),
    (nn.ConvTranspose1d(4, 8, 5, stride=3, padding=2, output_padding=2), (4,)),
]


def _slices(*bounds: tuple[Any, Any, Any]) -> list[dict[str, Any]]:
    return [{"start": a, "stop": b, "step": c} for a, b, c in bounds]


def test_slices_of_static_and_dynamic_dimensions(s: Sizes) -> None:
    x = s.tensor(s.n, 144, s.h, s.w)
    full = (None, None, None)
    # YOLO's head: channels of a dynamic-sized map (static axis, any bounds Python allows)
    _check_function(s, subscript, x, _slices(full, (0, 64, None)))
    _check_function(s, subscript, x, _slices(full, (64, 2**63 - 1, None)))
    _check_function(s, subscript, x, _slices(full, (-80, -3, 2), (None, None, 2)))
    _check_function(s, subscript, x, _slices(full, (200, 300, None)))  # empty
    y = s.tensor(s.n, 4, s.t)
    s.env.constrain_symbol_range(s.symbols["t"], 8, int_oo)  # every length at least 8: bounds inside it
    for bounds in ((2, None, None), (None, 5, None), (1, 7, 3), (-4, None, None), (1, -2, None), (3, None, 2)):
        _check_function(s, subscript, y, _slices(full, full, bounds))
    # a bound past the length at the hint (INT32_MAX): the whole length, assumed shorter, as torch assumes it
    _check_function(s, subscript, y, _slices((None, 2**31 - 1, None), full, (1, 2**31 - 1, None)))
    assert s.env.var_to_range[s.symbols["t"]].upper == 2**31 - 2
    # bounds that may fall outside a dynamic length, symbolic bounds, integers and tensors: left to torch
    for bounds in ((9, None, None), (None, 20, None), (-9, None, None), (-2, 5, None), (4, 2, None),
                   (s.t // 2, None, None)):
        assert result_by_rule(s.mode, subscript, (y, _slices(full, full, bounds)), {}) is None, bounds
    assert result_by_rule(s.mode, subscript, (y, [0]), {}) is None
    assert result_by_rule(s.mode, subscript, (y, _slices(full) + [[0, 1]]), {}) is None


def test_one_integer_index_tensor_among_slices_takes_the_place_of_its_axis(s: Sizes) -> None:
    from torch._dispatch.python import enable_python_dispatcher

    x = s.tensor(s.n, 144, s.h, s.w)
    full = {"start": None, "stop": None, "step": None}
    indices = (s.tensor(s.t, dtype=torch.int64), s.tensor(5, 3, dtype=torch.int64), s.tensor(s.n, dtype=torch.int32))
    for index in indices:
        for items in ([index], [full, index], [full, {"start": 0, "stop": 64, "step": None}, index]):
            ruled = result_by_rule(s.mode, subscript, (x, items), {})
            assert ruled is not None
            with s.mode, enable_python_dispatcher():  # the fallback the conversion takes: torch's decomposition
                s.assert_same(ruled, subscript(x, items))
    # Faster R-CNN's Gather by the indices a NonZero found: a size known only at run time (torch's
    # plain fake run stops at it; the conversion's fallback runs its Python decomposition instead)
    with s.mode:
        found = torch.nonzero(s.tensor(s.n, 4))[:, 0]
    ruled = result_by_rule(s.mode, subscript, (x, [full, found]), {})
    assert ruled is not None and ruled.dtype == torch.float32
    assert list(ruled.shape) == [s.n, found.shape[0], s.h, s.w]
    # a mask, a 0-dim index (read as an integer), two index tensors (they broadcast together), a list: left to torch
    assert result_by_rule(s.mode, subscript, (x, [full, s.tensor(144, dtype=torch.bool)]), {}) is None
    assert result_by_rule(s.mode, subscript, (x, [full, s.tensor(dtype=torch.int64)]), {}) is None
    two = [s.tensor(3, dtype=torch.int64), s.tensor(3, dtype=torch.int64)]
    assert result_by_rule(s.mode, subscript, (x, two), {}) is None
    assert result_by_rule(s.mode, subscript, (x, [full, [0, 1]]), {}) is None


@pytest.mark.parametrize("compare", [torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge])
def test_comparisons_broadcast_to_bool(s: Sizes, compare: Callable[..., Any]) -> None:
    x = s.tensor(s.n, 8, s.t)
    _check_function(s, compare, x, 0.0)
    _check_function(s, compare, x, s.tensor(s.n, 1, 1))
    _check_function(s, compare, s.tensor(s.n, 8, s.t, dtype=torch.int64), s.tensor(8, 1, dtype=torch.int32))
    assert result_by_rule(s.mode, compare, (x, s.tensor(s.n, 8, s.h)), {}) is None  # t against h: a decision
    assert result_by_rule(s.mode, compare, (x, "a"), {}) is None


def test_where_broadcasts_the_condition_and_both_values(s: Sizes) -> None:
    """basic-pitch's ``where(x == 0, 0.0, y)`` over a dynamic batch."""
    condition = s.tensor(s.n, 1, 1, dtype=torch.bool)
    y = s.tensor(s.n, 172, s.t)
    _check_function(s, torch.where, condition, 0.0, y)
    _check_function(s, torch.where, condition, y, 1)
    _check_function(s, torch.where, s.tensor(172, 1, dtype=torch.bool), y, s.tensor(s.n, 1, s.t))
    _check_function(s, torch.where, condition, s.tensor(s.n, 2, 1, dtype=torch.int64), 3)
    for args in ((condition, 0.5, s.tensor(s.n, 2, 1, dtype=torch.int64)),  # a float into integers: promoted
                 (condition, y, s.tensor(s.n, 172, s.t, dtype=torch.float16)),  # two dtypes: promoted
                 (s.tensor(s.n, 1, 1), y, y),  # a float condition
                 (condition, 0.0, 1.0)):  # no tensor value
        assert result_by_rule(s.mode, torch.where, args, {}) is None


def test_arange_over_a_size_has_that_many_values(s: Sizes) -> None:
    grid = (s.w - 1) // 32 + 1  # a feature map's width, as YOLO's anchor grids take it
    _check_function(s, torch.arange, grid, dtype=torch.float32)
    _check_function(s, torch.arange, s.t)
    _check_function(s, torch.arange, 1, s.h, dtype=torch.int32)
    # a length that may be negative, a step, a float bound or a static one: left to torch
    assert result_by_rule(s.mode, torch.arange, (s.t - 70,), {}) is None
    assert result_by_rule(s.mode, torch.arange, (0, s.t, 2), {}) is None
    assert result_by_rule(s.mode, torch.arange, (s.t,), {"dtype": torch.bool}) is None
    assert result_by_rule(s.mode, torch.arange, (8,), {}) is None


@pytest.mark.parametrize(("layer", "channels"), LAYERS,
                         ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_layer_output_sizes(s: Sizes, layer: nn.Module, channels: tuple[int]) -> None:
    spatial = {1: [s.t], 2: [s.h, s.w], 3: [s.h, s.w, s.t]}
    nd = 3 if isinstance(layer, nn.Conv3d) else 1 if isinstance(layer, (nn.Conv1d, nn.ConvTranspose1d)) else 2
    ruled = _check_layer(s, layer.eval(), s.tensor(s.n, *channels, *spatial[nd]))
    assert all(isinstance(size, torch.SymInt) for size in ruled.shape[2:]), "a dynamic length became a number"


def _check_layer(s: Sizes, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's rule against torch's run on ``x``; the tensor of the rule's sizes."""
    sizes = module_result_sizes(layer, x)
    assert sizes is not None, "the rule declined"
    with s.mode:
        real = layer(x)
        ruled = torch.empty(sizes)
    s.assert_same(ruled, real)
    return ruled


@pytest.mark.parametrize(("function", "spatial", "weight", "bias", "kwargs"), [
    (F.conv1d, "t", (16, 1, 5), (16,), {"stride": 1, "padding": 2, "dilation": 1, "groups": 16}),
    (F.conv1d, "t + 192", (258, 1, 256), None, {"stride": 64, "padding": 0}),  # an STFT basis on a padded signal
    (F.conv1d, "t", (32, 16, 1), (32,), {"stride": [2], "padding": [0], "dilation": [1], "groups": 1}),
    (F.conv2d, "h, w", (8, 4, 3, 3), (8,), {"stride": (2, 1), "padding": (1, 1), "dilation": 1, "groups": 2}),
    (F.conv3d, "h, w, t", (4, 2, 3, 3, 3), None, {"stride": 2, "padding": 1})])
def test_convolution_functions_with_static_weights(s: Sizes, function: Callable[..., Any], spatial: str,
                                                   weight: tuple[int, ...], bias: tuple[int, ...] | None,
                                                   kwargs: dict[str, Any]) -> None:
    """An If branch's convolutions take their weights as arguments: the layer's formula all the same."""
    lengths = eval(f"[{spatial}]", {"h": s.h, "w": s.w, "t": s.t})  # noqa: S307 - the cases above
    channels = weight[1] * kwargs.get("groups", 1)
    _check_function(s, function, s.tensor(s.n, channels, *lengths), s.tensor(*weight),
                    None if bias is None else s.tensor(*bias), **kwargs)


def test_convolution_functions_decline_what_torch_would_check(s: Sizes) -> None:
    x = s.tensor(s.n, 16, s.t)
    assert result_by_rule(s.mode, F.conv1d, (x, s.tensor(16, 8, 3)), {}) is None  # 8 input channels, not 16
    assert result_by_rule(s.mode, F.conv1d, (x, s.tensor(16, 16, 3)), {"padding": "same"}) is None
    assert result_by_rule(s.mode, F.conv1d, (x, s.tensor(16, 16, 3), s.tensor(8)), {}) is None  # bias size
    assert result_by_rule(s.mode, F.conv1d, (x, s.tensor(16, 16, 3, dtype=torch.float16)), {}) is None
    assert result_by_rule(s.mode, F.conv1d, (x, s.tensor(16, 16, s.t)), {}) is None  # a dynamic kernel


def test_a_same_window_records_that_a_length_is_at_least_one_as_torch_does(s: Sizes) -> None:
    """A "same" window (1x1, or 3x3 padded by 1) keeps the length, after torch's check that the
    window fits: for a length that may be 0 (``h // 8``) that narrows the range as torch's run does."""
    for layer in (nn.Conv2d(4, 8, 1), nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(4, 8, (1, 3), padding=(0, 1))):
        ruled, by_torch = Sizes(), Sizes()
        sizes = module_result_sizes(layer, ruled.tensor(ruled.n, 4, ruled.h // 8, ruled.w))
        assert sizes is not None, layer
        with by_torch.mode:
            real = layer(by_torch.tensor(by_torch.n, 4, by_torch.h // 8, by_torch.w))
        with ruled.mode:
            ruled.assert_same(torch.empty(sizes), real)
        assert ruled.env.var_to_range[ruled.symbols["h"]].lower == 8, layer
        assert ruled.env.var_to_range[ruled.symbols["h"]] == by_torch.env.var_to_range[by_torch.symbols["h"]], layer


def test_layer_norm_over_static_trailing_sizes(s: Sizes) -> None:
    x = s.tensor(s.n, s.t, 64)
    layer = nn.LayerNorm(64)
    sizes = module_result_sizes(layer, x)
    assert sizes is not None
    with s.mode:
        s.assert_same(torch.empty(sizes), layer(x))
    assert module_result_sizes(nn.LayerNorm(32), x) is None
    assert module_result_sizes(nn.LayerNorm(64), s.tensor(s.n, 64, s.t)) is None


def test_a_window_longer_than_the_shortest_length_is_assumed_to_fit_as_torch_assumes_it(s: Sizes) -> None:
    """The rule records the assumption torch's convolution makes (the length is at least the
    kernel), narrowing the size's range as torch does, instead of running the layer on fakes."""
    layer = nn.Conv1d(4, 8, 5, stride=3)
    sizes = module_result_sizes(layer, s.tensor(s.n, 4, s.t))
    assert sizes is not None
    by_torch = Sizes()
    with by_torch.mode:
        real = layer(by_torch.tensor(by_torch.n, 4, by_torch.t))
    assert s.env.var_to_range[s.symbols["t"]].lower == by_torch.env.var_to_range[by_torch.symbols["t"]].lower == 5
    assert [s.at(sizes[2], p) for p in POINTS] == [by_torch.at(real.shape[2], p) for p in POINTS]
    # at a hint shorter than the kernel the rule declines: torch's own check then says why
    assert module_result_sizes(nn.Conv1d(4, 8, 100), s.tensor(s.n, 4, s.t)) is None


def test_linear_layer_keeps_the_leading_sizes_and_gives_out_features(s: Sizes) -> None:
    layer = nn.Linear(64, 10).eval()
    for x in (s.tensor(s.n, 64), s.tensor(s.n, s.t, 64), s.tensor(64)):
        _check_layer(s, layer, x)
    # a dynamic last dimension (torch records that it is 64), other widths, dtypes: left to torch
    assert module_result_sizes(layer, s.tensor(s.n, s.t)) is None
    assert module_result_sizes(layer, s.tensor(s.n, 32)) is None
    assert module_result_sizes(layer, s.tensor(s.n, 64, dtype=torch.float16)) is None


def test_layers_decline_what_torch_would_decide(s: Sizes) -> None:
    # a length that is 1 at the hint: torch's choice of backend decides that it is 1 (see _length_one_at_hint)
    assert module_result_sizes(nn.Conv2d(4, 8, 1), s.tensor(s.n, 4, s.h // 64, s.w)) is None
    assert result_by_rule(s.mode, F.conv2d, (s.tensor(s.n, 4, s.h // 64, s.w), s.tensor(8, 4, 1, 1)), {}) is None
    assert module_result_sizes(nn.Conv2d(4, 8, 3), s.tensor(s.n, 5, s.h, s.w)) is None  # wrong channels
    assert module_result_sizes(nn.MaxPool2d(3, 2, ceil_mode=True), s.tensor(s.n, 4, s.h, s.w)) is None
    assert module_result_sizes(nn.BatchNorm2d(8), s.tensor(s.n, 8, s.h, s.w, dtype=torch.float16)) is None
    # an output padding torch refuses, and a length that a padding could make empty
    x = s.tensor(s.n, 4, s.h, s.w)
    assert module_result_sizes(nn.ConvTranspose2d(4, 4, 3, stride=2, output_padding=2), x) is None
    assert module_result_sizes(nn.ConvTranspose2d(4, 4, 1, padding=1), x) is None


def test_window_lengths_are_computed_once_per_length_and_stride(s: Sizes) -> None:
    x = s.tensor(s.n, 8, s.h, s.w)
    same = module_result_sizes(nn.Conv2d(8, 8, 3, padding=1), x)
    assert same is not None and [size.node.expr for size in same[2:]] == [s.symbols["h"], s.symbols["w"]]
    first = module_result_sizes(nn.Conv2d(8, 16, 3, stride=2, padding=1), x)
    again = module_result_sizes(nn.Conv2d(8, 32, 3, stride=2, padding=1), s.tensor(s.n, 8, s.h, s.w))
    assert first is not None and again is not None
    assert again[2] is first[2] and again[3] is first[3]  # the memo's SymInts, not a new computation
    assert [s.at(size, point) for point in POINTS for size in again[2:]] == \
        [(point[k] - 1) // 2 + 1 for point in POINTS for k in "hw"]


def test_fake_of_a_symbolic_shape_is_made_once_when_first_needed(s: Sizes) -> None:
    templates = len(s.env.fake_templates)
    first = fake_of(s.mode, [s.n, 16, s.h], torch.float32)
    second = fake_of(s.mode, [s.n, 16, s.h], torch.float32)
    assert isinstance(first, PendingFake) and isinstance(second, PendingFake)
    assert (list(first.shape), first.dim(), first.ndim, first.dtype) == ([s.n, 16, s.h], 3, 3, torch.float32)
    assert len(s.env.fake_templates) == templates  # nothing made yet
    made = as_fakes(s.mode, [first, second])
    assert made[0] is first.materialize() and made[1] is not made[0]  # made once each, from one template
    assert len(s.env.fake_templates) == templates + 1
    assert isinstance(made[1], FakeTensor) and made[1].fake_mode is s.mode and made[1].device == torch.device("cpu")
    assert (made[1].shape, made[1].stride(), made[1].dtype) == (made[0].shape, made[0].stride(), made[0].dtype)
    assert first.stride() == made[0].stride()  # what a pending fake does not answer, its tensor does
    with s.mode:
        assert (made[1] + made[0]).shape == made[0].shape


def test_a_chain_of_rules_makes_no_fake_tensor(s: Sizes) -> None:
    """A convolution's output read by an activation and the next layer: only sizes are read, so
    nothing is made (each fake of a new symbolic shape costs torch's sympy stride products)."""
    x = s.tensor(s.n, 8, s.h, s.w)
    templates = len(s.env.fake_templates)
    conv = fake_of(s.mode, module_result_sizes(nn.Conv2d(8, 16, 3, stride=2, padding=1), x), torch.float32)
    activated = evaluate_on_fakes(s.mode, F.silu, (conv,), {})
    summed = evaluate_on_fakes(s.mode, operator.add, (activated, conv), {})
    assert all(isinstance(v, PendingFake) for v in (conv, activated, summed))
    assert list(summed.shape) == list(conv.shape) and len(s.env.fake_templates) == templates
    assert isinstance(evaluate_on_fakes(s.mode, torch.cumsum, (summed, 1), {}), FakeTensor)  # no rule: made


# ------------------------------------------------------------------------------ SAME padding at run time
@pytest.mark.parametrize(("kernel", "strides", "dilations"), [
    ([2, 2], [2, 2], [1, 1]), ([3, 3], [2, 2], [1, 1]), ([3, 1], [2, 1], [1, 1]), ([3, 3], [3, 2], [2, 1])])
def test_same_padded_sizes_are_those_of_the_run_time_padding(s: Sizes, kernel: list[int], strides: list[int],
                                                             dilations: list[int]) -> None:
    """MTCNN's SAME pooling over a dynamic image: the padded sizes written out equal what
    ``_same_pad`` gives at run time, and the pooling after it answers from them."""
    x = s.tensor(s.n, 10, s.h - 2, s.w - 2)
    padded = _same_padded_sizes(list(x.shape), kernel, strides, dilations)
    assert padded is not None
    real = evaluate_on_fakes(s.mode, _same_pad, (x, kernel, strides, dilations, True, float("-inf")), {})
    with s.mode:
        s.assert_same(torch.empty(padded), real)
    pooled = module_result_sizes(nn.MaxPool2d(kernel, strides, dilation=dilations), s.tensor(*padded))
    assert pooled is not None
    assert [s.at(size, p) for p in POINTS for size in pooled[2:]] == \
        [-(-(p[k] - 2) // stride) for p in POINTS for k, stride in zip("hw", strides, strict=True)]


def test_same_padded_sizes_decline_a_window_shorter_than_its_stride(s: Sizes) -> None:
    assert _same_padded_sizes([s.n, 4, s.h, s.w], [1, 1], [2, 2], [1, 1]) is None  # padding max(.., 0) applies


# ------------------------------------------------------------------------------ through the emitter's entry
def test_evaluate_on_fakes_takes_the_rule_and_leaves_the_environment_alone(s: Sizes) -> None:
    a, b = s.tensor(s.n, 32, s.h, s.w), s.tensor(32, 1, 1)
    before = (dict(s.env.var_to_range), len(s.env.guards))
    result = evaluate_on_fakes(s.mode, operator.add, (a, b), {})
    assert [sympy.srepr(d.node.expr) if isinstance(d, torch.SymInt) else d for d in result.shape] == \
        [sympy.srepr(d.node.expr) if isinstance(d, torch.SymInt) else d for d in a.shape]
    assert (dict(s.env.var_to_range), len(s.env.guards)) == before
