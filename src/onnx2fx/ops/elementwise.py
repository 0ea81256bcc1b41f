"""Elementwise math, activations, comparisons and casts."""

from __future__ import annotations

import operator

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import SymElem, Value
from ..tensors import SUB_BYTE_STORAGE, torch_dtype
from . import casting
from .registry import onnx_op
from .shape import decide

_UNARY = {
    "Relu": "torch.relu", "Sigmoid": "torch.sigmoid", "Tanh": "torch.tanh", "Erf": "torch.erf",
    "Exp": "torch.exp", "Log": "torch.log", "Sqrt": "torch.sqrt", "Reciprocal": "torch.reciprocal",
    "Neg": "torch.neg", "Abs": "torch.abs", "Floor": "torch.floor", "Ceil": "torch.ceil",
    "Sin": "torch.sin", "Cos": "torch.cos", "Tan": "torch.tan", "Asin": "torch.asin", "Acos": "torch.acos",
    "Atan": "torch.atan", "Sinh": "torch.sinh", "Cosh": "torch.cosh", "Asinh": "torch.asinh",
    "Acosh": "torch.acosh", "Atanh": "torch.atanh", "Sign": "torch.sign", "Round": "torch.round",
    "Not": "torch.logical_not", "IsNaN": "torch.isnan", "Softsign": "F.softsign", "Mish": "F.mish",
}
# Unary ops whose torch functions lack uint16/32/64 kernels (see ``OpImpl.widened_for_unsigned``).
_UNARY_WIDENED_FOR_UNSIGNED = frozenset({"Neg", "Abs", "Sign"})


def _register_unary(op_type: str, fn: str) -> None:
    def lower(g: Emitter, x: Value) -> Value:
        return g.call(fn, x)

    lower.__name__ = f"lower_{op_type.lower()}"
    lower.__doc__ = f"{op_type}(x) -> {fn}(x)"
    onnx_op(op_type, 1, widened_for_unsigned=op_type in _UNARY_WIDENED_FOR_UNSIGNED)(lower)


for _op, _fn in _UNARY.items():
    _register_unary(_op, _fn)


# ------------------------------------------------------------------------------ binary arithmetic
def _elementwise_on_elements(g: Emitter, a: Value, b: Value, fn, dtype: torch.dtype = torch.int64) -> Value | None:
    """Shape arithmetic (``Shape`` elements combined with ints) stays in Python at conversion time.

    ``fn`` maps two :class:`SymElem` to one, or to ``None`` when the result cannot be known before
    run time (then the op is emitted as tensor code).
    """
    if (a.elements is None and b.elements is None) or a.rank > 1 or b.rank > 1:
        return None
    ea, eb = g.int_list(a), g.int_list(b)
    if ea is None or eb is None or (len(ea) != len(eb) and 1 not in (len(ea), len(eb))):
        return None
    n = max(len(ea), len(eb))
    ea, eb = (ea * n if len(ea) == 1 else ea), (eb * n if len(eb) == 1 else eb)
    results = [fn(x, y) for x, y in zip(ea, eb)]
    if any(r is None for r in results):
        return None
    return g.elements_value(results, scalar=a.rank == 0 and b.rank == 0, dtype=dtype)


def _decided(compare):
    """A comparison of shape elements, known at conversion time when the sizes' ranges decide it
    (a dynamic size is never negative, so ``x.shape[0] == -1`` is False)."""

    def fn(x: SymElem, y: SymElem) -> SymElem | None:
        result = decide(compare(x.value, y.value))
        return None if result is None else SymElem.of(result)

    return fn


def _trunc_div(x: SymElem, y: SymElem) -> SymElem:
    if x.is_static and y.is_static:
        q = abs(x.value) // abs(y.value)
        return SymElem.of(q if (x.value >= 0) == (y.value >= 0) else -q)
    return x // y  # run-time sizes are non-negative, where floor and truncation agree


@onnx_op("Add", 1, widened_for_unsigned=True)
def add(g: Emitter, a: Value, b: Value, **legacy: object) -> Value:
    return _elementwise_on_elements(g, a, b, lambda x, y: x + y) or _infix(g, "+", a, b)


@onnx_op("Sub", 1, widened_for_unsigned=True)
def sub(g: Emitter, a: Value, b: Value, **legacy: object) -> Value:
    return _elementwise_on_elements(g, a, b, lambda x, y: x - y) or _infix(g, "-", a, b)


@onnx_op("Mul", 1)
def mul(g: Emitter, a: Value, b: Value, **legacy: object) -> Value:
    return _elementwise_on_elements(g, a, b, lambda x, y: x * y) or _infix(g, "*", a, b)


