"""Standard functions written out by exporters, recognised and converted back into one call.

:mod:`.patterns` finds them on the ONNX graph (op types, constants, axes, private intermediates);
:mod:`.emit` writes ``F.gelu``, ``F.silu``, ``F.hardswish``, ``nn.LayerNorm``, ``nn.RMSNorm``,
``F.scaled_dot_product_attention`` or ``nn.Linear`` for each (``linear`` only on request: see
:data:`DEFAULT_IDIOMS`). The ONNX graph itself is not changed: the fused nodes are listed
(:class:`IdiomUse`) so that quantization treats their intermediate tensors as never materialised.
"""

from __future__ import annotations

from .emit import IdiomDeclined, lower_idiom
from .patterns import DEFAULT_IDIOMS, IDIOM_KINDS, IdiomMatch, find_idioms, idiom_kinds
from .record import IdiomUse

__all__ = ["DEFAULT_IDIOMS", "IDIOM_KINDS", "IdiomDeclined", "IdiomMatch", "IdiomUse", "find_idioms", "idiom_kinds",
           "lower_idiom"]
