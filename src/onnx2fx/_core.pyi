"""Native core of onnx2fx: reads ONNX files into a graph IR, runs graph passes, and writes quantized models.

The reader parses the protobuf wire format directly from a private, copy-on-write memory map of the
file. Tensor data in ``raw_data`` or external data is never copied: :meth:`Tensor.numpy` returns a
writable view whose writes stay in memory. Errors are raised as the classes of
:mod:`onnx2fx.errors` (``ModelFormatError``, ``ExternalDataError``, ``GraphStructureError``).
"""

import enum
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

AttributeValue: TypeAlias = (
    float
    | int
    | bytes
    | Tensor
    | Graph
    | SparseTensor
    | TypeInfo
    | list[float]
    | list[int]
    | list[bytes]
    | list[Tensor]
    | list[Graph]
    | list[SparseTensor]
    | list[TypeInfo]
    | None
)

class Tensor:
    """A TensorProto. Its data lives in the model's memory map, an external file's map, or an owned
    buffer (for data given in typed fields such as ``float_data``)."""

    @property
    def name(self) -> str: ...
    @property
    def doc_string(self) -> str: ...
    @property
    def data_type(self) -> int:
        """The ``TensorProto.DataType`` value."""
    @property
    def dims(self) -> list[int]: ...
    @property
    def nbytes(self) -> int:
        """Bytes of data (packed for sub-byte types); for STRING tensors the total string length."""
    @property
    def data_location(self) -> str:
        """``"default"`` (stored in the model) or ``"external"``."""
    @property
    def external_location(self) -> str:
        """The external data file as written in the model, relative to its folder; ``""`` if embedded."""
    @property
    def data_offset(self) -> int:
        """Offset of the data within its file (the model, or the external file); -1 for owned data."""
    def numpy(self) -> np.ndarray:
        """The data as an array shaped by ``dims``, without copying.

        The array is a writable view that keeps the underlying memory alive; writes never reach the
        file. FLOAT16 gives float16, BFLOAT16 uint16 bit patterns, the FLOAT8 types uint8 bit
        patterns, BOOL bool, COMPLEX64/128 complex. Sub-byte types (INT4, UINT4, FLOAT4E2M1, INT2,
        UINT2, FLOAT6*) give their packed bytes as uint8 of shape ``(nbytes,)``.

        Raises:
            TypeError: for STRING tensors; use :meth:`strings`.
        """
    def aligned_numpy(self) -> np.ndarray:
        """Like :meth:`numpy`, but at an address aligned for the element type.

        The zero-copy view when the bytes already are aligned; otherwise a copy, after which the
        file pages that held only this tensor are released from memory (they were only read, so
        the kernel re-reads them from the file if they are needed again). Protobuf places
        raw_data at arbitrary offsets, so most embedded weights take the copy.
        """
    def strings(self) -> list[bytes]:
        """The elements of a STRING tensor (empty for other types)."""

class SparseTensor:
    """A SparseTensorProto: the non-zero ``values``, their ``indices``, and the dense ``dims``."""

    @property
    def values(self) -> Tensor: ...
    @property
    def indices(self) -> Tensor: ...
    @property
    def dims(self) -> list[int]: ...

class TypeInfo:
    """A TypeProto."""

    @property
    def kind(self) -> str:
        """``"tensor"``, ``"sparse_tensor"``, ``"sequence"``, ``"map"``, ``"optional"``, ``"opaque"``,
        or ``""`` when no type is given."""
    @property
    def elem_type(self) -> int:
        """Element data type of tensors and sparse tensors, key type of maps; 0 when unknown."""
    @property
    def shape(self) -> list[int | str | None] | None:
        """Tensor shape: an int per fixed dimension, a str per symbolic one, None for an unknown one.
        None when no shape is given (unknown rank); ``[]`` for a scalar."""
    @property
    def element(self) -> TypeInfo | None:
        """Element type of sequences and optionals, value type of maps."""

class ValueInfo:
    """A ValueInfoProto: a named value with its type."""

    @property
    def name(self) -> str: ...
    @property
    def doc_string(self) -> str: ...
    @property
    def type(self) -> TypeInfo: ...

