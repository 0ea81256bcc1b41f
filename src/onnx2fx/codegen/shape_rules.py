"""Result sizes of common calls on symbolic sizes, written out instead of found by a fake run.

Torch's fake kernels take every size decision through the shape environment: each comparison of
two symbolic sizes becomes a sympy relation that is simplified, bounded by value ranges and often
recorded as a run-time assertion. That is most of what makes converting a model with dynamic
dimensions slower than converting it with fixed sizes. Most calls need no such decision: the
sizes of an elementwise sum are those of its operands when the operands' sizes are *written* the
same, a convolution's output length is one formula, a reshape's ``-1`` is the input's factors
that the other target sizes do not take.

Each rule here answers only from the sizes as written: equal expressions, a static 1 that
broadcasts, factors that cancel, static sizes that must match. Wherever the answer would need a
decision (two different expressions that torch would assume equal, a dynamic size against a
number), the rule answers ``None`` and the call is evaluated by torch as before, which records
what it must (an assumption, a size it fixes). So a rule never hides a specialisation: it is taken
only where torch's own evaluation would have taken no decision either.

The results are contiguous fake tensors (strides are not modelled; later calls only read sizes).
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import sympy
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, in_kernel_invocation_manager
from torch.utils._sympy.functions import FloorDiv, Mod, PythonMod

from .shape_env import ConversionShapeEnv

Size = int | torch.SymInt


# ------------------------------------------------------------------------------ sizes as written
def size_key(size: Size) -> int | sympy.Expr:
    """A size as it is written: the int, or the SymInt's expression (a number when it has one)."""
    if isinstance(size, torch.SymInt):
        expr = size.node.expr
        # sympy folds numbers on construction, so a number is an atom: ``is_Number`` is a class
        # attribute, where ``is_number`` walks a whole expression on every call
        return int(expr) if expr.is_Number else expr
    return int(size)


def same_size(a: Size, b: Size) -> bool:
    """Whether two sizes are written the same (so equal for every run-time size, without a guard)."""
    return _same_key(size_key(a), size_key(b))


def _same_key(a: int | sympy.Expr, b: int | sympy.Expr) -> bool:
    """``a == b`` for two sizes as written: an int never equals an expression (numbers are ints
    here, see :func:`size_key`), which spares sympy's comparison with a number."""
    if type(a) is int or type(b) is int:
        return type(a) is type(b) and a == b
    return a is b or a == b


def broadcast_sizes(a: Sequence[Size], b: Sequence[Size]) -> list[Size] | None:
    """The broadcast of two shapes where each pair of sizes is written the same or one is a static
    1; ``None`` where torch would have to assume or check an equality (or where they cannot broadcast).
    Taken as torch does: the first operand's size unless it is the 1."""
    out: list[Size] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        kx, ky = size_key(x), size_key(y)
        if _same_key(kx, ky) or (type(ky) is int and ky == 1):
            out.append(x)
        elif type(kx) is int and kx == 1:
            out.append(y)
        elif _equal_by_assumption_only(x, y):
            out.append(x)
        else:
            return None
    return out[::-1]


def _equal_by_assumption_only(a: Size, b: Size) -> bool:
    """Whether torch, broadcasting ``a`` against ``b``, would only assume them equal: two symbolic
    sizes written differently, equal (and not 1) at the hints, whose equality holds only for some
    sizes (``2*((h - 1)//16) + 2`` against ``(h - 1)//8 + 1``: an FPN's upsampled level against the
    next finer one) and cannot be solved for a symbol (the difference keeps a floor division, no
    modulo). Torch then records a run-time assertion and a guard on the hints, which conversion
    never writes out; it changes no replacement and no range, so nothing is lost without it."""
    if not (isinstance(a, torch.SymInt) and isinstance(b, torch.SymInt)):
        return False
    hint_a, hint_b = a.node.hint, b.node.hint
    if hint_a is None or hint_b is None or hint_a != hint_b or hint_a == 1:
        return False
    difference = a.node.expr - b.node.expr
    if difference.has(Mod, PythonMod):
        return False
    return any(not (d := atom.divisor).is_number or d != 1 for atom in difference.atoms(FloorDiv))


def size_factors(size: Size) -> tuple[int, list[sympy.Expr]]:
    """A size as its static factor and its symbolic factors (``8*s0*s1`` -> 8, [s0, s1])."""
    key = size_key(size)
    if isinstance(key, int):
        return key, []
    static, symbolic = 1, []
    for factor in sympy.Mul.make_args(key):
        if factor.is_Integer:
            static *= int(factor)
        else:
            symbolic.append(factor)
    return static, symbolic


