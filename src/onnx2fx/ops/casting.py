"""Conversions to the 8-bit float types (ONNX saturation and rounding rules) and BitCast."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from ..tensors import SUB_BYTE_BITS, SUB_BYTE_STORAGE, torch_dtype
from .registry import onnx_op

FLOAT8 = (torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz)
# Half-way between E4M3FN's largest value (448) and the next one it would have: what rounds to 448.
_E4M3FN_ROUNDS_TO_MAX = 464.0


def to_float8(g: Emitter, x: Value, dtype: torch.dtype, saturate: int, round_mode: str = "up") -> Value:
    """ONNX Cast to a float8 type. With ``saturate`` (the default) out-of-range values and
    infinities become the largest finite value; without it they become NaN (infinity for E5M2)."""
    if dtype == torch.float8_e8m0fnu:
        return g.call(g.helper(_to_float8e8m0, leaf=True), x, bool(saturate), round_mode)
    if not x.dtype.is_floating_point:
        x = g.method(x, "to", torch.float32)
    if saturate:
        info = torch.finfo(dtype)
        return g.method(g.call("torch.clamp", x, float(info.min), float(info.max)), "to", dtype)
    if dtype == torch.float8_e4m3fn:  # torch saturates this one: overflow is NaN in ONNX
        x = g.call("torch.where", g.call("torch.gt", g.call("torch.abs", x), _E4M3FN_ROUNDS_TO_MAX),
                   float("nan"), x)
    return g.method(x, "to", dtype)


def _to_float8e8m0(x: torch.Tensor, saturate: bool, round_mode: str) -> torch.Tensor:
    """Float to E8M0 (a power of two: the float32 exponent), rounding as ONNX specifies."""
    bits = x.to(torch.float32).view(torch.int32)
    exponent = (bits >> 23) & 0xFF
    mantissa = bits & 0x7FFFFF
    special = exponent == 0xFF
    if round_mode == "up":
        up = mantissa > 0
    elif round_mode == "nearest":
        up = ((bits & 0x400000) > 0) & (((bits & 0x200000) > 0) | ((bits & 0x1FFFFF) > 0) | (exponent > 0))
    else:
        up = torch.zeros_like(special)
    if saturate:
        up = up & (exponent != 0xFE)
    exponent = torch.where(special, 0xFF, (exponent + up.to(torch.int32)) & 0xFF)
    return exponent.to(torch.uint8).view(torch.float8_e8m0fnu)


def to_sub_byte(g: Emitter, x: Value, dtype: torch.dtype) -> Value:
    """Cast to a 4- or 2-bit integer type: truncate to an integer, keep the low bits (wrapping, as
    numpy's and ONNX's casts do), carried in the sub-byte dtype."""
    bits = SUB_BYTE_BITS[dtype]
    low = -(1 << (bits - 1)) if SUB_BYTE_STORAGE[dtype] == torch.int8 else 0
    v = g.method(x, "to", torch.int64)
    wrapped = g.operator("%", g.operator("-", v, low), 1 << bits) if low else g.operator("%", v, 1 << bits)
    if low:
        wrapped = g.operator("+", wrapped, low)
    return g.method(g.method(wrapped, "to", SUB_BYTE_STORAGE[dtype]), "view", dtype)


def storage(g: Emitter, x: Value) -> Value:
    """A sub-byte value as its storage type (int8 / uint8), to compute on; other values unchanged."""
    return g.method(x, "view", SUB_BYTE_STORAGE[x.dtype]) if x.dtype in SUB_BYTE_STORAGE else x


@onnx_op("BitCast", 26)
def bit_cast(g: Emitter, x: Value, *, to: int) -> Value:
    """The same bits seen as another type of the same width: ``x.view(dtype)``."""
    dtype = torch_dtype(to)
    return x if dtype == x.dtype else g.method(x, "view", dtype)
