"""Walking and mapping the nested lists, tuples and dicts that op handlers pass as arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConversionError


def walk(obj: Any) -> list[Any]:
    """The leaves of ``obj`` (lists, tuples and dict values opened recursively), in order."""
    if isinstance(obj, (list, tuple)):
        return [x for o in obj for x in walk(o)]
    if isinstance(obj, dict):
        return [x for o in obj.values() for x in walk(o)]
    return [obj]


def map_leaves(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """``obj`` with the same nesting and ``fn`` applied to every leaf."""
    if isinstance(obj, list):
        return [map_leaves(o, fn) for o in obj]
    if isinstance(obj, tuple):
        return tuple(map_leaves(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: map_leaves(v, fn) for k, v in obj.items()}
    return fn(obj)


def as_tuple(result: Any, n_outputs: int) -> tuple[Any, ...]:
    """The ``n_outputs`` results of a call as a tuple (one result is not unpacked)."""
    if n_outputs == 1:
        return (result,)
    results = tuple(result)
    if len(results) != n_outputs:
        raise ConversionError(f"expected {n_outputs} results, got {len(results)}")
    return results
