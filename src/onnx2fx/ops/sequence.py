"""Sequences and optionals.

A sequence whose length is known at conversion time is a Python list of values: each element is a
tensor variable, and sequence ops rearrange the list while the graph is lowered (``SequenceAt``
with a constant position is just that element); as a graph output it is returned as a list.

A sequence whose length is only known at run time (a graph input, a split into a data-dependent
number of parts) is a Python list in ``forward``, handled by small helpers that ``torch.fx``
records as single calls. An optional graph input is a tensor (or list) or ``None``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from ..tensors import torch_dtype
from .registry import onnx_op


def make_sequence(elements: list[Value], dtype: torch.dtype | None = None) -> Value:
    return Value("sequence", None, meta={"sequence": list(elements),
                                         "elem_dtype": dtype or (elements[0].dtype if elements else None)})


def elements(g: Emitter, v: Value) -> list[Value]:
    if "sequence" not in v.meta:
        raise g.unsupported(None, "a sequence of run-time length here")
    return list(v.meta["sequence"])


def _runtime(v: Value | None) -> bool:
    """A sequence (or optional) that exists only at run time, as a Python object."""
    return v is not None and "runtime" in v.meta


def _opaque(g: Emitter, fn: object, *args: object, kind: str = "sequence", element: object = None) -> Value:
    value = g.call(g.helper(fn, leaf=True), *args, out_spec=[None])
    value.meta.update(runtime=kind, element=element)
    return value


def _element_spec(g: Emitter, v: Value) -> list:
    """(sizes, dtype) of the tensors in a run-time sequence, from its declared type."""
    element = v.meta.get("element")
    if element is not None and element.kind == "tensor" and element.shape is not None and element.elem_type:
        return [([d if isinstance(d, int) and d >= 0 else None for d in element.shape],
                 torch_dtype(element.elem_type))]
    if "elem_dtype" in v.meta and v.meta.get("elem_rank") is not None:
        return [([None] * v.meta["elem_rank"], v.meta["elem_dtype"])]
    raise g.unsupported(None, "an element of a run-time sequence whose type gives no rank")


def element_template(g: Emitter, seq: Value) -> Value:
    """A value standing for one element of a run-time sequence (for the types of a loop body)."""
    if "sequence" in seq.meta and seq.meta["sequence"]:
        return seq.meta["sequence"][0]
    (sizes, dtype), = _element_spec(g, seq)
    return Value("element", g.unknown(sizes, dtype))


def _sequence_insert(seq: list[torch.Tensor], tensor: torch.Tensor, position: torch.Tensor | None) -> list:
    items = list(seq)
    items.insert(int(position) if position is not None else len(items), tensor)
    return items


def _sequence_erase(seq: list[torch.Tensor], position: torch.Tensor | None) -> list:
    items = list(seq)
    del items[int(position) if position is not None else -1]
    return items


def _sequence_at(seq: list[torch.Tensor], position: torch.Tensor) -> torch.Tensor:
    return seq[int(position)]


def _sequence_length(seq: list[torch.Tensor]) -> torch.Tensor:
    return torch.tensor(len(seq), dtype=torch.int64)


def _concat_from_sequence(seq: list[torch.Tensor], axis: int, new_axis: bool) -> torch.Tensor:
    return torch.stack(list(seq), axis) if new_axis else torch.cat(list(seq), axis)


def _split_to_sequence(x: torch.Tensor, split: torch.Tensor, axis: int) -> list:
    """Split into parts of ``split`` elements (the last one shorter), ``split`` being tensor data."""
    return list(torch.split(x, split.tolist() if split.dim() else int(split), axis))


def _unbind_to_sequence(x: torch.Tensor, axis: int, keepdims: bool) -> list:
    return list(torch.split(x, 1, axis)) if keepdims else list(torch.unbind(x, axis))


def _has_element(x: object) -> torch.Tensor:
    return torch.tensor(x is not None)


def _get_element(x: object) -> object:
    if x is None:
        raise ValueError("OptionalGetElement of an empty optional")
    return x


def _position(g: Emitter, position: Value | None, length: int, default: int) -> int:
    if position is None:
        return default
    items = g.int_list(position)
    if items is None or not items[0].is_static:
        raise g.unsupported(None, "a sequence position known only at run time")
    p = int(items[0].value)
    return p + length if p < 0 else p


@onnx_op("SequenceEmpty", 11)
def sequence_empty(g: Emitter, *, dtype: int = 1) -> Value:
    return make_sequence([], torch_dtype(dtype))


@onnx_op("SequenceConstruct", 11)
def sequence_construct(g: Emitter, *inputs: Value) -> Value:
    return make_sequence(list(inputs))


@onnx_op("SequenceInsert", 11)
def sequence_insert(g: Emitter, seq: Value, tensor: Value, position: Value | None = None) -> Value:
    if _runtime(seq) or (position is not None and g.int_list(position) is None):
        return _opaque(g, _sequence_insert, seq, tensor, position, element=seq.meta.get("element"))
    items = elements(g, seq)
    items.insert(_position(g, position, len(items), len(items)), tensor)
    return make_sequence(items, seq.meta.get("elem_dtype"))


@onnx_op("SequenceAt", 11)
def sequence_at(g: Emitter, seq: Value, position: Value) -> Value:
    if _runtime(seq) or g.int_list(position) is None:
        spec = _element_spec(g, seq) if _runtime(seq) else [([None] * elements(g, seq)[0].rank, seq.meta["elem_dtype"])]
        return g.call(g.helper(_sequence_at, leaf=True), seq, position, out_spec=spec)
    items = elements(g, seq)
    return items[_position(g, position, len(items), 0)]


@onnx_op("SequenceErase", 11)
def sequence_erase(g: Emitter, seq: Value, position: Value | None = None) -> Value:
    if _runtime(seq) or (position is not None and g.int_list(position) is None):
        return _opaque(g, _sequence_erase, seq, position, element=seq.meta.get("element"))
    items = elements(g, seq)
    del items[_position(g, position, len(items), len(items) - 1)]
    return make_sequence(items, seq.meta.get("elem_dtype"))


@onnx_op("SequenceLength", 11)
def sequence_length(g: Emitter, seq: Value) -> Value:
    if _runtime(seq):
        return g.call(g.helper(_sequence_length, leaf=True), seq, out_spec=[([], torch.int64)])
    return g.const(torch.tensor(len(elements(g, seq)), dtype=torch.int64))


@onnx_op("SplitToSequence", 11)
def split_to_sequence(g: Emitter, x: Value, split: Value | None = None, *, axis: int = 0,
                      keepdims: int = 1) -> Value:
    """``torch.split`` (or ``unbind`` for one element per index without ``keepdims``)."""
    axis = axis + x.rank if axis < 0 else axis
    size = x.static_shape()[axis]
    if size is None and split is None:  # one element per index, their number known at run time
        value = _opaque(g, _unbind_to_sequence, x, axis, bool(keepdims))
        value.meta.update(elem_dtype=x.dtype, elem_rank=x.rank if keepdims else x.rank - 1)
        return value
    if size is None and (split is None or g.int_list(split) is not None):
        raise g.unsupported(None, "SplitToSequence with split sizes along a dimension of run-time size")
    if split is None:
        if not keepdims:
            return make_sequence(list(g.call("torch.unbind", x, axis, n_outputs=size)) if size > 1 else
                                 [g.call("torch.squeeze", x, axis)])
        sizes = [1] * size
    elif g.int_list(split) is None:  # sizes given as tensor data
        n = split.static_shape()[0] if split.rank == 1 else None
        if n is None:  # the number of parts depends on the data: a run-time list
            element = {"elem_dtype": x.dtype, "elem_rank": x.rank}
            value = _opaque(g, _split_to_sequence, x, split, axis)
            value.meta.update(element)
            return value
        from . import dynamic

        return make_sequence(list(dynamic.split(g, x, split, axis, n)))
    else:
        given = g.static_ints(split, "split")
        assert given is not None
        if split.rank == 0:  # one chunk size: equal parts, the last one shorter
            sizes = [given[0]] * (size // given[0]) + ([size % given[0]] if size % given[0] else [])
        else:
            sizes = given
    if len(sizes) == 1:
        return make_sequence([x])
    return make_sequence(list(g.call("torch.split", x, sizes, axis, n_outputs=len(sizes))))


@onnx_op("ConcatFromSequence", 11)
def concat_from_sequence(g: Emitter, seq: Value, *, axis: int, new_axis: int = 0) -> Value:
    if _runtime(seq):
        (sizes, dtype), = _element_spec(g, seq)
        rank = len(sizes) + (1 if new_axis else 0)
        return g.call(g.helper(_concat_from_sequence, leaf=True), seq, axis, bool(new_axis),
                      out_spec=[([None] * rank, dtype)])
    items = elements(g, seq)
    if not items:
        raise g.unsupported(None, "ConcatFromSequence of an empty sequence")
    if new_axis:
        rank = items[0].rank + 1
        return g.call("torch.stack", items, axis + rank if axis < 0 else axis)
    return g.call("torch.cat", items, axis)


@onnx_op("SequenceMap", 17)
def sequence_map(g: Emitter, seq: Value, *additional: Value, body: Any) -> tuple[Value, ...]:
    """The body unrolled over the sequence (additional sequences are zipped, tensors repeated)."""
    from ..lowering import lower_subgraph  # lowering imports the op table

    if _runtime(seq) or any(_runtime(a) for a in additional):
        from .control_flow import runtime_sequence_map

        return runtime_sequence_map(g, seq, additional, body)
    items = elements(g, seq)
    outputs: list[list[Value]] = []
    for i, item in enumerate(items):
        extra = [elements(g, a)[i] if "sequence" in a.meta else a for a in additional]
        outputs.append(lower_subgraph(g, body, [item, *extra]))
    n = len(body.outputs)
    return tuple(make_sequence([o[j] for o in outputs]) for j in range(n))


@onnx_op("Optional", 15)
def optional(g: Emitter, x: Value | None = None, *, type: Any = None) -> Value:
    return Value("optional", None, meta={"optional": x})


@onnx_op("OptionalHasElement", 15)
def optional_has_element(g: Emitter, x: Value | None = None) -> Value:
    if _runtime(x) and x.meta["runtime"] == "optional":
        return g.call(g.helper(_has_element, leaf=True), x, out_spec=[([], torch.bool)])
    present = x is not None and (x.meta.get("optional", x) is not None)
    return g.const(torch.tensor(present))


@onnx_op("OptionalGetElement", 15)
def optional_get_element(g: Emitter, x: Value) -> Value:
    if _runtime(x) and x.meta["runtime"] == "optional":
        element = x.meta.get("element")
        if element is not None and element.kind == "sequence":
            return _opaque(g, _get_element, x, element=element.element)
        spec = _element_spec(g, x)
        return g.call(g.helper(_get_element, leaf=True), x, out_spec=spec)
    if "optional" not in x.meta:
        return x
    if x.meta["optional"] is None:
        raise g.error("OptionalGetElement of an empty optional")
    return x.meta["optional"]
