"""Recognising the decompositions exporters write for standard functions, on the ONNX graph.

Exporters write GELU as ``Div -> Erf -> Add -> Mul -> Mul``, LayerNorm as seven or nine nodes, a
Linear layer as ``MatMul + Add``, attention as ``MatMul -> (scale, mask) -> Softmax -> MatMul``.
Each matcher here starts at the node that would produce the function's result (the *terminal*)
and walks back through producers, checking op types, constant values (to float32 precision),
attributes and reduction axes. A match is kept only when every tensor inside it is private to it:
consumed by nodes of the match alone and not a graph output, so fusing it removes nothing another
node or the caller reads.

Matching reads the graph only (no shapes): what needs ranks or sizes (reduction axes being the
trailing ones, affine parameters fitting the normalised shape) is checked again when the match is
lowered (:mod:`onnx2fx.idioms.emit`), which falls back to the nodes one by one when it does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _core

# How close a constant must be to the value the function uses: float32 rounding of the exact value
# (relative 6e-8) passes, a different constant does not.
_RELATIVE_TOLERANCE = 1e-6

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_CUBIC = 0.044715


# Every kind recognised, and those fused unless asked otherwise. ``attention`` is a default: its
# fused form differs from onnxruntime by float32 noise (relative 9e-7 at most, as the nodes one by
# one do, on CLIP, ViT, nn.MultiheadAttention and F.scaled_dot_product_attention exports, sequence
# lengths 1 to 577). ``linear`` is opt-in: F.linear adds the bias inside the matrix product, which
# rounds a third of the elements one unit differently from ONNX's MatMul followed by Add; a discrete
# choice downstream (RT-DETR's TopK over class scores from a Linear) then selects other queries and
# the outputs differ far beyond float32 noise.
IDIOM_KINDS = ("gelu", "gelu_tanh", "silu", "hardswish", "layer_norm", "rms_norm", "linear", "attention")
DEFAULT_IDIOMS = frozenset(IDIOM_KINDS) - {"linear"}


@dataclass(frozen=True)
class IdiomMatch:
    """One recognised function: its kind, the graph nodes it replaces and what it reads."""

    kind: str  # one of IDIOM_KINDS
    members: tuple[int, ...]  # indices into the graph's nodes, ascending; the last is the terminal
    input: str  # the tensor the function is applied to
    output: str  # the terminal node's output
    # axes, epsilon, weight / bias tensor names; attention's key, value, mask, scales, softmax axis
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> int:
        return self.members[-1]


class _GraphView:
    """Producers, consumers and constant values of a main graph, for the matchers."""

    def __init__(self, graph: _core.Graph) -> None:
        self.nodes = list(graph.nodes)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for index, node in enumerate(self.nodes):
            for out in node.outputs:
                if out:
                    self.producer[out] = index
            for name in [*node.inputs, *_subgraph_reads(node)]:
                if name:
                    self.consumers.setdefault(name, []).append(index)
        self.graph_outputs = {o.name for o in graph.outputs}
        self.initializers = {t.name: t for t in graph.initializers}

    def node(self, tensor: str, *op_types: str) -> int | None:
        """The index of the default-domain node of one of ``op_types`` producing ``tensor``."""
        index = self.producer.get(tensor)
        if index is None:
            return None
        node = self.nodes[index]
        if node.op_type not in op_types or node.domain not in ("", "ai.onnx"):
            return None
        return index

    def constant(self, tensor: str, max_elements: int = 16) -> np.ndarray | None:
        """The value of a small constant: an initializer or a ``Constant`` node's ``value``."""
        if not tensor:
            return None
        init = self.initializers.get(tensor)
        if init is not None:
            dims = list(init.dims)
            if int(np.prod(dims)) > max_elements or init.data_type in (8, 0):  # strings, undefined
                return None
            try:
                return np.array(init.numpy(), copy=True).reshape(dims)
            except Exception:  # noqa: BLE001 - a type numpy cannot hold is simply not a match
                return None
        index = self.node(tensor, "Constant")
        if index is None:
            return None
        attrs = self.nodes[index].attributes
        if "value" in attrs and attrs["value"].type == "TENSOR":
            tensor_value = attrs["value"].value
            dims = list(tensor_value.dims)
            if int(np.prod(dims)) > max_elements or tensor_value.data_type in (8, 0):
                return None
            return np.array(tensor_value.numpy(), copy=True).reshape(dims)
        if "value_float" in attrs:
            return np.array(attrs["value_float"].value, dtype=np.float32)
        if "value_int" in attrs:
            return np.array(attrs["value_int"].value, dtype=np.int64)
        if "value_ints" in attrs:
            return np.array(list(attrs["value_ints"].value), dtype=np.int64)
        return None

    def scalar(self, tensor: str) -> float | None:
        value = self.constant(tensor, max_elements=1)
        if value is None or value.size != 1 or value.dtype.kind not in "fiu":
            return None
        return float(value.reshape(()))

    def is_scalar(self, tensor: str, expected: float) -> bool:
        value = self.scalar(tensor)
        return value is not None and _close(value, expected)

    def float_initializer(self, tensor: str) -> bool:
        init = self.initializers.get(tensor)
        return init is not None and init.data_type in (1, 10, 11, 16)  # float, float16, double, bfloat16

    def inputs(self, index: int) -> list[str]:
        return list(self.nodes[index].inputs)

    def attribute(self, index: int, name: str, default: Any = None) -> Any:
        attr = self.nodes[index].attributes.get(name)
        if attr is None:
            return default
        value = attr.value
        return [int(v) for v in value] if attr.type == "INTS" else value

    def private(self, members: Sequence[int]) -> bool:
        """Every tensor made inside the group is read only inside it and is no graph output."""
        inside = set(members)
        terminal = max(members)
        for index in members:
            if index == terminal:
                continue
            for out in self.nodes[index].outputs:
                if not out:
                    continue
                if out in self.graph_outputs or any(c not in inside for c in self.consumers.get(out, [])):
                    return False
        return len(self.nodes[terminal].outputs) == 1


