"""Normalizations: BatchNormalization (``nn.BatchNorm*d``, or the batch statistics in training
mode), LayerNormalization (``nn.LayerNorm`` where it matches), InstanceNormalization,
GroupNormalization, RMSNormalization, LpNormalization, LRN, MeanVarianceNormalization, and
onnxruntime's layer normalizations (LayerNormalization before opset 17,
SimplifiedLayerNormalization, and the com.microsoft Skip* forms; semantics of its CPU kernels)."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .axes import axis_index
from .registry import onnx_op

MS = "com.microsoft"


# ------------------------------------------------------------------------------ batch, layer, instance
@onnx_op("BatchNormalization", 1)
def batch_norm(g: Emitter, x: Value, scale: Value, bias: Value, mean: Value, var: Value, *,
               epsilon: float = 1e-5, momentum: float = 0.9, training_mode: int = 0,
               spatial: int = 1, is_test: int = 1, consumed_inputs: list[int] | None = None) -> Value:
    if training_mode:
        return _batch_norm_training(g, x, scale, bias, mean, var, epsilon, momentum)
    if not spatial:
        raise g.unsupported("spatial", "0 (per-activation statistics)")
    params = (scale, bias, mean, var)
    if any(p.const is None for p in params) or x.rank not in (2, 3, 4, 5):
        return g.call("F.batch_norm", x, mean, var, scale, bias, False, 0.0, epsilon)
    kind = {2: 1, 3: 1, 4: 2, 5: 3}[x.rank]
    channels = scale.const.numel()  # type: ignore[union-attr]
    kwargs: dict[str, object] = {}
    if abs(epsilon - 1e-5) > 1e-12:
        kwargs["eps"] = epsilon
    if abs((1.0 - momentum) - 0.1) > 1e-7:
        kwargs["momentum"] = round(1.0 - momentum, 7)
    if scale.dtype != torch.float32:
        kwargs["dtype"] = scale.dtype
    attr = g.add_module("bn", f"nn.BatchNorm{kind}d", channels, **kwargs)
    for name, p in zip(("weight", "bias", "running_mean", "running_var"), params):
        g.bind_parameter(attr, name, p.const, p.origin_initializer)  # type: ignore[arg-type]
    g.bind_parameter(attr, "num_batches_tracked", torch.tensor(0, dtype=torch.int64), None)
    return g.call_module(attr, x)


def _batch_norm_training(g: Emitter, x: Value, scale: Value, bias: Value, mean: Value, var: Value,
                         epsilon: float, momentum: float) -> tuple[Value, Value, Value]:
    """BatchNormalization with ``training_mode=1``: normalized with the batch statistics; also the
    running statistics updated with ``momentum`` (ONNX: ``running * momentum + batch * (1 - momentum)``)."""
    dims = [0] + list(range(2, x.rank))
    shape = [1, -1] + [1] * (x.rank - 2)
    batch_mean = g.call("torch.mean", x, dims)
    batch_var = g.call("torch.var", x, dims, correction=0)
    normalized = g.operator("/", g.operator("-", x, g.method(batch_mean, "reshape", shape)),
                            g.call("torch.sqrt", g.operator("+", g.method(batch_var, "reshape", shape), epsilon)))
    y = g.operator("+", g.operator("*", normalized, g.method(scale, "reshape", shape)),
                   g.method(bias, "reshape", shape))
    running_mean = g.operator("+", g.operator("*", mean, momentum), g.operator("*", batch_mean, 1.0 - momentum))
    running_var = g.operator("+", g.operator("*", var, momentum), g.operator("*", batch_var, 1.0 - momentum))
    return y, running_mean, running_var


@onnx_op("LayerNormalization", 17)
def layer_norm(g: Emitter, x: Value, scale: Value, bias: Value | None = None, *, axis: int = -1,
               epsilon: float = 1e-5, stash_type: int = 1) -> tuple[Value, ...]:
    rank = x.rank
    axis = axis + rank if axis < 0 else axis
    normalized = g.shape(x)[axis:]
    static = [d.value for d in normalized if d.is_static]
    affine_fits = (scale.const is not None and list(scale.const.shape) == static
                   and (bias is None or (bias.const is not None and list(bias.const.shape) == static)))
    if len(static) == len(normalized) and affine_fits:
        kwargs: dict[str, object] = {}
        if abs(epsilon - 1e-5) > 1e-12:
            kwargs["eps"] = epsilon
        if bias is None:
            kwargs["bias"] = False
        if scale.dtype != torch.float32:
            kwargs["dtype"] = scale.dtype
        shape_arg = static[0] if len(static) == 1 else tuple(static)
        attr = g.add_module("layer_norm", "nn.LayerNorm", shape_arg, **kwargs)
        g.bind_parameter(attr, "weight", scale.const, scale.origin_initializer)  # type: ignore[arg-type]
        if bias is not None:
            g.bind_parameter(attr, "bias", bias.const, bias.origin_initializer)  # type: ignore[arg-type]
        return g.call_module(attr, x), None, None  # type: ignore[return-value]
    y = g.call("F.layer_norm", x, normalized, None, None, epsilon)
    y = g.operator("*", y, scale)
    if bias is not None:
        y = g.operator("+", y, bias)
    return y, None, None  # type: ignore[return-value]


@onnx_op("InstanceNormalization", 1)
def instance_norm(g: Emitter, x: Value, scale: Value, bias: Value, *, epsilon: float = 1e-5) -> Value:
    return g.call("F.instance_norm", x, None, None, scale, bias, eps=epsilon)


# ------------------------------------------------------------------------------ other normalizations
@onnx_op("GroupNormalization", 18)
def group_norm(g: Emitter, x: Value, scale: Value, bias: Value, *, epsilon: float = 1e-5, num_groups: int,
               stash_type: int = 1) -> Value:
    """``nn.GroupNorm`` with constant per-channel scale and bias (opset 21), else ``F.group_norm``.
    GroupNormalization-18 has one scale and bias per group: they are repeated for each channel."""
    assert g.node is not None
    channels = x.static_shape()[1]
    if channels is None:
        raise g.unsupported(None, "GroupNormalization over a run-time number of channels")
    if g.node.opset < 21 and scale.static_shape() == [num_groups] and num_groups != channels:
        per_group = channels // num_groups
        scale = g.call("torch.repeat_interleave", scale, per_group)
        bias = g.call("torch.repeat_interleave", bias, per_group)
    low_precision = x.dtype in (torch.float16, torch.bfloat16)
    if scale.const is not None and bias.const is not None and scale.origin_initializer and not low_precision:
        kwargs: dict[str, object] = {}
        if abs(epsilon - 1e-5) > 1e-12:
            kwargs["eps"] = epsilon
        attr = g.add_module("group_norm", "nn.GroupNorm", num_groups, channels, **kwargs)
        g.bind_parameter(attr, "weight", scale.const, scale.origin_initializer)
        g.bind_parameter(attr, "bias", bias.const, bias.origin_initializer)
        return g.call_module(attr, x)
    xf = g.method(x, "float") if low_precision else x  # stash_type: statistics in float32
    y = g.call("F.group_norm", xf, num_groups, None, None, epsilon)
    if low_precision:
        y = g.method(y, "to", x.dtype)
    shape = [1, -1] + [1] * (x.rank - 2)
    return g.operator("+", g.operator("*", y, g.method(scale, "reshape", shape)), g.method(bias, "reshape", shape))


@onnx_op("RMSNormalization", 23)
def rms_norm(g: Emitter, x: Value, scale: Value, *, axis: int = -1, epsilon: float = 1e-5,
             stash_type: int = 1) -> Value:
    """``F.rms_norm`` over the dimensions from ``axis`` on (computed in float32 for 16-bit inputs)."""
    dims = g.shape(x)[axis_index(axis, x.rank):]
    low_precision = x.dtype in (torch.float16, torch.bfloat16)
    xf = g.method(x, "float") if low_precision else x
    y = g.call("F.rms_norm", xf, dims, None, epsilon)
    if low_precision:
        y = g.method(y, "to", x.dtype)
    return g.operator("*", y, scale)


@onnx_op("LpNormalization", 1)
def lp_norm(g: Emitter, x: Value, *, axis: int = -1, p: int = 2) -> Value:
    """``x / ||x||_p`` along ``axis`` (0 where the norm is 0)."""
    if p not in (1, 2):
        raise g.unsupported("p", f"{p} (ONNX allows 1 and 2)")
    norm = g.call("torch.linalg.vector_norm", x, float(p), axis_index(axis, x.rank), keepdim=True)
    return g.call("torch.where", g.call("torch.eq", norm, 0), 0.0, g.operator("/", x, norm))


@onnx_op("LRN", 1)
def lrn(g: Emitter, x: Value, *, size: int, alpha: float = 0.0001, beta: float = 0.75, bias: float = 1.0) -> Value:
    """``F.local_response_norm`` for odd sizes; ONNX's window for even sizes is one channel later."""
    if size % 2:
        return g.call("F.local_response_norm", x, size, alpha, beta, bias)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    square = g.call("torch.square", x)
    padded = g.call("F.pad", g.call("torch.unsqueeze", square, 1), [0, 0] * (x.rank - 2) + [before, after])
    window = [size] + [1] * (x.rank - 2)
    pool = "F.avg_pool3d" if x.rank == 4 else "F.avg_pool2d"
    sums = g.operator("*", g.call("torch.squeeze", g.call(pool, padded, window, 1), 1), float(size))
    scale = g.operator("+", g.operator("*", sums, alpha / size), bias)
    return g.operator("/", x, g.call("torch.pow", scale, beta))


@onnx_op("MeanVarianceNormalization", 9)
def mean_variance_norm(g: Emitter, x: Value, *, axes: list[int] | None = None) -> Value:
    """``(x - mean) / sqrt(var + 1e-9)`` over ``axes`` (population variance)."""
    dims = [axis_index(a, x.rank) for a in (axes if axes is not None else [0, 2, 3])]
    mean = g.call("torch.mean", x, dims, keepdim=True)
    centered = g.operator("-", x, mean)
    var = g.call("torch.mean", g.call("torch.square", centered), dims, keepdim=True)
    return g.operator("/", centered, g.call("torch.sqrt", g.operator("+", var, 1e-9)))


# ------------------------------------------------------------------------------ onnxruntime's layer normalizations
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
def layer_norm_before_17(g: Emitter, x: Value, scale: Value, bias: Value | None = None, *, axis: int = -1,
               epsilon: float = 1e-5, stash_type: int = 1) -> tuple[Value, ...]:
    return _layer_norm(g, x, scale, bias, axis, epsilon, simplified=False)


onnx_op("LayerNormalization", 1, MS)(layer_norm_before_17)


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
