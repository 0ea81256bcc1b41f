"""onnxruntime's com.microsoft operators that exporters and onnxruntime's optimizers write into
models: GELU variants, fused (skip) layer normalizations, FusedMatMul, BiasAdd, Attention,
MultiHeadAttention and RotaryEmbedding. Semantics follow onnxruntime's CPU kernels."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .attention import rotary_embedding_call
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


# ------------------------------------------------------------------------------ normalization
def _layer_norm(g: Emitter, x: Value, scale: Value, bias: Value | None, axis: int, epsilon: float,
                simplified: bool) -> tuple[Value, Value, Value]:
    """(y, mean, inverse standard deviation) over the dimensions from ``axis`` on; the statistics
    keep those dimensions with size 1, as onnxruntime returns them."""
    axis = axis + x.rank if axis < 0 else axis
    dims = list(range(axis, x.rank))
    xf = g.method(x, "float") if x.dtype in (torch.float16, torch.bfloat16) else x
    if simplified:
        mean = None
        centered = xf
    else:
        mean = g.call("torch.mean", xf, dims, keepdim=True)
        centered = g.operator("-", xf, mean)
    variance = g.call("torch.mean", g.call("torch.square", centered), dims, keepdim=True)
    inv_std = g.call("torch.rsqrt", g.operator("+", variance, epsilon))
    y = g.operator("*", centered, inv_std)
    if y.dtype != x.dtype:
        y = g.method(y, "to", x.dtype)
    y = g.operator("*", y, scale)
    if bias is not None:
        y = g.operator("+", y, bias)
    return y, mean, inv_std  # type: ignore[return-value]


@onnx_op("LayerNormalization", 1)  # onnxruntime's, in models of opsets before 17 (ONNX's own)
def layer_norm(g: Emitter, x: Value, scale: Value, bias: Value | None = None, *, axis: int = -1,
               epsilon: float = 1e-5, stash_type: int = 1) -> tuple[Value, ...]:
    return _layer_norm(g, x, scale, bias, axis, epsilon, simplified=False)


onnx_op("LayerNormalization", 1, MS)(layer_norm)


@onnx_op("SimplifiedLayerNormalization", 1)
def simplified_layer_norm(g: Emitter, x: Value, scale: Value, *, axis: int = -1, epsilon: float = 1e-5,
                          stash_type: int = 1) -> tuple[Value, ...]:
    """RMS normalization (onnxruntime registers it in the default domain): ``F.rms_norm`` when
    only the normalized output is used."""
    assert g.node is not None
    if len([o for o in g.node.outputs if o]) == 1 and x.dtype == torch.float32:
        dims = g.shape(x)[(axis + x.rank if axis < 0 else axis):]
        return (g.operator("*", g.call("F.rms_norm", x, dims, None, epsilon), scale),)
    y, _, inv_std = _layer_norm(g, x, scale, None, axis, epsilon, simplified=True)
    return y, inv_std


onnx_op("SimplifiedLayerNormalization", 1, MS)(simplified_layer_norm)


@onnx_op("SkipLayerNormalization", 1, MS)
def skip_layer_norm(g: Emitter, x: Value, skip: Value, gamma: Value, beta: Value | None = None,
                    bias: Value | None = None, *, epsilon: float = 1e-12) -> tuple[Value, ...]:
    """LayerNorm of ``x + skip + bias``; outputs y, mean, inverse std, and the sum itself."""
    total = g.operator("+", x, skip)
    if bias is not None:
        total = g.operator("+", total, bias)
    y, mean, inv_std = _layer_norm(g, total, gamma, beta, -1, epsilon, simplified=False)
    return y, mean, inv_std, total


@onnx_op("SkipSimplifiedLayerNormalization", 1, MS)
def skip_simplified_layer_norm(g: Emitter, x: Value, skip: Value, gamma: Value, bias: Value | None = None, *,
                               epsilon: float = 1e-12) -> tuple[Value, ...]:
    total = g.operator("+", x, skip)
    if bias is not None:
        total = g.operator("+", total, bias)
    y, _, inv_std = _layer_norm(g, total, gamma, None, -1, epsilon, simplified=True)
    return y, None, inv_std, total  # type: ignore[return-value]


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


# ------------------------------------------------------------------------------ attention
def _heads(g: Emitter, x: Value, heads: int) -> Value:
    """(batch, seq, heads * size) -> (batch, heads, seq, size)."""
    b, s, _ = g.shape(x)
    return g.method(g.method(x, "reshape", [b, s, heads, -1]), "transpose", 1, 2)


def _merge_heads(g: Emitter, y: Value) -> Value:
    return g.call("torch.flatten", g.method(y, "transpose", 1, 2), 2)


def _key_mask(g: Emitter, mask: Value, filter_value: float, query: Value) -> Value:
    """A 0/1 key mask ((batch, keys) or (batch, 1|queries, keys)) as an additive bias."""
    if mask.rank == 2:
        mask = g.method(mask, "reshape", [g.dim(mask, 0), 1, 1, g.dim(mask, 1)])
    elif mask.rank == 3:
        mask = g.call("torch.unsqueeze", mask, 1)
    keep = g.method(mask, "to", query.dtype)
    return g.operator("*", g.operator("-", 1.0, keep), filter_value)


def _attend(g: Emitter, q: Value, k: Value, v: Value, bias: Value | None, causal: bool,
            scale: float | None) -> Value:
    kwargs: dict[str, object] = {}
    if bias is not None:
        kwargs["attn_mask"] = bias
    if causal:
        kwargs["is_causal"] = True
    if scale:
        kwargs["scale"] = scale
    return g.call("F.scaled_dot_product_attention", q, k, v, **kwargs)


def _add_bias(g: Emitter, base: Value | None, extra: Value | None) -> Value | None:
    if extra is None:
        return base
    return extra if base is None else g.operator("+", base, extra)


@onnx_op("Attention", 1, MS)
def attention(g: Emitter, x: Value, weights: Value, bias: Value | None = None, mask_index: Value | None = None,
              past: Value | None = None, attention_bias: Value | None = None,
              past_sequence_length: Value | None = None, *, num_heads: int, unidirectional: int = 0,
              qkv_hidden_sizes: list[int] | None = None, mask_filter_value: float = -10000.0,
              scale: float = 0.0, do_rotary: int = 0, past_present_share_buffer: int = 0,
              rotary_embedding_dim: int = 0) -> Value:
    """Self-attention with the Q, K, V projections packed in one weight."""
    if past is not None or do_rotary:
        raise g.unsupported("do_rotary" if do_rotary else None, "Attention with a past state or rotary embedding")
    if mask_index is not None and mask_index.rank == 1:
        raise g.unsupported(None, "Attention with a 1-D mask_index (key lengths)")
    hidden = weights.static_shape()[1] // 3 if not qkv_hidden_sizes else None
    sizes = list(qkv_hidden_sizes) if qkv_hidden_sizes else [hidden] * 3
    qkv = g.call("torch.matmul", x, weights)
    if bias is not None:
        qkv = g.operator("+", qkv, bias)
    q, k, v = g.call("torch.split", qkv, sizes, -1, n_outputs=3)
    q, k, v = (_heads(g, t, num_heads) for t in (q, k, v))
    mask = _key_mask(g, mask_index, mask_filter_value, x) if mask_index is not None else None
    y = _attend(g, q, k, v, _add_bias(g, mask, attention_bias), bool(unidirectional), scale)
    return _merge_heads(g, y)


@onnx_op("MultiHeadAttention", 1, MS)
def multi_head_attention(g: Emitter, query: Value, key: Value | None = None, value: Value | None = None,
                         bias: Value | None = None, key_padding_mask: Value | None = None,
                         attention_bias: Value | None = None, past_key: Value | None = None,
                         past_value: Value | None = None, *, num_heads: int, mask_filter_value: float = -10000.0,
                         scale: float = 0.0, unidirectional: int = 0) -> Value:
    """Attention of separate (batch, seq, hidden) query, key and value projections."""
    if key is None or value is None or key.rank != 3 or past_key is not None or past_value is not None:
        raise g.unsupported(None, "MultiHeadAttention with packed inputs, 4-D keys or a past state")
    if bias is not None:
        q_bias, k_bias, v_bias = g.call("torch.split", bias, [query.static_shape()[-1], key.static_shape()[-1],
                                                               value.static_shape()[-1]], n_outputs=3)
        query, key, value = g.operator("+", query, q_bias), g.operator("+", key, k_bias), g.operator("+", value, v_bias)
    if key_padding_mask is not None and key_padding_mask.rank == 1:
        raise g.unsupported(None, "MultiHeadAttention with a 1-D key_padding_mask (key lengths)")
    q, k, v = (_heads(g, t, num_heads) for t in (query, key, value))
    mask = _key_mask(g, key_padding_mask, mask_filter_value, query) if key_padding_mask is not None else None
    y = _attend(g, q, k, v, _add_bias(g, mask, attention_bias), bool(unidirectional), scale)
    return _merge_heads(g, y)


@onnx_op("RotaryEmbedding", 1, MS)
def rotary_embedding(g: Emitter, x: Value, position_ids: Value, cos_cache: Value, sin_cache: Value, *,
                     interleaved: int = 0, is_packed_batching: int = 0, num_heads: int = 0,
                     rotary_embedding_dim: int = 0, scale: float = 1.0) -> Value:
    if is_packed_batching:
        raise g.unsupported("is_packed_batching", "1")
    return rotary_embedding_call(g, x, cos_cache, sin_cache, position_ids, interleaved, num_heads,
                                 rotary_embedding_dim)
