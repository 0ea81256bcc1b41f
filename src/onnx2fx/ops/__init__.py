"""The built-in op table, one module per op family. Importing this package registers them."""

from . import (  # noqa: F401
    attention,
    casting,
    contrib,
    control_flow,
    dynamic,
    elementwise,
    indexing,
    math_extra,
    nn,
    normalization,
    ort_quantized,
    pooling,
    quant,
    recurrent,
    reduce,
    resample,
    resize,
    sequence,
    shape,
    spectral,
    text,
)
from .registry import add_converter, lookup, onnx_op, registered_ops

__all__ = ["add_converter", "lookup", "onnx_op", "registered_ops"]