def _subgraph_reads(node: _core.Node) -> list[str]:
    """Names read inside the node's subgraphs (an If branch or a Loop body can read any outer
    tensor): they count as reads by the node itself."""
    reads: list[str] = []
    for attr in node.attributes.values():
        graphs = [attr.value] if attr.type == "GRAPH" else list(attr.value) if attr.type == "GRAPHS" else []
        for graph in graphs:
            for inner in graph.nodes:
                reads.extend(inner.inputs)
                reads.extend(_subgraph_reads(inner))
    return reads


def _close(value: float, expected: float) -> bool:
    return abs(value - expected) <= _RELATIVE_TOLERANCE * max(abs(expected), 1e-30)


def _other(pair: Sequence[str], one: str) -> str | None:
    """The operand of a binary node that is not ``one`` (``None`` when ``one`` is not an operand)."""
    if len(pair) != 2:
        return None
    if pair[0] == one:
        return pair[1]
    if pair[1] == one:
        return pair[0]
    return None


def _binary_with_scalar(view: _GraphView, index: int, expected: float) -> str | None:
    """The tensor operand of a binary node whose other operand is the scalar ``expected``."""
    a, b = (view.inputs(index) + ["", ""])[:2]
    if view.is_scalar(b, expected) and a:
        return a
    if view.is_scalar(a, expected) and b:
        return b
    return None


def _finish(view: _GraphView, kind: str, members: Sequence[int], x: str, **params: Any) -> IdiomMatch | None:
    ordered = tuple(sorted(set(members)))
    if not view.private(ordered):
        return None
    terminal = ordered[-1]
    return IdiomMatch(kind, ordered, x, view.nodes[terminal].outputs[0], params)


# ---------------------------------------------------------------------------------- activations
def _silu_or_hard_sigmoid_swish(view: _GraphView, t: int) -> IdiomMatch | None:
    """``x * Sigmoid(x)`` (SiLU) and ``x * HardSigmoid(x, 1/6, 0.5)`` (HardSwish)."""
    a, b = (view.inputs(t) + ["", ""])[:2]
    for gate, x in ((a, b), (b, a)):
        s = view.node(gate, "Sigmoid")
        if s is not None and view.inputs(s)[0] == x:
            return _finish(view, "silu", [s, t], x)
        h = view.node(gate, "HardSigmoid")
        if h is not None and view.inputs(h)[0] == x and _close(view.attribute(h, "alpha", 0.2), 1 / 6) \
                and _close(view.attribute(h, "beta", 0.5), 0.5):
            return _finish(view, "hardswish", [h, t], x)
    return None


