"""Indexing: scatter and gather by index tensors, one-hot, top-k, non-zero, compress, unique,
sequence reversal, cache updates and non-maximum suppression."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .registry import onnx_op

_SCATTER_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _const_int(g: Emitter, v: Value | None) -> int | None:
    items = g.int_list(v) if v is not None else None
    return int(items[0].value) if items is not None and len(items) == 1 and items[0].is_static else None


def _non_negative(g: Emitter, indices: Value, size: object) -> Value:
    """ONNX indices may count from the end: ``i + size`` where ``i < 0``."""
    if indices.const is not None and bool((indices.const >= 0).all()):
        return indices
    return g.call("torch.where", g.call("torch.lt", indices, 0), g.operator("+", indices, size), indices)


# ------------------------------------------------------------------------------ scatter
@onnx_op("ScatterElements", 11)
def scatter_elements(g: Emitter, data: Value, indices: Value, updates: Value, *, axis: int = 0,
                     reduction: str = "none") -> Value:
    """``torch.scatter`` (``scatter_reduce`` with ``include_self`` for a reduction)."""
    axis = _axis(axis, data.rank)
    index = _non_negative(g, indices, g.dim(data, axis))
    if reduction == "none":
        return g.call("torch.scatter", data, axis, index, updates)
    if reduction not in _SCATTER_REDUCE:
        raise g.unsupported("reduction", f"value {reduction!r}")
    return g.call("torch.scatter_reduce", data, axis, index, updates, _SCATTER_REDUCE[reduction])


@onnx_op("Scatter", 9)
def scatter(g: Emitter, data: Value, indices: Value, updates: Value, *, axis: int = 0) -> Value:
    return scatter_elements(g, data, indices, updates, axis=axis)


def _scatter_nd_reduce(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor,
                       reduction: str) -> torch.Tensor:
    """ScatterND with mul/max/min: index_reduce over the indexed leading dims, flattened."""
    k = indices.shape[-1]
    lead = data.shape[:k]
    flat = data.reshape(-1, *data.shape[k:])
    linear = torch.zeros(indices.shape[:-1], dtype=torch.int64)
    for i in range(k):
        linear = linear * lead[i] + indices[..., i] % lead[i]
    values = updates.reshape(-1, *data.shape[k:])
    return flat.index_reduce(0, linear.reshape(-1), values, reduction, include_self=True).reshape(data.shape)


@onnx_op("ScatterND", 11)
def scatter_nd(g: Emitter, data: Value, indices: Value, updates: Value, *, reduction: str = "none") -> Value:
    """``torch.index_put`` with one index tensor per indexed dimension (``accumulate`` for add)."""
    k = indices.static_shape()[-1]
    if k is None:
        raise g.unsupported(None, "ScatterND indices whose last dimension has a run-time size")
    if reduction in ("mul", "max", "min"):
        return g.call(g.helper(_scatter_nd_reduce, leaf=True), data, indices, updates, _SCATTER_REDUCE[reduction])
    if reduction not in ("none", "add"):
        raise g.unsupported("reduction", f"value {reduction!r}")
    index = tuple(g.method(indices, "select", -1, i) for i in range(k))
    if reduction == "add":
        return g.call("torch.index_put", data, index, updates, accumulate=True)
    return g.call("torch.index_put", data, index, updates)


@onnx_op("TensorScatter", 24)
def tensor_scatter(g: Emitter, past: Value, update: Value, write_indices: Value | None = None, *,
                   axis: int = -2, mode: str = "linear") -> Value:
    """Writes ``update`` into the cache along ``axis`` from each batch entry's write index."""
    if mode not in ("linear", "circular"):
        raise g.unsupported("mode", f"value {mode!r}")
    return g.call(g.helper(_tensor_scatter, leaf=True), past, update, write_indices, _axis(axis, past.rank),
                  mode == "circular")


