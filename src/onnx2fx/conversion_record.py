"""What a converted GraphModule remembers about the ONNX model it was made from.

Quantization runs long after conversion, often in another process on a ``model_full.pt``, and
needs three facts only the conversion knows: the source ONNX file (the placement of quantizers and
the QDQ export work on it), the ONNX initializer each torch parameter or buffer was made from and
how (Gemm's ``B`` may be transposed), and the ONNX origin of every FX node. The last is in
``node.meta`` while the module lives, but a pickled GraphModule is rebuilt from its code and its
nodes lose their meta, so a copy is kept here and put back by
:func:`onnx2fx.fx_tracer.restore_origins`.

The facts travel as one :class:`ConversionRecord` in one attribute of the GraphModule, not in
``gm.meta``: torch.fx pickles a GraphModule's attributes but rebuilds ``meta`` empty on loading.
A deepcopy does the opposite (it keeps ``meta``, drops attributes), so copies are made with
:func:`copy_converted`. The attribute's name starts with an underscore, which no layer of a
generated module can have (:func:`onnx2fx.codegen.names.sanitize` strips it), so an ONNX model
cannot shadow it.

Models written before the record existed carried the same facts as three attributes
(``onnx_source``, ``onnx_parameters``, ``onnx_origins``); :func:`find_conversion_record` turns
them into a record the first time it is asked.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from .errors import QuantizationError

__all__ = ["ConversionRecord", "ParameterOrigin", "attach_conversion_record", "conversion_record",
           "copy_converted", "find_conversion_record"]

RECORD_ATTRIBUTE = "_onnx2fx_conversion"
_LEGACY_ATTRIBUTES = ("onnx_source", "onnx_parameters", "onnx_origins")

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


@dataclass(frozen=True)
class ParameterOrigin:
    """Where a parameter or buffer of the generated module comes from in the ONNX file."""

    initializer: str | None  # None: computed at conversion, not read from one initializer
    transform: str | None = None  # "transpose" (Gemm's B with transB=0) or "reshape"; None: same layout


@dataclass
class ConversionRecord:
    """The conversion's facts that travel with the GraphModule (see the module docstring).

    ``node_origins`` grows when quantization inserts nodes: a quantizer node records the tensor it
    quantizes (``quantizes``, ``quantizer_kind``) so that a reloaded simulated model knows it too.
    """

    source: str | None  # absolute path of the ONNX file; None when converted from bytes or a ModelProto
    parameters: dict[str, ParameterOrigin] = field(default_factory=dict)  # torch name -> origin
    node_origins: dict[str, dict[str, Any]] = field(default_factory=dict)  # FX node name -> its node.meta entries
    # Standard functions fused from several ONNX nodes (onnx2fx.idioms.IdiomUse): their intermediate
    # tensors have no FX node. A class-level default, so records pickled before it existed load.
    idioms: tuple[Any, ...] = ()

    def initializer_of(self, name: str) -> str | None:
        """The ONNX initializer the torch parameter or buffer ``name`` was made from."""
        origin = self.parameters.get(name)
        return origin.initializer if origin is not None else None

    def transform_of(self, name: str) -> str | None:
        """How ``name`` was made from its initializer (None: same layout, or not from one)."""
        origin = self.parameters.get(name)
        return origin.transform if origin is not None else None


def attach_conversion_record(module: torch.nn.Module, record: ConversionRecord) -> None:
    """Store ``record`` with ``module`` (it is pickled with it)."""
    setattr(module, RECORD_ATTRIBUTE, record)


def find_conversion_record(module: torch.nn.Module) -> ConversionRecord | None:
    """The record of a module converted by onnx2fx, or None for any other module.

    A model pickled before the record existed has the older attributes instead: they are turned
    into a record, which replaces them on the module."""
    state = vars(module)
    record = state.get(RECORD_ATTRIBUTE)
    if isinstance(record, ConversionRecord):
        return record
    if not any(name in state for name in _LEGACY_ATTRIBUTES):
        return None
    parameters = state.get("onnx_parameters") or {}
    origins = state.get("onnx_origins")
    record = ConversionRecord(
        source=state.get("onnx_source") or None,
        parameters={name: ParameterOrigin(origin.get("initializer"), origin.get("transform"))
                    for name, origin in parameters.items()},
        node_origins=dict(origins) if isinstance(origins, dict) else {})
    for name in _LEGACY_ATTRIBUTES:
        state.pop(name, None)
    attach_conversion_record(module, record)
    return record


def conversion_record(module: torch.nn.Module) -> ConversionRecord:
    """The record of a module converted by onnx2fx.

    Raises:
        QuantizationError: the module has none, so it was not converted by onnx2fx, or it is a
            plain ``copy.deepcopy`` of a converted one (copy with :func:`copy_converted`).
    """
    record = find_conversion_record(module)
    if record is None:
        raise QuantizationError("the model carries no onnx2fx conversion record (its source ONNX file and where "
                                "its weights came from): convert the model with onnx2fx and load model_full.pt "
                                "with onnx2fx.validator.load_torch_model")
    return record


def copy_converted(module: ModuleT) -> ModuleT:
    """A deep copy of a converted module with its own copy of the record (a plain deepcopy of a
    GraphModule drops attributes the graph does not use)."""
    copied = copy.deepcopy(module)
    record = find_conversion_record(module)
    if record is not None:
        attach_conversion_record(copied, copy.deepcopy(record))
    return copied
