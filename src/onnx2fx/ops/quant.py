"""Quantization ops: QuantizeLinear / DequantizeLinear (per tensor, per axis, blocked; integer and
float8 types) and the integer and QLinear forms of Conv and MatMul.

Integer arithmetic that torch does not provide on CPU (integer convolution) is done in float64,
where every int32 accumulator value is exact.
"""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from ..tensors import SUB_BYTE_BITS, SUB_BYTE_STORAGE, torch_dtype
from . import casting
from . import nn as nn_ops
from .axes import axis_index
from .registry import onnx_op

INTEGER_RANGES = {torch.uint8: (0, 255), torch.int8: (-128, 127), torch.uint16: (0, 65535),
                   torch.int16: (-32768, 32767), torch.int32: (-(2**31), 2**31 - 1)}


def _broadcast(g: Emitter, v: Value, x: Value, axis: int, block_size: int) -> Value | float | int:
    """A scale or zero point shaped to broadcast against ``x``: one number, one value per index of
    ``axis`` (reshaped to ``(1, C, 1, ...)``), or one per block of ``block_size`` along ``axis``."""
    if v.const is not None and v.const.numel() == 1:
        return v.const.reshape(()).item()
    if v.rank == 0 or (v.rank == 1 and v.static_shape()[0] == 1):
        return v if v.rank == 0 else g.method(v, "reshape", [])
    axis = axis_index(axis, x.rank)
    if not block_size:
        shape = [1] * x.rank
        shape[axis] = -1
        return g.method(v, "reshape", shape)
    full = g.call("torch.repeat_interleave", v, block_size, dim=axis)
    size = g.dim(x, axis)
    return g.getitem(full, [slice(None)] * axis + [slice(None, size)])


def dequantize(g: Emitter, x: Value, scale: Value, zero_point: Value | None, axis: int = 1, block_size: int = 0,
               output_dtype: torch.dtype | None = None) -> Value:
    """``(x - zero_point) * scale`` computed in float32, in the scale's type (or ``output_dtype``)."""
    x, zero_point = casting.storage(g, x), casting.storage(g, zero_point) if zero_point is not None else None
    y = g.method(x, "to", torch.float32)
    fp8 = x.dtype in casting.FLOAT8
    if zero_point is not None and not fp8 and not (zero_point.const is not None and not zero_point.const.any()):
        y = g.operator("-", y, _broadcast(g, zero_point, x, axis, block_size))
    y = g.operator("*", y, _broadcast(g, scale, x, axis, block_size))
    dtype = output_dtype or scale.dtype
    return y if y.dtype == dtype else g.method(y, "to", dtype)


def quantize(g: Emitter, x: Value, scale: Value, zero_point: Value | None, dtype: torch.dtype, axis: int = 1,
             saturate: int = 1, block_size: int = 0, precision: torch.dtype | None = None) -> Value:
    """``clamp(round(x / scale) + zero_point)`` in the quantized type (round half to even); float8
    types: ``x / scale`` cast with ONNX's saturation."""
    if precision is not None:
        x = g.method(x, "to", precision)
    s = _broadcast(g, scale, x, axis, block_size)
    if precision is not None and isinstance(s, Value):
        s = g.method(s, "to", precision)
    y = g.operator("/", x, s)
    if dtype in casting.FLOAT8:
        return casting.to_float8(g, y, dtype, saturate)
    if dtype not in INTEGER_RANGES and dtype not in SUB_BYTE_STORAGE:
        raise g.unsupported(None, f"quantization to {dtype}")
    y = g.call("torch.round", y)
    if zero_point is not None:
        zero_point = casting.storage(g, zero_point)
    if zero_point is not None and not (zero_point.const is not None and not zero_point.const.any()):
        y = g.operator("+", y, _broadcast(g, zero_point, x, axis, block_size))
    if dtype in SUB_BYTE_STORAGE:  # carried in torch's 4/2-bit dtype, computed as int8 / uint8
        bits, signed = SUB_BYTE_BITS[dtype], SUB_BYTE_STORAGE[dtype] == torch.int8
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        clamped = g.method(g.call("torch.clamp", y, lo, hi), "to", SUB_BYTE_STORAGE[dtype])
        return g.method(clamped, "view", dtype)
    lo, hi = INTEGER_RANGES[dtype]
    return g.method(g.call("torch.clamp", y, lo, hi), "to", dtype)


# ------------------------------------------------------------------------------ Quantize / Dequantize
@onnx_op("DequantizeLinear", 10, sub_byte_aware=True)
def dequantize_linear(g: Emitter, x: Value, x_scale: Value, x_zero_point: Value | None = None, *, axis: int = 1,
                      block_size: int = 0, output_dtype: int = 0) -> Value:
    return dequantize(g, x, x_scale, x_zero_point, axis, block_size,
                      torch_dtype(output_dtype) if output_dtype else None)