@onnx_op("Div", 1, widened_for_unsigned=True)
def div(g: Emitter, a: Value, b: Value, **legacy: object) -> Value:
    if a.dtype.is_floating_point or a.dtype.is_complex:
        return _infix(g, "/", a, b)
    return _elementwise_on_elements(g, a, b, _trunc_div) or g.call("torch.div", a, b, rounding_mode="trunc")


def _infix(g: Emitter, symbol: str, a: Value, b: Value) -> Value:
    """``a <op> b`` with one-element constants written as Python numbers (``x * 0.5``)."""
    if a.const is not None and b.const is not None:
        return g.operator(symbol, a, b)  # folds
    left = _number(a) if _is_number(a, b) else a
    right = _number(b) if _is_number(b, a) else b
    return g.operator(symbol, left, right)


def _is_number(v: Value, other: Value) -> bool:
    """Whether ``v`` can be written as a Python number without changing the result's type or shape.

    One-element constants (initializers included) are written into the code either way, so
    ``x * 0.5`` loses nothing over ``x * torch.tensor(0.5)``; a learned one (``v.trainable``, a
    layer scale named ``blocks.0.ls1.gamma``) stays a parameter.
    """
    t = v.const
    return (t is not None and t.numel() == 1 and not t.is_complex() and other.const is None and not v.trainable
            and t.dtype == other.dtype and (t.dim() == 0 or other.rank >= t.dim()))


def _number(v: Value) -> int | float | bool:
    assert v.const is not None
    return v.const.reshape(()).item()


@onnx_op("Pow", 1)
def pow_(g: Emitter, x: Value, y: Value) -> Value:
    """``torch.pow`` (``torch.square`` for a constant 2); the result keeps the base's type as in ONNX."""
    if y.const is not None and y.const.numel() == 1 and y.const.dim() <= x.rank:
        exponent = y.const.reshape(()).item()
        if exponent == 2:
            return g.call("torch.square", x)
        result = g.call("torch.pow", x, float(exponent) if x.dtype.is_floating_point else exponent)
    else:
        result = g.call("torch.pow", x, y)
    return result if result.dtype == x.dtype else g.method(result, "to", x.dtype)


@onnx_op("Mod", 10, widened_for_unsigned=True)
def mod(g: Emitter, a: Value, b: Value, *, fmod: int = 0) -> Value:
    return g.call("torch.fmod" if fmod else "torch.remainder", a, b)


_COMPARE = {"Equal": "torch.eq", "Less": "torch.lt", "Greater": "torch.gt", "LessOrEqual": "torch.le",
            "GreaterOrEqual": "torch.ge", "And": "torch.logical_and", "Or": "torch.logical_or",
            "Xor": "torch.logical_xor", "BitwiseAnd": "torch.bitwise_and", "BitwiseOr": "torch.bitwise_or",
            "BitwiseXor": "torch.bitwise_xor"}


_SHAPE_COMPARE = {"Equal": operator.eq, "Less": operator.lt, "Greater": operator.gt,
                  "LessOrEqual": operator.le, "GreaterOrEqual": operator.ge}
# Comparisons whose torch functions lack uint16/32/64 kernels (see ``OpImpl.widened_for_unsigned``).
_COMPARE_WIDENED_FOR_UNSIGNED = frozenset({"Less", "Greater", "LessOrEqual", "GreaterOrEqual"})


def _register_binary(op_type: str, fn: str) -> None:
    compare = _decided(_SHAPE_COMPARE[op_type]) if op_type in _SHAPE_COMPARE else None

    def lower(g: Emitter, a: Value, b: Value, **legacy: object) -> Value:
        if compare is None:
            return g.call(fn, a, b)
        decided = _elementwise_on_elements(g, a, b, compare, dtype=torch.bool)
        if decided is not None:
            return decided
        return g.call(fn, a, _number(b) if _is_number(b, a) else b)  # torch.gt(x, 0.25)

    lower.__name__ = f"lower_{op_type.lower()}"
    lower.__doc__ = f"{op_type}(a, b) -> {fn}(a, b), decided at conversion time on shape elements"
    onnx_op(op_type, 1, widened_for_unsigned=op_type in _COMPARE_WIDENED_FOR_UNSIGNED)(lower)


for _op, _fn in _COMPARE.items():
    _register_binary(_op, _fn)


def _variadic(g: Emitter, fn: str, inputs: tuple[Value, ...], bound: str | None = None) -> Value:
    """``fn`` over the inputs, pairwise. With ``bound`` (Max: ``"min"``, Min: ``"max"``), a
    one-element constant operand becomes that bound of ``torch.clamp`` (``torch.clamp(x, min=-0.4)``),
    which gives the same values, NaN and signed zeros included, without making a tensor of the
    constant on every call."""
    result = inputs[0]
    for other in inputs[1:]:
        if bound is not None and _is_number(other, result):
            result = g.call("torch.clamp", result, **{bound: _number(other)})
        elif bound is not None and _is_number(result, other):
            result = g.call("torch.clamp", other, **{bound: _number(result)})
        else:
            result = g.call(fn, result, other)
    return result


