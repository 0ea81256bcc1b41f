"""Rotary position embeddings (ONNX RotaryEmbedding-23 and onnxruntime's com.microsoft form).

ONNX Attention-23 is lowered in :mod:`.nn` (``F.scaled_dot_product_attention``); the forms it does
not take (key/value caches, soft-capping, windows) are converted through Attention's function body.
"""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .registry import onnx_op


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


def rotary_embedding_call(g: Emitter, x: Value, cos_cache: Value, sin_cache: Value, position_ids: Value | None,
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
    return rotary_embedding_call(g, x, cos_cache, sin_cache, position_ids, interleaved, num_heads,
                                 rotary_embedding_dim)