def _relu6_of_x_plus_3(view: _GraphView, tensor: str) -> tuple[str, list[int]] | None:
    """``Clip(x + 3, 0, 6)``: returns x and the two nodes."""
    c = view.node(tensor, "Clip")
    if c is None:
        return None
    ins = view.inputs(c) + ["", ""]
    if ins[1] or ins[2]:
        low, high = view.scalar(ins[1]), view.scalar(ins[2])
    else:
        low, high = view.attribute(c, "min"), view.attribute(c, "max")
    if low is None or high is None or low != 0.0 or not _close(high, 6.0):
        return None
    add = view.node(ins[0], "Add")
    if add is None:
        return None
    x = _binary_with_scalar(view, add, 3.0)
    return (x, [add, c]) if x is not None else None


def _hardswish(view: _GraphView, t: int) -> IdiomMatch | None:
    """``x * Clip(x + 3, 0, 6) / 6`` in the orders exporters write it: ``(x * r) / 6``,
    ``(x * r) * (1/6)``, ``x * (r / 6)`` and ``x * (r * (1/6))``."""
    node = view.nodes[t]
    ins = view.inputs(t) + ["", ""]
    # (x * r) / 6  or  (x * r) * (1/6)
    product = ins[0] if node.op_type == "Div" and view.is_scalar(ins[1], 6.0) else \
        _binary_with_scalar(view, t, 1 / 6) if node.op_type == "Mul" else None
    if product is not None:
        m = view.node(product, "Mul")
        if m is not None:
            a, b = (view.inputs(m) + ["", ""])[:2]
            for r, x in ((a, b), (b, a)):
                found = _relu6_of_x_plus_3(view, r)
                if found is not None and found[0] == x:
                    return _finish(view, "hardswish", [*found[1], m, t], x)
    if node.op_type != "Mul":
        return None
    # x * (r / 6)  or  x * (r * (1/6))
    for scaled, x in ((ins[0], ins[1]), (ins[1], ins[0])):
        d = view.node(scaled, "Div", "Mul")
        if d is None or d == t:
            continue
        d_ins = view.inputs(d) + ["", ""]
        r = d_ins[0] if view.nodes[d].op_type == "Div" and view.is_scalar(d_ins[1], 6.0) else \
            _binary_with_scalar(view, d, 1 / 6) if view.nodes[d].op_type == "Mul" else None
        if r is None:
            continue
        found = _relu6_of_x_plus_3(view, r)
        if found is not None and found[0] == x:
            return _finish(view, "hardswish", [*found[1], d, t], x)
    return None


def _half_x_times(view: _GraphView, t: int) -> Iterator[tuple[str, str, list[int]]]:
    """The ways the Mul ``t`` reads as ``0.5 * x * a``: yields (x, a, the Mul nodes)."""
    a, b = (view.inputs(t) + ["", ""])[:2]
    for inner, outer in ((a, b), (b, a)):
        m = view.node(inner, "Mul")
        if m is None:
            continue
        p, q = (view.inputs(m) + ["", ""])[:2]
        for first, second in ((p, q), (q, p)):
            if view.is_scalar(first, 0.5):  # (0.5 * second) * outer: x and a are second and outer
                yield second, outer, [m, t]
                yield outer, second, [m, t]
        if view.is_scalar(outer, 0.5):  # (p * q) * 0.5
            yield p, q, [m, t]
            yield q, p, [m, t]


def _erf_plus_one(view: _GraphView, a: str, x: str) -> list[int] | None:
    """``1 + Erf(x / sqrt(2))`` (or ``x * (1/sqrt(2))``): the nodes, or None."""
    add = view.node(a, "Add")
    if add is None:
        return None
    e_out = _binary_with_scalar(view, add, 1.0)
    e = view.node(e_out or "", "Erf")
    if e is None:
        return None
    s = view.node(view.inputs(e)[0], "Div", "Mul")
    if s is None:
        return None
    s_ins = view.inputs(s) + ["", ""]
    if view.nodes[s].op_type == "Div":
        ok = s_ins[0] == x and view.is_scalar(s_ins[1], SQRT2)
    else:
        ok = _binary_with_scalar(view, s, 1 / SQRT2) == x
    return [s, e, add] if ok else None


