"""onnxruntime's quantized com.microsoft operators: what ``onnxruntime.quantization`` writes
(QLinear* in the QOperator format, QGemm, QAttention, DynamicQuantizeLSTM), what its graph
optimizer fuses (DynamicQuantizeMatMul, MatMulIntegerToFloat), and the transformer set's
MatMulNBits (its GroupQueryAttention is in :mod:`.attention`).

Each lowering reproduces the arithmetic of onnxruntime's x86-64 CPU kernel, not just the formula in
the operator's documentation, so that integer outputs are equal and float outputs agree to float
rounding:

- integer products are exact (computed in float64), then converted to float32 and scaled by a
  float32 factor multiplied in the kernel's order (``MlasRequantizeOutput``), rounded half to even
  and saturated;
- QLinearAdd follows the AVX2 kernel as compiled (its scalar ``x * y + z * w`` contracted to one
  fused multiply-add): ``fma(a, sA/sC, fma(b, sB/sC, zC - fma(sA/sC, zA, sB/sC zB)))``, with the
  operands swapped when ``a`` is the broadcast one (onnxruntime passes a broadcast operand second);
- QLinearSigmoid / QLinearLeakyRelu / QLinearConcat dequantize, apply, and quantize (onnxruntime's
  256-entry lookup tables hold exactly these values); QLinearSoftmax reproduces its exponential
  table (``exp((x - max + shift) * scale)`` with ``shift`` keeping the row sum finite) and its
  ``round(e * floor(1 / y_scale) / sum)``;
- activations that onnxruntime quantizes on the fly (DynamicQuantizeMatMul, DynamicQuantizeLSTM) go
  through the same range, scale and zero-point computation (``quant.ort_dynamic_quantize``);
  DynamicQuantizeLSTM is its kernel step for step (:mod:`.ort_lstm`), with MLAS's sigmoid and tanh
  (:mod:`.mlas`). Its hidden state is quantized per group of batch rows where onnxruntime splits the
  batch over its threads; the lowering quantizes each row alone, which is onnxruntime whenever its
  intra-op thread count is at least the batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from . import pooling
from .attention import attend, key_mask_bias, merge_heads, split_heads
from .mlas import fma32, horner32, mlas_logistic, mlas_tanh
from .ort_lstm import (
    ORT_QUANTIZED_LSTM_PREFIX,
    ort_lstm_activation,
    ort_quantized_lstm,
    ort_quantized_lstm_fake,
    ort_quantized_lstm_op,
)
from .quant import INTEGER_RANGES, centered, dequantize, ort_dynamic_quantize, ort_quantized_gemm, quantize
from .recurrent import activation, recurrent_attributes, recurrent_output_spec, recurrent_settings
from .registry import onnx_op

MS = "com.microsoft"


# ------------------------------------------------------------------------------ run-time helpers
def _saturate(y: torch.Tensor, lo: int, hi: int, dtype: torch.dtype) -> torch.Tensor:
    """Round half to even, clamp to ``[lo, hi]`` and cast (the kernels' ``cvtps2dq`` + pack)."""
    return torch.clamp(torch.round(y), lo, hi).to(dtype)


def _qlinear_add(a: torch.Tensor, a_scale: torch.Tensor, a_zero_point: torch.Tensor, b: torch.Tensor,
                 b_scale: torch.Tensor, b_zero_point: torch.Tensor, c_scale: torch.Tensor,
                 c_zero_point: torch.Tensor, scalar_side: int, lo: int, hi: int,
                 dtype: torch.dtype) -> torch.Tensor:
    """onnxruntime's QLinearAdd (AVX2 kernel). ``scalar_side``: 1 when ``a`` is broadcast along
    the last dimension, 2 when ``b`` is, 0 otherwise.

    The kernel's constant part ``zC - (sA/sC zA + sB/sC zB)`` is compiled to ``zC - fma(sA/sC, zA,
    sB/sC zB)``, and a broadcast second operand is added to it by one more fused multiply-add, so
    ``b`` broadcast or not is the same formula; onnxruntime hands a broadcast ``a`` to the kernel as
    its second operand, which swaps the roles (and the constant part's rounding)."""
    if scalar_side == 1:
        a, a_scale, a_zero_point, b, b_scale, b_zero_point = b, b_scale, b_zero_point, a, a_scale, a_zero_point
    ratio_a, ratio_b = a_scale / c_scale, b_scale / c_scale
    fixed = c_zero_point.to(torch.float32) - fma32(ratio_a, a_zero_point.to(torch.float32),
                                                    ratio_b * b_zero_point.to(torch.float32))
    y = fma32(a.to(torch.float32), ratio_a, fma32(b.to(torch.float32), ratio_b, fixed))
    return _saturate(y, lo, hi, dtype)


def _qlinear_mul(a: torch.Tensor, a_scale: torch.Tensor, a_zero_point: torch.Tensor, b: torch.Tensor,
                 b_scale: torch.Tensor, b_zero_point: torch.Tensor, c_scale: torch.Tensor,
                 c_zero_point: torch.Tensor, lo: int, hi: int, dtype: torch.dtype) -> torch.Tensor:
    """onnxruntime's QLinearMul: the integer product times ``sA * sB / sC`` plus ``zC`` in float32,
    then rounded half to even (the zero point is added before rounding, which moves ties)."""
    product = (a.to(torch.int32) - a_zero_point.to(torch.int32)) * (b.to(torch.int32) - b_zero_point.to(torch.int32))
    y = product.to(torch.float32) * (a_scale * b_scale / c_scale) + c_zero_point.to(torch.float32)
    return _saturate(y, lo, hi, dtype)


def _qlinear_global_average_pool(x: torch.Tensor, x_scale: torch.Tensor, x_zero_point: torch.Tensor,
                                 y_scale: torch.Tensor, y_zero_point: torch.Tensor, dims: list[int], lo: int,
                                 hi: int) -> torch.Tensor:
    """The exact integer sum over the spatial ``dims`` minus ``zX * size``, times
    ``sX / (sY * size)`` in float32, rounded, plus ``zY`` (keeping the spatial dimensions as 1)."""
    size = 1
    for d in dims:
        size = size * x.shape[d]
    total = x.to(torch.float64).sum(dims, keepdim=True) - x_zero_point.to(torch.float64) * size
    scale = x_scale / (y_scale * size)
    y = torch.round(total.to(torch.float32) * scale) + y_zero_point.to(torch.float32)
    return torch.clamp(y, lo, hi).to(x.dtype)


def _qlinear_softmax(x: torch.Tensor, x_scale: torch.Tensor, y_scale: torch.Tensor, y_zero_point: torch.Tensor,
                     axis: int, flatten: bool, signed: bool) -> torch.Tensor:
    """onnxruntime's QLinearSoftmax: its exponential table, indexed by ``x - max(x)``, summed per
    row; ``y = round(e * floor(1 / y_scale) / sum) + zY`` in float32, saturated."""
    shape = x.shape
    rows = x.flatten(axis) if flatten else x.movedim(axis, -1)
    length = rows.shape[-1]
    xs = x_scale.to(torch.float64)
    largest = torch.full((), 3.4028234663852886e38, dtype=torch.float32) / length  # float32, as its kernel divides
    shift = torch.clamp(torch.log(largest.to(torch.float64)) - 5, min=0.0) / xs
    centred = rows.to(torch.int32) - rows.amax(-1, keepdim=True).to(torch.int32)
    table = torch.exp((centred.to(torch.float64) + shift) * xs).to(torch.float32)
    total = table.to(torch.float64).sum(-1, keepdim=True).to(torch.float32)
    multiplier = torch.floor(1.0 / y_scale)
    q = torch.round(table * multiplier / total).to(torch.int32) + y_zero_point.to(torch.int32)
    y = torch.clamp(q, -128, 127).to(x.dtype) if signed else torch.clamp(q, max=255).to(x.dtype)
    return y.reshape(shape) if flatten else y.movedim(-1, axis)


def _dequantize_nbits(b: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor | None, k: int, bits: int,
                      block_size: int) -> torch.Tensor:
    """MatMulNBits' weight as float: (N, K) from blocks of ``block_size`` ``bits``-bit values packed
    low bits first, ``(q - zero_point) * scale`` per block (zero point ``2^(bits-1)`` when absent;
    packed like the weights when uint8, else one float per block)."""
    n, blocks = b.shape[0], b.shape[1]
    per_byte = 8 // bits
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
    mask = (1 << bits) - 1
    q = ((b.unsqueeze(-1) >> shifts) & mask).reshape(n, blocks, block_size).to(torch.float32)
    if zero_points is None:
        zp = torch.full((n, blocks, 1), float(1 << (bits - 1)))
    elif zero_points.dtype == torch.uint8:
        packed = zero_points.reshape(n, -1)
        zp = ((packed.unsqueeze(-1) >> shifts) & mask).reshape(n, packed.shape[1] * per_byte)[:, :blocks]
        zp = zp.to(torch.float32).unsqueeze(-1)
    else:
        zp = zero_points.reshape(n, blocks, 1).to(torch.float32)
    w = (q - zp) * scales.reshape(n, blocks, 1).to(torch.float32)
    return w.reshape(n, blocks * block_size)[:, :k].to(scales.dtype)


# ------------------------------------------------------------------------------ lowering helpers
def _scalar(g: Emitter, v: Value) -> Value:
    """A one-element scale or zero point as a 0-d tensor."""
    return v if v.rank == 0 else g.method(v, "reshape", [])


def _zero_point(g: Emitter, v: Value | None, like: Value) -> Value:
    return _scalar(g, v) if v is not None else g.const(torch.zeros((), dtype=like.dtype))


def _range(g: Emitter, dtype: torch.dtype) -> tuple[int, int]:
    if dtype not in (torch.uint8, torch.int8):
        raise g.unsupported(None, f"quantized type {dtype} (uint8 and int8 are supported)")
    return INTEGER_RANGES[dtype]


def _same_encoding(a_scale: Value, a_zp: Value | None, b_scale: Value, b_zp: Value | None) -> bool:
    """Whether two constant (scale, zero point) pairs are equal, so requantizing is the identity."""
    if a_scale.const is None or b_scale.const is None:
        return False
    zps = [z.const if z is not None else torch.zeros(()) for z in (a_zp, b_zp)]
    if any(z is None for z in zps):
        return False
    return bool(torch.equal(a_scale.const.reshape(()), b_scale.const.reshape(()))) \
        and int(zps[0].reshape(())) == int(zps[1].reshape(()))


def _requantize(g: Emitter, x: Value, scale: Value, zero_point: Value | None, y_scale: Value,
                y_zero_point: Value | None) -> Value:
    """``quantize(dequantize(x))`` into the output encoding (onnxruntime's lookup table)."""
    dtype = y_zero_point.dtype if y_zero_point is not None else torch.uint8
    return quantize(g, dequantize(g, x, scale, zero_point), y_scale, y_zero_point, dtype)


def _integer_product(g: Emitter, a: Value, a_zero_point: Value | None, b: Value, b_zero_point: Value | None) -> Value:
    """``(a - zA) @ (b - zB)`` exactly, in float64 (zero point of b per column when it has N)."""
    lhs = centered(g, a, _scalar(g, a_zero_point) if a_zero_point is not None else None, torch.float64)
    return g.call("torch.matmul", lhs, _centered_weight(g, b, b_zero_point))


def _centered_weight(g: Emitter, b: Value, b_zero_point: Value | None) -> Value:
    """``b - zB`` in float64, the zero point per column when it has one value per column."""
    per_column = b_zero_point is not None and b_zero_point.rank == 1 and b_zero_point.static_shape()[0] not in (1, None)
    zero_point = b_zero_point if per_column or b_zero_point is None else _scalar(g, b_zero_point)
    return centered(g, b, zero_point, torch.float64, axis=-1 if per_column else None)


# ------------------------------------------------------------------------------ elementwise
@onnx_op("QLinearAdd", 1, MS)
def qlinear_add(g: Emitter, a: Value, a_scale: Value, a_zero_point: Value | None, b: Value, b_scale: Value,
                b_zero_point: Value | None, c_scale: Value, c_zero_point: Value | None = None) -> Value:
    lo, hi = _range(g, a.dtype)
    a_last, b_last = (g.dim(v, -1) if v.rank else None for v in (a, b))
    scalar_side = 0
    if b.rank == 0 or (b_last is not None and b_last.is_static and b_last.value == 1
                       and not (a_last is not None and a_last.is_static and a_last.value == 1)):
        scalar_side = 2
    elif a.rank == 0 or (a_last is not None and a_last.is_static and a_last.value == 1):
        scalar_side = 1
    g.helper(fma32)
    g.helper(_saturate)
    return g.call(g.helper(_qlinear_add), a, _scalar(g, a_scale), _zero_point(g, a_zero_point, a), b,
                  _scalar(g, b_scale),
                  _zero_point(g, b_zero_point, b), _scalar(g, c_scale), _zero_point(g, c_zero_point, a),
                  scalar_side, lo, hi, a.dtype)


@onnx_op("QLinearMul", 1, MS)
def qlinear_mul(g: Emitter, a: Value, a_scale: Value, a_zero_point: Value | None, b: Value, b_scale: Value,
                b_zero_point: Value | None, c_scale: Value, c_zero_point: Value | None = None) -> Value:
    lo, hi = _range(g, a.dtype)
    g.helper(_saturate)
    return g.call(g.helper(_qlinear_mul), a, _scalar(g, a_scale), _zero_point(g, a_zero_point, a), b,
                  _scalar(g, b_scale), _zero_point(g, b_zero_point, b), _scalar(g, c_scale),
                  _zero_point(g, c_zero_point, a), lo, hi, a.dtype)


def _lookup(g: Emitter, x: Value, x_scale: Value, x_zero_point: Value | None, y_scale: Value,
            y_zero_point: Value | None, fn: str, **kwargs: object) -> Value:
    _range(g, x.dtype)
    y = g.call(fn, dequantize(g, x, x_scale, x_zero_point), **kwargs)
    return quantize(g, y, y_scale, y_zero_point, y_zero_point.dtype if y_zero_point is not None else x.dtype)


@onnx_op("QLinearSigmoid", 1, MS)
def qlinear_sigmoid(g: Emitter, x: Value, x_scale: Value, x_zero_point: Value | None, y_scale: Value,
                    y_zero_point: Value | None = None) -> Value:
    return _lookup(g, x, x_scale, x_zero_point, y_scale, y_zero_point, "torch.sigmoid")


@onnx_op("QLinearLeakyRelu", 1, MS)
def qlinear_leaky_relu(g: Emitter, x: Value, x_scale: Value, x_zero_point: Value | None, y_scale: Value,
                       y_zero_point: Value | None = None, *, alpha: float = 0.01) -> Value:
    return _lookup(g, x, x_scale, x_zero_point, y_scale, y_zero_point, "F.leaky_relu", negative_slope=alpha)


@onnx_op("QLinearConcat", 1, MS)
def qlinear_concat(g: Emitter, y_scale: Value, y_zero_point: Value, *inputs: Value | None, axis: int) -> Value:
    if len(inputs) % 3:
        raise g.error(f"QLinearConcat takes (tensor, scale, zero point) triples, got {len(inputs)} inputs after Y's")
    parts = []
    for i in range(0, len(inputs), 3):
        x, scale, zero_point = inputs[i], inputs[i + 1], inputs[i + 2]
        assert x is not None and scale is not None
        if _same_encoding(scale, zero_point, y_scale, y_zero_point) and x.dtype == y_zero_point.dtype:
            parts.append(x)
        else:
            parts.append(_requantize(g, x, scale, zero_point, y_scale, y_zero_point))
    return g.call("torch.cat", parts, axis)


# ------------------------------------------------------------------------------ pooling and softmax
@onnx_op("QLinearGlobalAveragePool", 1, MS)
def qlinear_global_average_pool(g: Emitter, x: Value, x_scale: Value, x_zero_point: Value | None, y_scale: Value,
                                y_zero_point: Value, *, channels_last: int = 0) -> Value:
    lo, hi = _range(g, x.dtype)
    return g.call(g.helper(_qlinear_global_average_pool), x, _scalar(g, x_scale), _zero_point(g, x_zero_point, x),
                  _scalar(g, y_scale), _zero_point(g, y_zero_point, x),
                  list(range(1, x.rank - 1)) if channels_last else list(range(2, x.rank)), lo, hi)


@onnx_op("QLinearAveragePool", 1, MS)
def qlinear_average_pool(g: Emitter, x: Value, x_scale: Value, x_zero_point: Value | None, y_scale: Value,
                         y_zero_point: Value | None = None, *, kernel_shape: list[int], auto_pad: str = "NOTSET",
                         ceil_mode: int = 0, channels_last: int = 0, count_include_pad: int = 0,
                         pads: list[int] | None = None, strides: list[int] | None = None) -> Value:
    """Average of the dequantized window in float32, then ``round(y / sY + zY)`` saturated."""
    lo, hi = _range(g, x.dtype)
    xf = dequantize(g, x, x_scale, x_zero_point)
    if channels_last:
        xf = g.call("torch.movedim", xf, -1, 1)
    y = pooling.average_pool(g, xf, kernel_shape=list(kernel_shape), auto_pad=auto_pad, ceil_mode=ceil_mode,
                            count_include_pad=count_include_pad, pads=pads, strides=strides)
    if channels_last:
        y = g.call("torch.movedim", y, 1, -1)
    y = g.operator("+", g.operator("/", y, _scalar(g, y_scale)),
                   g.method(_zero_point(g, y_zero_point, x), "to", torch.float32))
    return g.method(g.call("torch.clamp", g.call("torch.round", y), lo, hi), "to", x.dtype)


@onnx_op("QLinearSoftmax", 1, MS)
def qlinear_softmax(g: Emitter, x: Value, x_scale: Value, x_zero_point: Value | None, y_scale: Value,
                    y_zero_point: Value | None = None, *, opset: int, axis: int = -1) -> Value:
    """Below ``opset`` 13 the input is flattened from ``axis`` on (Softmax-1's rule); the default
    axis is -1 whatever the opset, as onnxruntime's kernel reads it."""
    _range(g, x.dtype)
    legacy = opset < 13
    axis = axis + x.rank if axis < 0 else axis
    return g.call(g.helper(_qlinear_softmax), x, _scalar(g, x_scale), _scalar(g, y_scale),
                  _zero_point(g, y_zero_point, x), axis, legacy, x.dtype == torch.int8)


# ------------------------------------------------------------------------------ matrix products
@onnx_op("QGemm", 1, MS)
def qgemm(g: Emitter, a: Value, a_scale: Value, a_zero_point: Value, b: Value, b_scale: Value,
          b_zero_point: Value, c: Value | None = None, y_scale: Value | None = None,
          y_zero_point: Value | None = None, *, alpha: float = 1.0, transA: int = 0, transB: int = 0) -> Value:
    """``alpha * sA * sB (/ sY)`` times the exact ``(A - zA)(B - zB) + C``: requantized when Y has a
    zero point, float otherwise (as onnxruntime's output processors)."""
    lhs = g.method(a, "t") if transA else a
    rhs = g.method(b, "t") if transB else b
    acc = _integer_product(g, lhs, a_zero_point, rhs, b_zero_point)
    if c is not None:
        acc = g.operator("+", acc, g.method(c, "to", torch.float64))
    scale = g.operator("*", g.operator("*", g.const(torch.tensor(alpha, dtype=torch.float32)), _scalar(g, a_scale)),
                       b_scale)
    if y_scale is not None:
        scale = g.operator("/", scale, _scalar(g, y_scale))
    y = g.operator("*", g.method(acc, "to", torch.float32), scale)
    if y_zero_point is None:
        return y
    lo, hi = _range(g, y_zero_point.dtype)
    y = g.operator("+", g.call("torch.round", y), g.method(_scalar(g, y_zero_point), "to", torch.float32))
    return g.method(g.call("torch.clamp", y, lo, hi), "to", y_zero_point.dtype)


def _integer_to_float(g: Emitter, acc: Value, scale: Value, bias: Value | None) -> Value:
    y = g.operator("*", g.method(acc, "to", torch.float32), scale)
    return g.operator("+", y, bias) if bias is not None else y


@onnx_op("MatMulIntegerToFloat", 1, MS)
def matmul_integer_to_float(g: Emitter, a: Value, b: Value, a_scale: Value, b_scale: Value,
                            a_zero_point: Value | None = None, b_zero_point: Value | None = None,
                            bias: Value | None = None) -> Value:
    acc = _integer_product(g, a, a_zero_point, b, b_zero_point)
    return _integer_to_float(g, acc, g.operator("*", _scalar(g, a_scale), b_scale), bias)


@onnx_op("DynamicQuantizeMatMul", 1, MS)
def dynamic_quantize_matmul(g: Emitter, a: Value, b: Value, b_scale: Value, b_zero_point: Value | None = None,
                            bias: Value | None = None) -> Value:
    """A quantized to uint8 with onnxruntime's on-the-fly range over the whole tensor."""
    q, a_scale, a_zero_point = g.call(g.helper(ort_dynamic_quantize), a, False, n_outputs=3)
    lhs = g.method(g.operator("-", q, a_zero_point), "to", torch.float64)
    acc = g.call("torch.matmul", lhs, _centered_weight(g, b, b_zero_point))
    return _integer_to_float(g, acc, g.operator("*", a_scale, b_scale), bias)



@onnx_op("MatMulNBits", 1, MS)
def matmul_nbits(g: Emitter, a: Value, b: Value, scales: Value, zero_points: Value | None = None,
                 g_idx: Value | None = None, bias: Value | None = None, *, K: int, N: int, block_size: int,
                 bits: int = 4, accuracy_level: int = 0) -> Value:
    """``a @ dequantize(b).T``: the packed weight is unpacked in ``forward``, so the file keeps its
    size. (onnxruntime with ``accuracy_level`` 4 may also quantize ``a``; this computes in float.)"""
    if bits not in (2, 4, 8):
        raise g.unsupported("bits", f"{bits} (2, 4 and 8 are supported)")
    if g_idx is not None:
        raise g.unsupported(None, "MatMulNBits with g_idx (act-order)")
    w = g.call(g.helper(_dequantize_nbits), b, scales, zero_points, K, bits, block_size)
    y = g.call("torch.matmul", a, g.method(w, "t"))
    return g.operator("+", y, bias) if bias is not None else y


# ------------------------------------------------------------------------------ recurrent and attention
@onnx_op("DynamicQuantizeLSTM", 1, MS)
def dynamic_quantize_lstm(g: Emitter, x: Value, w: Value, r: Value, b: Value | None = None,
                          sequence_lens: Value | None = None, initial_h: Value | None = None,
                          initial_c: Value | None = None, p: Value | None = None, w_scale: Value | None = None,
                          w_zero_point: Value | None = None, r_scale: Value | None = None,
                          r_zero_point: Value | None = None, *, activation_alpha: list[float] | None = None,
                          activation_beta: list[float] | None = None, activations: list[str] | None = None,
                          clip: float | None = None, direction: str = "forward", hidden_size: int | None = None,
                          input_forget: int = 0) -> tuple[Value, ...]:
    """ONNX LSTM with 8-bit (directions, inputs, 4 * hidden) weights, computed as onnxruntime's
    kernel computes it (:mod:`.ort_lstm`), so that the outputs equal its outputs in every bit."""
    if sequence_lens is not None:
        raise g.unsupported(None, "DynamicQuantizeLSTM with sequence_lens (onnxruntime's quantization "
                                  "ranges then depend on which rows are padding)")
    if any(v is None for v in (w_scale, w_zero_point, r_scale, r_zero_point)):
        raise g.error("DynamicQuantizeLSTM needs W_scale, W_zero_point, R_scale and R_zero_point")
    settings = recurrent_settings(g, "LSTM", r, recurrent_attributes(
        activation_alpha=activation_alpha, activation_beta=activation_beta, activations=activations,
        direction=direction, hidden_size=hidden_size or r.static_shape()[1]))
    spec = recurrent_output_spec(g, "LSTM", x, settings)
    helpers = (fma32, horner32, mlas_logistic, mlas_tanh, activation, ort_lstm_activation, ort_dynamic_quantize,
               ort_quantized_gemm, ort_quantized_lstm, ort_quantized_lstm_op, ort_quantized_lstm_fake)
    for helper in helpers:
        g.helper(helper)
    op = ORT_QUANTIZED_LSTM_PREFIX + _digest(helpers)
    name = g.generated_helper("ort_quantized_lstm_call", _LSTM_OPERATOR.replace("{op}", op), leaf=True)
    missing = float("nan")
    return g.call(name, x, w, r, b, initial_h, initial_c, p, ",".join(settings.directions),
                  ",".join(settings.activations), [missing if a is None else a for a in settings.alphas],
                  [missing if v is None else v for v in settings.betas], clip, bool(input_forget),
                  hidden_size or r.static_shape()[1], w_scale, w_zero_point, r_scale, r_zero_point,
                  n_outputs=len(spec), out_spec=spec)


def _digest(functions: tuple[Callable[..., Any], ...]) -> str:
    """A digest of the functions' source: an operator's name carries it, so models converted by
    different onnx2fx versions never share a stale registration in one process."""
    import hashlib
    import inspect

    return hashlib.sha256("".join(inspect.getsource(f) for f in functions).encode()).hexdigest()[:12]


# DynamicQuantizeLSTM runs as a registered operator (see ops/ort_lstm.py): torch.export records one
# node instead of unrolling its time loop, and ``onnx2fx export`` writes it back as the contrib op.
_LSTM_OPERATOR = """def {name}(x, w, r, b, h0, c0, p, directions, activations, alphas, betas, clip, input_forget,
         hidden_size, w_scale, w_zero_point, r_scale, r_zero_point):
    \"\"\"com.microsoft DynamicQuantizeLSTM: torch.ops.onnx2fx.{op}, registered once per process below.\"\"\"
    return torch.ops.onnx2fx.{op}(x, w, r, b, h0, c0, p, directions, activations, alphas, betas, clip,
                                  input_forget, hidden_size, w_scale, w_zero_point, r_scale, r_zero_point)


if not hasattr(torch.ops.onnx2fx, "{op}"):
    torch.library.custom_op("onnx2fx::{op}", _ort_quantized_lstm_op, mutates_args=())
    torch.library.register_fake("onnx2fx::{op}")(_ort_quantized_lstm_fake)
"""


@onnx_op("QAttention", 1, MS)
def qattention(g: Emitter, x: Value, weight: Value, bias: Value, input_scale: Value, weight_scale: Value,
               mask_index: Value | None = None, input_zero_point: Value | None = None,
               weight_zero_point: Value | None = None, past: Value | None = None, *, num_heads: int,
               unidirectional: int = 0, do_rotary: int = 0, past_present_share_buffer: int = 0,
               mask_filter_value: float = -10000.0, scale: float = 0.0) -> Value:
    """Attention whose packed Q, K, V projection is an integer product: ``float32(acc) * sX * sW +
    bias`` as onnxruntime's quantized GEMM writes it, then the float attention of ``Attention``."""
    if past is not None or do_rotary:
        raise g.unsupported("do_rotary" if do_rotary else None, "QAttention with a past state or rotary embedding")
    if mask_index is not None and mask_index.rank == 1:
        raise g.unsupported(None, "QAttention with a 1-D mask_index (key lengths)")
    acc = _integer_product(g, x, input_zero_point, weight, weight_zero_point)
    qkv = _integer_to_float(g, acc, g.operator("*", _scalar(g, input_scale), weight_scale), bias)
    hidden = weight.static_shape()[1] // 3
    q, k, v = g.call("torch.split", qkv, [hidden] * 3, -1, n_outputs=3)
    q, k, v = (split_heads(g, t, num_heads) for t in (q, k, v))
    mask = key_mask_bias(g, mask_index, mask_filter_value, qkv) if mask_index is not None else None
    return merge_heads(g, attend(g, q, k, v, mask, bool(unidirectional), scale))
