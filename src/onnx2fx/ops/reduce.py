"""Reductions: axes as an attribute (older opsets) or as an input (ReduceSum 13+, others 18+)."""

from __future__ import annotations

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from . import dynamic
from .registry import onnx_op

# op -> (torch function, opset where axes became an input)
_REDUCTIONS = {
    "ReduceMean": ("torch.mean", 18), "ReduceSum": ("torch.sum", 13), "ReduceMax": ("torch.amax", 18),
    "ReduceMin": ("torch.amin", 18), "ReduceProd": ("torch.prod", 18), "ReduceL1": ("l1", 18),
    "ReduceL2": ("l2", 18), "ReduceSumSquare": ("sumsquare", 18), "ReduceLogSum": ("logsum", 18),
    "ReduceLogSumExp": ("torch.logsumexp", 18),
}
# Reductions whose torch functions lack uint16/32/64 kernels (see ``OpImpl.widened_for_unsigned``).
_WIDENED_FOR_UNSIGNED = frozenset({"ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"})


def _pad_with_identity(x: torch.Tensor, dims: list[int], largest: bool) -> torch.Tensor:
    """``x`` with one identity element (-inf for a maximum, +inf for a minimum, the integer limits)
    appended along each of ``dims``: the extremum is unchanged, and over no elements it is the
    identity, as ONNX defines it, where ``torch.amax`` raises."""
    if x.is_floating_point():
        fill: float | int | bool = float("-inf") if largest else float("inf")
    elif x.dtype == torch.bool:
        fill = not largest
    else:
        fill = torch.iinfo(x.dtype).min if largest else torch.iinfo(x.dtype).max
    for d in dims:
        shape = list(x.shape)
        shape[d] = 1
        x = torch.cat([x, torch.full(shape, fill, dtype=x.dtype, device=x.device)], d)
    return x


def _may_be_empty(g: Emitter, x: Value, axis: int) -> bool:
    """Whether ``x`` may have no elements along ``axis``: a size that is data (NonZero, NMS), not
    a static size nor a dynamic input dimension (which tracing assumes to be at least 2)."""
    size = g.dim(x, axis).value
    if isinstance(size, int):
        return size == 0
    return not statically_known_true(size >= 1)


def _reduce(g: Emitter, fn: str, x: Value, axes: list[int] | None, keepdims: int, noop: int) -> Value:
    if not axes:
        if noop:
            return x
        axes = list(range(x.rank))
    axes = sorted(a + x.rank if a < 0 else a for a in axes)
    keep = bool(keepdims)
    if fn == "l1":
        return _reduce(g, "torch.sum", g.call("torch.abs", x), axes, keepdims, 0)
    if fn == "sumsquare":
        return _reduce(g, "torch.sum", g.call("torch.square", x), axes, keepdims, 0)
    if fn == "l2":
        return g.call("torch.sqrt", _reduce(g, "torch.sum", g.call("torch.square", x), axes, keepdims, 0))
    if fn == "logsum":
        return g.call("torch.log", _reduce(g, "torch.sum", x, axes, keepdims, 0))
    if fn == "torch.prod":
        result = x
        for a in reversed(axes):
            result = g.call("torch.prod", result, a, keepdim=keep)
        return result
    if fn in ("torch.amax", "torch.amin"):
        empty = [a for a in axes if _may_be_empty(g, x, a)]
        if empty:  # ONNX reduces no elements to the identity; torch.amax raises, and export cannot trace it
            x = g.call(g.helper(_pad_with_identity, leaf=True), x, empty, fn == "torch.amax")
    dims = axes[0] if len(axes) == 1 else tuple(axes)
    result = g.call(fn, x, dims, keepdim=keep) if keep else g.call(fn, x, dims)
    if fn == "torch.sum" and result.dtype != x.dtype:
        result = g.method(result, "to", x.dtype)
    return result


def _register(op_type: str, fn: str, axes_input_since: int) -> None:
    def with_attribute(g: Emitter, x: Value, *, axes: list[int] | None = None, keepdims: int = 1) -> Value:
        return _reduce(g, fn, x, axes, keepdims, 0)

    def with_input(g: Emitter, x: Value, axes: Value | None = None, *, keepdims: int = 1,
                   noop_with_empty_axes: int = 0) -> Value:
        if axes is not None and g.int_list(axes) is None:
            return dynamic.reduce(g, fn, x, axes, keepdims, noop_with_empty_axes)
        return _reduce(g, fn, x, g.static_ints(axes, "axes"), keepdims, noop_with_empty_axes)

    widened = op_type in _WIDENED_FOR_UNSIGNED
    onnx_op(op_type, 1, widened_for_unsigned=widened)(with_attribute)
    onnx_op(op_type, axes_input_since, widened_for_unsigned=widened)(with_input)


for _op, (_fn, _since) in _REDUCTIONS.items():
    _register(_op, _fn, _since)


def _arg(g: Emitter, fn: str, x: Value, axis: int, keepdims: int, select_last_index: int) -> Value:
    if select_last_index:
        flipped = g.call("torch.flip", x, [axis])
        index = g.call(fn, flipped, axis, keepdim=bool(keepdims))
        return g.operator("-", g.dim(x, axis) - 1, index)
    return g.call(fn, x, axis, keepdim=bool(keepdims))


@onnx_op("ArgMax", 1, widened_for_unsigned=True, narrowed_outputs=())  # int64 indices
def argmax(g: Emitter, x: Value, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Value:
    return _arg(g, "torch.argmax", x, axis, keepdims, select_last_index)


@onnx_op("ArgMin", 1, widened_for_unsigned=True, narrowed_outputs=())  # int64 indices
def argmin(g: Emitter, x: Value, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Value:
    return _arg(g, "torch.argmin", x, axis, keepdims, select_last_index)