def _cube(view: _GraphView, tensor: str, x: str) -> list[int] | None:
    """``x ** 3`` as ``Pow(x, 3)``, ``(x * x) * x`` or ``x * (x * x)``."""
    p = view.node(tensor, "Pow")
    if p is not None:
        ins = view.inputs(p)
        return [p] if ins[0] == x and view.is_scalar(ins[1], 3.0) else None
    m = view.node(tensor, "Mul")
    if m is None:
        return None
    a, b = (view.inputs(m) + ["", ""])[:2]
    for square, single in ((a, b), (b, a)):
        s = view.node(square, "Mul")
        if single == x and s is not None and view.inputs(s) == [x, x]:
            return [s, m]
    return None


def _tanh_plus_one(view: _GraphView, a: str, x: str) -> list[int] | None:
    """``1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x**3))``: the nodes, or None."""
    add = view.node(a, "Add")
    if add is None:
        return None
    th = view.node(_binary_with_scalar(view, add, 1.0) or "", "Tanh")
    if th is None:
        return None
    u = view.node(view.inputs(th)[0], "Mul")
    if u is None:
        return None
    v = view.node(_binary_with_scalar(view, u, SQRT_2_OVER_PI) or "", "Add")
    if v is None:
        return None
    w = view.node(_other(view.inputs(v), x) or "", "Mul")
    if w is None:
        return None
    cube = _cube(view, _binary_with_scalar(view, w, GELU_TANH_CUBIC) or "", x)
    if cube is None:
        return None
    return [*cube, w, v, u, th, add]


def _gelu(view: _GraphView, t: int) -> IdiomMatch | None:
    for x, a, muls in _half_x_times(view, t):
        nodes = _erf_plus_one(view, a, x)
        if nodes is not None:
            match = _finish(view, "gelu", [*nodes, *muls], x)
            if match is not None:
                return match
        nodes = _tanh_plus_one(view, a, x)
        if nodes is not None:
            match = _finish(view, "gelu_tanh", [*nodes, *muls], x)
            if match is not None:
                return match
    return None


# ---------------------------------------------------------------------------------- normalisations
def _reduce_mean_axes(view: _GraphView, index: int) -> list[int] | None:
    """The axes of a ReduceMean that keeps its dimensions (attribute before opset 18, input after)."""
    if view.attribute(index, "keepdims", 1) != 1:
        return None
    ins = view.inputs(index)
    if len(ins) > 1 and ins[1]:
        axes = view.constant(ins[1])
        return [int(a) for a in axes.reshape(-1)] if axes is not None and axes.dtype.kind in "iu" else None
    axes = view.attribute(index, "axes")
    return list(axes) if axes else None


def _square(view: _GraphView, tensor: str, x: str) -> list[int] | None:
    """``x ** 2`` as ``Pow(x, 2)`` or ``x * x``."""
    p = view.node(tensor, "Pow")
    if p is not None:
        ins = view.inputs(p)
        return [p] if ins[0] == x and view.is_scalar(ins[1], 2.0) else None
    m = view.node(tensor, "Mul")
    return [m] if m is not None and view.inputs(m) == [x, x] else None


def _root_mean_square(view: _GraphView, s: str, d: str) -> tuple[list[int], list[int], float] | None:
    """``Sqrt(ReduceMean(d ** 2) + eps)``: (nodes, axes, eps)."""
    sq = view.node(s, "Sqrt")
    if sq is None:
        return None
    add = view.node(view.inputs(sq)[0], "Add")
    if add is None:
        return None
    a, b = (view.inputs(add) + ["", ""])[:2]
    for mean, eps_name in ((a, b), (b, a)):
        eps = view.scalar(eps_name)
        r = view.node(mean, "ReduceMean")
        if eps is None or r is None or eps < 0:
            continue
        axes = _reduce_mean_axes(view, r)
        square = _square(view, view.inputs(r)[0], d)
        if axes is not None and square is not None:
            return [*square, r, add, sq], axes, eps
    return None


