"""onnxruntime's com.microsoft operators that exporters and onnxruntime's optimizers write into
models: GELU variants, BiasAdd and FusedMatMul. Semantics follow onnxruntime's CPU kernels.

Its fused (skip) layer normalizations are in :mod:`.normalization`, its Attention,
MultiHeadAttention, GroupQueryAttention and RotaryEmbedding in :mod:`.attention`, its quantized
operators in :mod:`.ort_quantized`."""

from __future__ import annotations

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .registry import onnx_op

MS = "com.microsoft"


# ------------------------------------------------------------------------------ activations
@onnx_op("Gelu", 1, MS)
def gelu(g: Emitter, x: Value) -> Value:
    return g.call("F.gelu", x)


@onnx_op("FastGelu", 1, MS)
def fast_gelu(g: Emitter, x: Value, bias: Value | None = None) -> Value:
    """The tanh approximation of GELU, of ``x + bias``."""
    return g.call("F.gelu", g.operator("+", x, bias) if bias is not None else x, approximate="tanh")


@onnx_op("BiasGelu", 1, MS)
def bias_gelu(g: Emitter, a: Value, b: Value) -> Value:
    return g.call("F.gelu", g.operator("+", a, b))


@onnx_op("QuickGelu", 1, MS)
def quick_gelu(g: Emitter, x: Value, *, alpha: float = 1.702) -> Value:
    return g.operator("*", x, g.call("torch.sigmoid", g.operator("*", x, alpha)))


@onnx_op("BiasAdd", 1, MS)
def bias_add(g: Emitter, x: Value, bias: Value, skip: Value) -> Value:
    return g.operator("+", g.operator("+", x, bias), skip)


# ------------------------------------------------------------------------------ matmul
@onnx_op("FusedMatMul", 1, MS)
def fused_matmul(g: Emitter, a: Value, b: Value, *, alpha: float = 1.0, transA: int = 0, transB: int = 0,
                 transBatchA: int = 0, transBatchB: int = 0) -> Value:
    """``alpha * op(a) @ op(b)`` with op transposing the last two dimensions."""
    if transBatchA or transBatchB:
        raise g.unsupported("transBatchA" if transBatchA else "transBatchB", "1")
    lhs = g.method(a, "transpose", -1, -2) if transA else a
    rhs = g.method(b, "transpose", -1, -2) if transB else b
    y = g.call("torch.matmul", lhs, rhs)
    return g.operator("*", y, alpha) if alpha != 1.0 else y