class Attribute:
    """An AttributeProto."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str:
        """``"FLOAT"``, ``"INT"``, ``"STRING"``, ``"TENSOR"``, ``"GRAPH"``, ``"FLOATS"``, ``"INTS"``,
        ``"STRINGS"``, ``"TENSORS"``, ``"GRAPHS"``, ``"SPARSE_TENSOR"``, ``"SPARSE_TENSORS"``,
        ``"TYPE_PROTO"``, ``"TYPE_PROTOS"`` or ``"UNDEFINED"``. Files that omit the type get the
        type of the field that is set."""
    @property
    def value(self) -> AttributeValue:
        """The value of the field ``type`` names (None for UNDEFINED). STRING(S) are bytes."""
    @property
    def ref_attr_name(self) -> str:
        """Inside a function body: the function attribute this one refers to; else ``""``."""
    @property
    def doc_string(self) -> str: ...

class Node:
    """A NodeProto."""

    @property
    def name(self) -> str: ...
    @property
    def op_type(self) -> str: ...
    @property
    def domain(self) -> str:
        """As written in the file (``""`` or ``"ai.onnx"`` for the default domain)."""
    @property
    def overload(self) -> str: ...
    @property
    def doc_string(self) -> str: ...
    @property
    def inputs(self) -> list[str]:
        """Input value names; ``""`` marks an omitted optional input."""
    @property
    def outputs(self) -> list[str]: ...
    @property
    def attributes(self) -> dict[str, Attribute]:
        """Attributes by name, in file order."""

class Graph:
    """A GraphProto. Lists are built from the current state at each access, so they reflect passes
    run since; nodes removed by a pass stay valid while Python holds them.

    Each graph pass registered in ``cpp/passes/`` is a method (the module adds one per registered
    pass); those below are the passes of this version."""

    @property
    def name(self) -> str: ...
    @property
    def doc_string(self) -> str: ...
    @property
    def nodes(self) -> list[Node]:
        """Nodes in their current order."""
    @property
    def inputs(self) -> list[ValueInfo]:
        """Inputs as in the file, which for old IR versions include initializer names."""
    @property
    def outputs(self) -> list[ValueInfo]: ...
    @property
    def value_info(self) -> list[ValueInfo]: ...
    @property
    def initializers(self) -> list[Tensor]: ...
    @property
    def sparse_initializers(self) -> list[SparseTensor]: ...
    def topological_sort(self) -> bool:
        """Orders the nodes of this graph and its subgraphs so each follows the producers of its
        inputs (including values its subgraphs use from this graph). Stable: among ready nodes the
        earliest in the current order goes first, so a valid order is kept.

        Returns:
            Whether any order changed.

        Raises:
            GraphStructureError: the graph has a cycle; the message names its nodes.
        """
    def eliminate_dead_code(self) -> bool:
        """Removes nodes none of whose outputs reach a graph output, here and in subgraphs.

        Returns:
            Whether any node was removed.
        """
    def check(self) -> None:
        """Checks that every node input and graph output is defined before use (by a graph input,
        an initializer, an earlier node, or for subgraphs an enclosing graph) and that no value is
        defined twice. This graph is checked as a main graph.

        Raises:
            GraphStructureError: naming the node and value at fault.
        """

class Function:
    """A FunctionProto (a model-local function)."""

    @property
    def name(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def overload(self) -> str: ...
    @property
    def doc_string(self) -> str: ...
    @property
    def inputs(self) -> list[str]: ...
    @property
    def outputs(self) -> list[str]: ...
    @property
    def attributes(self) -> list[str]:
        """Names of the attributes without a default value."""
    @property
    def attribute_defaults(self) -> dict[str, Attribute]:
        """Attributes with a default value (``attribute_proto``), by name."""
    @property
    def nodes(self) -> list[Node]: ...
    @property
    def opset_imports(self) -> dict[str, int]:
        """Opset versions by domain; the default domain (``""`` or ``"ai.onnx"``) is ``""``."""

class Model:
    """A ModelProto."""

    @property
    def ir_version(self) -> int: ...
    @property
    def producer_name(self) -> str: ...
    @property
    def producer_version(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def model_version(self) -> int: ...
    @property
    def doc_string(self) -> str: ...
    @property
    def opset_imports(self) -> dict[str, int]:
        """Opset versions by domain; the default domain (``""`` or ``"ai.onnx"``) is ``""``."""
    @property
    def metadata_props(self) -> dict[str, str]: ...
    @property
    def graph(self) -> Graph: ...
    @property
    def functions(self) -> list[Function]: ...
    @property
    def path(self) -> str:
        """The file the model was loaded from; ``""`` when loaded from bytes."""

def load_model(path: str | os.PathLike[str], *, run_passes: bool = True) -> Model:
    """Reads an ONNX file. External data resolves relative to the file's folder.

    Args:
        path: The ``.onnx`` file.
        run_passes: Topologically sort and check the main graph and all subgraphs.

    Raises:
        FileNotFoundError: (or another OSError) if the file cannot be opened.
        ModelFormatError: the file is not a valid model; the message names the field and byte offset.
        ExternalDataError: external data is missing, outside the model folder, or out of range.
        GraphStructureError: with ``run_passes``, a cycle or an undefined value.
    """

def load_model_from_bytes(
    data: bytes, *, base_dir: str | os.PathLike[str] | None = None, run_passes: bool = True
) -> Model:
    """Reads a serialized model, copying ``data`` once.

    Args:
        data: The serialized ModelProto.
        base_dir: Folder that external data locations are relative to. Without it, any tensor with
            external data raises ExternalDataError.
        run_passes: Topologically sort and check the main graph and all subgraphs.
    """

def elem_size(data_type: int) -> int:
    """Bytes per element of a ``TensorProto.DataType``; 0 for STRING and sub-byte types.

    Raises:
        ValueError: for an unknown data type.
    """

class QuantType(enum.Enum):
    """The integer types values are quantized to: QuantizeLinear's output type. Plans also accept
    the names ("uint8", ...) wherever they take a QuantType."""

    uint8 = ...
    int8 = ...
    uint16 = ...
    int16 = ...
    uint4 = ...
    int4 = ...

_Numbers: TypeAlias = ArrayLike  # a number, a sequence of numbers or a 1-D array
_QuantTypeLike: TypeAlias = QuantType | Literal["uint8", "int8", "uint16", "int16", "uint4", "int4"]

class QdqActivation:
    """Quantize an activation per tensor: ``QuantizeLinear(tensor) -> <tensor>_quantized`` and
    ``DequantizeLinear -> <tensor>_dequantized`` right after its producer.

    Arguments are converted when the entry is made (and when an attribute is set): numbers element
    by element, so a float where an integer is expected raises ValueError naming the entry, as does
    an unknown dtype name. ``scale`` and ``zero_point`` read back as read-only float64 / int64
    arrays."""

    def __init__(self, tensor: str, scale: _Numbers, zero_point: _Numbers, dtype: _QuantTypeLike) -> None: ...
    tensor: str
    @property
    def scale(self) -> NDArray[np.float64]:
        """One value (a finite float32 > 0, checked by the writer)."""
    @scale.setter
    def scale(self, value: _Numbers) -> None: ...
    @property
    def zero_point(self) -> NDArray[np.int64]:
        """One value, within the range of ``dtype``."""
    @zero_point.setter
    def zero_point(self, value: _Numbers) -> None: ...
    @property
    def dtype(self) -> QuantType: ...
    @dtype.setter
    def dtype(self, value: _QuantTypeLike) -> None: ...

class QdqWeight:
    """Replace a FLOAT initializer by ``<name>_quantized`` =
    ``saturate(round_half_to_even(w / scale) + zero_point)`` (per axis along ``axis``, with
    ``dims[axis]`` scales and zero points), read by ``DequantizeLinear(axis=axis)`` whose output
    has the original name, so consumers are unchanged. ``values`` (converted to a C-order float32
    array, which the entry keeps without copying when it already is one) are quantized instead of
    the stored data and must have the initializer's shape."""

    def __init__(
        self,
        initializer: str,
        scale: _Numbers,
        zero_point: _Numbers,
        dtype: _QuantTypeLike,
        axis: int | None = None,
        values: ArrayLike | None = None,
    ) -> None: ...
    initializer: str
    @property
    def scale(self) -> NDArray[np.float64]: ...
    @scale.setter
    def scale(self, value: _Numbers) -> None: ...
    @property
    def zero_point(self) -> NDArray[np.int64]: ...
    @zero_point.setter
    def zero_point(self, value: _Numbers) -> None: ...
    @property
    def dtype(self) -> QuantType: ...
    @dtype.setter
    def dtype(self, value: _QuantTypeLike) -> None: ...
    axis: int | None
    @property
    def values(self) -> NDArray[np.float32] | None:
        """A read-only view of the new values."""
    @values.setter
    def values(self, value: ArrayLike | None) -> None: ...