def _normalised(view: _GraphView, tensor: str) -> tuple[str, str, list[int], list[int], float] | None:
    """``(x - mean(x)) / rms`` (LayerNorm) or ``x / rms`` / ``x * (1 / rms)`` (RMSNorm):
    (kind, x, nodes, axes, eps)."""
    n = view.node(tensor, "Div", "Mul")
    if n is None:
        return None
    top, bottom = (view.inputs(n) + ["", ""])[:2]
    if view.nodes[n].op_type == "Mul":  # x * Reciprocal(s) or x * (1 / s), either operand order
        for inverse, numerator in ((bottom, top), (top, bottom)):
            r = view.node(inverse, "Reciprocal", "Div")
            if r is None:
                continue
            r_ins = view.inputs(r)
            if view.nodes[r].op_type == "Div" and not view.is_scalar(r_ins[0], 1.0):
                continue
            s = r_ins[0] if view.nodes[r].op_type == "Reciprocal" else r_ins[1]
            found = _root_mean_square(view, s, numerator)
            if found is not None and view.node(numerator, "Sub") is None:
                nodes, axes, eps = found
                return "rms_norm", numerator, [*nodes, r, n], axes, eps
        return None
    sub = view.node(top, "Sub")
    if sub is not None:
        x, mean = (view.inputs(sub) + ["", ""])[:2]
        r = view.node(mean, "ReduceMean")
        if r is not None and view.inputs(r)[0] == x:
            axes = _reduce_mean_axes(view, r)
            found = _root_mean_square(view, bottom, top)
            if axes is not None and found is not None and sorted(found[1]) == sorted(axes):
                nodes, _, eps = found
                return "layer_norm", x, [r, sub, *nodes, n], axes, eps
    found = _root_mean_square(view, bottom, top)
    if found is not None:
        nodes, axes, eps = found
        return "rms_norm", top, [*nodes, n], axes, eps
    return None


def _normalisation(view: _GraphView, t: int) -> IdiomMatch | None:
    """A LayerNorm or RMSNorm, with the affine ``* weight (+ bias)`` that follows when the weight and
    bias are float initializers."""
    node = view.nodes[t]
    bias: str | None = None
    weight: str | None = None
    core = view.nodes[t].outputs[0]
    extra: list[int] = []
    if node.op_type == "Add":
        a, b = (view.inputs(t) + ["", ""])[:2]
        for y, candidate in ((a, b), (b, a)):
            m = view.node(y, "Mul")
            if m is None or not view.float_initializer(candidate):
                continue
            p, q = (view.inputs(m) + ["", ""])[:2]
            for normal, w in ((p, q), (q, p)):
                if view.float_initializer(w) and view.node(normal, "Div", "Mul") is not None:
                    bias, weight, core, extra = candidate, w, normal, [m, t]
                    break
            if bias is not None:
                break
        if bias is None:
            return None
    elif node.op_type == "Mul":
        p, q = (view.inputs(t) + ["", ""])[:2]
        for normal, w in ((p, q), (q, p)):
            if view.float_initializer(w) and view.node(normal, "Div", "Mul") is not None:
                found = _normalised(view, normal)
                if found is not None:
                    weight, core, extra = w, normal, [t]
                    break
    found = _normalised(view, core)
    if found is None:
        return None
    kind, x, nodes, axes, eps = found
    if kind == "rms_norm" and bias is not None:
        return None
    return _finish(view, kind, [*nodes, *extra], x, axes=axes, epsilon=eps, weight=weight, bias=bias)


# ---------------------------------------------------------------------------------- linear
def _initializer_behind_identities(view: _GraphView, tensor: str) -> str | None:
    """The float initializer ``tensor`` is, directly or through ``Identity`` nodes (exporters keep
    one copy of identical tensors, such as all-zero biases, and name each use with an Identity)."""
    for _ in range(len(view.nodes) + 1):
        if view.float_initializer(tensor):
            return tensor
        index = view.node(tensor, "Identity")
        if index is None:
            return None
        tensor = view.inputs(index)[0]
    return None  # pragma: no cover - a graph is acyclic


