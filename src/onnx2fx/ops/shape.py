"""Shape and data-movement ops.

Wherever the input is a shape (a small integer tensor whose elements are known at conversion
time, possibly as ``x.shape[i]`` expressions) these ops compute their result in Python, so the
generated code reshapes with ints and sizes rather than with tensors.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch
from torch import sym_not
from torch.fx.experimental.symbolic_shapes import statically_known_true

from ..codegen.emitter import MAX_LITERAL_ELEMENTS, Emitter
from ..codegen.shape_rules import at_least, exact_quotient, same_size, size_factors
from ..codegen.values import SymElem, Value
from . import dynamic
from .axes import axis_index
from .registry import onnx_op

INT64_MAX = 2**63 - 1


# ------------------------------------------------------------------------------ constants
@onnx_op("Constant", 1)
def constant(g: Emitter, *, value: torch.Tensor | None = None, value_float: float | None = None,
             value_floats: list[float] | None = None, value_int: int | None = None,
             value_ints: list[int] | None = None, value_string: str | None = None,
             value_strings: list[str] | None = None, sparse_value: object = None) -> Value:
    if value is not None:
        return g.const(value)
    if value_float is not None:
        return g.const(torch.tensor(value_float, dtype=torch.float32))
    if value_floats is not None:
        return g.const(torch.tensor(value_floats, dtype=torch.float32))
    if value_int is not None:
        return g.const(torch.tensor(value_int, dtype=torch.int64))
    if value_ints is not None:
        return g.const(torch.tensor(value_ints, dtype=torch.int64))
    raise g.unsupported("value_string" if value_string is not None else "sparse_value",
                        "string and sparse constants have no torch tensor form")


@onnx_op("ConstantOfShape", 9)
def constant_of_shape(g: Emitter, shape: Value, *, value: torch.Tensor | None = None) -> Value:
    """``torch.full``. Integer results fold (they are usually shape arithmetic); a float fill stays
    code, since a folded float tensor would be a parameter of the generated module."""
    fill = value if value is not None else torch.zeros(1, dtype=torch.float32)
    sizes = g.int_list(shape)
    if sizes is None:
        return dynamic.constant_of_shape(g, shape, fill)
    return g.call("torch.full", sizes, fill.reshape(()).item(), dtype=fill.dtype,
                  fold=not fill.is_floating_point())


@onnx_op("Identity", 1)
def identity(g: Emitter, x: Value) -> Value:
    return x


@onnx_op("Dropout", 1)
def dropout(g: Emitter, x: Value, ratio_input: Value | None = None, training_mode: Value | None = None, *,
            ratio: float = 0.5, seed: int | None = None, is_test: int = 0,
            consumed_inputs: list[int] | None = None) -> Value | tuple[Value, Value]:
    """Inference semantics (as onnxruntime runs it): the identity, and an all-true mask when the
    mask output is used. Dropout-1 to 6 kept ``ratio`` as an attribute, 12+ has ``seed``."""
    assert g.node is not None
    if training_mode is not None and (training_mode.const is None or bool(training_mode.const.any())):
        return dynamic.dropout(g, x, ratio_input, training_mode, len(g.node.outputs) > 1 and bool(g.node.outputs[1]))
    if len(g.node.outputs) < 2 or not g.node.outputs[1]:
        return x
    return x, g.call("torch.ones_like", x, dtype=torch.bool)


# ------------------------------------------------------------------------------ shape
@onnx_op("Shape", 1)
def shape(g: Emitter, x: Value, *, start: int = 0, end: int | None = None) -> Value:
    dims = g.shape(x)
    return g.elements_value(dims[start:end])  # ONNX clamps start and end to the rank, as Python slices do


@onnx_op("Size", 1)
def size(g: Emitter, x: Value) -> Value:
    return g.elements_value([_product(g.shape(x))], scalar=True)


def _reshape_target(g: Emitter, x: Value, sizes: list[SymElem], allowzero: int) -> list[SymElem]:
    """ONNX's 0 ("copy this input dim") resolved; -1 left for torch to infer."""
    if allowzero:
        return sizes
    return [g.dim(x, i) if s.is_static and s.value == 0 else s for i, s in enumerate(sizes)]


