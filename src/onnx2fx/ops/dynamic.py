"""Shapes, axes, sizes and pads that are tensor data known only at run time.

Exported models almost always compute these from constants or from ``Shape``, which the handlers
fold into Python ints and ``x.shape[i]`` expressions. When such an input really is run-time data
(a graph input, or computed from tensor values), the op is written as a call to one of the small
helpers below, copied into ``model.py`` and recorded by ``torch.fx`` as a single call: its result
shape is only known at run time, which ``torch.export`` cannot follow, so a warning says so.
"""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value

_WARNING = "{op} {what} computed from tensor data at run time; torch.export cannot follow it"


def _length(g: Emitter, v: Value, what: str) -> int:
    """The number of elements of a 1-D run-time input, which must be static."""
    n = v.static_shape()[0] if v.rank == 1 else 1 if v.rank == 0 else None
    if n is None:
        raise g.unsupported(None, f"input {what!r} has a run-time length")
    return n


def _call(g: Emitter, op: str, what: str, fn, args: tuple, sizes: list, dtype: torch.dtype) -> Value:
    g.warn(_WARNING.format(op=op, what=what))
    return g.call(g.helper(fn, leaf=True), *args, out_spec=[(sizes, dtype)])


# ---------------------------------------------------------------------------------- helpers (copied into model.py)
def _runtime_reshape(x: torch.Tensor, shape: torch.Tensor, allowzero: bool) -> torch.Tensor:
    """ONNX Reshape: a 0 copies the input's size (unless ``allowzero``), -1 is inferred."""
    sizes = shape.tolist()
    if not allowzero:
        sizes = [x.shape[i] if s == 0 else s for i, s in enumerate(sizes)]
    return x.reshape(sizes)


