"""Values flowing through lowering: what is known about an ONNX tensor at conversion time.

A :class:`Value` stands for one ONNX tensor. It carries a fake tensor (symbolic shape and dtype,
from torch's FakeTensor machinery) so handlers can reason about ranks and sizes, an optional
concrete tensor when the value is a compile-time constant, and, for small integer tensors that
describe shapes, the individual elements as :class:`SymElem` so that
``Shape -> Gather -> Concat -> Reshape`` chains become Python ints and ``x.shape[i]`` expressions
in the generated code instead of tensors (which ``torch.fx.symbolic_trace`` cannot follow).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class SymElem:
    """One scalar known at conversion time: its Python code and its (possibly symbolic) value.

    ``code`` evaluates in ``forward`` to the same number ``value`` stands for: an int literal when
    the value is static, or an expression such as ``x.shape[0] * 8`` when it depends on a dynamic
    input dimension (then ``value`` is a ``torch.SymInt``).
    """

    code: str
    value: Any

    @staticmethod
    def of(value: Any) -> SymElem:
        if isinstance(value, SymElem):
            return value
        if isinstance(value, bool):
            return SymElem(repr(value), value)
        if isinstance(value, int):
            return SymElem(str(value), value)
        if isinstance(value, float):
            return SymElem(_float_code(value), value)
        raise TypeError(f"cannot make a SymElem from {type(value).__name__}")

    @property
    def is_static(self) -> bool:
        return isinstance(self.value, (int, float, bool))

    def _binary(self, other: Any, fn: Callable[[Any, Any], Any], symbol: str, reverse: bool = False) -> SymElem:
        other = SymElem.of(other)
        left, right = (other, self) if reverse else (self, other)
        value = fn(left.value, right.value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return SymElem.of(value)
        return SymElem(f"({left.code} {symbol} {right.code})", value)

    def __add__(self, o: Any) -> SymElem:
        return self._binary(o, operator.add, "+")

    def __radd__(self, o: Any) -> SymElem:
        return self._binary(o, operator.add, "+", reverse=True)

    def __sub__(self, o: Any) -> SymElem:
        return self._binary(o, operator.sub, "-")

    def __rsub__(self, o: Any) -> SymElem:
        return self._binary(o, operator.sub, "-", reverse=True)

    def __mul__(self, o: Any) -> SymElem:
        return self._binary(o, operator.mul, "*")

    def __rmul__(self, o: Any) -> SymElem:
        return self._binary(o, operator.mul, "*", reverse=True)

    def __floordiv__(self, o: Any) -> SymElem:
        return self._binary(o, operator.floordiv, "//")

    def __mod__(self, o: Any) -> SymElem:
        return self._binary(o, operator.mod, "%")

    def __neg__(self) -> SymElem:
        if self.is_static:
            return SymElem.of(-self.value)
        return SymElem(f"(-{self.code})", -self.value)


def _float_code(value: float) -> str:
    if value != value:
        return "float('nan')"
    if value in (float("inf"), float("-inf")):
        return "float('inf')" if value > 0 else "float('-inf')"
    return repr(value)


# A parameter path as PyTorch's exporters name initializers after the module's state dict
# ("blocks.0.ls1.gamma"), as opposed to the names they give constants ("onnx::Mul_12", "val_3",
# "/blocks.0/Constant_output_0", "scalar_tensor_default").
_PARAMETER_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*\.[A-Za-z_][A-Za-z0-9_]*")


def names_a_parameter(name: str) -> bool:
    """Whether an initializer's name is a dotted module path ending in an attribute name: a learned
    parameter of the exported module, kept trainable even when it is one number."""
    return _PARAMETER_PATH.fullmatch(name) is not None


@dataclass(eq=False)
class Value:
    """An ONNX tensor during lowering.

    Exactly one of these holds: ``code`` names a variable (or attribute) in the generated
    ``forward``; or ``const`` is a concrete tensor not yet referenced by code (it is materialised
    as a literal, buffer or parameter the first time generated code needs it).
    """

    onnx_name: str
    fake: torch.Tensor | None
    code: str | None = None
    const: torch.Tensor | None = None
    elements: list[SymElem] | None = None
    scalar: bool = False  # with ``elements``: the tensor is 0-d (one element)
    origin_initializer: str | None = None  # the ONNX initializer this constant came from
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype:
        if self.const is not None:
            return self.const.dtype
        assert self.fake is not None, f"value {self.onnx_name!r} has no type information"
        return self.fake.dtype

    @property
    def rank(self) -> int:
        if self.const is not None:
            return self.const.dim()
        assert self.fake is not None, f"value {self.onnx_name!r} has no shape information"
        return self.fake.dim()

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def trainable(self) -> bool:
        """A float initializer that stays an ``nn.Parameter`` in the generated module (never folded,
        never written as a literal): every one with several elements, and a one-element one whose
        name is a module's parameter path (:func:`names_a_parameter`), such as a learned layer scale."""
        t = self.const
        if self.origin_initializer is None or t is None or not t.is_floating_point():
            return False
        return t.numel() > 1 or names_a_parameter(self.origin_initializer)

    def static_shape(self) -> list[int | None]:
        """Sizes that are the same for every input; ``None`` for dimensions that vary."""
        if self.const is not None:
            return list(self.const.shape)
        assert self.fake is not None
        return [d if isinstance(d, int) else None for d in self.fake.shape]