def _linear(view: _GraphView, t: int) -> IdiomMatch | None:
    """``MatMul(x, W) + b`` with a 2-D float initializer ``W`` and a 1-D float initializer ``b`` of
    its output size (either reached through ``Identity`` nodes, which stay as they are):
    ``nn.Linear`` with its bias."""
    a, b = (view.inputs(t) + ["", ""])[:2]
    for product, bias_use in ((a, b), (b, a)):
        m = view.node(product, "MatMul")
        bias = _initializer_behind_identities(view, bias_use)
        if m is None or bias is None:
            continue
        x, w_use = view.inputs(m)
        w = _initializer_behind_identities(view, w_use)
        if w is None or _initializer_behind_identities(view, x) is not None:
            continue
        w_dims, b_dims = list(view.initializers[w].dims), list(view.initializers[bias].dims)
        if len(w_dims) == 2 and b_dims == [w_dims[1]] and view.initializers[w].data_type == \
                view.initializers[bias].data_type:
            return _finish(view, "linear", [m, t], x, weight=w, bias=bias)
    return None


# ---------------------------------------------------------------------------------- attention
# Ops through which a scale computed from a tensor's shape reaches the attention (torch.onnx writes
# the default 1/sqrt(E) as Sqrt(Div(1, Sqrt(Cast(Slice(Shape(q)))))) when E is not folded).
_SHAPE_ARITHMETIC = frozenset({"Shape", "Constant", "Cast", "Sqrt", "Div", "Mul", "Reciprocal", "Slice", "Gather",
                               "Squeeze", "Unsqueeze", "Reshape"})


def _from_sizes(view: _GraphView, tensor: str, depth: int = 12) -> bool:
    """``tensor`` is a constant or computed from constants and tensor sizes alone (never from a
    tensor's values): a candidate scale, whose value lowering then knows."""
    if not tensor or tensor in view.initializers:
        return bool(tensor)
    index = view.producer.get(tensor)
    if index is None or depth == 0:
        return False
    node = view.nodes[index]
    if node.op_type not in _SHAPE_ARITHMETIC or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Shape":
        return True
    return all(_from_sizes(view, name, depth - 1) for name in node.inputs if name)


def _scale_operand(view: _GraphView, tensor: str) -> bool:
    """``tensor`` can be a scale: a one-element constant, or a value computed from sizes (its one
    element is checked when lowering, where it is a number)."""
    if tensor in view.initializers or view.node(tensor, "Constant") is not None:
        return view.scalar(tensor) is not None
    return _from_sizes(view, tensor)


def _scaled(view: _GraphView, tensor: str) -> tuple[str, list[tuple[str, str]], list[int]]:
    """``tensor`` as ``data * s`` or ``data / s`` with ``s`` a constant or a size-derived scalar:
    (data, [(s, "mul" | "div")], [node]); ``tensor`` itself, unscaled, otherwise."""
    index = view.node(tensor, "Mul", "Div")
    if index is not None:
        a, b = (view.inputs(index) + ["", ""])[:2]
        if view.nodes[index].op_type == "Div":
            if _scale_operand(view, b) and not _from_sizes(view, a):
                return a, [(b, "div")], [index]
        else:
            for data, scale in ((a, b), (b, a)):
                if _scale_operand(view, scale) and not _from_sizes(view, data):
                    return data, [(scale, "mul")], [index]
    return tensor, [], []


def _scaled_product(view: _GraphView,
                    scores: str) -> tuple[list[int], str, str, list[int], list[tuple[str, str]]] | None:
    """``scores`` as ``(q * a) @ Transpose(k * b) * c`` (each scale optional, ``Mul`` or ``Div``,
    ``b`` before or after the Transpose): (nodes, q, k, the Transpose's perm, the scales)."""
    product, scales, members = _scaled(view, scores)
    m = view.node(product, "MatMul")
    if m is None:
        return None
    members.append(m)
    left, right = (view.inputs(m) + ["", ""])[:2]
    q, q_scales, nodes = _scaled(view, left)
    members += nodes
    transposed, k_scales_after, nodes = _scaled(view, right)
    members += nodes
    transpose = view.node(transposed, "Transpose")
    if transpose is None:
        return None
    members.append(transpose)
    perm = view.attribute(transpose, "perm")
    if not perm or len(perm) not in (3, 4) or sorted(perm) != list(range(len(perm))):
        return None
    k, k_scales_before, nodes = _scaled(view, view.inputs(transpose)[0])
    members += nodes
    if not q or not k:
        return None
    return members, q, k, list(perm), [*scales, *q_scales, *k_scales_after, *k_scales_before]


