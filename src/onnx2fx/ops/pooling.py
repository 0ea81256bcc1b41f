"""Pooling: MaxPool and AveragePool (torch's pooling layers where they match, explicit window
sums where they do not: dilated averages, MaxPool's indices), the global pools, LpPool and
MaxUnpool. Window sums are depthwise convolutions with a kernel of ones (which have dilation)."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import SymElem, Value
from .registry import onnx_op
from .shape import torch_pads
from .sliding_window import int_or_tuple, pad_same_at_run_time, resolve_pads


def _resolve(g: Emitter, x: Value, kernel: list[int], strides: list[int] | None, dilations: list[int] | None,
             pads: list[int] | None, auto_pad: str) -> tuple[list[int], list[int], list[int]]:
    nd = len(kernel)
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    return strides, dilations, resolve_pads(g, x, nd, list(kernel), strides, dilations, auto_pad, pads)


# ------------------------------------------------------------------------------ MaxPool, AveragePool, global pools
def _pool_geometry(g: Emitter, x: Value, kernel_shape: list[int], strides: list[int] | None,
                   dilations: list[int] | None, auto_pad: str, pads: list[int] | None,
                   allow_run_time: bool = False) -> tuple:
    nd = len(kernel_shape)
    if nd not in (1, 2, 3):
        raise g.unsupported("kernel_shape", f"{nd}-D pooling")
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    pads = resolve_pads(g, x, nd, list(kernel_shape), strides, dilations, auto_pad, pads, allow_run_time)
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
        x = pad_same_at_run_time(g, x, list(kernel_shape), strides, dilations, auto_pad, float("-inf"))
        pads = [0] * (2 * nd)
    if with_indices:
        return _max_pool_with_indices(g, x, list(kernel_shape), strides, dilations, pads, ceil_mode,
                                      storage_order)
    begin = pads[:nd]
    if pads[:nd] != pads[nd:] or any(2 * p > k for p, k in zip(begin, kernel_shape)):
        x = g.call("F.pad", x, torch_pads(pads, nd + 2, list(range(2, nd + 2))), value=float("-inf"))
        begin = [0] * nd
    kwargs: dict[str, object] = {}
    if strides != list(kernel_shape):
        kwargs["stride"] = int_or_tuple(strides)
    if any(begin):
        kwargs["padding"] = int_or_tuple(begin)
    if any(d != 1 for d in dilations):
        kwargs["dilation"] = int_or_tuple(dilations)
    if ceil_mode:
        kwargs["ceil_mode"] = True
    attr = g.add_module("max_pool", f"nn.MaxPool{nd}d", int_or_tuple(list(kernel_shape)), **kwargs)
    return g.call_module(attr, x)


@onnx_op("AveragePool", 1)
def average_pool(g: Emitter, x: Value, *, kernel_shape: list[int], auto_pad: str = "NOTSET",
                 ceil_mode: int = 0, count_include_pad: int = 0, dilations: list[int] | None = None,
                 pads: list[int] | None = None, strides: list[int] | None = None) -> Value:
    nd, strides, dilations, pads = _pool_geometry(g, x, kernel_shape, strides, dilations, auto_pad, pads)
    if any(d != 1 for d in dilations):  # torch's average pooling has no dilation
        return _dilated_average_pool(g, x, list(kernel_shape), strides, dilations, pads, ceil_mode,
                                     count_include_pad)
    begin = pads[:nd]
    if pads[:nd] != pads[nd:] or any(2 * p > k for p, k in zip(begin, kernel_shape)):
        padded = g.call("F.pad", x, torch_pads(pads, nd + 2, list(range(2, nd + 2))))
        if not count_include_pad:
            return _average_of_unpadded(g, x, padded, pads, kernel_shape, strides, ceil_mode)
        x, begin = padded, [0] * nd
    kwargs: dict[str, object] = {}
    if strides != list(kernel_shape):
        kwargs["stride"] = int_or_tuple(strides)
    if any(begin):
        kwargs["padding"] = int_or_tuple(begin)
    if ceil_mode:
        kwargs["ceil_mode"] = True
    if any(begin) and not count_include_pad:
        kwargs["count_include_pad"] = False
    attr = g.add_module("avg_pool", f"nn.AvgPool{nd}d", int_or_tuple(list(kernel_shape)), **kwargs)
    return g.call_module(attr, x)


def _average_of_unpadded(g: Emitter, x: Value, padded: Value, pads: list[int], kernel: list[int],
                         strides: list[int], ceil_mode: int) -> Value:
    """Average pooling over explicitly padded ``x`` that counts only ``x``'s own elements: the
    window means of the padded input divided by the window means of a padded all-ones mask."""
    nd = len(kernel)
    kwargs: dict[str, object] = {"stride": int_or_tuple(strides)}
    if ceil_mode:
        kwargs["ceil_mode"] = True
    fn = f"F.avg_pool{nd}d"
    mask = g.call("torch.ones_like", g.getitem(x, [slice(None, SymElem.of(1))] * 2))
    fraction = g.call(fn, g.call("F.pad", mask, torch_pads(pads, nd + 2, list(range(2, nd + 2)))),
                      int_or_tuple(kernel), **kwargs)
    return g.operator("/", g.call(fn, padded, int_or_tuple(kernel), **kwargs), fraction)


@onnx_op("GlobalAveragePool", 1)
def global_average_pool(g: Emitter, x: Value) -> Value:
    return g.call("torch.mean", x, list(range(2, x.rank)), keepdim=True)


@onnx_op("GlobalMaxPool", 1)
def global_max_pool(g: Emitter, x: Value) -> Value:
    return g.call("torch.amax", x, list(range(2, x.rank)), keepdim=True)


# ------------------------------------------------------------------------------ window sums, LpPool, MaxUnpool
def _ceil_extra(g: Emitter, x: Value, kernel: list[int], strides: list[int], dilations: list[int],
                pads: list[int]) -> list[int]:
    """Extra end padding so that ``ceil_mode`` windows that start inside the input are computed."""
    nd = len(kernel)
    extra = []
    for i, size in enumerate(x.static_shape()[2:]):
        if size is None:
            raise g.unsupported("ceil_mode", "1 over a spatial dimension of run-time size")
        span = size + pads[i] + pads[nd + i] - dilations[i] * (kernel[i] - 1) - 1
        out = -(-span // strides[i]) + 1
        if (out - 1) * strides[i] >= size + pads[i]:
            out -= 1
        extra.append(max((out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - (size + pads[i] + pads[nd + i]),
                         0))
    return extra


def _window_sum(g: Emitter, x: Value, kernel: list[int], strides: list[int], dilations: list[int],
                channels: SymElem) -> Value:
    """The sum over every pooling window: a depthwise convolution with a kernel of ones."""
    nd = len(kernel)
    ones = g.call("torch.ones", [channels, 1, *kernel], dtype=x.dtype, fold=False)
    kwargs: dict[str, object] = {"stride": strides}
    if any(d != 1 for d in dilations):
        kwargs["dilation"] = dilations
    if not (channels.is_static and channels.value == 1):
        kwargs["groups"] = channels
    return g.call(f"F.conv{nd}d", x, ones, **kwargs)


def _dilated_average_pool(g: Emitter, x: Value, kernel: list[int], strides: list[int], dilations: list[int],
                          pads: list[int], ceil_mode: int, count_include_pad: int) -> Value:
    """Average pooling with dilations: window sums divided by the number of elements counted."""
    nd = len(kernel)
    extra = _ceil_extra(g, x, kernel, strides, dilations, pads) if ceil_mode else [0] * nd
    full = pads[:nd] + [p + e for p, e in zip(pads[nd:], extra)]
    padded = g.call("F.pad", x, torch_pads(full, nd + 2, list(range(2, nd + 2)))) if any(full) else x
    sums = _window_sum(g, padded, kernel, strides, dilations, g.dim(x, 1))
    ones = g.call("torch.ones_like", g.getitem(x, [slice(None, SymElem.of(1))] * 2))
    if count_include_pad:  # the pads count, the extra ceil_mode padding does not
        ones = g.call("F.pad", ones, torch_pads(pads, nd + 2, list(range(2, nd + 2))), value=1.0) if any(pads) \
            else ones
        mask = g.call("F.pad", ones, torch_pads([0] * nd + extra, nd + 2, list(range(2, nd + 2)))) \
            if any(extra) else ones
    else:
        mask = g.call("F.pad", ones, torch_pads(full, nd + 2, list(range(2, nd + 2)))) if any(full) else ones
    counts = _window_sum(g, mask, kernel, strides, dilations, SymElem.of(1))
    return g.operator("/", sums, counts)


@onnx_op("LpPool", 2)
def lp_pool(g: Emitter, x: Value, *, kernel_shape: list[int], auto_pad: str = "NOTSET", ceil_mode: int = 0,
            dilations: list[int] | None = None, p: int = 2, pads: list[int] | None = None,
            strides: list[int] | None = None) -> Value:
    """``(sum |x|^p over the window) ^ (1/p)``, zero padding."""
    nd = len(kernel_shape)
    strides, dilations, pads = _resolve(g, x, list(kernel_shape), strides, dilations, pads, auto_pad)
    extra = _ceil_extra(g, x, list(kernel_shape), strides, dilations, pads) if ceil_mode else [0] * nd
    full = pads[:nd] + [q + e for q, e in zip(pads[nd:], extra)]
    powered = g.call("torch.square", x) if p == 2 else g.call("torch.pow", g.call("torch.abs", x), float(p))
    if any(full):
        powered = g.call("F.pad", powered, torch_pads(full, nd + 2, list(range(2, nd + 2))))
    sums = _window_sum(g, powered, list(kernel_shape), strides, dilations, g.dim(x, 1))
    return g.call("torch.sqrt", sums) if p == 2 else g.call("torch.pow", sums, 1.0 / p)


@onnx_op("GlobalLpPool", 2)
def global_lp_pool(g: Emitter, x: Value, *, p: int = 2) -> Value:
    dims = list(range(2, x.rank))
    return g.call("torch.linalg.vector_norm", x, float(p), dims, keepdim=True)


def _max_pool_with_indices(g: Emitter, x: Value, kernel: list[int], strides: list[int], dilations: list[int],
                           pads: list[int], ceil_mode: int, storage_order: int) -> tuple[Value, Value]:
    """``F.max_poolNd(return_indices=True)``; torch's indices count within each (batch, channel)
    plane, ONNX's over the whole tensor (row-major, or column-major with ``storage_order``)."""
    nd = len(kernel)
    if pads[:nd] != pads[nd:] or any(2 * q > k for q, k in zip(pads, kernel)):
        raise g.unsupported("pads", f"{pads} with the Indices output")
    kwargs: dict[str, object] = {"stride": strides, "padding": pads[:nd], "dilation": dilations}
    if ceil_mode:
        kwargs["ceil_mode"] = True
    y, index = g.call(f"F.max_pool{nd}d", x, kernel, return_indices=True, n_outputs=2, **kwargs)
    spatial = g.shape(x)[2:]
    if storage_order:
        if nd != 2:
            raise g.unsupported("storage_order", "1 for pooling that is not 2-D")
        row, col = g.call("torch.div", index, spatial[1], rounding_mode="floor"), g.operator("%", index, spatial[1])
        index = g.operator("+", g.operator("*", col, spatial[0]), row)
    plane = spatial[0]
    for s in spatial[1:]:
        plane = plane * s
    n, c = g.dim(x, 0), g.dim(x, 1)
    offsets = g.operator("*", g.method(g.call("torch.arange", n * c), "reshape", [n, c] + [1] * nd), plane)
    return y, g.operator("+", index, offsets)


