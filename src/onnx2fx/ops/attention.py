"""Attention and rotary position embeddings: ONNX Attention-23 and RotaryEmbedding-23, and
onnxruntime's com.microsoft Attention, MultiHeadAttention, GroupQueryAttention and
RotaryEmbedding (semantics of its CPU kernels).

ONNX Attention-23 becomes ``F.scaled_dot_product_attention``; the forms it does not take
(key/value caches, soft-capping, windows) are converted through Attention's function body. The
head helpers (:func:`split_heads`, :func:`merge_heads`, :func:`key_mask_bias`, :func:`attend`)
also serve onnxruntime's QAttention (:mod:`.ort_quantized`).
"""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .registry import onnx_op

MS = "com.microsoft"


# ------------------------------------------------------------------------------ rotary embeddings
def _rotary_embedding(x: torch.Tensor, cos_cache: torch.Tensor, sin_cache: torch.Tensor,
                      position_ids: torch.Tensor | None, interleaved: bool, head_size: int, rotary_dim: int,
                      offset: bool) -> torch.Tensor:
    """Rotate the first ``rotary_dim`` features of every head by the cached angles of its position.
    ``x`` is (batch, seq, heads * head_size) or, when ``head_size`` is 0, (batch, heads, seq, size);
    ``position_ids`` index the caches, or with ``offset`` give the first position."""
    heads = x.transpose(1, 2) if head_size == 0 else x.reshape(x.shape[0], x.shape[1], -1, head_size)
    if position_ids is None:
        cos, sin = cos_cache, sin_cache  # already (batch, seq, rotary_dim / 2)
    elif offset:
        positions = position_ids.reshape(1, 1) + torch.arange(heads.shape[1]).reshape(1, -1)
        cos, sin = cos_cache[positions], sin_cache[positions]
    else:
        cos, sin = cos_cache[position_ids], sin_cache[position_ids]
    cos, sin = cos.unsqueeze(2).to(x.dtype), sin.unsqueeze(2).to(x.dtype)
    part, rest = heads[..., :rotary_dim], heads[..., rotary_dim:]
    if interleaved:
        x1, x2 = part[..., 0::2], part[..., 1::2]
    else:
        x1, x2 = part[..., : rotary_dim // 2], part[..., rotary_dim // 2:]
    y1, y2 = x1 * cos - x2 * sin, x2 * cos + x1 * sin
    rotated = torch.stack([y1, y2], -1).flatten(-2) if interleaved else torch.cat([y1, y2], -1)
    out = torch.cat([rotated, rest], -1)
    return out.transpose(1, 2) if head_size == 0 else out.flatten(2)


def _rotary_embedding_call(g: Emitter, x: Value, cos_cache: Value, sin_cache: Value, position_ids: Value | None,
                          interleaved: int, num_heads: int, rotary_embedding_dim: int) -> Value:
    half = cos_cache.static_shape()[-1]
    if half is None:
        raise g.unsupported(None, "RotaryEmbedding caches of run-time size")
    rotary_dim = rotary_embedding_dim or 2 * half
    head_size = 0
    if x.rank == 3:
        hidden = x.static_shape()[-1]
        head_size = 2 * half if num_heads == 0 else (hidden // num_heads if hidden is not None else None)
        if head_size is None:
            raise g.unsupported(None, "RotaryEmbedding over a hidden size of run-time size")
    seq = x.static_shape()[1 if x.rank == 3 else 2]
    offset = position_ids is not None and position_ids.rank <= 1 and position_ids.static_shape() in ([], [1]) \
        and seq != 1
    return g.call(g.helper(_rotary_embedding), x, cos_cache, sin_cache, position_ids, bool(interleaved), head_size,
                  rotary_dim, offset)


@onnx_op("RotaryEmbedding", 23)
def rotary_embedding(g: Emitter, x: Value, cos_cache: Value, sin_cache: Value, position_ids: Value | None = None, *,
                     interleaved: int = 0, num_heads: int = 0, rotary_embedding_dim: int = 0) -> Value:
    return _rotary_embedding_call(g, x, cos_cache, sin_cache, position_ids, interleaved, num_heads,
                                  rotary_embedding_dim)


# ------------------------------------------------------------------------------ ONNX Attention
@onnx_op("Attention", 23)
def attention(g: Emitter, q: Value, k: Value, v: Value, attn_mask: Value | None = None,
              past_key: Value | None = None, past_value: Value | None = None,
              nonpad_kv_seqlen: Value | None = None, *, is_causal: int = 0, kv_num_heads: int | None = None,
              q_num_heads: int | None = None, qk_matmul_output_mode: int = 0, scale: float | None = None,
              softcap: float = 0.0, softmax_precision: int | None = None, left_window_size: int = -1,
              right_window_size: int = -1) -> Value:
    """Attention -> ``F.scaled_dot_product_attention`` (3-D inputs are split into heads first).

    Without a key/value cache ONNX's bottom-right causal alignment is torch's ``is_causal``.
    """
    assert g.node is not None
    if past_key is not None or past_value is not None or nonpad_kv_seqlen is not None:
        raise g.unsupported(None, "Attention with a key/value cache (past_key, past_value, nonpad_kv_seqlen)")
    if any(g.node.outputs[1:]):
        raise g.unsupported(None, "Attention's present_key, present_value and qk_matmul_output outputs")
    if softcap:
        raise g.unsupported("softcap", f"{softcap} (torch's attention has no soft-capping)")
    if left_window_size != -1 or right_window_size != -1:
        raise g.unsupported("left_window_size", "sliding-window attention")
    if is_causal and attn_mask is not None:
        raise g.unsupported("is_causal", "1 together with attn_mask")
    packed = q.rank == 3  # (batch, seq, heads * size)
    if packed:
        if q_num_heads is None or kv_num_heads is None:
            raise g.error("3-D Attention inputs need q_num_heads and kv_num_heads")
        q, k, v = split_heads(g, q, q_num_heads), split_heads(g, k, kv_num_heads), split_heads(g, v, kv_num_heads)
    kwargs: dict[str, object] = {}
    if attn_mask is not None:
        kwargs["attn_mask"] = attn_mask
    if is_causal:
        kwargs["is_causal"] = True
    if scale is not None:
        kwargs["scale"] = scale
    if g.dim(q, 1).code != g.dim(k, 1).code:
        kwargs["enable_gqa"] = True
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):  # computed in float32, as ONNX's reference does
        q, k, v = (g.method(t, "float") for t in (q, k, v))
        if attn_mask is not None and attn_mask.dtype == dtype:
            kwargs["attn_mask"] = g.method(attn_mask, "float")
    y = g.call("F.scaled_dot_product_attention", q, k, v, **kwargs)
    if y.dtype != dtype:
        y = g.method(y, "to", dtype)
    return merge_heads(g, y) if packed else y


# ------------------------------------------------------------------------------ heads, masks
def split_heads(g: Emitter, x: Value, heads: int) -> Value:
    """(batch, seq, heads * size) -> (batch, heads, seq, size)."""
    b, s, _ = g.shape(x)
    return g.method(g.method(x, "reshape", [b, s, heads, -1]), "transpose", 1, 2)


def merge_heads(g: Emitter, y: Value) -> Value:
    """(batch, heads, seq, size) -> (batch, seq, heads * size)."""
    return g.call("torch.flatten", g.method(y, "transpose", 1, 2), 2)


def key_mask_bias(g: Emitter, mask: Value, filter_value: float, query: Value) -> Value:
    """A 0/1 key mask ((batch, keys) or (batch, 1|queries, keys)) as an additive bias."""
    if mask.rank == 2:
        mask = g.method(mask, "reshape", [g.dim(mask, 0), 1, 1, g.dim(mask, 1)])
    elif mask.rank == 3:
        mask = g.call("torch.unsqueeze", mask, 1)
    keep = g.method(mask, "to", query.dtype)
    return g.operator("*", g.operator("-", 1.0, keep), filter_value)


def attend(g: Emitter, q: Value, k: Value, v: Value, bias: Value | None, causal: bool,
           scale: float | None) -> Value:
    """``F.scaled_dot_product_attention`` with onnxruntime's arguments (a scale of 0 is the default)."""
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


# ------------------------------------------------------------------------------ onnxruntime's attention
@onnx_op("Attention", 1, MS)
def ort_attention(g: Emitter, x: Value, weights: Value, bias: Value | None = None, mask_index: Value | None = None,
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
    q, k, v = (split_heads(g, t, num_heads) for t in (q, k, v))
    mask = key_mask_bias(g, mask_index, mask_filter_value, x) if mask_index is not None else None
    y = attend(g, q, k, v, _add_bias(g, mask, attention_bias), bool(unidirectional), scale)
    return merge_heads(g, y)


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
    q, k, v = (split_heads(g, t, num_heads) for t in (query, key, value))
    mask = key_mask_bias(g, key_padding_mask, mask_filter_value, query) if key_padding_mask is not None else None
    y = attend(g, q, k, v, _add_bias(g, mask, attention_bias), bool(unidirectional), scale)
    return merge_heads(g, y)


@onnx_op("RotaryEmbedding", 1, MS)
def ort_rotary_embedding(g: Emitter, x: Value, position_ids: Value, cos_cache: Value, sin_cache: Value, *,
                     interleaved: int = 0, is_packed_batching: int = 0, num_heads: int = 0,
                     rotary_embedding_dim: int = 0, scale: float = 1.0) -> Value:
    if is_packed_batching:
        raise g.unsupported("is_packed_batching", "1")
    return _rotary_embedding_call(g, x, cos_cache, sin_cache, position_ids, interleaved, num_heads,
                                  rotary_embedding_dim)


def _group_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past_k: torch.Tensor | None,
                           past_v: torch.Tensor | None, seqlens_k: torch.Tensor, heads: int, kv_heads: int,
                           scale: float, softcap: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Causal attention of (batch, seq, heads * size) queries over the past and new keys, each
    key/value head serving ``heads / kv_heads`` query heads; returns the output and the present
    key/value caches, (batch, kv_heads, past + seq, size). Every row's ``seqlens_k`` must be the
    total length - 1 (no padding), which is checked."""
    batch, seq = q.shape[0], q.shape[1]
    size = q.shape[2] // heads
    q = q.reshape(batch, seq, heads, size).transpose(1, 2)
    k = k.reshape(batch, seq, kv_heads, size).transpose(1, 2)
    v = v.reshape(batch, seq, kv_heads, size).transpose(1, 2)
    if past_k is not None and past_v is not None:
        k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
    total = k.shape[2]
    torch._assert_async((seqlens_k.to(torch.int64) == total - 1).all(),
                        "GroupQueryAttention: seqlens_k must be past + new length - 1 in every row (padded batches "
                        "are not supported)")
    rep_k = k.repeat_interleave(heads // kv_heads, 1)
    rep_v = v.repeat_interleave(heads // kv_heads, 1)
    scores = (q @ rep_k.transpose(-1, -2)) * (scale if scale else size ** -0.5)
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    positions = torch.arange(seq).reshape(-1, 1) + (total - seq)
    scores = scores.masked_fill(torch.arange(total).reshape(1, -1) > positions, float("-inf"))
    y = torch.softmax(scores, -1) @ rep_v
    return y.transpose(1, 2).reshape(batch, seq, heads * size), k, v


@onnx_op("GroupQueryAttention", 1, MS)
def group_query_attention(g: Emitter, query: Value, key: Value | None, value: Value | None,
                          past_key: Value | None = None, past_value: Value | None = None,
                          seqlens_k: Value | None = None, total_sequence_length: Value | None = None,
                          cos_cache: Value | None = None, sin_cache: Value | None = None,
                          position_ids: Value | None = None, attention_bias: Value | None = None,
                          head_sink: Value | None = None, *, num_heads: int, kv_num_heads: int, scale: float = 0.0,
                          softcap: float = 0.0, local_window_size: int = -1, do_rotary: int = 0,
                          rotary_interleaved: int = 0, smooth_softmax: int = -1,
                          qk_output: int = 0) -> tuple[Value, ...]:
    """Causal grouped-query attention with a key/value cache, for batches whose sequences all have
    the cache's length plus the new tokens (``seqlens_k`` = total - 1 in every row, the
    no-padding case; other values stop the model with an error at run time); outputs and present
    caches."""
    unsupported = [name for name, on in (("key (packed QKV)", key is None), ("do_rotary", do_rotary),
                                         ("local_window_size", local_window_size != -1),
                                         ("smooth_softmax", smooth_softmax == 1),  # onnxruntime: only 1 is on
                                         ("attention_bias", attention_bias),
                                         ("head_sink", head_sink), ("qk_output", qk_output),
                                         ("position_ids", position_ids)) if on]
    if unsupported:
        raise g.unsupported(None, f"GroupQueryAttention with {', '.join(unsupported)}")
    spec = [([g.dim(query, 0), g.dim(query, 1), g.dim(query, 2)], query.dtype)]
    kv_size = key.static_shape()[2] // kv_num_heads  # type: ignore[union-attr,operator]
    past = g.dim(past_key, 2) if past_key is not None else 0
    cache = [g.dim(query, 0), kv_num_heads, g.dim(key, 1) + past, kv_size]  # type: ignore[arg-type]
    spec += [(cache, query.dtype), (cache, query.dtype)]
    if seqlens_k is None:
        raise g.error("GroupQueryAttention needs seqlens_k")
    return g.call(g.helper(_group_query_attention, leaf=True), query, key, value, past_key, past_value, seqlens_k,
                  num_heads, kv_num_heads, scale, softcap, n_outputs=3, out_spec=spec)