@onnx_op("Max", 1, widened_for_unsigned=True)
def max_(g: Emitter, *inputs: Value, **legacy: object) -> Value:
    return _variadic(g, "torch.maximum", inputs, bound="min")


@onnx_op("Min", 1, widened_for_unsigned=True)
def min_(g: Emitter, *inputs: Value, **legacy: object) -> Value:
    return _variadic(g, "torch.minimum", inputs, bound="max")


@onnx_op("Sum", 1, widened_for_unsigned=True)
def sum_(g: Emitter, *inputs: Value, **legacy: object) -> Value:
    return _variadic(g, "torch.add", inputs)


@onnx_op("Mean", 1, widened_for_unsigned=True)
def mean(g: Emitter, *inputs: Value, **legacy: object) -> Value:
    return g.operator("/", _variadic(g, "torch.add", inputs), float(len(inputs)))


@onnx_op("Where", 9)
def where(g: Emitter, condition: Value, x: Value, y: Value) -> Value:
    cond, ex, ey = (g.int_list(condition) if condition.const is not None else None), g.int_list(x), g.int_list(y)
    if cond is not None and ex is not None and ey is not None and (x.elements or y.elements) \
            and len(cond) == len(ex) == len(ey):
        return g.elements_value([a if c.value else b for c, a, b in zip(cond, ex, ey)])
    if _is_number(y, x):
        return g.call("torch.where", condition, x, _number(y))
    return g.call("torch.where", condition, _number(x) if _is_number(x, y) else x, y)


# ------------------------------------------------------------------------------ activations
@onnx_op("LeakyRelu", 1)
def leaky_relu(g: Emitter, x: Value, *, alpha: float = 0.01, **legacy: object) -> Value:
    return g.call("F.leaky_relu", x, alpha)


@onnx_op("Elu", 1)
def elu(g: Emitter, x: Value, *, alpha: float = 1.0, **legacy: object) -> Value:
    return g.call("F.elu", x, alpha)


@onnx_op("Selu", 1)
def selu(g: Emitter, x: Value, *, alpha: float = 1.67326319217681884765625,
         gamma: float = 1.05070102214813232421875, **legacy: object) -> Value:
    return g.operator("*", g.call("F.elu", x, alpha), gamma)


@onnx_op("Celu", 12)
def celu(g: Emitter, x: Value, *, alpha: float = 1.0) -> Value:
    return g.call("F.celu", x, alpha)


@onnx_op("Softplus", 1)
def softplus(g: Emitter, x: Value) -> Value:
    return g.call("F.softplus", x)


@onnx_op("PRelu", 1)
def prelu(g: Emitter, x: Value, slope: Value, **legacy: object) -> Value:
    """``nn.PReLU`` for a constant slope that is one number or one per channel (shape ``(C, 1, ...)``),
    so the slope stays a trainable parameter; otherwise ``torch.where(x >= 0, x, x * slope)``."""
    shape = list(slope.const.shape) if slope.const is not None and slope.dtype.is_floating_point else None
    n = slope.const.numel() if shape is not None else 0
    channel_axis = 1 - (x.rank - len(shape)) if shape is not None else -1  # slope axis facing x's dim 1
    per_channel = shape is not None and x.rank >= 2 and 0 <= channel_axis < len(shape) \
        and n == x.static_shape()[1] and shape[channel_axis] == n
    assert g.node is not None
    if g.node.opset < 7 and shape == [n] and x.rank >= 2 and n == x.static_shape()[1]:
        per_channel = True  # PRelu-1/6: a slope of shape (C,) is one per channel
    if shape is not None and len(shape) <= x.rank and (n == 1 or per_channel):
        attr = g.add_module("prelu", "nn.PReLU", *([n] if n > 1 else []),
                            **({"dtype": slope.dtype} if slope.dtype != torch.float32 else {}))
        g.bind_parameter(attr, "weight", slope.const.reshape(n), slope.origin_initializer,
                         "reshape" if shape != [n] else None)
        return g.call_module(attr, x)
    return g.call("torch.where", g.call("torch.ge", x, 0.0), x, g.operator("*", x, slope))


@onnx_op("ThresholdedRelu", 10)
def thresholded_relu(g: Emitter, x: Value, *, alpha: float = 1.0) -> Value:
    return g.call("torch.where", g.call("torch.gt", x, alpha), x, 0.0)