@onnx_op("QuantizeLinear", 10, sub_byte_aware=True)
def quantize_linear(g: Emitter, x: Value, y_scale: Value, y_zero_point: Value | None = None, *, axis: int = 1,
                    saturate: int = 1, block_size: int = 0, output_dtype: int = 0,
                    precision: int = 0) -> Value:
    if y_zero_point is not None:
        dtype = y_zero_point.dtype
    else:
        dtype = torch_dtype(output_dtype) if output_dtype else torch.uint8
    return quantize(g, x, y_scale, y_zero_point, dtype, axis, saturate, block_size,
                    torch_dtype(precision) if precision else None)


# ------------------------------------------------------------------------------ integer matmul and conv
def centered(g: Emitter, x: Value, zero_point: Value | None, dtype: torch.dtype, axis: int | None = None) -> Value:
    """``x - zero_point`` in a wider type (a per-row/per-channel zero point along ``axis``)."""
    y = g.method(x, "to", dtype)
    if zero_point is None or (zero_point.const is not None and not zero_point.const.any()):
        return y
    zp = _broadcast(g, zero_point, x, axis, 0) if axis is not None else zero_point
    if isinstance(zp, Value) and zp.dtype != dtype:
        zp = g.method(zp, "to", dtype)
    return g.operator("-", y, zp)


@onnx_op("MatMulInteger", 10)
def matmul_integer(g: Emitter, a: Value, b: Value, a_zero_point: Value | None = None,
                   b_zero_point: Value | None = None) -> Value:
    """int32 ``(a - a_zero_point) @ (b - b_zero_point)`` (zero points per row of a / column of b)."""
    lhs = centered(g, a, a_zero_point, torch.int32, axis=-2 if a_zero_point is not None
                    and a_zero_point.rank == 1 and a_zero_point.static_shape()[0] not in (1, None) else None)
    rhs = centered(g, b, b_zero_point, torch.int32, axis=-1 if b_zero_point is not None
                    and b_zero_point.rank == 1 and b_zero_point.static_shape()[0] not in (1, None) else None)
    return g.call("torch.matmul", lhs, rhs)


@onnx_op("QLinearMatMul", 10)
def qlinear_matmul(g: Emitter, a: Value, a_scale: Value, a_zero_point: Value, b: Value, b_scale: Value,
                   b_zero_point: Value, y_scale: Value, y_zero_point: Value) -> Value:
    """Integer matmul of the centred inputs, rescaled by ``a_scale * b_scale / y_scale``, requantized."""
    acc = g.call("torch.matmul", centered(g, a, a_zero_point, torch.float64), centered(g, b, b_zero_point,
                                                                                         torch.float64))
    return _requantize(g, acc, [a_scale, b_scale], y_scale, y_zero_point, a.dtype)


def _requantize(g: Emitter, acc: Value, scales: list[Value], y_scale: Value, y_zero_point: Value | None,
                fallback: torch.dtype, channel_axis: int | None = None) -> Value:
    """``clamp(round(float32(acc) * (scale_a * scale_b / y_scale)) + y_zero_point)`` in the output
    type, as onnxruntime's ``MlasRequantizeOutput``: the factor is computed in float32 in that order,
    the int32 accumulator is converted to float32 and the product is rounded to float32 before it is
    rounded half to even (a float64 product rounds differently where it lies next to a tie)."""
    factor = g.operator("/", g.operator("*", scales[0], scales[1]), y_scale)
    if channel_axis is not None and factor.rank == 1 and factor.static_shape()[0] != 1:
        shape = [1] * acc.rank
        shape[channel_axis] = -1
        factor = g.method(factor, "reshape", shape)
    y = g.call("torch.round", g.operator("*", g.method(acc, "to", torch.float32), factor))
    dtype = y_zero_point.dtype if y_zero_point is not None else fallback
    if y_zero_point is not None and not (y_zero_point.const is not None and not y_zero_point.const.any()):
        y = g.operator("+", y, y_zero_point)
    lo, hi = INTEGER_RANGES[dtype]
    return g.method(g.call("torch.clamp", y, lo, hi), "to", dtype)


FLOAT32_EXACT_LIMIT = 2 ** 24  # every integer up to this magnitude is exact in float32
NIBBLE = 16


def _integer_conv(g: Emitter, x: Value, w: Value, x_zero_point: Value | None, w_zero_point: Value | None,
                  attrs: dict) -> Value:
    """The int32 convolution of the centred 8-bit inputs, computed exactly in float arithmetic.

    float32 where no partial sum can pass 2**24 (bounded by the input-channel count times the kernel
    size, the centred weights' largest magnitude and 255 for the input); where it could, the input is
    split into its high and low four bits (``16 * hi + lo``), two float32 convolutions whose sums stay
    below 2**24 each, combined in int32; float64 only beyond that. float32 keeps the module fast on
    the CPU and lets its ONNX export run (onnxruntime has no double convolution)."""
    per_channel = w_zero_point is not None and w_zero_point.rank == 1 and w_zero_point.static_shape()[0] not in (1,)
    reach = _weight_reach(w, w_zero_point)
    if reach is None or reach * NIBBLE >= FLOAT32_EXACT_LIMIT:
        wide = nn_ops.conv(g, centered(g, x, x_zero_point, torch.float64),
                           centered(g, w, w_zero_point, torch.float64, axis=0 if per_channel else None), None, **attrs)
        return g.method(wide, "to", torch.int32)
    xc = centered(g, x, x_zero_point, torch.float32)
    wc = centered(g, w, w_zero_point, torch.float32, axis=0 if per_channel else None)
    if reach * 255 < FLOAT32_EXACT_LIMIT:
        return g.method(nn_ops.conv(g, xc, wc, None, **attrs), "to", torch.int32)
    low = g.call("torch.remainder", xc, float(NIBBLE))  # 0..15
    high = g.operator("/", g.operator("-", xc, low), float(NIBBLE))  # -16..15, exact
    high_sum = g.method(nn_ops.conv(g, high, wc, None, **attrs), "to", torch.int32)
    low_sum = g.method(nn_ops.conv(g, low, wc, None, **attrs), "to", torch.int32)
    return g.operator("+", g.operator("*", high_sum, NIBBLE), low_sum)


