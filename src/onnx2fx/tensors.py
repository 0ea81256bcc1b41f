"""ONNX tensors from the native core as torch tensors, without copying their bytes.

The core hands out numpy views into the model's private (copy-on-write) memory map;
``torch.from_numpy`` wraps them, so a 1 GB weight file costs no extra memory until training
writes to a parameter (only the pages written are copied, and never back to the file).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import UnsupportedOperatorError

# ONNX TensorProto.DataType -> torch dtype.
ONNX_TO_TORCH: dict[int, torch.dtype] = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 4: torch.uint16, 5: torch.int16, 6: torch.int32,
    7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 12: torch.uint32,
    13: torch.uint64, 14: torch.complex64, 15: torch.complex128, 16: torch.bfloat16,
    17: torch.float8_e4m3fn, 18: torch.float8_e4m3fnuz, 19: torch.float8_e5m2, 20: torch.float8_e5m2fnuz,
    24: torch.float8_e8m0fnu, 21: torch.uint4, 22: torch.int4, 25: torch.uint2, 26: torch.int2,
}
# torch's 4- and 2-bit integer dtypes hold one element per byte and have no kernels: values of these
# types are computed on as int8 / uint8 (their storage type) and only carried in the sub-byte dtype.
SUB_BYTE_STORAGE: dict[torch.dtype, torch.dtype] = {
    torch.int4: torch.int8, torch.uint4: torch.uint8, torch.int2: torch.int8, torch.uint2: torch.uint8,
}
SUB_BYTE_BITS = {torch.int4: 4, torch.uint4: 4, torch.int2: 2, torch.uint2: 2}
TORCH_TO_ONNX: dict[torch.dtype, int] = {v: k for k, v in ONNX_TO_TORCH.items()}
ONNX_TYPE_NAMES: dict[int, str] = {
    0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
    8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64",
    15: "COMPLEX128", 16: "BFLOAT16", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2",
    20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1", 24: "FLOAT8E8M0", 25: "UINT2", 26: "INT2",
}
_RAW_BITS = {16, 17, 18, 19, 20, 24}  # numpy has no such dtype: the core returns raw integer bits


def torch_dtype(onnx_type: int, what: str = "") -> torch.dtype:
    """The torch dtype of an ONNX element type; ``what`` (e.g. "tensor 'w'") names the value in errors."""
    try:
        return ONNX_TO_TORCH[onnx_type]
    except KeyError:
        name = ONNX_TYPE_NAMES.get(onnx_type, str(onnx_type))
        subject = f"{what} has " if what else ""
        raise UnsupportedOperatorError(f"{subject}ONNX element type {name}, which has no torch equivalent") from None


def to_torch(tensor: Any) -> torch.Tensor:
    """A torch view of a core ``Tensor`` (copied only when its bytes are misaligned)."""
    data_type = tensor.data_type
    dtype = ONNX_TO_TORCH.get(data_type)
    if dtype is None:  # the name is formatted only for the error (per tensor, that formatting costs)
        dtype = torch_dtype(data_type, f"tensor {tensor.name!r}")
    array: np.ndarray = tensor.aligned_numpy()
    if dtype in SUB_BYTE_STORAGE:
        return _unpack(array, dtype, list(tensor.dims))
    result = torch.from_numpy(array) if array.size else torch.from_numpy(np.ascontiguousarray(array))
    if data_type in _RAW_BITS:
        result = result.view(dtype)
    return result.reshape(list(tensor.dims))


def _unpack(packed: np.ndarray, dtype: torch.dtype, dims: list[int]) -> torch.Tensor:
    """Sub-byte elements (first element in the lowest bits) as one byte each, viewed as ``dtype``."""
    bits = SUB_BYTE_BITS[dtype]
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    values = ((packed.reshape(-1, 1) >> shifts) & ((1 << bits) - 1)).reshape(-1)[: int(np.prod(dims))]
    if SUB_BYTE_STORAGE[dtype] == torch.int8:  # sign-extend
        values = values.astype(np.int8)
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values).astype(np.int8)
    return torch.from_numpy(np.ascontiguousarray(values)).view(dtype).reshape(dims)


def numpy_to_torch(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))
