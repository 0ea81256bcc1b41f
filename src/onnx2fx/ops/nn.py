"""Convolution, dense layers and softmax. Where ONNX matches a standard torch layer, the standard
layer is used (Conv -> nn.Conv2d, Gemm with constant B -> nn.Linear) so quantization tools and
readers recognise it. Pooling, normalization and attention have their own modules."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import SymElem, Value
from .axes import axis_index
from .registry import onnx_op
from .shape import torch_pads
from .sliding_window import int_or_tuple, pad_same_at_run_time, resolve_pads


def _split_padding(g: Emitter, x: Value, pads: list[int], nd: int, value: float = 0.0) -> tuple[Value, tuple]:
    """Symmetric pads go to the layer; asymmetric ones become an explicit ``F.pad`` first."""
    begin, end = pads[:nd], pads[nd:]
    if begin == end:
        return x, tuple(begin)
    padded = g.call("F.pad", x, torch_pads(pads, nd + 2, list(range(2, nd + 2))), value=value) if value \
        else g.call("F.pad", x, torch_pads(pads, nd + 2, list(range(2, nd + 2))))
    return padded, (0,) * nd


# ------------------------------------------------------------------------------ convolution
@onnx_op("Conv", 1)
def conv(g: Emitter, x: Value, w: Value, b: Value | None = None, *, auto_pad: str = "NOTSET",
         dilations: list[int] | None = None, group: int = 1, kernel_shape: list[int] | None = None,
         pads: list[int] | None = None, strides: list[int] | None = None) -> Value:
    nd = w.rank - 2
    if nd not in (1, 2, 3):
        raise g.unsupported(None, f"{nd}-D convolution (only 1-D, 2-D and 3-D map to torch)")
    kernel = list(w.static_shape()[2:])
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    resolved = resolve_pads(g, x, nd, kernel, strides, dilations, auto_pad, pads, allow_run_time=True)
    if resolved is None:
        x, resolved = pad_same_at_run_time(g, x, kernel, strides, dilations, auto_pad, 0.0), [0] * (2 * nd)
    x, padding = _split_padding(g, x, resolved, nd)
    if w.const is None or (b is not None and b.const is None):
        fn = f"F.conv{nd}d"
        return g.call(fn, x, w, b, stride=int_or_tuple(strides), padding=int_or_tuple(list(padding)),
                      dilation=int_or_tuple(dilations), groups=group)
    out_channels, in_per_group = w.const.shape[0], w.const.shape[1]
    kwargs: dict[str, object] = {"kernel_size": int_or_tuple(kernel)}
    if any(s != 1 for s in strides):
        kwargs["stride"] = int_or_tuple(strides)
    if any(padding):
        kwargs["padding"] = int_or_tuple(list(padding))
    if any(d != 1 for d in dilations):
        kwargs["dilation"] = int_or_tuple(dilations)
    if group != 1:
        kwargs["groups"] = group
    if b is None:
        kwargs["bias"] = False
    if w.dtype != torch.float32:
        kwargs["dtype"] = w.dtype
    attr = g.add_module("conv", f"nn.Conv{nd}d", in_per_group * group, out_channels, **kwargs)
    g.bind_parameter(attr, "weight", w.const, w.origin_initializer)
    if b is not None:
        assert b.const is not None
        g.bind_parameter(attr, "bias", b.const, b.origin_initializer)
    return g.call_module(attr, x)


@onnx_op("ConvTranspose", 1)
def conv_transpose(g: Emitter, x: Value, w: Value, b: Value | None = None, *, auto_pad: str = "NOTSET",
                   dilations: list[int] | None = None, group: int = 1, kernel_shape: list[int] | None = None,
                   output_padding: list[int] | None = None, output_shape: list[int] | None = None,
                   pads: list[int] | None = None, strides: list[int] | None = None) -> Value:
    nd = w.rank - 2
    if nd not in (1, 2, 3):
        raise g.unsupported(None, f"{nd}-D transposed convolution")
    kernel = list(w.static_shape()[2:])
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    out_pad = list(output_padding or [0] * nd)
    spatial = x.static_shape()[2:]
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if any(s is None for s in spatial):
            raise g.unsupported("output_shape" if output_shape else "auto_pad",
                                "needs static spatial input sizes")
        targets = list(output_shape)[-nd:] if output_shape is not None else [s * st for s, st in zip(spatial, strides)]
        begins, ends = [], []
        for i, (size, k, s, d, op, target) in enumerate(zip(spatial, kernel, strides, dilations, out_pad, targets)):
            total = s * (size - 1) + op + (k - 1) * d + 1 - target
            if total < 0:  # a larger output than the full one: extra positions at the end
                out_pad[i], total = op - total, 0
            first = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2  # the spec's split
            begins.append(first)
            ends.append(total - first)
        pads = begins + ends
    elif auto_pad == "VALID" or not pads:
        pads = [0] * (2 * nd)
    begin, end = list(pads[:nd]), list(pads[nd:])
    symmetric = begin == end and all(p >= 0 for p in begin)
    kwargs: dict[str, object] = {"kernel_size": int_or_tuple(kernel)}
    if any(s != 1 for s in strides):
        kwargs["stride"] = int_or_tuple(strides)
    if symmetric and any(begin):
        kwargs["padding"] = int_or_tuple(begin)
    if any(out_pad):
        kwargs["output_padding"] = int_or_tuple(out_pad)
    if group != 1:
        kwargs["groups"] = group
    if any(d != 1 for d in dilations):
        kwargs["dilation"] = int_or_tuple(dilations)
    if b is None:
        kwargs["bias"] = False
    if w.const is None or (b is not None and b.const is None):  # weights computed at run time
        functional = {k: v for k, v in kwargs.items() if k not in ("kernel_size", "bias")}
        y = g.call(f"F.conv_transpose{nd}d", x, w, b, **functional)
    else:
        in_channels, out_per_group = w.const.shape[0], w.const.shape[1]
        attr = g.add_module("conv_transpose", f"nn.ConvTranspose{nd}d", in_channels, out_per_group * group,
                            **kwargs)
        g.bind_parameter(attr, "weight", w.const, w.origin_initializer)
        if b is not None:
            g.bind_parameter(attr, "bias", b.const, b.origin_initializer)
        y = g.call_module(attr, x)
    if symmetric:
        return y
    index = [slice(None), slice(None)] + [
        slice(SymElem.of(bg) if bg else None, SymElem.of(-e) if e else None) for bg, e in zip(begin, end)]
    return g.getitem(y, index)


# ------------------------------------------------------------------------------ dense
@onnx_op("Gemm", 1)
def gemm(g: Emitter, a: Value, b: Value, c: Value | None = None, *, alpha: float = 1.0, beta: float = 1.0,
         transA: int = 0, transB: int = 0, **legacy: object) -> Value:
    n = b.static_shape()[0 if transB else 1]
    bias_ok = c is None or (c.const is not None and c.const.numel() == n and c.rank <= 2
                            and (c.rank < 2 or c.const.shape[0] == 1) and beta == 1.0)
    if b.const is not None and not transA and alpha == 1.0 and bias_ok and b.rank == 2:
        weight = b.const if transB else b.const.t()
        kwargs: dict[str, object] = {} if c is not None else {"bias": False}
        if b.dtype != torch.float32:
            kwargs["dtype"] = b.dtype
        attr = g.add_module("fc", "nn.Linear", weight.shape[1], weight.shape[0], **kwargs)
        g.bind_parameter(attr, "weight", weight, b.origin_initializer, None if transB else "transpose")
        if c is not None:
            assert c.const is not None
            g.bind_parameter(attr, "bias", c.const.reshape(-1), c.origin_initializer,
                             "reshape" if c.rank != 1 else None)
        return g.call_module(attr, a)
    lhs = g.method(a, "t") if transA else a
    rhs = g.method(b, "t") if transB else b
    y = g.call("torch.matmul", lhs, rhs)
    if alpha != 1.0:
        y = g.operator("*", y, alpha)
    if c is not None and beta != 0.0:
        y = g.operator("+", y, g.operator("*", c, beta) if beta != 1.0 else c)
    return y


@onnx_op("MatMul", 1)
def matmul(g: Emitter, a: Value, b: Value) -> Value:
    """``torch.matmul``; ``x @ W`` with a 2-D weight initializer is ``nn.Linear`` without bias (how
    exporters write a Linear layer on 3-D inputs, its bias being a separate Add)."""
    if b.origin_initializer is not None and b.const is not None and b.rank == 2 and a.const is None \
            and b.dtype.is_floating_point:
        kwargs: dict[str, object] = {"bias": False}
        if b.dtype != torch.float32:
            kwargs["dtype"] = b.dtype
        attr = g.add_module("fc", "nn.Linear", b.const.shape[0], b.const.shape[1], **kwargs)
        g.bind_parameter(attr, "weight", b.const.t(), b.origin_initializer, "transpose")
        return g.call_module(attr, a)
    return g.call("torch.matmul", a, b)


# ------------------------------------------------------------------------------ softmax
def _softmax(g: Emitter, fn: str, x: Value, axis: int, legacy: bool) -> Value:
    rank = x.rank
    axis = axis_index(axis, rank)
    if not legacy or axis == rank - 1:
        return g.call(fn, x, dim=axis if not legacy else -1)
    flat = g.call("torch.flatten", x, axis)
    return g.method(g.call(fn, flat, dim=-1), "reshape", g.shape(x))


@onnx_op("Softmax", 1)
def softmax_legacy(g: Emitter, x: Value, *, axis: int = 1) -> Value:
    return _softmax(g, "torch.softmax", x, axis, legacy=True)


@onnx_op("Softmax", 13)
def softmax(g: Emitter, x: Value, *, axis: int = -1) -> Value:
    return _softmax(g, "torch.softmax", x, axis, legacy=False)


@onnx_op("LogSoftmax", 1)
def log_softmax_legacy(g: Emitter, x: Value, *, axis: int = 1) -> Value:
    return _softmax(g, "torch.log_softmax", x, axis, legacy=True)


@onnx_op("LogSoftmax", 13)
def log_softmax(g: Emitter, x: Value, *, axis: int = -1) -> Value:
    return _softmax(g, "torch.log_softmax", x, axis, legacy=False)
