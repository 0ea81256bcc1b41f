"""onnx2fx: ONNX models as readable, FX-traceable PyTorch, validated against onnxruntime.

Public API::

    from onnx2fx import OnnxToFxConverter, AccuracyValidator, convert_onnx_to_fx
    gm = OnnxToFxConverter("model.onnx").convert()
    metrics = AccuracyValidator("model.onnx", gm, tolerance=1.0).validate()
"""

from __future__ import annotations

from .converter import ConversionResult, OnnxToFxConverter, convert_onnx_to_fx
from .coverage import OperatorReport, scan_onnx_operators
from .errors import (
    ConversionError,
    ExportError,
    ExternalDataError,
    GraphStructureError,
    ModelFormatError,
    Onnx2FxError,
    UnsupportedOperatorError,
    ValidationInputError,
)
from .export import ExportResult, export_onnx
from .ops.registry import add_converter, onnx_op
from .validator import AccuracyValidator, OutputMetrics, ValidationMetrics

__version__ = "0.1.0"

__all__ = [
    "AccuracyValidator",
    "ConversionError",
    "ConversionResult",
    "ExportError",
    "ExportResult",
    "ExternalDataError",
    "GraphStructureError",
    "ModelFormatError",
    "Onnx2FxError",
    "OnnxToFxConverter",
    "OperatorReport",
    "OutputMetrics",
    "UnsupportedOperatorError",
    "ValidationInputError",
    "ValidationMetrics",
    "add_converter",
    "convert_onnx_to_fx",
    "export_onnx",
    "onnx_op",
    "scan_onnx_operators",
]
