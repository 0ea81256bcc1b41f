"""The built-in op table, one module per op family. Importing this package registers them."""

from . import elementwise, nn, reduce, shape  # noqa: F401
from .registry import lookup, onnx_op, registered_ops

__all__ = ["lookup", "onnx_op", "registered_ops"]