def _tensor_scatter(past: torch.Tensor, update: torch.Tensor, write_indices: torch.Tensor | None, axis: int,
                    circular: bool) -> torch.Tensor:
    """present[b, ..., (w[b] + s) (mod max_len), ...] = update[b, ..., s, ...]."""
    steps = torch.arange(update.shape[axis])
    start = write_indices if write_indices is not None else torch.zeros(past.shape[0], dtype=torch.int64)
    positions = start.reshape(-1, 1).to(torch.int64) + steps  # (batch, sequence)
    if circular:
        positions = positions % past.shape[axis]
    shape = [past.shape[0]] + [1] * (past.dim() - 1)
    shape[axis] = update.shape[axis]
    index = positions.reshape(shape).expand(update.shape)
    return past.scatter(axis, index, update)


# ------------------------------------------------------------------------------ gather
@onnx_op("GatherND", 11)
def gather_nd(g: Emitter, data: Value, indices: Value, *, batch_dims: int = 0) -> Value:
    """``data[i0, i1, ...]`` with one index tensor per indexed dimension (and, with batch dims,
    ``arange`` tensors selecting the matching batch entry)."""
    k = indices.static_shape()[-1]
    if k is None:
        raise g.unsupported(None, "GatherND indices whose last dimension has a run-time size")
    columns = [g.method(indices, "select", -1, i) for i in range(k)]
    if not batch_dims:
        return g.getitem(data, columns)
    index: list[object] = []
    middle = indices.rank - 1 - batch_dims  # index dims after the batch dims
    for b in range(batch_dims):
        shape = [1] * batch_dims + [1] * middle
        shape[b] = -1
        index.append(g.method(g.call("torch.arange", g.dim(data, b)), "reshape", shape))
    return g.getitem(data, index + columns)


# ------------------------------------------------------------------------------ one-hot, top-k
def _one_hot(indices: torch.Tensor, depth: torch.Tensor, values: torch.Tensor, axis: int) -> torch.Tensor:
    """OneHot with the depth given as tensor data."""
    n = int(depth.reshape(-1)[0])
    index = indices.to(torch.int64)
    index = torch.where(index < 0, index + n, index)
    hot = index.unsqueeze(-1) == torch.arange(n)
    out = torch.where(hot, values[1], values[0])
    return out.movedim(-1, axis) if axis != -1 else out


@onnx_op("OneHot", 9)
def one_hot(g: Emitter, indices: Value, depth: Value, values: Value, *, axis: int = -1) -> Value:
    """``index.unsqueeze(-1) == torch.arange(depth)`` then the off/on values; indices out of range
    select no class, negative ones count from the end."""
    out_axis = _axis(axis, indices.rank + 1)
    n = int(depth.const.reshape(-1)[0].item()) if depth.const is not None else _const_int(g, depth)
    if n is None:
        spec = [([None] * (indices.rank + 1), values.dtype)]
        return g.call(g.helper(_one_hot, leaf=True), indices, depth, values, out_axis, out_spec=spec)
    index = indices if indices.dtype == torch.int64 else g.method(indices, "to", torch.int64)
    index = _non_negative(g, index, n)
    hot = g.call("torch.eq", g.call("torch.unsqueeze", index, -1), g.call("torch.arange", n))
    if values.const is not None:
        off, on = (v.item() for v in values.const.reshape(-1))
        out = g.call("torch.where", hot, on, off)
        out = out if out.dtype == values.dtype else g.method(out, "to", values.dtype)
    else:
        out = g.call("torch.where", hot, g.getitem(values, [1]), g.getitem(values, [0]))
    return g.call("torch.movedim", out, -1, out_axis) if out_axis != indices.rank else out


def _top_k(x: torch.Tensor, k: torch.Tensor, axis: int, largest: bool) -> tuple[torch.Tensor, ...]:
    """TopK with k given as tensor data; ties keep the lower index first."""
    values, index = torch.sort(x, dim=axis, descending=largest, stable=True)
    n = int(k.reshape(-1)[0])
    return values.narrow(axis, 0, n), index.narrow(axis, 0, n)


