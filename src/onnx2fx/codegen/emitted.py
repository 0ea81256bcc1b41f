"""What the emitter produces: the statements of ``forward``, the helpers copied into ``model.py``
and the finished module description that :mod:`onnx2fx.codegen.render` writes out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..conversion_record import ParameterOrigin

if TYPE_CHECKING:
    from ..idioms.record import IdiomUse
    from .specialisation import Specialisation


@dataclass
class NodeInfo:
    """The ONNX node being lowered, for error messages and for origin tracking."""

    name: str
    op_type: str
    domain: str
    opset: int
    outputs: list[str]
    # Inside a subgraph ``name`` is the enclosing node's (FX origins map to it); this is the node's own.
    own_name: str = ""


@dataclass
class EmittedCall:
    """One statement of ``forward``: ``expression`` assigned to ``targets``, or evaluated alone when
    there are none (a run-time check). :func:`onnx2fx.codegen.render.statement` writes it."""

    expression: str
    node: str | None  # ONNX node name the statement belongs to
    targets: list[str] = field(default_factory=list)  # local variables it assigns, in order
    unpack: str | None = None  # the left-hand side for nested results, such as "{0}, ({1}, {2})"


@dataclass
class Helper:
    name: str
    source: str
    fn: Callable[..., Any]
    leaf: bool


@dataclass
class EmittedModule:
    """Everything needed to render ``model.py`` and to load its weights."""

    init_lines: list[str]
    forward_lines: list[EmittedCall]
    input_names: list[str]
    input_onnx_names: list[str]
    output_codes: list[str]
    output_onnx_names: list[str]
    helpers: list[Helper]
    state: dict[str, torch.Tensor]
    parameter_origins: dict[str, ParameterOrigin]
    module_origins: dict[str, str]  # submodule attribute -> ONNX node name
    nodes: dict[str, NodeInfo]  # ONNX node name -> what it was
    tensor_codes: dict[str, str]  # ONNX tensor name -> code in forward ("" when folded to a constant)
    warnings: list[str] = field(default_factory=list)
    input_shapes: dict[str, list[int | None]] = field(default_factory=dict)  # None: dynamic dimension
    specialisations: list[Specialisation] = field(default_factory=list)
    idioms: list[IdiomUse] = field(default_factory=list)  # each function fused by onnx2fx.idioms
    weight_seconds: float = 0.0  # of the lowering: the initializers as torch tensors (misaligned ones copied)