class QdqBias:
    """Like a weight, INT32 with zero point 0 (``scale`` is input scale x weight scale)."""

    def __init__(
        self, initializer: str, scale: _Numbers, axis: int | None = None, values: ArrayLike | None = None
    ) -> None: ...
    initializer: str
    @property
    def scale(self) -> NDArray[np.float64]: ...
    @scale.setter
    def scale(self, value: _Numbers) -> None: ...
    axis: int | None
    @property
    def values(self) -> NDArray[np.float32] | None: ...
    @values.setter
    def values(self, value: ArrayLike | None) -> None: ...

class QdqFloat:
    """A FLOAT initializer that stays in float gets ``values`` (of its shape) as its data, under
    its own name (for parameters of float ops that a transformation of the model changed)."""

    def __init__(self, initializer: str, values: ArrayLike) -> None: ...
    initializer: str
    @property
    def values(self) -> NDArray[np.float32]: ...
    @values.setter
    def values(self, value: ArrayLike) -> None: ...

class QdqPlan:
    """What :func:`write_qdq_model` and :func:`write_integer_model` do to a model: the C++ plan
    itself (``cpp/writer/qdq_plan.h``), not a copy made at each call.

    The lists read back as tuples of copies: assign a new sequence to change one."""

    def __init__(
        self,
        activations: Sequence[QdqActivation] = (),
        weights: Sequence[QdqWeight] = (),
        biases: Sequence[QdqBias] = (),
        floats: Sequence[QdqFloat] = (),
        min_opset: int = 0,
    ) -> None: ...
    @staticmethod
    def from_dict(plan: Mapping[str, Any]) -> QdqPlan:
        """The plan written as a dict: ``{"min_opset", "activations", "weights", "biases",
        "floats"}`` (each optional), every entry a dict of its class's keyword arguments.

        Raises:
            ValueError: an unknown or missing key, or a value that does not convert, naming the
                entry (``activation 'x' lacks 'dtype'``).
        """
    @property
    def activations(self) -> tuple[QdqActivation, ...]: ...
    @activations.setter
    def activations(self, value: Sequence[QdqActivation]) -> None: ...
    @property
    def weights(self) -> tuple[QdqWeight, ...]: ...
    @weights.setter
    def weights(self, value: Sequence[QdqWeight]) -> None: ...
    @property
    def biases(self) -> tuple[QdqBias, ...]: ...
    @biases.setter
    def biases(self, value: Sequence[QdqBias]) -> None: ...
    @property
    def floats(self) -> tuple[QdqFloat, ...]: ...
    @floats.setter
    def floats(self, value: Sequence[QdqFloat]) -> None: ...
    min_opset: int
    """The default-domain opset import is raised to at least this."""
    @property
    def required_opset(self) -> int:
        """The default-domain opset the QDQ model imports at least: ``max(min_opset, what the
        QuantizeLinear/DequantizeLinear nodes need)`` with 10 for any of them, 13 for a per-axis
        weight or bias, 21 for 16- and 4-bit types; 0 for a plan with neither. The writer applies
        the same rule (it never lowers the model's opset)."""

