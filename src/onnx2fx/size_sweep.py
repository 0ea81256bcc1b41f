"""Size sweeps: every dynamic dimension of a model's inputs, tried at several sizes.

A conversion that matches onnxruntime at the size it was validated at can still be wrong at another:
a size fixed during conversion and written into the code, an interpolation that rounds differently
at odd sizes, a padding that is valid for long inputs only. One passing size proves little, so a
sweep varies each dynamic dimension in turn (the others stay at their base size) over sizes chosen
to break such assumptions: 1, a small prime, half the base size (a multiple of 32 where possible),
the base size, and a large size that is not a multiple of the usual strides. Dimensions that share
a name (ONNX ``dim_param``) are one dimension and vary together; unnamed dynamic dimensions vary
alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Base sizes of dynamic dimensions when the user gives none: the batch (axis 0) and the others.
BATCH_SIZE = 2
OTHER_DIM_SIZE = 64


@dataclass(frozen=True)
class DynamicDimension:
    """One dynamic dimension: where it occurs and the size it has while others are swept."""

    label: str  # its dim_param, or "input[axis]" when unnamed
    axes: tuple[tuple[str, int], ...]  # (input name, axis) pairs that carry it
    base: int

    @property
    def is_batch(self) -> bool:
        return all(axis == 0 for _, axis in self.axes)

    def sizes(self) -> list[int]:
        """The sizes to try, ascending; the base size among them."""
        if self.is_batch:
            candidates = {1, 3, self.base, max(8, 2 * self.base + 1)}
        else:
            # Half the base, as a multiple of 32 where the base allows: a size that strided models
            # (which reject the odd sizes) accept too, so every dimension is tried at a second valid size.
            half = self.base // 2 // 32 * 32 if self.base >= 64 else max(2, self.base // 2)
            candidates = {1, 7, half, self.base, self.base + self.base // 2 + 1}
        return sorted(candidates)


@dataclass
class SweepPoint:
    """The comparison at one size of one dimension.

    ``status``: ``passed``; ``failed`` (outputs differ beyond the tolerance); ``error`` (the
    converted model raised where onnxruntime ran); ``onnxruntime_rejects`` (onnxruntime itself
    cannot run the model at this size, so it is no failure of the conversion)."""

    dimension: str
    size: int
    input_shapes: dict[str, list[int]]
    status: str
    relative_error: float | None = None
    note: str = ""
    outputs: dict[str, float] = field(default_factory=dict)  # output -> relative error (%)

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "onnxruntime_rejects")


def base_shapes(specs: Sequence[Any], input_shapes: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """Every input's shape with its dynamic dimensions at their base sizes: the user's
    ``input_shapes`` where given, else the batch and other-dimension defaults."""
    shapes = {}
    for spec in specs:
        given = input_shapes.get(spec.name)
        if given is not None:
            shapes[spec.name] = [int(d) for d in given]
        else:
            shapes[spec.name] = [d if _static(d) else (BATCH_SIZE if i == 0 else OTHER_DIM_SIZE)
                                 for i, d in enumerate(spec.shape)]
    return shapes


def dynamic_dimensions(specs: Sequence[Any], input_shapes: Mapping[str, Sequence[int]]) -> list[DynamicDimension]:
    """The dynamic dimensions of the inputs ``specs`` (onnxruntime's ``NodeArg``s: a shape entry is
    an int when static, a string when named, ``None`` when unnamed), in input order."""
    bases = base_shapes(specs, input_shapes)
    named: dict[str, list[tuple[str, int]]] = {}
    dims: list[DynamicDimension | str] = []  # a str stands for the named dimension, placed at first use
    for spec in specs:
        for axis, d in enumerate(spec.shape):
            if _static(d):
                continue
            if isinstance(d, str) and re.search(r"\w", d):  # "?" is a placeholder, not a shared name
                if d not in named:
                    named[d] = []
                    dims.append(d)
                named[d].append((spec.name, axis))
            else:
                dims.append(DynamicDimension(f"{spec.name}[{axis}]", ((spec.name, axis),), bases[spec.name][axis]))
    result = []
    for d in dims:
        if isinstance(d, str):
            axes = tuple(named[d])
            first_input, first_axis = axes[0]
            result.append(DynamicDimension(d, axes, bases[first_input][first_axis]))
        else:
            result.append(d)
    return result


def shapes_at(dim: DynamicDimension, size: int, bases: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """The base shapes with ``dim`` set to ``size`` wherever it occurs."""
    shapes = {name: list(shape) for name, shape in bases.items()}
    for name, axis in dim.axes:
        shapes[name][axis] = size
    return shapes


def _static(d: Any) -> bool:
    return isinstance(d, int) and d > 0