def _weight_reach(w: Value, w_zero_point: Value | None) -> int | None:
    """The largest sum of centred-weight magnitudes over one output's window (input channels times
    kernel), i.e. what one unit of input can add up to; ``None`` when the weights' shape is unknown."""
    shape = w.static_shape()
    if len(shape) < 3 or any(d is None for d in shape[1:]):
        return None
    window = 1
    for d in shape[1:]:
        window *= int(d)
    if w.const is None or (w_zero_point is not None and w_zero_point.const is None):
        return window * 255
    centred = w.const.to(torch.int32)
    if w_zero_point is not None:
        zp = w_zero_point.const.to(torch.int32)
        centred = centred - (zp.reshape(-1, *[1] * (centred.dim() - 1)) if zp.dim() == 1 else zp)
    return int(centred.abs().reshape(centred.shape[0], -1).sum(1).max())


@onnx_op("ConvInteger", 10)
def conv_integer(g: Emitter, x: Value, w: Value, x_zero_point: Value | None = None, w_zero_point: Value | None = None,
                 *, auto_pad: str = "NOTSET", dilations: list[int] | None = None, group: int = 1,
                 kernel_shape: list[int] | None = None, pads: list[int] | None = None,
                 strides: list[int] | None = None) -> Value:
    attrs = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads,
                 strides=strides)
    return _integer_conv(g, x, w, x_zero_point, w_zero_point, attrs)


@onnx_op("QLinearConv", 10)
def qlinear_conv(g: Emitter, x: Value, x_scale: Value, x_zero_point: Value, w: Value, w_scale: Value,
                 w_zero_point: Value, y_scale: Value, y_zero_point: Value, b: Value | None = None, *,
                 auto_pad: str = "NOTSET", dilations: list[int] | None = None, group: int = 1,
                 kernel_shape: list[int] | None = None, pads: list[int] | None = None,
                 strides: list[int] | None = None) -> Value:
    attrs = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads,
                 strides=strides)
    acc = _integer_conv(g, x, w, x_zero_point, w_zero_point, attrs)
    if b is not None:  # int32 bias, per output channel
        acc = g.operator("+", acc, g.method(b, "reshape", [-1] + [1] * (x.rank - 2)))
    return _requantize(g, acc, [x_scale, w_scale], y_scale, y_zero_point, x.dtype, channel_axis=1)


# ------------------------------------------------------------------------------ onnxruntime's dynamic quantization
# Both functions are copied into model.py (``Emitter.helper``) for DynamicQuantizeMatMul and for
# DynamicQuantizeLSTM's kernel (ops/ort_lstm.py), which calls them.
def ort_dynamic_quantize(x: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 values (as float32), scale and zero point of ``x`` as onnxruntime's kernels quantize an
    activation on the fly (one range over the tensor, or one per row): the range includes zero, its
    scale is ``(max - min) / 255`` (1 for an all-zero range), the zero point and the values are
    rounded half to even and saturated."""
    if per_row:
        lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    else:
        lo, hi = x.min(), x.max()
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.where(hi == lo, torch.ones_like(hi), (hi - lo) / 255.0)
    zero_point = torch.round(torch.clamp(0.0 - lo / scale, 0.0, 255.0))
    return torch.clamp(torch.round(x / scale) + zero_point, 0.0, 255.0), scale, zero_point


def ort_quantized_gemm(a: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor, b_zero_point: torch.Tensor,
                       per_row: bool) -> torch.Tensor:
    """``a @ b`` with ``a`` float (quantized on the fly by :func:`ort_dynamic_quantize`) and ``b``
    8-bit integer (zero point: its first element; scale: one, or one per column): the integer
    product, exact in float64, converted to float32 and times ``a_scale * b_scale``."""
    q, a_scale, a_zero_point = ort_dynamic_quantize(a, per_row)
    centred_b = b.to(torch.float64) - b_zero_point.reshape(-1)[0].to(torch.float64)
    acc = ((q - a_zero_point).to(torch.float64) @ centred_b).to(torch.float32)
    return acc * (a_scale * b_scale.reshape(-1))
