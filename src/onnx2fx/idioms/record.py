"""What conversion remembers of each fused function, for reports and for quantization."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IdiomUse:
    """One recognised function in the converted model: its kind, the ONNX nodes it replaced (the
    last one, ``terminal``, is the node its line of ``forward`` is attributed to), the tensor it is
    applied to and its result, and the tensors that only existed between them (``internal``: no FX
    node computes them)."""

    kind: str
    nodes: tuple[str, ...]
    input: str
    output: str
    internal: tuple[str, ...]
    # What the function needs besides its input: epsilon, reduction axes, weight / bias initializers.
    params: tuple[tuple[str, object], ...] = ()

    @property
    def terminal(self) -> str:
        return self.nodes[-1]
