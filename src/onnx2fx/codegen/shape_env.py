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

:meth:`ConversionShapeEnv.refusing_specialisation` lets the emitter try the fast evaluation of a
call first (torch's C++ meta kernels, no Python decompositions) and fall back to the symbolic
decompositions only where the fast one would fix a dynamic size to a number.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sympy
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.utils._sympy.value_ranges import ValueRanges


class SpecialisationRefused(BaseException):  # noqa: N818 - a signal, not an error to report
    """Raised inside :meth:`ConversionShapeEnv.refusing_specialisation` before a size symbol is
    fixed to a number. A ``BaseException``: torch code that catches ``Exception`` lets it through."""


class ConversionShapeEnv(ShapeEnv):
    """A ``ShapeEnv`` whose checks on symbolic sizes are deferred to run time and whose hints
    follow the ranges those checks establish."""

    def __init__(self) -> None:
        super().__init__(duck_shape=False, prefer_deferred_runtime_asserts_over_guards=True)
        self._refusing = False
        # Fake tensors by their sizes as written and dtype, for ``shape_rules.fake_of``.
        self.fake_templates: dict[tuple[tuple[Any, ...], Any], Any] = {}
        self._lower_bounds: dict[sympy.Expr, Any] = {}
        # Output lengths of sliding windows by (input length as written, window reach, stride), for
        # ``shape_rules``: a network repeats the same window on the same length many times, and
        # each new symbolic length costs sympy a millisecond.
        self.window_lengths: dict[tuple[Any, int, int], Any] = {}

    def lower_bound(self, expr: sympy.Expr) -> Any:
        """The least value of a size expression over its symbols' ranges. Cached: ranges only narrow
        during conversion, so a cached bound stays a bound (at worst a weaker one)."""
        bound = self._lower_bounds.get(expr)
        if bound is None:
            bound = self._lower_bounds[expr] = self.bound_sympy(expr).lower
        return bound

    @contextmanager
    def refusing_specialisation(self) -> Iterator[None]:
        """Within the block, fixing a size symbol to a number raises :class:`SpecialisationRefused`
        before the shape environment changes."""
        outer, self._refusing = self._refusing, True
        try:
            yield
        finally:
            self._refusing = outer

    def _set_replacement(self, a: sympy.Symbol, tgt: sympy.Expr, msg: str) -> None:
        if self._refusing and tgt.is_number and a in self.backed_var_to_val and self.replacements.get(a) != tgt:
            raise SpecialisationRefused(f"{a} = {tgt}")
        super()._set_replacement(a, tgt, msg)

    def _update_var_to_range(self, symbol: sympy.Symbol, vr: ValueRanges, *args: Any, **kwargs: Any) -> None:
        hint = self.backed_var_to_val.get(symbol)
        if hint is not None:
            old = self.var_to_range.get(symbol)
            new = vr if old is None else old & vr
            if self._refusing and new.is_singleton() and not (old is not None and old.is_singleton()):
                raise SpecialisationRefused(f"{symbol} in {new}")
            if not new.is_bool and hint not in new and new.lower <= new.upper:
                self.backed_var_to_val[symbol] = sympy.Integer(int(new.lower if hint < new.lower else new.upper))
        super()._update_var_to_range(symbol, vr, *args, **kwargs)