class _QdqStats(TypedDict):
    quantized_activations: int
    quantized_weights: int
    quantized_biases: int
    bytes_written: int

class _IntegerRequantization(TypedDict):
    node: str
    tensor: str
    rescale: list[float]
    multiplier: list[int]
    shift: list[int]
    max_relative_error: float

class _IntegerStats(TypedDict):
    requantizations: list[_IntegerRequantization]
    float_islands: list[str]
    nodes_written: int
    bytes_written: int

def write_qdq_model(
    source_path: str | os.PathLike[str], output_path: str | os.PathLike[str], plan: QdqPlan | Mapping[str, Any]
) -> _QdqStats:
    """Writes a post-training-quantized copy of an ONNX model in QDQ form.

    The output is the original model with QuantizeLinear/DequantizeLinear inserted. It is streamed
    from the source file: every message the plan does not touch (nodes, initializers, value infos,
    functions, ...) is copied byte for byte, and only the messages on the path to a change are
    re-encoded. Tensors stored as external data are embedded.

    ``plan`` is a :class:`QdqPlan` (or the same as a dict, read by :meth:`QdqPlan.from_dict`):

    * ``activations`` (:class:`QdqActivation`): ``QuantizeLinear(tensor) -> <tensor>_quantized``
      and ``DequantizeLinear -> <tensor>_dequantized`` are inserted right after the tensor's
      producer (before the first node for graph inputs and initializers), and every consumer in
      the main graph and every subgraph node that captures the tensor reads the dequantized value
      instead (unless the subgraph defines a value of the same name itself). For a graph output
      the output keeps its name and carries the dequantized value: the producer's output is
      renamed ``<tensor>_float`` instead.
    * ``weights`` (:class:`QdqWeight`), ``biases`` (:class:`QdqBias`): integer initializers read
      through DequantizeLinear under the original name.
    * ``floats`` (:class:`QdqFloat`): new data for FLOAT initializers that stay in float.

    Scales become FLOAT initializers ``<name>_scale`` (scalar per tensor, 1-D per axis) and zero
    points ``<name>_zero_point`` of the quantized type; the division ``w / scale`` is done in
    float32, as QuantizeLinear does it. New names get a ``_1``, ``_2``, ... suffix where they would
    collide with a name already in the model; new nodes are named ``<name>_QuantizeLinear`` and
    ``<name>_DequantizeLinear``.

    The default-domain opset import (of the model and of its functions) is raised to
    :attr:`QdqPlan.required_opset`; it is never lowered, and other operators are not converted to
    the new opset. The IR version is raised to the lowest that allows that opset. A
    ``metadata_props`` entry ``onnx2fx.quantized = "qdq"`` is added (replacing an older one);
    everything else is kept.

    The output is written to a temporary file beside ``output_path`` and renamed over it at the
    end, so nothing is written when anything fails; ``output_path`` may be ``source_path``.

    Returns:
        ``{"quantized_activations", "quantized_weights", "quantized_biases", "bytes_written"}``.

    Raises:
        ValueError: the plan does not fit the model, naming the entry: a tensor not produced or
            consumed in the main graph, an initializer that is missing or not FLOAT, an activation
            that is not FLOAT, a scale that is not a finite float32 > 0, a zero point outside the
            type's range, mismatched lengths, an axis out of range, ``values`` of the wrong shape
            or with NaN, an entry given twice (and, for a dict, an unknown dtype or key); or the
            output would exceed 2 GB ("models over 2 GB are not supported by the QDQ writer yet").
        FileNotFoundError: (or another OSError) the source cannot be opened or the output cannot
            be written; the error names the file.
        ModelFormatError, ExternalDataError, GraphStructureError: the source model is invalid.
    """

