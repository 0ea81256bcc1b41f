"""Neural-network layers. Where ONNX matches a standard torch layer, the standard layer is used
(Conv -> nn.Conv2d, Gemm with constant B -> nn.Linear, BatchNormalization -> nn.BatchNorm2d, ...)
so quantization tools and readers recognise it."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import SymElem, Value
from . import normalization, pooling
from .registry import onnx_op
from .shape import torch_pads


def _tuple(values: list[int]) -> tuple[int, ...] | int:
    return values[0] if len(set(values)) == 1 else tuple(values)


def _same_pads(g: Emitter, x: Value, kernel: list[int], strides: list[int], dilations: list[int],
               auto_pad: str, allow_run_time: bool = False) -> list[int] | None:
    """Explicit ONNX pads for auto_pad SAME_UPPER / SAME_LOWER. With stride 1 the total is
    ``(k - 1) * d`` whatever the size; with a larger stride over a size known only at run time it
    depends on that size: ``None`` (pad at run time, see :func:`_same_pad`) where the caller can."""
    spatial = x.static_shape()[2:]
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        if size is None and s != 1:
            if allow_run_time:
                return None
            raise g.unsupported("auto_pad", f"{auto_pad} over a spatial dimension of run-time size")
        total = (k - 1) * d if size is None else max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _same_pad(x: torch.Tensor, kernel: list[int], strides: list[int], dilations: list[int], upper: bool,
              value: float) -> torch.Tensor:
    """ONNX auto_pad SAME over spatial sizes known only at run time (SAME_UPPER puts the odd
    element at the end, SAME_LOWER at the start)."""
    pads: list[int] = []
    for axis in range(len(kernel) - 1, -1, -1):  # F.pad takes the last dim first
        size, k, s, d = x.shape[2 + axis], kernel[axis], strides[axis], dilations[axis]
        total = torch.sym_max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        pads += [small, large] if upper else [large, small]
    return torch.nn.functional.pad(x, pads, value=value)


def _pad_same_at_run_time(g: Emitter, x: Value, kernel: list[int], strides: list[int], dilations: list[int],
                          auto_pad: str, value: float) -> Value:
    return g.call(g.helper(_same_pad, leaf=True), x, list(kernel), list(strides), list(dilations),
                  auto_pad == "SAME_UPPER", value)


def _resolve_pads(g: Emitter, x: Value, nd: int, kernel: list[int], strides: list[int], dilations: list[int],
                  auto_pad: str, pads: list[int] | None, allow_run_time: bool = False) -> list[int] | None:
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(g, x, kernel, strides, dilations, auto_pad, allow_run_time)
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    if auto_pad not in ("NOTSET", ""):
        raise g.unsupported("auto_pad", f"unknown value {auto_pad!r}")
    return list(pads) if pads else [0] * (2 * nd)


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
    resolved = _resolve_pads(g, x, nd, kernel, strides, dilations, auto_pad, pads, allow_run_time=True)
    if resolved is None:
        x, resolved = _pad_same_at_run_time(g, x, kernel, strides, dilations, auto_pad, 0.0), [0] * (2 * nd)
    x, padding = _split_padding(g, x, resolved, nd)
    if w.const is None or (b is not None and b.const is None):
        fn = f"F.conv{nd}d"
        return g.call(fn, x, w, b, stride=_tuple(strides), padding=_tuple(list(padding)),
                      dilation=_tuple(dilations), groups=group)
    out_channels, in_per_group = w.const.shape[0], w.const.shape[1]
    kwargs: dict[str, object] = {"kernel_size": _tuple(kernel)}
    if any(s != 1 for s in strides):
        kwargs["stride"] = _tuple(strides)
    if any(padding):
        kwargs["padding"] = _tuple(list(padding))
    if any(d != 1 for d in dilations):
        kwargs["dilation"] = _tuple(dilations)
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
    kwargs: dict[str, object] = {"kernel_size": _tuple(kernel)}
    if any(s != 1 for s in strides):
        kwargs["stride"] = _tuple(strides)
    if symmetric and any(begin):
        kwargs["padding"] = _tuple(begin)
    if any(out_pad):
        kwargs["output_padding"] = _tuple(out_pad)
    if group != 1:
        kwargs["groups"] = group
    if any(d != 1 for d in dilations):
        kwargs["dilation"] = _tuple(dilations)
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


# ------------------------------------------------------------------------------ attention
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
        q, k, v = _split_heads(g, q, q_num_heads), _split_heads(g, k, kv_num_heads), _split_heads(g, v, kv_num_heads)
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
    return g.call("torch.flatten", g.method(y, "transpose", 1, 2), 2) if packed else y


def _split_heads(g: Emitter, x: Value, heads: int) -> Value:
    """(batch, seq, heads * size) -> (batch, heads, seq, size)."""
    b, s, _ = g.shape(x)
    return g.method(g.method(x, "reshape", [b, s, heads, -1]), "transpose", 1, 2)


# ------------------------------------------------------------------------------ normalization
@onnx_op("BatchNormalization", 1)
def batch_norm(g: Emitter, x: Value, scale: Value, bias: Value, mean: Value, var: Value, *,
               epsilon: float = 1e-5, momentum: float = 0.9, training_mode: int = 0,
               spatial: int = 1, is_test: int = 1, consumed_inputs: list[int] | None = None) -> Value:
    if training_mode:
        return normalization.batch_norm_training(g, x, scale, bias, mean, var, epsilon, momentum)
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


# ------------------------------------------------------------------------------ softmax
def _softmax(g: Emitter, fn: str, x: Value, axis: int, legacy: bool) -> Value:
    rank = x.rank
    axis = axis + rank if axis < 0 else axis
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


# ------------------------------------------------------------------------------ pooling
def _pool_geometry(g: Emitter, x: Value, kernel_shape: list[int], strides: list[int] | None,
                   dilations: list[int] | None, auto_pad: str, pads: list[int] | None,
                   allow_run_time: bool = False) -> tuple:
    nd = len(kernel_shape)
    if nd not in (1, 2, 3):
        raise g.unsupported("kernel_shape", f"{nd}-D pooling")
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    pads = _resolve_pads(g, x, nd, list(kernel_shape), strides, dilations, auto_pad, pads, allow_run_time)
    return nd, strides, dilations, pads


@onnx_op("MaxPool", 1)
def max_pool(g: Emitter, x: Value, *, kernel_shape: list[int], auto_pad: str = "NOTSET", ceil_mode: int = 0,
             dilations: list[int] | None = None, pads: list[int] | None = None, storage_order: int = 0,
             strides: list[int] | None = None) -> Value:
    assert g.node is not None
    with_indices = len([o for o in g.node.outputs if o]) > 1
    nd, strides, dilations, pads = _pool_geometry(g, x, kernel_shape, strides, dilations, auto_pad, pads,
                                                  allow_run_time=not with_indices)
    if pads is None:  # SAME over a run-time size: padded with -inf, which no window maximum picks
        x = _pad_same_at_run_time(g, x, list(kernel_shape), strides, dilations, auto_pad, float("-inf"))
        pads = [0] * (2 * nd)
    if with_indices:
        return pooling.max_pool_with_indices(g, x, list(kernel_shape), strides, dilations, pads, ceil_mode,
                                             storage_order)
    begin = pads[:nd]
    if pads[:nd] != pads[nd:] or any(2 * p > k for p, k in zip(begin, kernel_shape)):
        x = g.call("F.pad", x, torch_pads(pads, nd + 2, list(range(2, nd + 2))), value=float("-inf"))
        begin = [0] * nd
    kwargs: dict[str, object] = {}
    if strides != list(kernel_shape):
        kwargs["stride"] = _tuple(strides)
    if any(begin):
        kwargs["padding"] = _tuple(begin)
    if any(d != 1 for d in dilations):
        kwargs["dilation"] = _tuple(dilations)
    if ceil_mode:
        kwargs["ceil_mode"] = True
    attr = g.add_module("max_pool", f"nn.MaxPool{nd}d", _tuple(list(kernel_shape)), **kwargs)
    return g.call_module(attr, x)


@onnx_op("AveragePool", 1)
def average_pool(g: Emitter, x: Value, *, kernel_shape: list[int], auto_pad: str = "NOTSET",
                 ceil_mode: int = 0, count_include_pad: int = 0, dilations: list[int] | None = None,
                 pads: list[int] | None = None, strides: list[int] | None = None) -> Value:
    nd, strides, dilations, pads = _pool_geometry(g, x, kernel_shape, strides, dilations, auto_pad, pads)
    if any(d != 1 for d in dilations):  # torch's average pooling has no dilation
        return pooling.average_pool(g, x, list(kernel_shape), strides, dilations, pads, ceil_mode, count_include_pad)
    begin = pads[:nd]
    if pads[:nd] != pads[nd:] or any(2 * p > k for p, k in zip(begin, kernel_shape)):
        padded = g.call("F.pad", x, torch_pads(pads, nd + 2, list(range(2, nd + 2))))
        if not count_include_pad:
            return _average_of_unpadded(g, x, padded, pads, kernel_shape, strides, ceil_mode)
        x, begin = padded, [0] * nd
    kwargs: dict[str, object] = {}
    if strides != list(kernel_shape):
        kwargs["stride"] = _tuple(strides)
    if any(begin):
        kwargs["padding"] = _tuple(begin)
    if ceil_mode:
        kwargs["ceil_mode"] = True
    if any(begin) and not count_include_pad:
        kwargs["count_include_pad"] = False
    attr = g.add_module("avg_pool", f"nn.AvgPool{nd}d", _tuple(list(kernel_shape)), **kwargs)
    return g.call_module(attr, x)


def _average_of_unpadded(g: Emitter, x: Value, padded: Value, pads: list[int], kernel: list[int],
                         strides: list[int], ceil_mode: int) -> Value:
    """Average pooling over explicitly padded ``x`` that counts only ``x``'s own elements: the
    window means of the padded input divided by the window means of a padded all-ones mask."""
    nd = len(kernel)
    kwargs: dict[str, object] = {"stride": _tuple(strides)}
    if ceil_mode:
        kwargs["ceil_mode"] = True
    fn = f"F.avg_pool{nd}d"
    mask = g.call("torch.ones_like", g.getitem(x, [slice(None, SymElem.of(1))] * 2))
    fraction = g.call(fn, g.call("F.pad", mask, torch_pads(pads, nd + 2, list(range(2, nd + 2)))),
                      _tuple(kernel), **kwargs)
    return g.operator("/", g.call(fn, padded, _tuple(kernel), **kwargs), fraction)


@onnx_op("GlobalAveragePool", 1)
def global_average_pool(g: Emitter, x: Value) -> Value:
    return g.call("torch.mean", x, list(range(2, x.rank)), keepdim=True)


@onnx_op("GlobalMaxPool", 1)
def global_max_pool(g: Emitter, x: Value) -> Value:
    return g.call("torch.amax", x, list(range(2, x.rank)), keepdim=True)