def _attention(view: _GraphView, t: int) -> IdiomMatch | None:
    """``MatMul(Softmax(MatMul(q, Transpose(k)) * scale (+ mask)), v)``, the scale applied to the
    product or to either operand (by ``Mul`` or ``Div``, any number of factors), the probabilities
    possibly passed through ``Cast`` nodes (to their own dtype, checked when lowering):
    ``F.scaled_dot_product_attention``. The graph fixes the op types, the Transpose's permutation
    and the operands; lowering checks the ranks, the softmax axis, the mask and the scale's value."""
    p, v = (view.inputs(t) + ["", ""])[:2]
    casts: list[int] = []  # softmax(dim=-1, dtype=torch.float32).to(q.dtype) adds Casts, no-ops in float32
    while (c := view.node(p, "Cast")) is not None and len(casts) < 4:
        casts.append(c)
        p = view.inputs(c)[0]
    s = view.node(p, "Softmax")
    if s is None or not v:
        return None
    scores = view.inputs(s)[0]
    add = view.node(scores, "Add")
    candidates: list[tuple[str, str | None, list[int]]] = [(scores, None, [])]
    if add is not None:
        a, b = (view.inputs(add) + ["", ""])[:2]
        candidates = [(a, b, [add]), (b, a, [add])] if a and b else []
    for product, mask, extra in candidates:
        found = _scaled_product(view, product)
        if found is None:
            continue
        nodes, q, k, perm, scales = found
        match = _finish(view, "attention", [*nodes, *extra, s, *casts, t], q, key=k, value=v, key_perm=perm,
                        mask=mask, scales=tuple(scales), softmax_axis=view.attribute(s, "axis"),
                        casts=tuple(int(view.attribute(c, "to", 0)) for c in casts))
        if match is not None:
            return match
    return None


# The matchers tried at a node of each op type, in order: the first match wins.
_MATCHERS: dict[str, tuple[Callable[[_GraphView, int], IdiomMatch | None], ...]] = {
    "Mul": (_normalisation, _gelu, _hardswish, _silu_or_hard_sigmoid_swish),
    "Div": (_normalisation, _hardswish),
    "Add": (_normalisation, _linear),
    "MatMul": (_attention,),
}


def idiom_kinds(idioms: bool | Collection[str]) -> frozenset[str]:
    """The kinds an ``idioms`` option stands for: True the defaults, False none, else the kinds named."""
    if idioms is True:
        return DEFAULT_IDIOMS
    if idioms is False:
        return frozenset()
    unknown = sorted(set(idioms) - set(IDIOM_KINDS))
    if unknown:
        raise ValueError(f"unknown idioms {unknown}; known: {', '.join(IDIOM_KINDS)}")
    return frozenset(idioms)


def find_idioms(graph: _core.Graph, kinds: Collection[str] = DEFAULT_IDIOMS) -> list[IdiomMatch]:
    """The recognised functions of ``kinds`` in ``graph`` (its nodes in topological order), none
    sharing a node.

    Terminals are visited from the last node back, so that the larger of two overlapping matches
    (a LayerNorm with its affine ``Mul``/``Add`` against the same LayerNorm without) is the one kept."""
    view = _GraphView(graph)
    claimed: set[int] = set()
    matches: list[IdiomMatch] = []
    for index in range(len(view.nodes) - 1, -1, -1):
        node = view.nodes[index]
        if index in claimed or node.domain not in ("", "ai.onnx"):
            continue
        for matcher in _MATCHERS.get(node.op_type, ()):
            match = matcher(view, index)
            if match is not None and match.kind in kinds and not claimed.intersection(match.members):
                claimed.update(match.members)
                matches.append(match)
                break
    return sorted(matches, key=lambda m: m.terminal)