def write_integer_model(
    source_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    plan: QdqPlan | Mapping[str, Any],
    format: Literal["fixed-point", "qoperator"],
    float_islands: bool = False,
) -> _IntegerStats:
    """Writes the fixed-point or QOperator form of a quantized model from the QDQ plan, with every
    encoded tensor (shared encodings too) listed under ``activations``; see
    ``cpp/writer/integer_writer.h`` and ``onnx2fx.quantization.integer``.

    Raises:
        ValueError: the plan does not fit the model (8-bit types only), or an unknown format.
        NotImplementedError: a node has no integer form in the format (unless ``float_islands``,
            which keeps it in float and lists it), naming the node.
        OSError, ModelFormatError, ExternalDataError, GraphStructureError: as write_qdq_model.
    """

def add_to_histogram(values: np.ndarray, lo: float, hi: float, counts: np.ndarray, threads: int = 1) -> int:
    """Bins the float32 ``values`` that lie in ``[lo, hi]`` into ``counts`` (float64, one entry per
    equal bin, added to in place) exactly as ``torch.histc(values, counts.size, lo, hi)`` bins them,
    and returns how many values are exactly zero. One pass over the data, without the GIL, split
    over ``threads`` threads for large inputs; it is the calibration observers' histogram update.

    Both arrays must be 1-D, C-contiguous and on the CPU. ``lo`` and ``hi`` are rounded to float32
    first, as torch.histc does.

    Raises:
        ValueError: ``lo >= hi`` after rounding, or ``counts`` is empty.
    """