@onnx_op("TopK", 1)
def top_k_legacy(g: Emitter, x: Value, *, axis: int = -1, k: int) -> tuple[Value, Value]:
    return _topk(g, x, k, axis, 1, 1)


@onnx_op("TopK", 10)
def top_k(g: Emitter, x: Value, k: Value, *, axis: int = -1, largest: int = 1, sorted: int = 1) -> tuple[Value, Value]:
    count = _const_int(g, k)
    if count is None:
        a = _axis(axis, x.rank)
        shape = [None if i == a else d for i, d in enumerate(g.shape(x))]
        return g.call(g.helper(_top_k, leaf=True), x, k, a, bool(largest), n_outputs=2,
                      out_spec=[(shape, x.dtype), (shape, torch.int64)])
    return _topk(g, x, count, axis, largest, sorted)


def _topk(g: Emitter, x: Value, k: int, axis: int, largest: int, sort: int) -> tuple[Value, Value]:
    """``torch.topk``; ties keep the lower index first, as ONNX requires (a stable sort)."""
    axis = _axis(axis, x.rank)
    values, index = g.call("torch.sort", x, dim=axis, descending=bool(largest), stable=True, n_outputs=2)
    size = g.dim(x, axis)
    if size.is_static and size.value == k:
        return values, index
    cut = [slice(None)] * axis + [slice(None, k)]
    return g.getitem(values, cut), g.getitem(index, cut)


# ------------------------------------------------------------------------------ data-dependent sizes
@onnx_op("NonZero", 9)
def non_zero(g: Emitter, x: Value) -> Value:
    """``torch.nonzero(x).t()``: one column per non-zero element (their number is run-time data)."""
    found = g.call("torch.nonzero", x, out_spec=[([None, x.rank], torch.int64)])
    return g.method(found, "t")


def _compress(x: torch.Tensor, condition: torch.Tensor, axis: int | None) -> torch.Tensor:
    """The slices of ``x`` along ``axis`` (of flattened ``x``) where ``condition`` is true."""
    data = x.reshape(-1) if axis is None else x
    dim = 0 if axis is None else axis
    keep = torch.nonzero(condition[: data.shape[dim]]).reshape(-1)
    return data.index_select(dim, keep)


@onnx_op("Compress", 9)
def compress(g: Emitter, x: Value, condition: Value, *, axis: int | None = None) -> Value:
    a = None if axis is None else _axis(axis, x.rank)
    sizes = [None] if a is None else [None if i == a else d for i, d in enumerate(g.shape(x))]
    return g.call(g.helper(_compress, leaf=True), x, condition, a, out_spec=[(sizes, x.dtype)])


def _unique(x: torch.Tensor, axis: int | None, sort: bool) -> tuple[torch.Tensor, ...]:
    """ONNX Unique: values, index of each one's first occurrence, inverse indices, counts; in
    ascending order, or in order of first occurrence when not ``sort``."""
    data = x.reshape(-1) if axis is None else x
    dim = 0 if axis is None else axis
    values, inverse, counts = torch.unique(data, sorted=True, return_inverse=True, return_counts=True, dim=dim)
    positions = torch.arange(inverse.numel())
    first = torch.full((values.shape[dim],), inverse.numel(), dtype=torch.int64).scatter_reduce(
        0, inverse, positions, "amin")
    if not sort:
        order = torch.argsort(first)
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel()))
        values, first, counts, inverse = values.index_select(dim, order), first[order], counts[order], rank[inverse]
    return values, first, inverse, counts


@onnx_op("Unique", 11)
def unique(g: Emitter, x: Value, *, axis: int | None = None, sorted: int = 1) -> tuple[Value, ...]:
    a = None if axis is None else _axis(axis, x.rank)
    shape = [None] if a is None else [None if i == a else d for i, d in enumerate(g.shape(x))]
    spec = [(shape, x.dtype), ([None], torch.int64), ([None], torch.int64), ([None], torch.int64)]
    return g.call(g.helper(_unique, leaf=True), x, a, bool(sorted), n_outputs=4, out_spec=spec)


