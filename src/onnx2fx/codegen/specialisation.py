"""Dynamic input dimensions, and the ones lowering had to fix.

A dynamic dimension of a graph input is a size symbol of the shape environment. Torch decides a
comparison of a symbolic size on its hint and records the outcome there; an equality with a number
replaces the symbol by that number, and every size computed afterwards is a plain int that would be
written into ``model.py`` as a literal. :func:`new_specialisations` reads those outcomes after each
evaluated call, so that ``model.py`` checks them at run time instead of silently computing with the
wrong size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch.fx.experimental.symbolic_shapes import ShapeEnv

from .emitted import NodeInfo


@dataclass(frozen=True)
class DynamicDim:
    """A dimension of a graph input that the ONNX file leaves dynamic."""

    input_code: str  # the input's parameter name in ``forward``
    onnx_name: str
    axis: int


@dataclass(frozen=True)
class Specialisation:
    """A dynamic input dimension that lowering had to fix: to one size (an op whose conversion-time
    evaluation compared it with a constant), or to another dynamic dimension (a comparison of two
    sizes decided on their hints). ``model.py`` checks it at run time instead of silently computing
    with the wrong size."""

    dim: DynamicDim
    value: int | DynamicDim
    node: str | None
    op_type: str | None

    def _requirement(self) -> tuple[str, str]:
        """The condition as code and in words."""
        if isinstance(self.value, DynamicDim):
            other = self.value
            return (f"{self.dim.input_code}.shape[{self.dim.axis}] == {other.input_code}.shape[{other.axis}]",
                    f"equal to input {other.onnx_name!r} dimension {other.axis}")
        return f"{self.dim.input_code}.shape[{self.dim.axis}] == {self.value}", str(self.value)

    def check_line(self) -> str:
        """The run-time check in ``forward``: ``torch._assert`` is traceable (FX records it)."""
        condition, required = self._requirement()
        where = f"node {self.node!r} ({self.op_type})" if self.node else "the conversion"
        message = (f"input {self.dim.onnx_name!r} dimension {self.dim.axis} must be {required}: {where} "
                   f"required it during conversion; convert with --shape {self.dim.onnx_name}=... to choose "
                   "the sizes")
        return f"torch._assert({condition}, {message!r})"

    def describe(self) -> str:
        where = f"node {self.node!r} ({self.op_type})" if self.node else "the conversion"
        _, required = self._requirement()
        return (f"dynamic dimension {self.dim.axis} of input {self.dim.onnx_name!r} must be {required} (required "
                f"by {where}); model.py checks it at run time (choose the sizes with --shape "
                f"{self.dim.onnx_name}=...)")


def new_specialisations(env: ShapeEnv, dynamic_dims: Mapping[Any, DynamicDim],
                        specialised: Mapping[Any, Specialisation], node: NodeInfo | None) -> dict[Any, Specialisation]:
    """The dynamic input dimensions (by symbol, in ``dynamic_dims``) that the shape environment now
    fixes and that are not yet in ``specialised``, attributed to ``node``: a symbol replaced by a
    number or by another input's symbol, or whose range has shrunk to a single value. By symbol."""
    found = {}
    for symbol, dim in dynamic_dims.items():
        if symbol in specialised:
            continue
        replacement = env.replacements.get(symbol)
        value: int | DynamicDim | None = None
        if replacement is not None and replacement.is_number:
            value = int(replacement)
        elif replacement is not None and replacement in dynamic_dims:
            value = dynamic_dims[replacement]
        else:
            bounds = env.var_to_range.get(symbol)
            value = int(bounds.lower) if bounds is not None and bounds.is_singleton() else None
        if value is not None:
            found[symbol] = Specialisation(dim, value, node.name if node else None, node.op_type if node else None)
    return found
