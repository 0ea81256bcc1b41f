"""Indexing: scatter and gather by index tensors, one-hot, top-k, non-zero, compress, unique,
sequence reversal, cache updates and non-maximum suppression."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .axes import axis_index
from .registry import onnx_op

_SCATTER_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


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
    axis = axis_index(axis, data.rank)
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
    return g.call(g.helper(_tensor_scatter, leaf=True), past, update, write_indices, axis_index(axis, past.rank),
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
    out_axis = axis_index(axis, indices.rank + 1)
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


@onnx_op("TopK", 1, widened_for_unsigned=True)
def top_k_legacy(g: Emitter, x: Value, *, axis: int = -1, k: int) -> tuple[Value, Value]:
    return _topk(g, x, k, axis, 1, 1)


@onnx_op("TopK", 10, widened_for_unsigned=True)
def top_k(g: Emitter, x: Value, k: Value, *, axis: int = -1, largest: int = 1, sorted: int = 1) -> tuple[Value, Value]:
    count = _const_int(g, k)
    if count is None:
        a = axis_index(axis, x.rank)
        shape = [None if i == a else d for i, d in enumerate(g.shape(x))]
        return g.call(g.helper(_top_k, leaf=True), x, k, a, bool(largest), n_outputs=2,
                      out_spec=[(shape, x.dtype), (shape, torch.int64)])
    return _topk(g, x, count, axis, largest, sorted)


def _topk(g: Emitter, x: Value, k: int, axis: int, largest: int, sort: int) -> tuple[Value, Value]:
    """``torch.topk``; ties keep the lower index first, as ONNX requires (a stable sort)."""
    axis = axis_index(axis, x.rank)
    values, index = g.call("torch.sort", x, dim=axis, descending=bool(largest), stable=True, n_outputs=2)
    size = g.dim(x, axis)
    if size.is_static and size.value == k:
        return values, index
    cut = [slice(None)] * axis + [slice(None, k)]
    return g.getitem(values, cut), g.getitem(index, cut)


# ------------------------------------------------------------------------------ data-dependent sizes
@onnx_op("NonZero", 9, widened_for_unsigned=True, narrowed_outputs=())  # int64 indices
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
    a = None if axis is None else axis_index(axis, x.rank)
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
    a = None if axis is None else axis_index(axis, x.rank)
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
def _nms_suppresses(lo: torch.Tensor, hi: torch.Tensor, area: torch.Tensor, kept: int,
                    iou_threshold: torch.Tensor) -> torch.Tensor:
    """Which of the boxes after ``kept`` (in score order) the kept box suppresses, by onnxruntime's
    test: the overlap must be positive on both axes, both boxes and their union must have a
    positive area, and the intersection over union (in the boxes' precision) must exceed the
    threshold. Slices, not index tensors: this runs once per kept box."""
    top_left = torch.maximum(lo[kept], lo[kept + 1:])
    bottom_right = torch.minimum(hi[kept], hi[kept + 1:])
    overlaps = (bottom_right > top_left).all(-1)
    extent = bottom_right - top_left
    inter = extent[:, 0] * extent[:, 1]
    rest_area = area[kept + 1:]
    union = area[kept] + rest_area - inter
    ok = overlaps & (inter > 0) & (area[kept] > 0) & (rest_area > 0) & (union > 0)
    return ok & (inter / union > iou_threshold)


def _non_max_suppression(boxes: torch.Tensor, scores: torch.Tensor, max_output: torch.Tensor | None,
                         iou: torch.Tensor | None, score: torch.Tensor | None, center_point_box: bool) -> torch.Tensor:
    """Greedy NMS per batch entry and class, as onnxruntime selects: candidates above the score
    threshold in decreasing score order, each kept unless a box kept before it overlaps it by more
    than the threshold. Rows of (batch, class, box index).

    Each kept box tests all later candidates at once, so the work is one vector operation per kept
    box rather than a Python loop over pairs (a detector's region proposals hold thousands)."""
    max_per_class = max(int(max_output.reshape(-1)[0]), 0) if max_output is not None else 0
    iou_threshold = iou.reshape(-1)[0] if iou is not None else torch.zeros((), dtype=boxes.dtype)
    if center_point_box:
        half = boxes[..., 2:] / 2
        lo, hi = boxes[..., :2] - half, boxes[..., :2] + half
    else:  # corners may come in either order
        lo = torch.minimum(boxes[..., :2], boxes[..., 2:])
        hi = torch.maximum(boxes[..., :2], boxes[..., 2:])
    areas = (hi[..., 0] - lo[..., 0]) * (hi[..., 1] - lo[..., 1])
    selected = []
    for b in range(scores.shape[0] if max_per_class > 0 else 0):
        for c in range(scores.shape[1]):
            s = scores[b, c]
            candidates = torch.arange(s.shape[0]) if score is None else torch.nonzero(s > score.reshape(-1)[0])[:, 0]
            order = candidates[torch.argsort(s[candidates], descending=True, stable=True)]
            lo_c, hi_c, area_c = lo[b, order], hi[b, order], areas[b, order]
            alive = torch.ones(order.shape[0], dtype=torch.bool)
            keep: list[int] = []
            for i in range(order.shape[0]):
                if len(keep) >= max_per_class:
                    break
                if not bool(alive[i]):
                    continue
                keep.append(i)
                alive[i + 1:] &= ~_nms_suppresses(lo_c, hi_c, area_c, i, iou_threshold)
            kept = order[torch.tensor(keep, dtype=torch.int64)]
            selected.append(torch.stack([torch.full_like(kept, b), torch.full_like(kept, c), kept], 1))
    return torch.cat(selected) if selected else torch.zeros((0, 3), dtype=torch.int64)


def _non_max_suppression_fake(boxes: torch.Tensor, scores: torch.Tensor, max_output: torch.Tensor | None,
                              iou: torch.Tensor | None, score: torch.Tensor | None,
                              center_point_box: bool) -> torch.Tensor:
    """What tracing sees of NonMaxSuppression: (selected, 3) indices, ``selected`` a new size."""
    count = torch.library.get_ctx().new_dynamic_size()
    return torch.empty((count, 3), dtype=torch.int64, device=boxes.device)


# NonMaxSuppression runs as a registered operator so that torch.export records its data-dependent
# output length as one fresh size instead of tracing the greedy loop (which it cannot: every step
# depends on the data). The operator's name carries a digest of its implementation, so models
# converted by different onnx2fx versions never share a stale one. ``{op}`` is filled in below.
_NMS_OPERATOR = """def {name}(boxes, scores, max_output, iou, score, center_point_box):
    \"\"\"ONNX NonMaxSuppression: torch.ops.onnx2fx.{op}, registered once per process below.\"\"\"
    return torch.ops.onnx2fx.{op}(boxes, scores, max_output, iou, score, center_point_box)


if not hasattr(torch.ops.onnx2fx, "{op}"):
    torch.library.custom_op("onnx2fx::{op}", _non_max_suppression, mutates_args=())
    torch.library.register_fake("onnx2fx::{op}")(_non_max_suppression_fake)
"""


@onnx_op("NonMaxSuppression", 10)
def non_max_suppression(g: Emitter, boxes: Value, scores: Value, max_output_boxes_per_class: Value | None = None,
                        iou_threshold: Value | None = None, score_threshold: Value | None = None, *,
                        center_point_box: int = 0) -> Value:
    import hashlib
    import inspect

    implementation = "".join(inspect.getsource(f) for f in (_nms_suppresses, _non_max_suppression))
    op = "non_max_suppression_" + hashlib.sha256(implementation.encode()).hexdigest()[:12]
    for fn in (_nms_suppresses, _non_max_suppression, _non_max_suppression_fake):
        g.helper(fn)
    name = g.generated_helper("non_max_suppression_op", _NMS_OPERATOR.replace("{op}", op), leaf=True)
    return g.call(name, boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold,
                  bool(center_point_box), out_spec=[([None, 3], torch.int64)])