# ------------------------------------------------------------------------------ sequences in tensors
def _reverse_sequence(x: torch.Tensor, lengths: torch.Tensor, batch_axis: int, time_axis: int) -> torch.Tensor:
    """Reverse the first ``lengths[b]`` steps along ``time_axis`` of every batch entry ``b``."""
    steps = torch.arange(x.shape[time_axis])
    n = lengths.to(torch.int64).reshape(-1, 1)
    order = torch.where(steps < n, n - 1 - steps, steps)  # (batch, time)
    if batch_axis > time_axis:
        order = order.t()
    shape = [1] * x.dim()
    shape[batch_axis], shape[time_axis] = x.shape[batch_axis], x.shape[time_axis]
    return x.gather(time_axis, order.reshape(shape).expand(x.shape))


@onnx_op("ReverseSequence", 10)
def reverse_sequence(g: Emitter, x: Value, sequence_lens: Value, *, batch_axis: int = 1,
                     time_axis: int = 0) -> Value:
    return g.call(g.helper(_reverse_sequence, leaf=True), x, sequence_lens, batch_axis, time_axis)


# ------------------------------------------------------------------------------ detection
def _non_max_suppression(boxes: torch.Tensor, scores: torch.Tensor, max_output: torch.Tensor | None,
                         iou: torch.Tensor | None, score: torch.Tensor | None, center_point_box: bool) -> torch.Tensor:
    """Greedy NMS per batch entry and class: rows of (batch, class, box index)."""
    max_per_class = int(max_output.reshape(-1)[0]) if max_output is not None else 0
    iou_threshold = float(iou.reshape(-1)[0]) if iou is not None else 0.0
    score_threshold = float(score.reshape(-1)[0]) if score is not None else None
    if center_point_box:
        xy, wh = boxes[..., :2], boxes[..., 2:]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1)
    else:  # corners may come in either order
        y1, x1, y2, x2 = boxes.unbind(-1)
        boxes = torch.stack([torch.minimum(y1, y2), torch.minimum(x1, x2), torch.maximum(y1, y2),
                             torch.maximum(x1, x2)], -1)
    selected = []
    for b in range(scores.shape[0]):
        area = (boxes[b, :, 2] - boxes[b, :, 0]) * (boxes[b, :, 3] - boxes[b, :, 1])
        for c in range(scores.shape[1]):
            s = scores[b, c]
            order = torch.argsort(s, descending=True, stable=True)
            if score_threshold is not None:
                order = order[s[order] > score_threshold]
            keep: list[int] = []
            for i in order.tolist():
                if len(keep) >= max_per_class:
                    break
                if keep:
                    k = torch.tensor(keep)
                    top_left = torch.maximum(boxes[b, k, :2], boxes[b, i, :2])
                    bottom_right = torch.minimum(boxes[b, k, 2:], boxes[b, i, 2:])
                    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
                    iou = inter / (area[k] + area[i] - inter)
                    if bool((iou > iou_threshold).any()):
                        continue
                keep.append(i)
            selected += [[b, c, i] for i in keep]
    return torch.tensor(selected, dtype=torch.int64).reshape(-1, 3)


@onnx_op("NonMaxSuppression", 10)
def non_max_suppression(g: Emitter, boxes: Value, scores: Value, max_output_boxes_per_class: Value | None = None,
                        iou_threshold: Value | None = None, score_threshold: Value | None = None, *,
                        center_point_box: int = 0) -> Value:
    return g.call(g.helper(_non_max_suppression, leaf=True), boxes, scores, max_output_boxes_per_class,
                  iou_threshold, score_threshold, bool(center_point_box), out_spec=[([None, 3], torch.int64)])
