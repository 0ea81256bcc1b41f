"""The torch code a recognised function becomes: one call or one standard layer.

What the graph alone could not tell (:mod:`onnx2fx.idioms.patterns`) is checked here on the values'
dtypes and shapes: float32 (or float64) data, reduction axes that are the trailing dimensions with
static sizes, affine parameters that fit the normalised shape, attention's softmax over the last
axis, its scale a known number and its mask no larger than the scores. When it does not hold,
:class:`IdiomDeclined` sends lowering back to the nodes one by one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .patterns import IdiomMatch

# The dtypes whose fused form is checked against onnxruntime at float noise; a 16-bit chain of
# ONNX ops rounds every intermediate, which torch's fused kernels (computing in float32) do not.
_FUSED_DTYPES = (torch.float32, torch.float64)


class IdiomDeclined(Exception):
    """The match does not fit the values it meets; its nodes are lowered one by one instead."""


def lower_idiom(g: Emitter, match: IdiomMatch, env: Mapping[str, Value]) -> Value:
    """Emit the function ``match`` stands for, applied to its input; return the result."""
    x = env[match.input]
    if x.const is not None or x.fake is None or x.dtype not in _FUSED_DTYPES:
        raise IdiomDeclined(f"{match.kind} needs a run-time float32 or float64 input")
    kind = match.kind
    if kind == "silu":
        return g.call("F.silu", x)
    if kind == "hardswish":
        return g.call("F.hardswish", x)
    if kind == "gelu":
        return g.call("F.gelu", x)
    if kind == "gelu_tanh":
        return g.call("F.gelu", x, approximate="tanh")
    if kind in ("layer_norm", "rms_norm"):
        return _normalisation(g, match, x, env)
    if kind == "linear":
        return _linear(g, match, x, env)
    if kind == "attention":
        return _attention(g, match, x, env)
    raise IdiomDeclined(f"no lowering for {kind}")  # pragma: no cover - every kind is listed above


def short_float(value: float) -> float:
    """The shortest decimal that is the same float32 (1e-05 rather than 9.999999747378752e-06)."""
    return float(str(np.float32(value)))


def _affine(name: str | None, env: Mapping[str, Value], dims: list[int],
            x: Value) -> Value | None:
    """The weight or bias ``name`` when it is a constant of the normalised shape (leading ones
    allowed); raises :class:`IdiomDeclined` when it does not fit."""
    if name is None:
        return None
    value = env.get(name)
    if value is None or value.const is None or value.const.dtype != x.dtype:
        raise IdiomDeclined(f"affine parameter {name!r} is not a constant of the input's dtype")
    shape = list(value.const.shape)
    while len(shape) > len(dims) and shape[0] == 1:
        shape.pop(0)
    if shape != dims:
        raise IdiomDeclined(f"affine parameter {name!r} of shape {list(value.const.shape)} does not fit {dims}")
    return value


def _normalisation(g: Emitter, match: IdiomMatch, x: Value, env: Mapping[str, Value]) -> Value:
    rank = x.rank
    axes = sorted(a + rank if a < 0 else a for a in match.params["axes"])
    if axes != list(range(rank - len(axes), rank)) or not axes:
        raise IdiomDeclined(f"axes {match.params['axes']} are not the trailing dimensions of a rank-{rank} input")
    sizes = g.shape(x)[rank - len(axes):]
    if not all(s.is_static for s in sizes):
        raise IdiomDeclined("the normalised dimensions are not static")
    dims = [int(s.value) for s in sizes]
    weight = _affine(match.params.get("weight"), env, dims, x)
    bias = _affine(match.params.get("bias"), env, dims, x)
    eps = short_float(match.params["epsilon"])
    shape_arg: int | tuple[int, ...] = dims[0] if len(dims) == 1 else tuple(dims)
    layer_norm = match.kind == "layer_norm"
    if weight is None:
        if layer_norm:
            return g.call("F.layer_norm", x, dims, eps=eps)
        return g.call("F.rms_norm", x, dims, eps=eps)
    # nn.LayerNorm's default eps is 1e-5; nn.RMSNorm's is the dtype's machine epsilon, so always given
    kwargs: dict[str, object] = {"eps": eps} if not layer_norm or eps != 1e-5 else {}
    if layer_norm and bias is None:
        kwargs["bias"] = False
    if x.dtype != torch.float32:
        kwargs["dtype"] = x.dtype
    attr = g.add_module("layer_norm" if layer_norm else "rms_norm", "nn.LayerNorm" if layer_norm else "nn.RMSNorm",
                        shape_arg, **kwargs)
    for param, value in (("weight", weight), ("bias", bias)):
        if value is None:
            continue
        assert value.const is not None
        reshaped = tuple(value.const.shape) != tuple(dims)
        g.bind_parameter(attr, param, value.const.reshape(dims), value.origin_initializer,
                         "reshape" if reshaped else None)
    return g.call_module(attr, x)


def _linear(g: Emitter, match: IdiomMatch, x: Value, env: Mapping[str, Value]) -> Value:
    weight, bias = env[match.params["weight"]], env[match.params["bias"]]
    if weight.const is None or bias.const is None or weight.const.dtype != x.dtype or bias.const.dtype != x.dtype:
        raise IdiomDeclined("weight and bias must be constants of the input's dtype")
    if x.rank < 1:
        raise IdiomDeclined("a scalar input")
    in_features, out_features = weight.const.shape
    kwargs: dict[str, object] = {}
    if x.dtype != torch.float32:
        kwargs["dtype"] = x.dtype
    attr = g.add_module("fc", "nn.Linear", in_features, out_features, **kwargs)
    g.bind_parameter(attr, "weight", weight.const.t(), weight.origin_initializer, "transpose")
    g.bind_parameter(attr, "bias", bias.const, bias.origin_initializer)
    return g.call_module(attr, x)


def _same_size(a: object, b: object) -> bool:
    """Two sizes equal for every value of the dynamic dimensions (no guard is added)."""
    return bool(statically_known_true(a == b))


def _scale(match: IdiomMatch, env: Mapping[str, Value]) -> float:
    """The product of the match's scale factors, each a one-element float constant by now (a scale
    computed from sizes has been folded)."""
    scale = 1.0
    for name, op in match.params["scales"]:
        value = env[name]
        if value.const is None or value.const.numel() != 1 or not value.const.dtype.is_floating_point:
            raise IdiomDeclined(f"attention scale {name!r} is not a float constant")
        factor = float(value.const.reshape(()))
        if op == "div":
            if factor == 0.0:
                raise IdiomDeclined("attention scale divides by zero")
            factor = 1.0 / factor
        scale *= factor
    return scale


def _named(g: Emitter, hint: str, emit: Callable[[], Value]) -> Value:
    """Emit a line whose result is no ONNX tensor (it is not stored under one) under the variable
    name ``hint`` rather than the name of the node's output, which the fused call's result takes."""
    node = g.node
    if node is not None:
        g.node = dataclasses.replace(node, outputs=[hint])
    try:
        return emit()
    finally:
        g.node = node


def _attention(g: Emitter, match: IdiomMatch, q: Value, env: Mapping[str, Value]) -> Value:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask=..., scale=...)`` when the decomposition
    is that function for the values it meets: q, k and v of one float dtype and rank 3 or 4 with the
    same leading sizes, the softmax over the last axis, an additive float mask no larger than the
    scores (SDPA does not broadcast the scores up to a mask)."""
    k_source, v = env[match.params["key"]], env[match.params["value"]]
    perm: list[int] = list(match.params["key_perm"])
    rank = len(perm)
    if any(t.fake is None or t.dtype != q.dtype or t.rank != rank for t in (q, k_source, v)):
        raise IdiomDeclined(f"attention needs run-time q, k, v of one dtype and rank {rank}")
    onnx_dtype = {torch.float32: 1, torch.float64: 11}[q.dtype]
    if any(to != onnx_dtype for to in match.params["casts"]):
        raise IdiomDeclined("the attention probabilities are cast to another dtype")
    axis = match.params["softmax_axis"]
    if axis is None:  # before opset 13 Softmax's default axis was 1 (of the input flattened to 2-D there)
        axis = -1 if g.node is not None and g.node.opset >= 13 else 1
    if axis % rank != rank - 1:
        raise IdiomDeclined(f"softmax over axis {axis} of rank-{rank} scores, not the last")
    key_order = [*perm[:-2], perm[-1], perm[-2]]  # the Transpose is k's last two axes swapped, after this
    k = k_source if key_order == list(range(rank)) else \
        _named(g, "key", lambda: g.method(k_source, "permute", key_order))
    q_shape, k_shape, v_shape = (list(g.fake(t).shape) for t in (q, k, v))
    if not all(_same_size(a, b) and _same_size(a, c) for a, b, c in zip(q_shape[:-2], k_shape[:-2], v_shape[:-2])) \
            or not _same_size(q_shape[-1], k_shape[-1]) or not _same_size(k_shape[-2], v_shape[-2]):
        raise IdiomDeclined("q, k and v do not have the sizes scaled_dot_product_attention takes")
    kwargs: dict[str, object] = {}
    mask_name = match.params["mask"]
    if mask_name is not None:
        mask = env[mask_name]
        if mask.dtype != q.dtype or (mask.fake is None and mask.const is None):
            raise IdiomDeclined("the attention mask is not additive in the scores' dtype")
        scores_shape = [*q_shape[:-1], k_shape[-2]]
        mask_shape = list(mask.const.shape if mask.const is not None else g.fake(mask).shape)
        if len(mask_shape) > rank or not all(_same_size(m, 1) or _same_size(m, s) for m, s in
                                             zip(reversed(mask_shape), reversed(scores_shape))):
            raise IdiomDeclined("the attention mask would broadcast the scores to a larger shape")
        kwargs["attn_mask"] = mask
    kwargs["scale"] = short_float(_scale(match, env))
    return g.call("F.scaled_dot_product_attention", q, k, v, **kwargs)