@onnx_op("Reshape", 5)
def reshape(g: Emitter, data: Value, shape: Value, *, allowzero: int = 0) -> Value:
    sizes = g.int_list(shape)
    if sizes is None:
        return dynamic.reshape(g, data, shape, allowzero)
    target = _reshape_target(g, data, sizes, allowzero)
    if data.elements is not None and len(target) == 1:
        return g.elements_value(data.elements)
    if data.elements is not None and len(target) == 0:
        return g.elements_value(data.elements, scalar=True)
    if _regroups_dynamic_size(g, data, target):
        data = g.call("torch.flatten", data)
    return g.method(data, "reshape", target)


def _regroups_dynamic_size(g: Emitter, x: Value, target: list[SymElem]) -> bool:
    """Whether torch's view algorithm would have to branch on a run-time size for this reshape
    (``(n, 3, 4) -> (2 * n, 6)``, ``(n, 3, 4) -> (3, n, 4)``).

    The result is right either way, but ``torch.export`` cannot prove such a reshape valid for
    every size; reshaping the flattened tensor is a plain split that it can follow. This replays
    the greedy merge-and-split of ``torch._refs._reshape_view_helper`` on the symbolic sizes.
    """
    dims = list(g.fake(x).shape)
    after = [t.value for t in target]
    if all(isinstance(d, int) for d in dims) or len(after) <= 1 or len(dims) <= 1:
        return False  # (flattening a 1-D tensor would change nothing)
    inferred = [i for i, t in enumerate(target) if t.is_static and t.value == -1]
    if inferred:  # computed here: running the reshape would record its answers as known facts
        others = [a for i, a in enumerate(after) if i != inferred[0]]
        quotient = exact_quotient(dims, others)  # sympy's simplification of a symbolic // is slow
        after[inferred[0]] = quotient if quotient is not None else math.prod(dims) // math.prod(others)

    idx = 0
    for length in after:
        if idx >= len(dims):
            break  # trailing unit dims
        if (end := _merged_as_written(dims, idx, length)) is not None:
            dims[idx:end + 1] = [length]  # a merge of whole dims: a view for every size, no decision
            idx += 1
            continue
        same = True if same_size(length, dims[idx]) else decide(length == dims[idx])
        if same is None:
            return True
        if not same:
            accum, end = dims[idx], idx
            while (rest := decide(accum % length != 0)) and end + 1 < len(dims):
                end += 1
                accum = accum * dims[end]
            split = decide(accum != length)
            if rest is None or split is None:
                return True
            dims[idx:end + 1] = [length, accum // length] if split else [accum]
        idx += 1
    return False


def _merged_as_written(dims: list[Any], idx: int, length: Any) -> int | None:
    """The last of the dims from ``idx`` whose product is ``length`` written the same (``h``,
    ``w`` for ``h*w``), when at least one of them is symbolic and torch's greedy merge of them
    takes no decision: the first dim at least 1 and each later one at least 2 for every size, so
    that no partial product can equal ``length``. Else ``None``, and the merge is replayed with
    sympy's decisions (``h*w == h`` holds where ``w`` is 1: torch.export would guard on it);
    those cost milliseconds per reshape on deep size expressions."""
    want_static, want = size_factors(length)
    if not want:
        return None
    want = Counter(want)
    have_static, have = 1, Counter[Any]()
    for end in range(idx, len(dims)):
        if not at_least(dims[end], 1 if end == idx else 2):
            return None
        static, symbolic = size_factors(dims[end])
        have_static *= static
        have.update(symbolic)
        if have_static == want_static and have == want:
            return end
        if have_static > want_static or have - want:
            return None
    return None


def decide(condition: object) -> bool | None:
    """A condition on sizes, when known for every value of the run-time sizes; else ``None``."""
    if isinstance(condition, bool):
        return condition
    if statically_known_true(condition):
        return True
    return False if statically_known_true(sym_not(condition)) else None


def _product(sizes: list[SymElem]) -> SymElem:
    """The product of sizes, static factors folded into one number (``x.shape[0] * 12``)."""
    static = math.prod(int(s.value) for s in sizes if s.is_static)
    dynamic = [s for s in sizes if not s.is_static]
    if not dynamic:
        return SymElem.of(static)
    result = dynamic[0]
    for s in dynamic[1:]:
        result = result * s
    return result * static if static != 1 else result


@onnx_op("Flatten", 1)
def flatten(g: Emitter, x: Value, *, axis: int = 1) -> Value:
    """To 2-D ``(prod(dims[:axis]), prod(dims[axis:]))``: ``torch.flatten(x, 1)`` or a reshape."""
    rank = x.rank
    axis = axis_index(axis, rank, end_included=True)
    if axis == 1 and rank >= 2:
        return g.call("torch.flatten", x, 1)
    return g.method(x, "reshape", [_product(g.shape(x)[:axis]), -1])


@onnx_op("Transpose", 1)
def transpose(g: Emitter, x: Value, *, perm: list[int] | None = None) -> Value:
    perm = list(perm) if perm is not None else list(range(x.rank))[::-1]
    if perm == list(range(x.rank)):
        return x
    return g.method(x, "permute", perm)


@onnx_op("Unsqueeze", 1)
def unsqueeze_legacy(g: Emitter, x: Value, *, axes: list[int]) -> Value:
    return _unsqueeze(g, x, axes)


@onnx_op("Unsqueeze", 13)
def unsqueeze(g: Emitter, x: Value, axes: Value) -> Value:
    if g.int_list(axes) is None:
        return dynamic.unsqueeze(g, x, axes)
    return _unsqueeze(g, x, g.static_ints(axes, "axes") or [])


def _unsqueeze(g: Emitter, x: Value, axes: list[int]) -> Value:
    out_rank = x.rank + len(axes)
    axes = sorted(axis_index(a, out_rank) for a in axes)
    if x.elements is not None and x.scalar and axes == [0]:
        return g.elements_value(x.elements)
    result = x
    for a in axes:
        result = g.call("torch.unsqueeze", result, a)
    return result


@onnx_op("Squeeze", 1)
def squeeze_legacy(g: Emitter, x: Value, *, axes: list[int] | None = None) -> Value:
    return _squeeze(g, x, axes)


@onnx_op("Squeeze", 13)
def squeeze(g: Emitter, x: Value, axes: Value | None = None) -> Value:
    if axes is not None and g.int_list(axes) is None:
        return dynamic.squeeze(g, x, axes)
    return _squeeze(g, x, g.static_ints(axes, "axes"))


def _squeeze(g: Emitter, x: Value, axes: list[int] | None) -> Value:
    if axes is None:
        axes = [i for i, d in enumerate(x.static_shape()) if d == 1]
    axes = sorted(axis_index(a, x.rank) for a in axes)
    if x.elements is not None and axes == [0] and len(x.elements) == 1:
        return g.elements_value(x.elements, scalar=True)
    if not axes:
        return x
    return g.call("torch.squeeze", x, axes[0] if len(axes) == 1 else tuple(axes))


@onnx_op("Expand", 8)
def expand(g: Emitter, x: Value, shape: Value) -> Value:
    sizes = g.int_list(shape)
    if sizes is None:
        return dynamic.expand(g, x, shape)
    rank = max(len(sizes), x.rank)
    x_dims = [None] * (rank - x.rank) + list(x.static_shape())
    target = [SymElem.of(1)] * (rank - len(sizes)) + sizes
    out: list[SymElem] = []
    for i, (xd, t) in enumerate(zip(x_dims, target)):
        keep_x = t.is_static and t.value == 1 and i >= rank - x.rank
        out.append(SymElem.of(-1) if keep_x else t)
        if xd is not None and xd != 1 and t.is_static and t.value not in (1, xd):
            raise g.error(f"cannot expand dimension {i} of size {xd} to {t.value}")
    if all(o.is_static and o.value == -1 for o in out[rank - x.rank:]) and rank == x.rank:
        return x
    return g.method(x, "expand", out)  # torch.Tensor.expand adds the leading dims itself


@onnx_op("Concat", 1)
def concat(g: Emitter, *inputs: Value, axis: int = 0) -> Value:
    lists = [g.int_list(v) for v in inputs]
    if any(v.elements is not None for v in inputs) and all(item is not None for item in lists):
        return g.elements_value([e for item in lists for e in item])  # type: ignore[union-attr]
    present = [v for v in inputs if not (v.const is not None and v.const.numel() == 0 and v.rank == 1)]
    if len(present) == 1:
        return present[0]
    return g.call("torch.cat", present or list(inputs), dim=axis)


@onnx_op("Split", 1)
def split_legacy(g: Emitter, x: Value, split_input: Value | None = None, *, axis: int = 0,
                 split: list[int] | None = None) -> tuple[Value, ...]:
    """Split-1 to 11: sizes in the ``split`` attribute (Split-1 also took them as a second input)."""
    return _split(g, x, axis, list(split) if split is not None else g.static_ints(split_input, "split"), None)


@onnx_op("Split", 13)
def split13(g: Emitter, x: Value, split: Value | None = None, *, axis: int = 0) -> tuple[Value, ...]:
    if split is not None and g.int_list(split) is None:
        return dynamic.split(g, x, split, axis, len(g.node.outputs))
    return _split(g, x, axis, g.static_ints(split, "split"), None)


@onnx_op("Split", 18)
def split18(g: Emitter, x: Value, split: Value | None = None, *, axis: int = 0,
            num_outputs: int | None = None) -> tuple[Value, ...]:
    if split is not None and g.int_list(split) is None:
        return dynamic.split(g, x, split, axis, len(g.node.outputs))
    return _split(g, x, axis, g.static_ints(split, "split"), num_outputs)


def _split(g: Emitter, x: Value, axis: int, sizes: list[int] | None, num_outputs: int | None) -> tuple[Value, ...]:
    assert g.node is not None
    n = len(sizes) if sizes is not None else num_outputs or len(g.node.outputs)
    axis = axis_index(axis, x.rank)
    if sizes is None:
        dim = g.dim(x, axis)
        chunk: SymElem | int = (dim + (n - 1)) // n
        if x.elements is not None and dim.is_static:
            step = int(chunk.value) if isinstance(chunk, SymElem) else chunk
            return tuple(g.elements_value(x.elements[i:i + step]) for i in range(0, len(x.elements), step))
        return g.call("torch.split", x, chunk, dim=axis, n_outputs=n)
    if x.elements is not None:
        out, start = [], 0
        for s in sizes:
            out.append(g.elements_value(x.elements[start:start + s]))
            start += s
        return tuple(out)
    if n == 1:
        return (x,)
    return g.call("torch.split", x, sizes, dim=axis, n_outputs=n)


# ------------------------------------------------------------------------------ slicing and gathering
_HUGE = INT64_MAX // 2  # starts/ends beyond this mean "past the end" (exporters write INT64_MAX/MIN)


def _clamp_index(i: SymElem, size: SymElem, is_end: bool) -> SymElem | None:
    """A bound of a positive-step Python slice for an ONNX start/end (``None`` = open).

    ONNX clamps starts and ends into the axis exactly as Python slicing does; only the bounds that
    mean "from the beginning" / "to the end" are dropped, and exporters' INT64 extremes are resolved.
    """
    if not i.is_static:
        return i
    v = int(i.value)
    if size.is_static:
        v, past_end = slice(v, None).indices(int(size.value))[0], int(size.value)
    else:
        v, past_end = (0 if v <= -_HUGE else INT64_MAX if v >= _HUGE else v), INT64_MAX
    if (is_end and v == past_end) or (not is_end and v == 0):
        return None
    return SymElem.of(v)


def _reversed_bounds(g: Emitter, start: SymElem, end: SymElem, size: SymElem) -> tuple[SymElem, SymElem]:
    """``start``/``end`` of a negative-step slice as bounds on the flipped axis (index ``size - 1 - i``)."""
    if start.is_static and end.is_static and size.is_static:
        first, stop, _ = slice(int(start.value), int(end.value), -1).indices(int(size.value))
        return SymElem.of(int(size.value) - 1 - first), SymElem.of(int(size.value) - 1 - stop)

    def flip(bound: SymElem, is_start: bool) -> SymElem:
        v = int(bound.value) if bound.is_static else None
        if v is not None and v >= _HUGE:  # clamped to the last element: first on the flipped axis
            return SymElem.of(0)
        if v is not None and v <= -_HUGE:  # clamped before the first element
            return size - 1 if is_start else SymElem.of(INT64_MAX)
        if v is not None and v < 0:  # counted from the end: a fixed distance from the flipped start
            return SymElem.of(-1 - v)
        raise g.unsupported(None, "Slice with a negative step and a non-negative start or end over a "
                                  "dimension of run-time size")

    return flip(start, True), flip(end, False)


@onnx_op("Slice", 1)
def slice_legacy(g: Emitter, data: Value, *, starts: list[int], ends: list[int],
                 axes: list[int] | None = None) -> Value:
    return _slice(g, data, [SymElem.of(s) for s in starts], [SymElem.of(e) for e in ends], axes, None)


@onnx_op("Slice", 10)
def slice_(g: Emitter, data: Value, starts: Value, ends: Value, axes: Value | None = None,
           steps: Value | None = None) -> Value:
    s, e = g.int_list(starts), g.int_list(ends)
    if s is None or e is None or any(v is not None and g.int_list(v) is None for v in (axes, steps)):
        return dynamic.slice_(g, data, starts, ends, axes, steps)
    return _slice(g, data, s, e, g.static_ints(axes, "axes"), g.static_ints(steps, "steps"))


def _slice(g: Emitter, data: Value, starts: list[SymElem], ends: list[SymElem], axes: list[int] | None,
           steps: list[int] | None) -> Value:
    """``x[a:b:c, ...]``; axes with a negative step are flipped first (``torch.flip``), then sliced."""
    rank = data.rank
    axes = [axis_index(a, rank) for a in (axes if axes is not None else range(len(starts)))]
    steps = steps or [1] * len(starts)
    if data.elements is not None and rank == 1 and all(s.is_static and e.is_static for s, e in zip(starts, ends)):
        return g.elements_value(data.elements[slice(int(starts[0].value), int(ends[0].value), steps[0])])
    index: list[object] = [slice(None)] * rank
    flipped: list[int] = []
    for axis, start, end, step in zip(axes, starts, ends, steps):
        size = g.dim(data, axis)
        if step < 0:
            flipped.append(axis)
            (start, end), step = _reversed_bounds(g, start, end, size), -step
        index[axis] = slice(_clamp_index(start, size, False), _clamp_index(end, size, True),
                            step if step != 1 else None)
    result = g.call("torch.flip", data, flipped) if flipped else data
    return g.getitem(result, index)


@onnx_op("Gather", 1)
def gather(g: Emitter, data: Value, indices: Value, *, axis: int = 0) -> Value:
    """``torch.select`` for one index, else ``data[:, indices]``; small constant indices are
    written as a Python list."""
    axis = axis_index(axis, data.rank)
    if data.elements is not None and indices.const is not None and indices.rank <= 1:
        picked = [data.elements[int(i)] for i in indices.const.reshape(-1).tolist()]
        return g.elements_value(picked, scalar=indices.const.dim() == 0)
    if indices.const is not None and indices.const.dim() == 0:
        return g.call("torch.select", data, axis, int(indices.const.item()))
    if indices.const is not None and indices.const.numel() <= MAX_LITERAL_ELEMENTS:
        return g.getitem(data, [slice(None)] * axis + [indices.const.tolist()])
    return g.getitem(data, [slice(None)] * axis + [indices])


@onnx_op("GatherElements", 11)
def gather_elements(g: Emitter, data: Value, indices: Value, *, axis: int = 0) -> Value:
    axis = axis_index(axis, data.rank)
    size = g.dim(data, axis)
    fixed = g.call("torch.where", g.call("torch.lt", indices, 0), g.operator("+", indices, size), indices)
    return g.call("torch.gather", data, axis, fixed)


@onnx_op("Tile", 6)
def tile(g: Emitter, x: Value, repeats: Value) -> Value:
    reps = g.int_list(repeats)
    if reps is None:
        return dynamic.tile(g, x, repeats)
    return g.method(x, "repeat", reps)


def _range(start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """ONNX Range whose bounds are tensor data, known only at run time."""
    count = torch.ceil((limit - start) / delta).clamp(min=0).to(torch.int64).item()
    torch._check(count >= 0)
    return torch.arange(count, dtype=start.dtype) * delta + start


@onnx_op("Range", 11)
def range_(g: Emitter, start: Value, limit: Value, delta: Value) -> Value:
    """``torch.arange`` over Python numbers and sizes; bounds that are run-time data use a helper."""

    def number(v: Value) -> object:
        items = g.int_list(v) if not v.dtype.is_floating_point else None
        if items is not None and len(items) == 1:
            return items[0]
        return v.const.item() if v.const is not None else None

    first, last, step = (number(v) for v in (start, limit, delta))
    if start.dtype in (torch.float32, torch.float64) and last is None and isinstance(first, float) \
            and isinstance(step, float) and first == 0 and step.is_integer() and step > 0 \
            and len(limit.meta.get("integer_elements", ())) == 1:
        # arange(0, n, k) over a size cast to float (YOLO's anchor grids): whole numbers, exact in
        # either order of operations (not in float16 past 2048), and a length that is an expression
        # of the input sizes
        first, last, step = 0, limit.meta["integer_elements"][0], int(step)
    if first is None or last is None or step is None:
        return g.call(g.helper(_range, leaf=True), start, limit, delta)
    args = (first, last, step)
    if step == 1 or step == SymElem.of(1):
        args = (last,) if first == 0 or first == SymElem.of(0) else (first, last)
    # An integer range folds (shape arithmetic); a float one stays code rather than become a parameter.
    return g.call("torch.arange", *args, dtype=start.dtype, fold=not start.dtype.is_floating_point)


@onnx_op("Pad", 1)
def pad_legacy(g: Emitter, x: Value, *, pads: list[int] | None = None, paddings: list[int] | None = None,
               mode: str = "constant", value: float = 0.0) -> Value:
    return _pad(g, x, list(pads if pads is not None else paddings or []), None, mode, value)


@onnx_op("Pad", 11)
def pad(g: Emitter, x: Value, pads: Value, constant_value: Value | None = None, axes: Value | None = None,
        *, mode: str = "constant") -> Value:
    value: float = 0.0
    if (constant_value is not None and constant_value.const is None) or g.int_list(pads) is None \
            or (axes is not None and g.int_list(axes) is None):
        return dynamic.pad(g, x, pads, constant_value, axes, mode)
    if constant_value is not None:
        value = constant_value.const.reshape(-1)[0].item() if constant_value.const.numel() else 0.0
    return _pad(g, x, g.static_ints(pads, "pads") or [], g.static_ints(axes, "axes"), mode, value)


TORCH_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def torch_pads(onnx_pads: list[int], rank: int, axes: list[int] | None = None) -> list[int]:
    """ONNX ``[b1, b2, ..., e1, e2, ...]`` over ``axes`` -> ``F.pad``'s last-dim-first pairs."""
    axes = [axis_index(a, rank) for a in (axes if axes is not None else range(rank))]
    n = len(axes)
    begin = dict(zip(axes, onnx_pads[:n]))
    end = dict(zip(axes, onnx_pads[n:]))
    first = min(axes) if axes else rank
    result: list[int] = []
    for axis in range(rank - 1, first - 1, -1):
        result += [begin.get(axis, 0), end.get(axis, 0)]
    while len(result) >= 2 and result[-2:] == [0, 0]:
        result = result[:-2]
    return result


def _pad(g: Emitter, x: Value, pads: list[int], axes: list[int] | None, mode: str, value: float) -> Value:
    if mode not in TORCH_PAD_MODES:
        raise g.unsupported("mode", f"value {mode!r} is not one of {sorted(TORCH_PAD_MODES)}")
    torch_pad = torch_pads(pads, x.rank, axes)
    if not torch_pad:
        return x
    if mode == "constant":
        return g.call("F.pad", x, torch_pad, value=value) if value else g.call("F.pad", x, torch_pad)
    return _pad_non_constant(g, x, torch_pad, mode)


def _pad_non_constant(g: Emitter, x: Value, torch_pad: list[int], mode: str) -> Value:
    """torch's reflect/replicate/circular padding pads the last 1, 2 or 3 dims, and only of an
    input with one or two more dims than that (4-D input takes 2 or 3 pairs, 5-D input exactly 3).
    ONNX pads any axes of any rank: pad with zero pairs up to what the rank needs, and give a
    low-rank input leading unit dims for the time of the call."""
    pairs = len(torch_pad) // 2
    if pairs > 3:
        raise g.unsupported("pads", f"mode {mode!r} pads {pairs} axes; torch pads at most the last 3")
    lead = max(0, pairs + 1 - x.rank)
    needed = max(pairs, x.rank + lead - 2)
    if needed > 3:
        raise g.unsupported("pads", f"mode {mode!r} on a rank-{x.rank} input; torch takes rank 5 at most")
    torch_pad = torch_pad + [0, 0] * (needed - pairs)
    for _ in range(lead):
        x = g.method(x, "unsqueeze", 0)
    y = g.call("F.pad", x, torch_pad, mode=TORCH_PAD_MODES[mode])
    for _ in range(lead):
        y = g.method(y, "squeeze", 0)
    return y

