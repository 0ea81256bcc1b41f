"""What conversion remembers of each fused function, for reports and for quantization."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IdiomUse:
    """One recognised function in the converted model: its kind, the ONNX nodes it replaced (the
    last one, ``terminal``, is the node its line of ``forward`` is attributed to) and the tensors
    that only existed between them (``internal``: no FX node computes them)."""

    kind: str
    nodes: tuple[str, ...]
    output: str
    internal: tuple[str, ...]

    @property
    def terminal(self) -> str:
        return self.nodes[-1]