def _runtime_expand(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """ONNX Expand: numpy broadcasting of ``x`` and ``shape`` (a size of 1 keeps x's size)."""
    return x.expand(torch.broadcast_shapes(x.shape, tuple(shape.tolist())))


def _runtime_full(shape: torch.Tensor, value: float, dtype: torch.dtype) -> torch.Tensor:
    return torch.full(shape.tolist(), value, dtype=dtype)


def _runtime_tile(x: torch.Tensor, repeats: torch.Tensor) -> torch.Tensor:
    return x.repeat(repeats.tolist())


def _runtime_slice(x: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, axes: torch.Tensor | None,
                   steps: torch.Tensor | None) -> torch.Tensor:
    """ONNX Slice with its bounds given as tensor data (clamped as Python slicing clamps)."""
    starts_, ends_ = starts.tolist(), ends.tolist()
    axes_ = axes.tolist() if axes is not None else list(range(len(starts_)))
    steps_ = steps.tolist() if steps is not None else [1] * len(starts_)
    for start, end, axis, step in zip(starts_, ends_, axes_, steps_):
        first, stop, step = slice(start, end, step).indices(x.shape[axis])
        x = x.index_select(axis, torch.arange(first, stop, step))  # also for negative steps
    return x


def _runtime_split(x: torch.Tensor, split: torch.Tensor, axis: int) -> tuple[torch.Tensor, ...]:
    return torch.split(x, split.tolist(), dim=axis)


def _runtime_unsqueeze(x: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    rank = x.dim() + axes.numel()
    for axis in sorted(a % rank for a in axes.tolist()):
        x = x.unsqueeze(axis)
    return x


def _runtime_squeeze(x: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    return x.squeeze(tuple(a % x.dim() for a in axes.tolist()))


def _runtime_reduce(x: torch.Tensor, axes: torch.Tensor, op: str, keepdims: bool, noop: bool) -> torch.Tensor:
    """ONNX Reduce* over axes given as tensor data."""
    dims = sorted({a % max(x.dim(), 1) for a in axes.tolist()})
    if not dims:
        if noop:
            return x
        dims = list(range(x.dim()))
    if op == "prod":
        for d in reversed(dims):
            x = torch.prod(x, d, keepdim=keepdims)
        return x
    if op in ("amax", "amin") and x.numel() == 0:  # an empty reduction is the identity element
        shape = [1 if d in dims else s for d, s in enumerate(x.shape) if keepdims or d not in dims]
        if x.dtype == torch.bool:
            return torch.full(shape, op == "amin", dtype=x.dtype)
        info = torch.finfo(x.dtype) if x.is_floating_point() else torch.iinfo(x.dtype)
        extreme = (float("-inf") if op == "amax" else float("inf")) if x.is_floating_point() \
            else info.min if op == "amax" else info.max
        return torch.full(shape, extreme, dtype=x.dtype)
    if op == "l1":
        return torch.sum(torch.abs(x), dims, keepdim=keepdims)
    if op == "l2":
        return torch.sqrt(torch.sum(torch.square(x), dims, keepdim=keepdims))
    if op == "sumsquare":
        return torch.sum(torch.square(x), dims, keepdim=keepdims)
    if op == "logsum":
        return torch.log(torch.sum(x, dims, keepdim=keepdims))
    if op == "sum":
        return torch.sum(x, dims, keepdim=keepdims).to(x.dtype)
    return getattr(torch, op)(x, dims, keepdim=keepdims)


def _runtime_pad(x: torch.Tensor, pads: torch.Tensor, value: torch.Tensor | None, axes: torch.Tensor | None,
                 mode: str) -> torch.Tensor:
    """ONNX Pad with pads (and constant value, axes) given as tensor data."""
    rank = x.dim()
    pads_ = pads.tolist()
    axes_ = [a % rank for a in axes.tolist()] if axes is not None else list(range(rank))
    n = len(axes_)
    begin, end = dict(zip(axes_, pads_[:n])), dict(zip(axes_, pads_[n:]))
    torch_pads = []
    for axis in range(rank - 1, -1, -1):
        torch_pads += [begin.get(axis, 0), end.get(axis, 0)]
    while torch_pads[-2:] == [0, 0]:  # torch pads only the last dims in the non-constant modes
        del torch_pads[-2:]
    if mode == "constant":
        fill = value.reshape(-1)[0].item() if value is not None and value.numel() else 0
        return torch.nn.functional.pad(x, torch_pads, value=fill)
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    return torch.nn.functional.pad(x, torch_pads, mode=torch_mode)


def _dropout(x: torch.Tensor, ratio: torch.Tensor | None, training: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX Dropout with the training flag (and ratio) as tensor data: random in training mode."""
    p = float(ratio) if ratio is not None else 0.5
    if not bool(training) or p == 0.0:
        return x, torch.ones_like(x, dtype=torch.bool)
    mask = torch.rand(x.shape) >= p
    return x * mask / (1.0 - p), mask


# ---------------------------------------------------------------------------------- lowerings
def reshape(g: Emitter, data: Value, shape: Value, allowzero: int) -> Value:
    sizes: list = [None] * _length(g, shape, "shape")
    return _call(g, "Reshape", "target shape", _runtime_reshape, (data, shape, bool(allowzero)), sizes, data.dtype)


def expand(g: Emitter, x: Value, shape: Value) -> Value:
    rank = max(_length(g, shape, "shape"), x.rank)
    return _call(g, "Expand", "shape", _runtime_expand, (x, shape), [None] * rank, x.dtype)


def constant_of_shape(g: Emitter, shape: Value, fill: torch.Tensor) -> Value:
    sizes: list = [None] * _length(g, shape, "shape")
    return _call(g, "ConstantOfShape", "shape", _runtime_full, (shape, fill.reshape(()).item(), fill.dtype),
                 sizes, fill.dtype)


def tile(g: Emitter, x: Value, repeats: Value) -> Value:
    return _call(g, "Tile", "repeats", _runtime_tile, (x, repeats), [None] * x.rank, x.dtype)


def slice_(g: Emitter, data: Value, starts: Value, ends: Value, axes: Value | None, steps: Value | None) -> Value:
    return _call(g, "Slice", "starts/ends", _runtime_slice, (data, starts, ends, axes, steps), [None] * data.rank,
                 data.dtype)


def split(g: Emitter, x: Value, sizes: Value, axis: int, n: int) -> tuple[Value, ...]:
    g.warn(_WARNING.format(op="Split", what="split sizes"))
    axis = axis + x.rank if axis < 0 else axis
    shape = [g.dim(x, i) for i in range(x.rank)]
    spec = [([None if i == axis else d for i, d in enumerate(shape)], x.dtype)] * n
    result = g.call(g.helper(_runtime_split, leaf=True), x, sizes, axis, n_outputs=n, out_spec=spec)
    return result if n > 1 else (result,)


def unsqueeze(g: Emitter, x: Value, axes: Value) -> Value:
    rank = x.rank + _length(g, axes, "axes")
    return _call(g, "Unsqueeze", "axes", _runtime_unsqueeze, (x, axes), [None] * rank, x.dtype)


def squeeze(g: Emitter, x: Value, axes: Value) -> Value:
    rank = x.rank - _length(g, axes, "axes")
    return _call(g, "Squeeze", "axes", _runtime_squeeze, (x, axes), [None] * rank, x.dtype)


_REDUCE_OPS = {"torch.mean": "mean", "torch.sum": "sum", "torch.amax": "amax", "torch.amin": "amin",
               "torch.prod": "prod", "torch.logsumexp": "logsumexp"}


def reduce(g: Emitter, fn: str, x: Value, axes: Value, keepdims: int, noop: int) -> Value:
    """``fn`` is the table entry of :mod:`.reduce` (``torch.sum``, ``l2``, ...)."""
    n = _length(g, axes, "axes")
    rank = x.rank if keepdims else x.rank - n
    return _call(g, "Reduce", "axes", _runtime_reduce,
                 (x, axes, _REDUCE_OPS.get(fn, fn), bool(keepdims), bool(noop)), [None] * rank, x.dtype)


def pad(g: Emitter, x: Value, pads: Value, value: Value | None, axes: Value | None, mode: str) -> Value:
    return _call(g, "Pad", "pads or value", _runtime_pad, (x, pads, value, axes, mode), [None] * x.rank, x.dtype)


def dropout(g: Emitter, x: Value, ratio: Value | None, training: Value, with_mask: bool) -> Value | tuple[Value, Value]:
    """Dropout whose training flag is data or true: the real (random) dropout at run time."""
    shape = g.shape(x)
    y, mask = g.call(g.helper(_dropout, leaf=True), x, ratio, training, n_outputs=2,
                     out_spec=[(shape, x.dtype), (shape, torch.bool)])
    return (y, mask) if with_mask else y
