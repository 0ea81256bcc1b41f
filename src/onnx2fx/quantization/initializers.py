"""Torch parameters by the ONNX initializers they were made from, and back.

Transformations of the float model before export (cross-layer equalization, bias correction)
change parameters in place. The QDQ writer edits the source ONNX file, not an export of the torch
model, so it must be handed the changed parameters in the initializer's layout; and a
transformation may only change an initializer that exactly one node reads and exactly one torch
tensor holds, or it would silently change another layer too.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.fx

from ..conversion_record import conversion_record
from ..errors import QuantizationError
from .placement import FLOAT, OnnxGraphView


def torch_names(gm: torch.fx.GraphModule) -> dict[str, list[str]]:
    """ONNX initializer -> the torch parameters and buffers made from it (usually one)."""
    names: dict[str, list[str]] = {}
    for name, origin in conversion_record(gm).parameters.items():
        if origin.initializer:
            names.setdefault(origin.initializer, []).append(name)
    return names


def get_tensor(gm: torch.nn.Module, name: str) -> torch.Tensor:
    """The parameter or buffer ``name`` (dotted module path) of ``gm``."""
    module_path, _, attr = name.rpartition(".")
    owner = gm.get_submodule(module_path) if module_path else gm
    return getattr(owner, attr)


def sole_tensor(gm: torch.fx.GraphModule, graph: OnnxGraphView, names: dict[str, list[str]], initializer: str,
                transform_free: bool = True) -> str | None:
    """The torch name of ``initializer`` when changing it changes exactly one ONNX node: a FLOAT
    initializer that one node reads and one torch tensor holds (with the initializer's own layout
    when ``transform_free``), else None."""
    if not initializer or initializer not in graph.initializers or graph.initializers[initializer][0] != FLOAT:
        return None
    if initializer in graph.inputs or len(graph.consumers.get(initializer, [])) != 1:
        return None
    held = names.get(initializer, [])
    if len(held) != 1:
        return None
    if transform_free and conversion_record(gm).transform_of(held[0]) is not None:
        return None
    try:
        tensor = get_tensor(gm, held[0])
    except AttributeError:
        return None
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
        return None
    return held[0]


@torch.no_grad()
def initializer_values(gm: torch.fx.GraphModule, graph: OnnxGraphView, initializers: Iterable[str]
                       ) -> dict[str, np.ndarray]:
    """The current values of the torch tensors made from ``initializers``, in the ONNX layout
    (undoing the ``transpose`` / ``reshape`` that made the torch tensor)."""
    names = torch_names(gm)
    record = conversion_record(gm)
    values: dict[str, np.ndarray] = {}
    for initializer in initializers:
        held = names.get(initializer)
        if not held:
            raise QuantizationError(f"initializer {initializer!r} has no torch parameter to export")
        value = get_tensor(gm, held[0]).detach().float().cpu()
        values[initializer] = onnx_layout(value, held[0], initializer, record.transform_of(held[0]), graph)
    return values


def onnx_layout(value: torch.Tensor, param: str, initializer: str, transform: str | None,
                graph: OnnxGraphView) -> np.ndarray:
    """``value`` (torch parameter ``param``) back in ``initializer``'s ONNX layout, undoing the
    ``transform`` (``transpose`` / ``reshape``) recorded when the parameter was made;
    QuantizationError if it cannot."""
    dims = list(graph.initializers[initializer][1])
    if transform == "transpose":
        value = value.t()
    elif transform == "reshape":
        value = value.reshape(dims)
    elif transform is not None:
        raise QuantizationError(f"parameter {param} was made from {initializer!r} by an unknown transform "
                                f"{transform!r}: its new values cannot be exported")
    if list(value.shape) != dims:
        raise QuantizationError(f"parameter {param} has shape {list(value.shape)} but initializer "
                                f"{initializer!r} has dims {dims}")
    return np.ascontiguousarray(value.numpy(), dtype=np.float32)
