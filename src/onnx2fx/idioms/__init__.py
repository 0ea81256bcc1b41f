"""Standard functions written out by exporters, recognised and converted back into one call.

:mod:`.patterns` finds them on the ONNX graph (op types, constants, axes, private intermediates);
:mod:`.emit` writes ``F.gelu``, ``F.silu``, ``F.hardswish``, ``nn.LayerNorm``, ``nn.RMSNorm`` or
``nn.Linear`` for each. The ONNX graph itself is not changed: the fused nodes are listed
(:class:`IdiomUse`) so that quantization treats their intermediate tensors as never materialised.
"""

from __future__ import annotations

from .emit import IdiomDeclined, lower_idiom
from .patterns import IdiomMatch, find_idioms
from .record import IdiomUse

__all__ = ["IdiomDeclined", "IdiomMatch", "IdiomUse", "find_idioms", "lower_idiom"]
