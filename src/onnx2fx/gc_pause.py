"""Pausing Python's cyclic garbage collector while a conversion builds its objects.

A conversion creates hundreds of thousands of small, long-lived objects (fake tensors, size
expressions, FX nodes, modules, code lines) in a process where torch and sympy already hold a few
hundred thousand; every full collection walks all of them, and collections triggered by the
allocations took up to half of a static conversion's time (1.2 s of 1.5 s of a dynamic one).
``OnnxToFxConverter.convert`` pauses it for the whole conversion, ``lower_graph`` for lowering when
called on its own; the pauses nest.
Nothing a conversion makes needs collecting before it ends: reference counting frees what it drops,
and the collector, restored afterwards, finds any cycles then.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block, then restore the state it had (a caller that
    disabled it keeps it disabled)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
