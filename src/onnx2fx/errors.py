"""The exception hierarchy of onnx2fx.

Every error a user can provoke with bad input is one of these types, so callers can catch
``Onnx2FxError`` for "the tool refused this input" and let anything else surface as a bug.
The native core raises the same classes: its C++ exceptions are translated to these by name.
"""

from __future__ import annotations


class Onnx2FxError(Exception):
    """Base class of every error onnx2fx raises on purpose."""


class ModelFormatError(Onnx2FxError, ValueError):
    """The ONNX bytes are not a valid model: truncated, corrupt, or inconsistent.

    The message names the protobuf field and the byte offset where reading failed.
    """


class ExternalDataError(ModelFormatError):
    """A tensor's external data is missing, escapes the model's folder, or is out of range."""


class GraphStructureError(Onnx2FxError, ValueError):
    """The graph is well-formed protobuf but not a valid dataflow graph (cycle, undefined input)."""


class UnsupportedOperatorError(Onnx2FxError, NotImplementedError):
    """An ONNX node cannot be lowered to torch.

    The message names the node, op type, domain, opset and the attribute (or input) that is not
    handled, so the user knows exactly what to report or override.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str = "",
        op_type: str = "",
        domain: str = "",
        opset: int | None = None,
        attribute: str | None = None,
    ) -> None:
        super().__init__(message)
        self.node = node
        self.op_type = op_type
        self.domain = domain
        self.opset = opset
        self.attribute = attribute


class ConversionError(Onnx2FxError):
    """Lowering a supported op failed for this particular node (e.g. a non-constant input that
    must be constant); the message names the node."""


class ValidationInputError(Onnx2FxError, ValueError):
    """Inputs given for validation do not match the model's inputs."""


class BatchError(Onnx2FxError, ValueError):
    """A batch run cannot start or a batch output cannot be read: an invalid configuration file
    (the message names the file and the key), models whose output folders would collide, another
    batch writing to the same output folder, or an unreadable ``summary.json``."""


class QuantizationError(Onnx2FxError, ValueError):
    """Quantization cannot run on this input: missing or empty calibration data, data whose shape
    does not match the model, a model without its source ONNX, or an invalid quantization config.

    The message names what is wrong (the input, the file, the config key)."""


class EvaluationError(Onnx2FxError, ValueError):
    """A task evaluation cannot run: an invalid task config (the message names the file and key), a
    model form that cannot be run, outputs that do not match the postprocessing preset, or two
    evaluations that cannot be compared."""


class DatasetError(EvaluationError):
    """An evaluation dataset is unusable: a missing or unreadable image, or a corrupt annotation.

    The message names the file, and the line or annotation, that is wrong."""


class ExportError(Onnx2FxError, ValueError):
    """A converted model cannot be exported back to ONNX: the folder is missing or is not a
    ``convert`` output, its source ONNX cannot be found, or both of torch's exporters failed (the
    message gives each one's reason)."""
