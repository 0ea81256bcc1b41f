"""Python values written as code in generated source: arguments, index expressions, constants."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .nested import map_leaves
from .values import SymElem, Value

# How a tensor value is referred to in code (``Emitter.ref``: a local, ``self.attr`` or a literal).
Reference = Callable[[Value], str]


def format_code(obj: Any, ref: Reference) -> str:
    """``obj`` (a Value, SymElem, number, dtype, or a list/tuple of them) as a Python expression."""
    if isinstance(obj, Value):
        return ref(obj)
    if isinstance(obj, SymElem):
        return obj.code
    if isinstance(obj, list):
        return "[" + ", ".join(format_code(o, ref) for o in obj) + "]"
    if isinstance(obj, tuple):
        inner = ", ".join(format_code(o, ref) for o in obj)
        return f"({inner},)" if len(obj) == 1 else f"({inner})"
    if isinstance(obj, torch.dtype):
        return str(obj)
    if isinstance(obj, float):
        return SymElem.of(obj).code
    if isinstance(obj, (bool, int, str)) or obj is None:
        return repr(obj)
    if isinstance(obj, torch.Size):
        return format_code(tuple(obj), ref)
    raise TypeError(f"cannot write {type(obj).__name__} into generated code")


def format_arguments(args: Sequence[Any], kwargs: dict[str, Any], ref: Reference) -> str:
    """The text between the parentheses of a call."""
    parts = [format_code(a, ref) for a in args]
    parts += [f"{k}={format_code(v, ref)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def format_index(item: Any, ref: Reference) -> str:
    """One item of a subscript: ``start:stop[:step]`` for a slice, else the value."""
    if isinstance(item, slice):
        parts = ["" if b is None else format_code(b, ref) for b in (item.start, item.stop)]
        text = f"{parts[0]}:{parts[1]}"
        return text + (f":{format_code(item.step, ref)}" if item.step is not None else "")
    return format_code(item, ref)


def literal_tensor(t: torch.Tensor) -> str:
    """``torch.tensor(...)`` code reproducing a small constant exactly."""
    data = t.tolist()
    if t.is_floating_point():
        data = map_leaves(data, lambda x: _FloatCode(SymElem.of(float(x)).code))
    return f"torch.tensor({data!r}, dtype={t.dtype})"


class _FloatCode(str):
    def __repr__(self) -> str:
        return str(self)