@onnx_op("HardSigmoid", 1)
def hard_sigmoid(g: Emitter, x: Value, *, alpha: float = 0.2, beta: float = 0.5, **legacy: object) -> Value:
    """``clamp(alpha * x + beta, 0, 1)`` as written, also for alpha = 1/6: torch's ``F.hardsigmoid``
    computes ``relu6(x + 3) / 6``, whose roundings are up to twice as far from the exact value, and
    in a network of a few such gates (PP-OCRv6's squeeze-excitation blocks) that alone made the
    output 9 times farther from a float64 run than onnxruntime is."""
    return g.call("torch.clamp", g.operator("+", g.operator("*", x, alpha), beta), 0.0, 1.0)


@onnx_op("HardSwish", 14)
def hard_swish(g: Emitter, x: Value) -> Value:
    return g.call("F.hardswish", x)


@onnx_op("Gelu", 20)
def gelu(g: Emitter, x: Value, *, approximate: str = "none") -> Value:
    if approximate not in ("none", "tanh"):
        raise g.unsupported("approximate", f"value {approximate!r} is not 'none' or 'tanh'")
    if approximate == "tanh":
        return g.call("F.gelu", x, approximate="tanh")
    return g.call("F.gelu", x)


@onnx_op("Clip", 1, widened_for_unsigned=True)
def clip_legacy(g: Emitter, x: Value, *, min: float = float("-inf"), max: float = float("inf"),
                **legacy: object) -> Value:
    return _clamp(g, x, min if min != float("-inf") else None, max if max != float("inf") else None)


@onnx_op("Clip", 11, widened_for_unsigned=True)
def clip(g: Emitter, x: Value, lo: Value | None = None, hi: Value | None = None) -> Value:
    def bound(v: Value | None) -> object:
        if v is None:
            return None
        if v.const is not None and v.const.numel() == 1:
            item = v.const.reshape(()).item()
            return float(item) if x.dtype.is_floating_point else int(item)
        return v

    return _clamp(g, x, bound(lo), bound(hi))


def _clamp(g: Emitter, x: Value, lo: object, hi: object) -> Value:
    if lo is None and hi is None:
        return x
    if lo == 0.0 and hi is None:
        return g.call("torch.relu", x)
    if lo == float("-inf"):
        lo = None
    if hi == float("inf"):
        hi = None
    if isinstance(lo, Value) != isinstance(hi, Value) and lo is not None and hi is not None:
        # torch.clamp takes two tensors or two numbers; one of each is rejected by torch.export.
        # Clamping in turn keeps Clip's rule that a min above the max gives the max.
        return g.call("torch.clamp", g.call("torch.clamp", x, min=lo), max=hi)
    if isinstance(lo, Value) or isinstance(hi, Value):
        if hi is None:
            return g.call("torch.clamp", x, min=lo)
        if lo is None:
            return g.call("torch.clamp", x, max=hi)
        return g.call("torch.clamp", x, lo, hi)
    if hi is None:
        return g.call("torch.clamp", x, min=lo)
    if lo is None:
        return g.call("torch.clamp", x, max=hi)
    return g.call("torch.clamp", x, lo, hi)


# ------------------------------------------------------------------------------ types
@onnx_op("Cast", 1)
def cast(g: Emitter, x: Value, *, to: int, saturate: int = 1, round_mode: str = "up") -> Value:
    dtype = torch_dtype(to)
    if x.elements is not None and dtype in (torch.int32, torch.int64):
        return g.elements_value(x.elements, scalar=x.scalar, dtype=dtype)
    if x.dtype == dtype:
        return x
    if dtype in casting.FLOAT8 or dtype == torch.float8_e8m0fnu:
        return casting.to_float8(g, x, dtype, saturate, round_mode)
    if dtype in SUB_BYTE_STORAGE:
        return casting.to_sub_byte(g, x, dtype)
    result = g.method(x, "to", dtype)
    if x.elements is not None and dtype.is_floating_point:
        result.meta["integer_elements"] = x.elements  # sizes as floats: a float Range over them has sizes
    return result


@onnx_op("CastLike", 15, sub_byte_aware=True)
def cast_like(g: Emitter, x: Value, target: Value, *, saturate: int = 1, round_mode: str = "up") -> Value:
    if x.dtype != target.dtype and (target.dtype in casting.FLOAT8 or target.dtype == torch.float8_e8m0fnu):
        return casting.to_float8(g, x, target.dtype, saturate, round_mode)
    if x.dtype != target.dtype and target.dtype in SUB_BYTE_STORAGE:
        return casting.to_sub_byte(g, casting.storage(g, x), target.dtype)
    if x.dtype != target.dtype:
        x = casting.storage(g, x)
    return x if x.dtype == target.dtype else g.method(x, "to", target.dtype)
