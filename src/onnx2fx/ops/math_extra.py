"""More math: bit shifts, einsum, determinants, cumulative sums and products, triangular parts,
hardmax, shrink, swish and SwiGLU."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import SymElem, Value
from ..tensors import torch_dtype
from .axes import axis_index
from .registry import onnx_op


def _const_int(g: Emitter, v: Value | None) -> int | None:
    """A one-element integer input known at conversion time."""
    items = g.int_list(v) if v is not None else None
    return int(items[0].value) if items is not None and len(items) == 1 and items[0].is_static else None


# ------------------------------------------------------------------------------ bits
@onnx_op("BitShift", 11, widened_for_unsigned=True)
def bit_shift(g: Emitter, x: Value, y: Value, *, direction: str) -> Value:
    """``torch.bitwise_left_shift`` / ``bitwise_right_shift``. Shift amounts outside ``[0, bits)``
    give 0 (or -1 for a right shift of a negative value), as ONNX defines, where they can occur."""
    if direction not in ("LEFT", "RIGHT"):
        raise g.unsupported("direction", f"value {direction!r}")
    fn = "torch.bitwise_left_shift" if direction == "LEFT" else "torch.bitwise_right_shift"
    bits = torch.iinfo(x.dtype).bits
    if y.const is not None and bool(((y.const >= 0) & (y.const < bits)).all()):
        return g.call(fn, x, y)
    shifted = g.call(fn, x, g.call("torch.clamp", y, 0, bits - 1))
    in_range = g.call("torch.logical_and", g.call("torch.ge", y, 0), g.call("torch.lt", y, bits))
    if direction == "LEFT" or x.dtype in (torch.uint8, torch.uint16, torch.uint32, torch.uint64):
        return g.call("torch.where", in_range, shifted, 0)
    fill = g.call("torch.where", g.call("torch.lt", x, 0), -1, 0)
    return g.call("torch.where", in_range, shifted, g.method(fill, "to", x.dtype))


@onnx_op("BitwiseNot", 18, widened_for_unsigned=True)
def bitwise_not(g: Emitter, x: Value) -> Value:
    return g.call("torch.bitwise_not", x)


# ------------------------------------------------------------------------------ linear algebra
@onnx_op("Einsum", 12)
def einsum(g: Emitter, *inputs: Value, equation: str) -> Value:
    return g.call("torch.einsum", equation.replace(" ", ""), *inputs)


@onnx_op("Det", 11)
def det(g: Emitter, x: Value) -> Value:
    return g.call("torch.linalg.det", x)


# ------------------------------------------------------------------------------ predicates and activations
@onnx_op("IsInf", 10)
def is_inf(g: Emitter, x: Value, *, detect_negative: int = 1, detect_positive: int = 1) -> Value:
    if detect_negative and detect_positive:
        return g.call("torch.isinf", x)
    if detect_positive:
        return g.call("torch.isposinf", x)
    if detect_negative:
        return g.call("torch.isneginf", x)
    return g.call("torch.zeros_like", x, dtype=torch.bool)


@onnx_op("Shrink", 9)
def shrink(g: Emitter, x: Value, *, bias: float = 0.0, lambd: float = 0.5) -> Value:
    """``x + bias`` below ``-lambd``, ``x - bias`` above ``lambd``, else 0 (``F.softshrink`` when
    ``bias == lambd`` on floats)."""
    if bias == lambd and x.dtype.is_floating_point:
        return g.call("F.softshrink", x, lambd)
    if bias == 0.0 and x.dtype.is_floating_point:
        return g.call("F.hardshrink", x, lambd)
    below = g.operator("+", x, _like(bias, x))
    above = g.operator("-", x, _like(bias, x))
    inner = g.call("torch.where", g.call("torch.gt", x, lambd), above, g.call("torch.zeros_like", x))
    return g.call("torch.where", g.call("torch.lt", x, -lambd), below, inner)


def _like(number: float, x: Value) -> float | int:
    return number if x.dtype.is_floating_point else int(number)


@onnx_op("Swish", 24)
def swish(g: Emitter, x: Value, *, alpha: float = 1.0) -> Value:
    if alpha == 1.0:
        return g.call("F.silu", x)
    return g.operator("*", x, g.call("torch.sigmoid", g.operator("*", x, alpha)))


@onnx_op("SwiGLU", 28)
def swiglu(g: Emitter, a: Value, b: Value, *, alpha: float = 1.0) -> Value:
    return g.operator("*", swish(g, a, alpha=alpha), b)


@onnx_op("Hardmax", 1)
def hardmax_legacy(g: Emitter, x: Value, *, axis: int = 1) -> Value:
    """Hardmax-1/11 work on the input flattened to 2-D at ``axis``."""
    shape = g.shape(x)
    lead = SymElem.of(1)
    for d in shape[:axis_index(axis, x.rank)]:
        lead = lead * d
    flat = g.method(x, "reshape", [lead, -1])
    return g.method(hardmax(g, flat, axis=-1), "reshape", shape)


@onnx_op("Hardmax", 13)
def hardmax(g: Emitter, x: Value, *, axis: int = -1) -> Value:
    """1 at the first maximum along ``axis``: a one-hot of ``argmax``."""
    axis = axis_index(axis, x.rank)
    hot = g.call("F.one_hot", g.call("torch.argmax", x, axis), g.dim(x, axis))
    if axis != x.rank - 1:
        hot = g.call("torch.movedim", hot, -1, axis)
    return g.method(hot, "to", x.dtype)


# ------------------------------------------------------------------------------ scans
def _runtime_cumulative(x: torch.Tensor, axis: torch.Tensor, product: bool, exclusive: bool,
                        reverse: bool) -> torch.Tensor:
    """CumSum / CumProd along an axis given as tensor data."""
    a = int(axis) % x.dim()
    y = x.flip(a) if reverse else x
    out = torch.cumprod(y, a) if product else torch.cumsum(y, a)
    if exclusive:
        first = torch.full_like(y.narrow(a, 0, 1), 1 if product else 0)
        out = torch.cat([first, out.narrow(a, 0, y.shape[a] - 1)], a)
    out = out.to(x.dtype)
    return out.flip(a) if reverse else out


def _cumulative(g: Emitter, fn: str, x: Value, axis: Value, exclusive: int, reverse: int) -> Value:
    a = _const_int(g, axis)
    if a is None:
        return g.call(g.helper(_runtime_cumulative, leaf=True), x, axis, fn == "torch.cumprod", bool(exclusive),
                      bool(reverse), out_spec=[(g.shape(x), x.dtype)])
    a = axis_index(a, x.rank)
    y = g.call("torch.flip", x, [a]) if reverse else x
    if exclusive:  # shift by one: the identity element first, the last element dropped
        identity = 0 if fn == "torch.cumsum" else 1
        pads = [0, 0] * (x.rank - 1 - a) + [1, 0]
        y = g.getitem(g.call("F.pad", y, pads, value=identity), [slice(None)] * a + [slice(None, -1)])
    y = g.call(fn, y, a)
    if y.dtype != x.dtype:
        y = g.method(y, "to", x.dtype)
    return g.call("torch.flip", y, [a]) if reverse else y


@onnx_op("CumSum", 11, widened_for_unsigned=True)
def cumsum(g: Emitter, x: Value, axis: Value, *, exclusive: int = 0, reverse: int = 0) -> Value:
    return _cumulative(g, "torch.cumsum", x, axis, exclusive, reverse)


@onnx_op("CumProd", 26)
def cumprod(g: Emitter, x: Value, axis: Value, *, exclusive: int = 0, reverse: int = 0) -> Value:
    return _cumulative(g, "torch.cumprod", x, axis, exclusive, reverse)


# ------------------------------------------------------------------------------ matrices
def _trilu(x: torch.Tensor, k: torch.Tensor, upper: bool) -> torch.Tensor:
    """Trilu with the diagonal offset given as tensor data."""
    return torch.triu(x, int(k)) if upper else torch.tril(x, int(k))


@onnx_op("Trilu", 14)
def trilu(g: Emitter, x: Value, k: Value | None = None, *, upper: int = 1) -> Value:
    offset = 0 if k is None else _const_int(g, k)
    if offset is None:
        return g.call(g.helper(_trilu, leaf=True), x, k, bool(upper), out_spec=[(g.shape(x), x.dtype)])
    fn = "torch.triu" if upper else "torch.tril"
    return g.call(fn, x, offset) if offset else g.call(fn, x)


@onnx_op("EyeLike", 9)
def eye_like(g: Emitter, x: Value, *, dtype: int | None = None, k: int = 0) -> Value:
    """``torch.eye`` shifted by ``k`` diagonals (``torch.ones(n, m).diag_embed`` has no offset)."""
    out_dtype = torch_dtype(dtype) if dtype is not None else x.dtype
    n, m = g.shape(x)
    if k == 0:
        return g.call("torch.eye", n, m, dtype=out_dtype)
    ones = g.call("torch.ones", n, m, dtype=out_dtype)
    return g.call("torch.tril", g.call("torch.triu", ones, k), k)
