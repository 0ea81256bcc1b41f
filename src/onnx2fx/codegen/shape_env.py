"""The shape environment that conversion evaluates every emitted call in.

Dynamic input dimensions are ``torch.SymInt``s with a *hint*: one arbitrary size (see
``lowering.BATCH_HINT`` / ``OTHER_DIM_HINT``) that torch uses where it must decide a comparison.
Two settings keep that arbitrary size out of the result:

- ``torch._check`` on a symbolic size (reflect padding smaller than the input, ...) is recorded as a
  run-time assertion instead of being decided on the hint, as torch.export does
  (``prefer_deferred_runtime_asserts_over_guards``): a check that holds at run time must not fail
  conversion because the hint happens not to satisfy it.
- Such an assertion narrows the symbol's range (``s1 > 64``); the hint then moves into the range
  (65) instead of the shape environment rejecting its own hint. Later decisions are taken on a
  size the model accepts.
"""

from __future__ import annotations

from typing import Any

import sympy
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.utils._sympy.value_ranges import ValueRanges


class ConversionShapeEnv(ShapeEnv):
    """A ``ShapeEnv`` whose checks on symbolic sizes are deferred to run time and whose hints
    follow the ranges those checks establish."""

    def __init__(self) -> None:
        super().__init__(duck_shape=False, prefer_deferred_runtime_asserts_over_guards=True)

    def _update_var_to_range(self, symbol: sympy.Symbol, vr: ValueRanges, *args: Any, **kwargs: Any) -> None:
        hint = self.backed_var_to_val.get(symbol)
        if hint is not None:
            old = self.var_to_range.get(symbol)
            new = vr if old is None else old & vr
            if not new.is_bool and hint not in new and new.lower <= new.upper:
                self.backed_var_to_val[symbol] = sympy.Integer(int(new.lower if hint < new.lower else new.upper))
        super()._update_var_to_range(symbol, vr, *args, **kwargs)