@onnx_op("MaxUnpool", 9)
def max_unpool(g: Emitter, x: Value, indices: Value, output_shape: Value | None = None, *,
               kernel_shape: list[int], pads: list[int] | None = None, strides: list[int] | None = None) -> Value:
    """``F.max_unpoolNd`` with ONNX's whole-tensor indices made per-plane. The indices refer to the
    default output size; a larger ``output_shape`` adds zeros at the end of each axis."""
    nd = len(kernel_shape)
    if nd not in (1, 2, 3):
        raise g.unsupported("kernel_shape", f"{nd}-D unpooling")
    strides = list(strides or [1] * nd)
    pads = list(pads or [0] * (2 * nd))
    spatial = x.static_shape()[2:]
    if any(d is None for d in spatial):
        raise g.unsupported(None, "MaxUnpool over spatial dimensions of run-time size")
    sizes = [(d - 1) * s + k - pads[i] - pads[nd + i] for i, (d, s, k) in enumerate(zip(spatial, strides,
                                                                                        kernel_shape))]
    plane = 1
    for s in sizes:
        plane *= s
    per_plane = g.operator("%", indices, plane)
    y = g.call(f"F.max_unpool{nd}d", x, per_plane, list(kernel_shape), stride=strides)
    if output_shape is None:
        return y
    target = g.int_list(output_shape)
    if target is None:
        spec = [([g.dim(x, 0), g.dim(x, 1)] + [None] * nd, x.dtype)]
        return g.call(g.helper(_pad_to, leaf=True), y, output_shape, out_spec=spec)
    grow = [int(t.value) - s for t, s in zip(target[-nd:], sizes)]
    return g.call("F.pad", y, [p for amount in reversed(grow) for p in (0, amount)]) if any(grow) else y


def _pad_to(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Zeros added at the end of each axis up to ``shape`` (tensor data)."""
    pads = []
    for size, target in reversed(list(zip(x.shape, shape.tolist()))):
        pads += [0, target - size]
    return torch.nn.functional.pad(x, pads)
