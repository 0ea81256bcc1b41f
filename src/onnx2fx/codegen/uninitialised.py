"""Building layers whose initial values will be replaced anyway, without computing them.

Lowering builds every layer (``nn.Conv2d(...)``) on the meta device to learn its parameters'
shapes, and instantiation builds the generated ``Model`` there before the ONNX weights are bound.
Each constructor still runs ``reset_parameters``, whose ``torch.nn.init`` calls dispatch through
the meta device context for nothing: their results are never read. Inside
:func:`initialisers_skipped` those initialisers leave the tensor as it is, and the layers that
conversion builds most (convolutions, linear and normalisation layers) do not run their
``reset_parameters`` at all (its fan-in arithmetic was a quarter of building a convolution).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

# The in-place initialisers layers call from reset_parameters (torch.nn.init, looked up at call time).
_INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                 "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                 "sparse_")


# Layer classes whose own reset_parameters only initialises their parameters and buffers.
_RESET_BY = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
             nn.RMSNorm, nn.PReLU, nn.modules.rnn.RNNBase)


def _unchanged(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def _not_reset(self: nn.Module) -> None:
    return None


@contextmanager
def initialisers_skipped() -> Iterator[None]:
    """``torch.nn.init``'s in-place initialisers do nothing while the block runs (conversion is
    single-threaded; the originals are restored even when a constructor raises)."""
    saved = {name: getattr(torch.nn.init, name) for name in _INITIALISERS if hasattr(torch.nn.init, name)}
    resets = [(cls, cls.__dict__["reset_parameters"]) for cls in _RESET_BY if "reset_parameters" in cls.__dict__]
    for name in saved:
        setattr(torch.nn.init, name, _unchanged)
    for cls, _ in resets:
        cls.reset_parameters = _not_reset  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)
        for cls, method in resets:
            cls.reset_parameters = method  # type: ignore[method-assign]
