"""Building layers whose initial values will be replaced anyway, without computing them.

Lowering builds every layer (``nn.Conv2d(...)``) on the meta device to learn its parameters'
shapes, and instantiation builds the generated ``Model`` there before the ONNX weights are bound.
Each constructor still runs ``reset_parameters``, whose ``torch.nn.init`` calls dispatch through
the meta device context for nothing: their results are never read. Inside
:func:`initialisers_skipped` those initialisers leave the tensor as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# The in-place initialisers layers call from reset_parameters (torch.nn.init, looked up at call time).
_INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                 "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                 "sparse_")


def _unchanged(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


@contextmanager
def initialisers_skipped() -> Iterator[None]:
    """``torch.nn.init``'s in-place initialisers do nothing while the block runs (conversion is
    single-threaded; the originals are restored even when a constructor raises)."""
    saved = {name: getattr(torch.nn.init, name) for name in _INITIALISERS if hasattr(torch.nn.init, name)}
    for name in saved:
        setattr(torch.nn.init, name, _unchanged)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)