def reshape_sizes(sizes: Sequence[Size], target: Sequence[Size]) -> list[Size] | None:
    """``target`` with its ``-1`` resolved, where the element count visibly matches: the target's
    symbolic factors are factors of the input sizes, written the same, and the static parts divide
    (``(n, 3, h, w) -> (n, 3, -1)``: ``-1`` is ``h*w``) or leave a floor division of the remaining
    factors (``(n, 3, h, w) -> (n, 3, -1, 2, w)``: ``h//2``, which is what any size the reshape
    accepts gives, as torch's own ``numel // prod(others)`` does). ``None`` otherwise (torch then
    proves or assumes the count itself)."""
    if sum(1 for t in target if isinstance(t, int) and t == -1) > 1:
        return None
    if any(isinstance(t, int) and t < -1 for t in target):
        return None
    static_in, factors_in = 1, Counter[sympy.Expr]()
    for size in sizes:
        static, symbolic = size_factors(size)
        static_in *= static
        factors_in.update(symbolic)
    static_out, factors_out = 1, Counter[sympy.Expr]()
    for t in target:
        if not (isinstance(t, int) and t == -1):
            static, symbolic = size_factors(t)
            static_out *= static
            factors_out.update(symbolic)
    if factors_out - factors_in:  # a target factor that is no input factor
        return None
    leftover = factors_in - factors_out
    if not any(isinstance(t, int) and t == -1 for t in target):
        if static_in != static_out or (leftover and not _assume_each_is_one(leftover, sizes)):
            return None
        return list(target)
    if static_out == 0 or static_in == 0 or (static_in % static_out and not leftover):
        return None
    common = math.gcd(static_in, static_out)
    inferred = sympy.Mul(static_in // common, *leftover.elements())
    if static_out != common:  # (n, 3, h, w) -> (n, 3, -1, 2, w): h // 2, exact for every size the reshape takes
        inferred = FloorDiv(inferred, static_out // common)
    if inferred.is_number:
        return [int(inferred) if isinstance(t, int) and t == -1 else t for t in target]
    env = next(s.node.shape_env for s in sizes if isinstance(s, torch.SymInt))
    hint = inferred.xreplace(env.backed_var_to_val)
    exact_at_hint = (sympy.Mul(static_in // common, *leftover.elements()).xreplace(env.backed_var_to_val)
                     == hint * (static_out // common))
    if not hint.is_Integer or not exact_at_hint:  # no hint (an unbacked symbol), or torch would fail at it
        return None
    size = env.create_symintnode(inferred, hint=int(hint))
    return [size if isinstance(t, int) and t == -1 else t for t in target]


def _assume_each_is_one(factors: Counter[sympy.Expr], sizes: Sequence[Size]) -> bool:
    """Where a reshape's input has symbolic factors its target lacks (a recognizer's feature map
    whose height is pooled down to one row, reshaped to ``(n, 1, w, c)``), the element counts are
    equal only where each such factor is 1. Torch compares the counts at the hints and, where they
    agree, records that they are equal (after hundreds of milliseconds of sympy on such products);
    here each factor that is 1 at its hint is recorded as equal to 1, which is the same condition.
    A factor that is a bare symbol is left to torch (that would fix an input size to 1)."""
    env = next(s.node.shape_env for s in sizes if isinstance(s, torch.SymInt))
    for factor in factors:
        hint = factor.xreplace(env.backed_var_to_val)
        if factor.is_symbol or not hint.is_Integer or int(hint) != 1:
            return False
    return all(bool(env.create_symintnode(factor, hint=1) == 1) for factor in factors)


def exact_quotient(dividend: Sequence[Size], divisor: Sequence[Size]) -> Size | None:
    """``prod(dividend) // prod(divisor)`` where the divisor's symbolic factors are factors of the
    dividend, written the same (a reshape's ``-1``, see :func:`reshape_sizes`), built without
    sympy's division of the two products (whose simplification is slow); else ``None``."""
    result = reshape_sizes(dividend, [*divisor, -1])
    return None if result is None else result[-1]


# ------------------------------------------------------------------------------ the rules
def _dtype_of_binary(op: Callable[..., Any], a: Any, b: Any) -> torch.dtype | None:
    """The result dtype of an arithmetic operator where no promotion is involved, else ``None``."""
    tensors = [x for x in (a, b) if isinstance(x, TENSORS)]
    if len(tensors) == 2:
        if a.dtype == b.dtype:
            dtype = a.dtype
        elif (a.dim() == 0) != (b.dim() == 0):  # a 0-dim tensor (a zero point) against sized data
            promoted = _promoted_with_scalar_tensor(a.dtype, a.dim() == 0, b.dtype)
            if promoted is None:
                return None
            dtype = promoted
        else:
            return None
    else:
        other = b if isinstance(a, TENSORS) else a
        if isinstance(other, bool) or not isinstance(other, (int, float)):
            return None
        dtype = tensors[0].dtype
        if isinstance(other, float) and not dtype.is_floating_point:
            return None
    if dtype.is_complex or dtype == torch.bool:
        return None
    if op in _BITWISE:
        return dtype if not dtype.is_floating_point else None
    if op is operator.truediv and not dtype.is_floating_point:
        return None
    return dtype


def _promoted_with_scalar_tensor(a: torch.dtype, a_is_scalar: bool, b: torch.dtype) -> torch.dtype | None:
    """The dtype of ``a op b`` where one operand is a 0-dim tensor, by torch's own promotion rule
    (a 0-dim tensor only raises the category: ``float32 + uint8 scalar`` stays float32); ``None``
    where torch cannot promote the pair (a 4-bit type), so that torch's own run raises its error."""
    try:
        return torch.result_type(torch.empty(() if a_is_scalar else (1,), dtype=a),
                                 torch.empty((1,) if a_is_scalar else (), dtype=b))
    except (RuntimeError, TypeError):
        return None


def _binary(op: Callable[..., Any]) -> Callable[..., tuple[list[Size], torch.dtype] | None]:
    def rule(a: Any, b: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
        if kwargs:
            return None
        dtype = _dtype_of_binary(op, a, b)
        if dtype is None:
            return None
        sizes = broadcast_sizes(a.shape if isinstance(a, TENSORS) else (),
                                b.shape if isinstance(b, TENSORS) else ())
        return None if sizes is None else (sizes, dtype)
    return rule


_BITWISE = (operator.and_, operator.or_, operator.xor)


def _tensor_binary(op: Callable[..., Any]) -> Callable[..., tuple[list[Size], torch.dtype] | None]:
    """``torch.maximum`` / ``torch.minimum``: the broadcast of two tensors of one dtype."""
    rule = _binary(op)

    def tensors_only(a: Any, b: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
        return rule(a, b, **kwargs) if isinstance(a, TENSORS) and isinstance(b, TENSORS) else None
    return tensors_only


def _matmul(a: Any, b: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    if kwargs or not (isinstance(a, TENSORS) and isinstance(b, TENSORS)) or a.dtype != b.dtype:
        return None
    if a.dim() < 2 or b.dim() < 2 or not a.dtype.is_floating_point or not same_size(a.shape[-1], b.shape[-2]):
        return None
    batch = broadcast_sizes(a.shape[:-2], b.shape[:-2])
    return None if batch is None else ([*batch, a.shape[-2], b.shape[-1]], a.dtype)


def _sizes_arg(args: tuple[Any, ...]) -> list[Any] | None:
    """A size or axis list given as one sequence or as separate arguments."""
    if len(args) == 1 and isinstance(args[0], (list, tuple, torch.Size)):
        return list(args[0])
    return list(args) if all(isinstance(a, (int, torch.SymInt)) for a in args) else None


def _reshape(x: Any, *args: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    target = _sizes_arg(args)
    if kwargs or not isinstance(x, TENSORS) or target is None:
        return None
    sizes = reshape_sizes(list(x.shape), target)
    return None if sizes is None else (sizes, x.dtype)


def _permute(x: Any, *args: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    perm = _sizes_arg(args)
    if kwargs or not isinstance(x, TENSORS) or perm is None or not all(isinstance(p, int) for p in perm):
        return None
    rank = x.dim()
    perm = [p + rank if p < 0 else p for p in perm]
    if sorted(perm) != list(range(rank)):
        return None
    return [x.shape[p] for p in perm], x.dtype


def _cat(tensors: Any, dim: int = 0, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    if kwargs or not isinstance(tensors, (list, tuple)) or not tensors or not isinstance(dim, int):
        return None
    if not all(isinstance(t, TENSORS) for t in tensors):
        return None
    first = tensors[0]
    rank = first.dim()
    if rank == 0 or not -rank <= dim < rank or any(t.dim() != rank or t.dtype != first.dtype for t in tensors):
        return None
    dim %= rank
    for axis in range(rank):
        if axis != dim and not all(same_size(t.shape[axis], first.shape[axis])
                                   or _equal_by_assumption_only(first.shape[axis], t.shape[axis]) for t in tensors[1:]):
            return None
    total: Size = 0
    for t in tensors:
        total = total + t.shape[dim]
    return [total if axis == dim else first.shape[axis] for axis in range(rank)], first.dtype


def _split(x: Any, sections: Any, dim: int = 0, **kwargs: Any) -> list[tuple[list[Size], torch.dtype]] | None:
    if kwargs or not isinstance(x, TENSORS) or not isinstance(dim, int) or not -x.dim() <= dim < x.dim():
        return None
    if not isinstance(sections, (list, tuple)) or not all(isinstance(s, (int, torch.SymInt)) for s in sections):
        return None  # an int chunk size of a dynamic length leaves a last chunk only the run knows
    dim %= x.dim()
    total: Size = 0
    for s in sections:
        total = total + s
    if not same_size(total, x.shape[dim]):
        return None
    return [([s if axis == dim else x.shape[axis] for axis in range(x.dim())], x.dtype) for s in sections]


def _flatten(x: Any, start_dim: int = 0, end_dim: int = -1, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    if kwargs or not isinstance(x, TENSORS) or x.dim() == 0:
        return None
    rank = x.dim()
    start, end = start_dim % rank, end_dim % rank
    if start > end:
        return None
    merged: Size = 1
    for s in x.shape[start:end + 1]:
        merged = s if isinstance(merged, int) and merged == 1 else merged * s
    return [*x.shape[:start], merged, *x.shape[end + 1:]], x.dtype


def _same_shape(x: Any, dim: Any = None, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """Softmax and its kin: the input's sizes and dtype."""
    if kwargs or not isinstance(x, TENSORS) or not isinstance(dim, int) or not x.dtype.is_floating_point:
        return None
    return list(x.shape), x.dtype


def _normalisation(x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: Any = None,
                   **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """``F.layer_norm`` / ``F.rms_norm`` over static trailing sizes: the input's sizes."""
    if kwargs or not isinstance(x, TENSORS) or not x.dtype.is_floating_point:
        return None
    normalized = list(normalized_shape) if isinstance(normalized_shape, (list, tuple, torch.Size)) else None
    if not normalized or len(normalized) > x.dim() or not all(isinstance(n, int) for n in normalized):
        return None
    trailing = list(x.shape[x.dim() - len(normalized):])
    if not all(isinstance(t, int) and t == n for t, n in zip(trailing, normalized)):  # no guard on a symbol
        return None
    if any(t is not None and (not isinstance(t, TENSORS) or t.dtype != x.dtype
                              or [size_key(d) for d in t.shape] != normalized) for t in (weight, bias)):
        return None
    return list(x.shape), x.dtype


def _attention(q: Any, k: Any, v: Any, attn_mask: Any = None, dropout_p: float = 0.0, is_causal: bool = False,
               scale: Any = None, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """``F.scaled_dot_product_attention``: the queries' sizes with the values' last one, where the
    batch and head sizes of q, k and v are written the same and a mask broadcasts as written."""
    if kwargs or not all(isinstance(t, TENSORS) for t in (q, k, v)) or dropout_p:
        return None
    if not q.dtype.is_floating_point or not q.dtype == k.dtype == v.dtype or not q.dim() == k.dim() == v.dim() >= 2:
        return None
    if not all(same_size(a, b) and same_size(a, c) for a, b, c in zip(q.shape[:-2], k.shape[:-2], v.shape[:-2])):
        return None
    if not (same_size(q.shape[-1], k.shape[-1]) and same_size(k.shape[-2], v.shape[-2])):
        return None
    scores = [*q.shape[:-1], k.shape[-2]]
    if attn_mask is not None:
        if not isinstance(attn_mask, TENSORS) or attn_mask.dtype not in (torch.bool, q.dtype) or \
                attn_mask.dim() > len(scores):
            return None
        merged = broadcast_sizes(scores, attn_mask.shape)
        if merged is None or [size_key(m) for m in merged] != [size_key(s) for s in scores]:
            return None
    return [*q.shape[:-1], v.shape[-1]], q.dtype


# Which pads each mode of ``F.pad`` accepts for a dimension of a given static size.
_PAD_LIMITS: dict[str, Callable[[int, int, int], bool]] = {
    "constant": lambda size, before, after: True,
    "reflect": lambda size, before, after: before < size and after < size,
    "replicate": lambda size, before, after: size >= 1,
    "circular": lambda size, before, after: before <= size and after <= size,
}


def _pad(x: Any, pad: Any, mode: str = "constant", value: Any = None,
         **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """``F.pad``: each padded size grows by its two pads (counted from the last dimension).
    Negative pads (crops) are left to torch, and so are the other modes (reflect, replicate,
    circular) except over static sizes that torch's checks accept: pads shorter than the size
    (reflect), at most the size (circular), a size of at least 1 (replicate), on a tensor of one or
    two dimensions more than the padded ones, of a float type."""
    if kwargs or mode not in _PAD_LIMITS or not isinstance(x, TENSORS) or not isinstance(pad, (list, tuple)):
        return None
    if len(pad) % 2 or len(pad) // 2 > x.dim() or value is not None and not isinstance(value, (int, float)):
        return None
    if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pad):
        return None
    if mode != "constant":
        padded = len(pad) // 2
        if value is not None or not 1 <= padded <= 3 or x.dim() not in (padded + 1, padded + 2) \
                or not x.dtype.is_floating_point:
            return None
        fits = _PAD_LIMITS[mode]
        for i in range(padded):
            size = x.shape[x.dim() - 1 - i]
            if not isinstance(size, int) or not fits(size, pad[2 * i], pad[2 * i + 1]):
                return None
    sizes = list(x.shape)
    for i in range(len(pad) // 2):
        if pad[2 * i] or pad[2 * i + 1]:
            sizes[x.dim() - 1 - i] = sizes[x.dim() - 1 - i] + pad[2 * i] + pad[2 * i + 1]
    return sizes, x.dtype


def _to(x: Any, *args: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    if kwargs or not isinstance(x, TENSORS) or len(args) != 1 or not isinstance(args[0], torch.dtype):
        return None
    return list(x.shape), args[0]


def _unsqueeze(x: Any, dim: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    if kwargs or not isinstance(x, TENSORS) or not isinstance(dim, int) or not -x.dim() - 1 <= dim <= x.dim():
        return None
    dim %= x.dim() + 1
    sizes = list(x.shape)
    sizes.insert(dim, 1)
    return sizes, x.dtype


def _squeeze(x: Any, dim: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """Squeezing dimensions whose sizes are static (a dynamic one is decided by torch)."""
    dims = list(dim) if isinstance(dim, (list, tuple)) else [dim]
    if kwargs or not isinstance(x, TENSORS) or x.dim() == 0 or not all(isinstance(d, int) for d in dims):
        return None
    if not all(-x.dim() <= d < x.dim() for d in dims):
        return None
    squeezed = {d % x.dim() for d in dims}
    if not all(isinstance(x.shape[d], int) for d in squeezed):
        return None
    return [s for i, s in enumerate(x.shape) if i not in squeezed or s != 1], x.dtype


def _expand(x: Any, *args: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """``x.expand(sizes)`` where each size is ``-1``, written as ``x``'s or expands a static 1."""
    target = _sizes_arg(args)
    if kwargs or not isinstance(x, TENSORS) or target is None or len(target) < x.dim():
        return None
    lead = len(target) - x.dim()
    out: list[Size] = []
    for i, t in enumerate(target):
        if i < lead:
            if isinstance(t, int) and t < 0:
                return None
            out.append(t)
            continue
        size = x.shape[i - lead]
        if isinstance(t, int) and t == -1 or same_size(t, size):
            out.append(size)
        elif isinstance(size, int) and size == 1 and not (isinstance(t, int) and t < 0):
            out.append(t)
        else:
            return None
    return out, x.dtype


def _elementwise(x: Any, *args: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """An activation of one float tensor with number arguments (``F.leaky_relu(x, 0.2)``,
    ``torch.clamp(x, 0, 6)``): the input's sizes and dtype."""
    if not isinstance(x, TENSORS) or not x.dtype.is_floating_point or kwargs.get("inplace"):
        return None
    if not all(a is None or isinstance(a, (bool, int, float, str)) for a in (*args, *kwargs.values())):
        return None
    return list(x.shape), x.dtype


def _clamp(x: Any, min: Any = None, max: Any = None, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:  # noqa: A002
    """``torch.clamp`` with number bounds, or 0-dim bounds of the input's dtype (ONNX Clip's
    ``min``/``max`` inputs): the input's sizes and dtype."""
    if kwargs or not isinstance(x, TENSORS) or not x.dtype.is_floating_point or (min is None and max is None):
        return None  # (no bound at all: torch's error says so)
    for bound in (min, max):
        if isinstance(bound, TENSORS):
            if bound.dim() != 0 or bound.dtype != x.dtype:
                return None
        elif not (bound is None or isinstance(bound, (int, float))) or isinstance(bound, bool):
            return None
    return list(x.shape), x.dtype


def _flip(x: Any, dims: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """``torch.flip`` over distinct axes: the input's sizes and dtype."""
    axes = list(dims) if isinstance(dims, (list, tuple)) else None
    if kwargs or not isinstance(x, TENSORS) or axes is None \
            or not all(isinstance(a, int) and -x.dim() <= a < x.dim() for a in axes) \
            or len({a % x.dim() for a in axes}) != len(axes):
        return None
    return list(x.shape), x.dtype


def _convolution(nd: int) -> Callable[..., tuple[list[Size], torch.dtype] | None]:
    """``F.conv1d``/``conv2d``/``conv3d`` with a weight of static sizes (a layer whose weight is an
    argument, as in an If's branch): the layer's formula (see :func:`module_result_sizes`)."""
    def rule(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
             groups: Any = 1, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
        if kwargs or not (isinstance(x, TENSORS) and isinstance(weight, TENSORS)) or isinstance(padding, str):
            return None
        if x.dim() != nd + 2 or weight.dim() != nd + 2 or not x.dtype.is_floating_point or x.dtype != weight.dtype:
            return None
        kernel = list(weight.shape)
        if not all(isinstance(k, int) for k in kernel) or not isinstance(groups, int) or groups < 1:
            return None
        channels = x.shape[1]
        if not isinstance(channels, int) or channels != kernel[1] * groups or kernel[0] % groups \
                or _length_one_at_hint(x.shape):
            return None
        if bias is not None and (not isinstance(bias, TENSORS) or bias.dtype != x.dtype
                                 or [size_key(b) for b in bias.shape] != [kernel[0]]):
            return None
        per_dim = [_per_dim(v, nd) for v in (stride, padding, dilation)]
        if any(v is None for v in per_dim):
            return None
        strides, pads, dilations = (v for v in per_dim if v is not None)
        lengths = _window_lengths(list(x.shape[2:]), kernel[2:], strides, pads, dilations)
        return None if lengths is None else ([x.shape[0], kernel[0], *lengths], x.dtype)
    return rule


def _grid_sample(x: Any, grid: Any, *args: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """``F.grid_sample``: the input's batch and channels at the grid's output positions."""
    if not (isinstance(x, TENSORS) and isinstance(grid, TENSORS)) or x.dim() not in (4, 5):
        return None
    if grid.dim() != x.dim() or grid.dtype != x.dtype or not x.dtype.is_floating_point:
        return None
    if not isinstance(grid.shape[-1], int) or grid.shape[-1] != x.dim() - 2:
        return None
    if not all(a is None or isinstance(a, (bool, str)) for a in (*args, *kwargs.values())):
        return None
    if not (same_size(x.shape[0], grid.shape[0]) or _equal_by_assumption_only(x.shape[0], grid.shape[0])):
        return None
    return [x.shape[0], x.shape[1], *grid.shape[1:-1]], x.dtype


def _reduction(x: Any, dim: Any = None, keepdim: bool = False, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """A sum, mean or extreme of a float tensor over static axes."""
    dims = list(dim) if isinstance(dim, (list, tuple)) else [dim]
    if kwargs or not isinstance(x, TENSORS) or not x.dtype.is_floating_point or x.dim() == 0:
        return None
    if not isinstance(keepdim, bool) or not all(isinstance(d, int) and -x.dim() <= d < x.dim() for d in dims):
        return None
    reduced = {d % x.dim() for d in dims}
    if keepdim:
        return [1 if i in reduced else size for i, size in enumerate(x.shape)], x.dtype
    return [size for i, size in enumerate(x.shape) if i not in reduced], x.dtype


def _comparison(a: Any, b: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """``torch.eq`` and its kin: the broadcast sizes, as bool (no complex operands)."""
    if kwargs or not isinstance(a, TENSORS) or a.dtype.is_complex:
        return None
    if isinstance(b, TENSORS):
        if b.dtype.is_complex:
            return None
        sizes = broadcast_sizes(a.shape, b.shape)
    elif type(b) in (int, float, bool):
        sizes = list(a.shape)
    else:
        return None
    return None if sizes is None else (sizes, torch.bool)


def _where(condition: Any, a: Any, b: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """``torch.where(condition, a, b)``: the three sizes broadcast; the dtype of the tensor operands,
    where nothing is promoted (two tensors of one dtype, or a tensor and a number of its kind)."""
    if kwargs or not isinstance(condition, TENSORS) or condition.dtype != torch.bool:
        return None
    tensors = [x for x in (a, b) if isinstance(x, TENSORS)]
    if not tensors or any(t.dtype != tensors[0].dtype for t in tensors):
        return None
    dtype = tensors[0].dtype
    for number in (x for x in (a, b) if not isinstance(x, TENSORS)):
        kind = type(number)
        if kind not in (int, float) or (kind is float and not dtype.is_floating_point) or dtype == torch.bool \
                or dtype.is_complex:
            return None
    sizes: list[Size] | None = list(condition.shape)
    for t in tensors:
        sizes = broadcast_sizes(sizes, t.shape) if sizes is not None else None
    return None if sizes is None else (sizes, dtype)


def _arange(*args: Any, dtype: torch.dtype | None = None, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """``torch.arange(end)`` or ``(start, end)`` over sizes: ``end - start`` values, where that is
    never negative (torch's check would otherwise narrow a size's range; YOLO's anchor grids are
    ``arange`` over a feature map's width, whose symbolic decomposition costs milliseconds)."""
    if kwargs or not 1 <= len(args) <= 2 or any(type(a) not in (int, torch.SymInt) for a in args):
        return None
    start, end = (0, args[0]) if len(args) == 1 else args
    if not isinstance(start, int) or not isinstance(end, torch.SymInt):
        return None
    dtype = torch.int64 if dtype is None else dtype
    if not (dtype.is_floating_point or dtype in (torch.int64, torch.int32)):
        return None
    length = end - start if start else end
    return ([length], dtype) if at_least(length, 0) else None


def subscript(t: torch.Tensor, index: list[Any]) -> torch.Tensor:
    """``t[index]`` with slices given as dicts of their bounds (see ``Emitter.getitem``)."""
    return t[tuple(slice(i["start"], i["stop"], i["step"]) if isinstance(i, dict) else i for i in index)]


# A slice bound past every size a tensor can have (exporters write INT64_MAX for "to the end").
_PAST_ANY_SIZE = 2**62


def _sliced_length(length: Size, start: Any, stop: Any, step: Any) -> Size | None:
    """The length ``x[start:stop:step]`` keeps of a dimension: Python's rule for a static length;
    for a dynamic one, where the bounds are numbers that fall inside the dimension at every size its
    range allows (so torch would take no decision), else ``None``."""
    step = 1 if step is None else step
    if not all(b is None or type(b) is int for b in (start, stop)) or type(step) is not int or step < 1:
        return None
    if stop is not None and stop >= _PAST_ANY_SIZE:
        stop = None
    if isinstance(length, int):
        return len(range(*slice(start, stop, step).indices(length)))
    if stop is not None and stop > 0 and not at_least(length, stop) and length.node.hint is not None \
            and length.node.hint < stop and bool(length < stop):
        # past the end at the hint (tf2onnx writes INT32_MAX for "to the end"): torch takes the whole
        # length, assuming it shorter than the bound (``bool`` records that guard, as torch's does)
        stop = None
    start = start or 0
    if start < 0:  # counted from the end: -k keeps the last k, where there are k
        if stop is not None or not at_least(length, -start):
            return None
        kept: Size = -start
    elif stop is None:
        if start and not at_least(length, start):
            return None
        kept = length - start if start else length
    else:
        reach = stop if stop >= 0 else start - stop  # x[a:-k] needs a + k values
        if stop >= 0 and stop < start or not at_least(length, reach):
            return None
        kept = stop - start if stop >= 0 else length + stop - start
    return kept if step == 1 else (kept + step - 1) // step


def _subscript(t: Any, index: Any, **kwargs: Any) -> tuple[list[Size], torch.dtype] | None:
    """Basic slicing (slices only, no integers or new axes), with at most one integer index tensor
    among the slices (ONNX Gather with indices known at run time): its sizes take the place of the
    axis it indexes (one advanced index stays where it is), whatever its values (an index out of
    range is an error at run time, as in torch's own run, which cannot check it either)."""
    if kwargs or not isinstance(t, TENSORS) or not isinstance(index, list) or len(index) > t.dim():
        return None
    sizes = list(t.shape)
    out: list[Size] = []
    tensors = 0
    for axis, item in enumerate(index):
        # (a 0-dim index is read as a Python integer, its value: left to torch)
        if isinstance(item, TENSORS) and item.dtype in (torch.int64, torch.int32) and item.dim() > 0:
            tensors += 1
            out.extend(item.shape)
            continue
        if not isinstance(item, dict):
            return None
        kept = _sliced_length(sizes[axis], item["start"], item["stop"], item["step"])
        if kept is None:
            return None
        out.append(kept)
    if tensors > 1:  # several advanced indices broadcast together: left to torch
        return None
    return [*out, *sizes[len(index):]], t.dtype


_ELEMENTWISE = (
    torch.relu, torch.sigmoid, torch.tanh, torch.erf, torch.exp, torch.log, torch.sqrt, torch.rsqrt,
    torch.reciprocal, torch.neg, torch.abs, torch.sin, torch.cos, torch.pow, torch.square,
    torch.floor, torch.ceil, torch.trunc, torch.sign, torch.log1p, torch.expm1, torch.atan, torch.tan,
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardtanh, F.hardsigmoid,
    F.hardswish, F.softplus, F.softsign, F.logsigmoid, F.tanhshrink, F.softshrink, F.hardshrink)


FUNCTION_RULES: dict[Any, Callable[..., Any]] = {
    operator.add: _binary(operator.add), operator.sub: _binary(operator.sub), operator.mul: _binary(operator.mul),
    operator.truediv: _binary(operator.truediv), operator.and_: _binary(operator.and_),
    operator.or_: _binary(operator.or_), operator.xor: _binary(operator.xor),
    torch.add: _binary(operator.add), torch.sub: _binary(operator.sub), torch.mul: _binary(operator.mul),
    torch.div: _binary(operator.truediv), torch.maximum: _tensor_binary(torch.maximum),
    torch.minimum: _tensor_binary(torch.minimum),
    operator.matmul: _matmul, torch.matmul: _matmul,
    torch.Tensor.reshape: _reshape, torch.reshape: lambda x, shape, **kw: _reshape(x, shape, **kw),
    torch.Tensor.permute: _permute, torch.permute: lambda x, dims, **kw: _permute(x, dims, **kw),
    torch.cat: _cat, torch.concat: _cat, torch.split: _split, torch.flatten: _flatten,
    F.pad: _pad, F.layer_norm: _normalisation, F.rms_norm: _normalisation,
    F.scaled_dot_product_attention: _attention, torch.softmax: _same_shape, torch.log_softmax: _same_shape,
    torch.Tensor.to: _to,
    torch.unsqueeze: _unsqueeze, torch.Tensor.unsqueeze: _unsqueeze,
    torch.squeeze: _squeeze, torch.Tensor.squeeze: _squeeze, torch.Tensor.expand: _expand,
    **{function: _elementwise for function in _ELEMENTWISE},
    F.grid_sample: _grid_sample, torch.sum: _reduction, torch.mean: _reduction, torch.amax: _reduction,
    torch.amin: _reduction, torch.arange: _arange, subscript: _subscript,
    **{function: _comparison for function in (torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge)},
    torch.where: _where, torch.clamp: _clamp, torch.flip: _flip,
    torch.conv1d: _convolution(1), torch.conv2d: _convolution(2), torch.conv3d: _convolution(3),
}


class PendingFake:
    """A contiguous fake tensor of known sizes and dtype, made only when a torch call needs it.

    Making a fake tensor of a new symbolic shape costs about a millisecond (torch computes its
    strides, element count and byte size as sympy products), and most results answered by a rule
    are only read for their sizes by the next rule: a convolution's output by the activation after
    it, whose output by the next convolution. So :func:`fake_of` gives this stand-in, which answers
    ``shape``, ``dtype`` and ``dim()`` itself; :meth:`materialize` (called by ``as_fakes`` before a
    call is evaluated by torch, and by any other attribute access) makes the tensor, once.
    """

    __slots__ = ("fake_mode", "shape", "dtype", "_tensor")

    def __init__(self, fake_mode: FakeTensorMode, sizes: Sequence[Size], dtype: torch.dtype) -> None:
        self.fake_mode = fake_mode
        self.shape = torch.Size(sizes)
        self.dtype = dtype
        self._tensor: torch.Tensor | None = None

    def dim(self) -> int:
        return len(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def materialize(self) -> torch.Tensor:
        if self._tensor is None:
            self._tensor = _made_fake(self.fake_mode, self.shape, self.dtype)
        return self._tensor

    def __getattr__(self, name: str) -> Any:  # anything else is the tensor's
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    def __repr__(self) -> str:
        return f"PendingFake({list(self.shape)}, {self.dtype})"


# What the rules accept as a tensor argument (they read sizes and dtypes only).
TENSORS = (torch.Tensor, PendingFake)


def fake_of(fake_mode: FakeTensorMode, sizes: Sequence[Size], dtype: torch.dtype) -> torch.Tensor | PendingFake:
    """A contiguous fake tensor of these sizes and dtype: a :class:`PendingFake` where a size is
    symbolic and the conversion's shape environment is in use, made when first needed."""
    if isinstance(fake_mode.shape_env, ConversionShapeEnv) and any(isinstance(s, torch.SymInt) for s in sizes):
        return PendingFake(fake_mode, sizes, dtype)
    return _made_fake(fake_mode, sizes, dtype)


def _made_fake(fake_mode: FakeTensorMode, sizes: Sequence[Size], dtype: torch.dtype) -> torch.Tensor:
    """A contiguous fake tensor of these sizes and dtype. Making one runs torch's symbolic stride
    computation (about a millisecond with a few symbolic sizes); a fake made earlier for sizes
    written the same is detached instead (a tenth of that)."""
    env = fake_mode.shape_env
    templates = env.fake_templates if isinstance(env, ConversionShapeEnv) else None
    key = (tuple(size_key(s) for s in sizes), dtype)
    template = templates.get(key) if templates is not None else None
    if template is None:
        # torch.empty under the fake mode does exactly this, after a Python dispatch of its own
        with in_kernel_invocation_manager(fake_mode):
            meta = torch.empty(list(sizes), dtype=dtype, device="meta")
        template = FakeTensor(fake_mode, meta, torch.device("cpu"))
        if templates is not None:
            templates[key] = template
    return _alias(fake_mode, template)


def _alias(fake_mode: FakeTensorMode, template: torch.Tensor) -> torch.Tensor:
    """A new fake tensor with the template's sizes and strides: its C++ detach wrapped as a fake,
    a tenth of ``template.detach()`` through the fake mode's Python dispatch."""
    if not isinstance(template, FakeTensor):
        return template.detach()
    with in_kernel_invocation_manager(fake_mode):
        alias = torch.Tensor.detach(template)
    return FakeTensor(fake_mode, alias, template.fake_device)


def result_by_rule(fake_mode: FakeTensorMode, target: Callable[..., Any], args: Sequence[Any],
                   kwargs: dict[str, Any]) -> Any:
    """The fake result of ``target(*args, **kwargs)`` from its rule, or ``None`` where there is
    no rule or the rule cannot answer from the sizes as written."""
    try:
        rule = FUNCTION_RULES.get(target)
    except TypeError:  # an unhashable callable
        return None
    if rule is None:
        return None
    spec = rule(*args, **kwargs)
    if spec is None:
        return None
    if isinstance(spec, list):
        return tuple(fake_of(fake_mode, *s) for s in spec)
    return fake_of(fake_mode, *spec)


# ------------------------------------------------------------------------------ layers
def _window_lengths(lengths: Sequence[Size], kernel: Sequence[int], stride: Sequence[int],
                    padding: Sequence[int], dilation: Sequence[int]) -> list[Size] | None:
    """``(length + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1`` per spatial dimension,
    as torch writes it, where the window fits: a static length, a padding that leaves no dynamic
    length too short, or else a length whose hint fits, recorded as an assumption (the guard
    ``length >= reach`` narrows the size as torch's own check would, without running the layer on
    fakes, whose layout rules cost hundreds of milliseconds on a permuted input)."""
    out: list[Size] = []
    for length, k, s, p, d in zip(lengths, kernel, stride, padding, dilation, strict=True):
        reach = d * (k - 1) + 1 - 2 * p  # the shortest input length that fits the window
        if isinstance(length, int):
            if length < reach:
                return None
            out.append((length - reach) // s + 1)
            continue
        if reach == 1 and s == 1:  # a "same" window: the length itself, with no arithmetic to simplify
            if not at_least(length, 1) and not bool(length >= 1):  # torch's check that the window fits
                return None
            out.append(length)
            continue
        env = length.node.shape_env
        memo = env.window_lengths if isinstance(env, ConversionShapeEnv) else {}
        key = (size_key(length), reach, s)
        result = memo.get(key)
        if result is None:
            if reach > 0 and not at_least(length, reach) and not bool(length >= reach):
                return None  # too short at its hint: torch's check says why
            result = memo[key] = (length - reach) // s + 1 if s != 1 else length - reach + 1
        out.append(result)
    return out


def at_least(size: Size, bound: int) -> bool:
    """Whether ``size`` is at least ``bound`` for every size its symbols may take (their ranges)."""
    if not isinstance(size, torch.SymInt):
        return int(size) >= bound
    expr = size.node.expr
    env = size.node.shape_env
    if expr.is_symbol:
        symbol_range = env.var_to_range.get(expr)
        return symbol_range is not None and symbol_range.lower >= bound
    return isinstance(env, ConversionShapeEnv) and env.lower_bound(expr) >= bound


def _per_dim(value: Any, nd: int) -> list[int] | None:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * nd
    return values if len(values) == nd and all(isinstance(v, int) for v in values) else None


def module_result_sizes(module: nn.Module, x: torch.Tensor) -> list[Size] | None:
    """The sizes of ``module(x)`` for a convolution, linear, pooling or normalisation layer, where
    its rule answers from the sizes as written; else ``None`` (the layer is then run on fakes)."""
    shape = list(x.shape)
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        if module.padding_mode != "zeros":
            return None
        spec = _convolution(len(module.kernel_size))(x, module.weight, module.bias, module.stride, module.padding,
                                                     module.dilation, module.groups)
        return None if spec is None else spec[0]
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return _transposed_sizes(module, x, shape)
    if isinstance(module, nn.Linear):
        # (..., in_features) -> (..., out_features); a dynamic last dimension is left to torch's run,
        # which records that it must be in_features
        if x.dim() == 0 or not isinstance(shape[-1], int) or shape[-1] != module.in_features \
                or not _floating_like(module, x):
            return None
        return [*shape[:-1], module.out_features]
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        nd = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2,
              nn.AvgPool3d: 3}[type(module)]
        kernel = _per_dim(module.kernel_size, nd)
        stride = _per_dim(module.stride if module.stride is not None else module.kernel_size, nd)
        padding = _per_dim(module.padding, nd)
        dilation = _per_dim(getattr(module, "dilation", 1), nd)
        if module.ceil_mode or getattr(module, "return_indices", False) or x.dim() != nd + 2 \
                or None in (kernel, stride, padding, dilation) or not x.dtype.is_floating_point:
            return None
        assert kernel is not None and stride is not None and padding is not None and dilation is not None
        if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
            return None
        lengths = _window_lengths(shape[2:], kernel, stride, padding, dilation)
        return None if lengths is None else [*shape[:2], *lengths]
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        rank = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}.get(type(module))
        if rank is None or x.dim() not in rank or not isinstance(shape[1], int) or shape[1] != module.num_features:
            return None
        return shape if _floating_like(module, x) else None
    if isinstance(module, nn.LayerNorm):
        normalized = list(module.normalized_shape)
        trailing = shape[len(shape) - len(normalized):] if len(normalized) <= len(shape) else None
        if trailing is None or not all(isinstance(s, int) for s in trailing) or trailing != normalized:
            return None
        return shape if _floating_like(module, x) else None
    if isinstance(module, nn.GroupNorm):
        if x.dim() < 2 or not isinstance(shape[1], int) or shape[1] != module.num_channels:
            return None
        return shape if _floating_like(module, x) else None
    if isinstance(module, nn.PReLU):
        # elementwise; torch's own rule works out the output's memory layout, which on a permuted input
        # of symbolic sizes costs hundreds of milliseconds of contiguity guards per layer
        if module.num_parameters > 1 and (x.dim() < 2 or not isinstance(shape[1], int)
                                          or shape[1] != module.num_parameters):
            return None
        return shape if _floating_like(module, x) else None
    return None


def _transposed_sizes(module: nn.modules.conv._ConvTransposeNd, x: torch.Tensor,
                      shape: list[Size]) -> list[Size] | None:
    """``(length - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1`` per
    spatial dimension, where that is positive for every length of at least 1 and the output padding
    is one torch accepts; else ``None`` (the layer is run on fakes, and torch's check says why)."""
    nd = len(module.kernel_size)
    if isinstance(module.padding, str) or module.padding_mode != "zeros" or x.dim() != nd + 2 \
            or not isinstance(shape[1], int) or shape[1] != module.in_channels or x.dtype != module.weight.dtype:
        return None
    if _length_one_at_hint(shape):
        return None
    out: list[Size] = []
    for length, k, s, p, d, extra in zip(shape[2:], module.kernel_size, module.stride, module.padding,
                                         module.dilation, module.output_padding, strict=True):
        if extra >= max(s, d) or d * (k - 1) + extra + 1 - 2 * p < 1:
            return None
        out.append((length - 1) * s - 2 * p + d * (k - 1) + extra + 1)
    return [shape[0], module.out_channels, *out]


def _length_one_at_hint(shape: Sequence[Size]) -> bool:
    """Whether a dynamic size is 1 at its hint. Such a convolution is left to torch: its choice of
    backend records that the length equals 1 (``Eq(L, 1)``), and later lowerings rely on it. Silero
    VAD's decoder has an If on whether its one frame is 1 long (a TorchScript ``squeeze(-1)``); after
    torch's run the If is decided at conversion, after a rule's answer it is not, and its branches
    (of different ranks) cannot both be kept, so the file would not convert."""
    return any(isinstance(s, torch.SymInt) and s.node.hint == 1 for s in shape)


def _floating_like(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``x`` is a float tensor of the dtype of the layer's parameters (no promotion)."""
    return x.dtype.is_floating_point and all(p.dtype == x.dtype for p in module.parameters())
