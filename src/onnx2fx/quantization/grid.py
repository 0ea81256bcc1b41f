"""Integer grids and encodings: from a float range to (scale, zero point) and back.

One :class:`Encoding` is the single source of truth for a quantized tensor: the fake-quant
module in torch, the QDQ ONNX and ``encodings.json`` all read the same numbers. Scales are kept
as float32 values because both torch's fake-quant and ONNX's ``DequantizeLinear`` compute in
float32; holding float64 scales here would let the two disagree in the last bit.

Conventions (ONNX's): ``q = clamp(round(x / scale) + zero_point, qmin, qmax)``,
``x' = (q - zero_point) * scale``; rounding is half to even in both torch and onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Smallest scale we emit: a tensor that is constant zero still gets a valid, positive scale.
MIN_SCALE = float(np.finfo(np.float32).tiny) * 2**23


@dataclass(frozen=True)
class QuantGrid:
    """The integers a tensor is stored as: ``bits`` wide, signed or not."""

    bits: int
    signed: bool

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def dtype(self) -> str:
        """The ONNX element type name used in the QDQ plan and in encodings 2.0.0."""
        return f"{'int' if self.signed else 'uint'}{self.bits}"

    @property
    def levels(self) -> int:
        return 1 << self.bits


@dataclass(frozen=True)
class Encoding:
    """Scale and zero point of one tensor, per tensor (one value) or per channel along ``axis``.

    ``axis`` is the channel axis in the ONNX tensor's layout (what DequantizeLinear and the
    encodings file use); ``None`` for per-tensor encodings.
    """

    scale: np.ndarray  # float32, shape (channels,)
    zero_point: np.ndarray  # int64, shape (channels,)
    grid: QuantGrid
    symmetric: bool
    axis: int | None = None

    @classmethod
    def from_range(cls, lo: float | Sequence[float] | np.ndarray, hi: float | Sequence[float] | np.ndarray,
                   grid: QuantGrid, symmetric: bool, axis: int | None = None) -> Encoding:
        """The encoding whose grid covers ``[lo, hi]`` (per channel when arrays are given).

        Zero is always exactly representable (padding and ReLU zeros must stay exact), so the
        range is first widened to include it. Symmetric grids put zero at the centre (signed) or
        at the bottom (unsigned, for tensors that are never negative); asymmetric grids spread
        ``qmax - qmin`` steps over the range and round the zero point to an integer.
        """
        lo_a = np.minimum(np.atleast_1d(np.asarray(lo, dtype=np.float64)), 0.0)
        hi_a = np.maximum(np.atleast_1d(np.asarray(hi, dtype=np.float64)), 0.0)
        if symmetric:
            if grid.signed:
                absmax = np.maximum(-lo_a, hi_a)
                scale = absmax / grid.qmax
                zero_point = np.zeros_like(scale, dtype=np.int64)
            else:
                scale = hi_a / grid.qmax
                zero_point = np.full_like(scale, grid.qmin, dtype=np.int64)
        else:
            scale = (hi_a - lo_a) / (grid.qmax - grid.qmin)
            safe = np.where(scale > 0, scale, 1.0)
            zero_point = np.clip(np.round(grid.qmin - lo_a / safe), grid.qmin, grid.qmax).astype(np.int64)
        scale32 = np.maximum(scale, MIN_SCALE).astype(np.float32)
        return cls(scale32, zero_point, grid, symmetric, axis)

    # ------------------------------------------------------------------------------ derived
    @property
    def channels(self) -> int:
        return int(self.scale.size)

    @property
    def min(self) -> np.ndarray:
        """Smallest representable value per channel."""
        return (self.grid.qmin - self.zero_point).astype(np.float64) * self.scale.astype(np.float64)

    @property
    def max(self) -> np.ndarray:
        """Largest representable value per channel."""
        return (self.grid.qmax - self.zero_point).astype(np.float64) * self.scale.astype(np.float64)

    @property
    def unsigned_offset(self) -> np.ndarray:
        """AIMET's ``offset``: minus the zero point expressed on the unsigned grid ``[0, 2^bits - 1]``
        (a signed int8 symmetric encoding has offset -128)."""
        shift = (1 << (self.grid.bits - 1)) if self.grid.signed else 0
        return -(self.zero_point + shift)

    def same_as(self, other: Encoding | None) -> bool:
        return (other is not None and self.grid == other.grid and self.axis == other.axis
                and np.array_equal(self.scale, other.scale) and np.array_equal(self.zero_point, other.zero_point))

    def quantize_dequantize(self, x: np.ndarray) -> np.ndarray:
        """What the encoding does to ``x`` (float32 arithmetic, like DequantizeLinear)."""
        shape = [1] * x.ndim
        if self.axis is not None:
            shape[self.axis] = -1
        scale = self.scale.reshape(shape)
        zp = self.zero_point.astype(np.float32).reshape(shape)
        q = np.clip(np.rint(x.astype(np.float32) / scale) + zp, self.grid.qmin, self.grid.qmax)
        return ((q - zp) * scale).astype(np.float32)


def bias_encoding(input_encoding: Encoding, weight_encoding: Encoding, channels: int,
                  axis: int | None = 0) -> Encoding:
    """The int32 bias convention of integer kernels: ``scale = input scale x weight scale`` (per
    output channel along ``axis`` when the weight is per channel), zero point 0, so the bias adds
    straight into the accumulator."""
    # float32 product, as integer kernels and onnxruntime's own quantizer compute it
    scale = input_encoding.scale.astype(np.float32)[0] * weight_encoding.scale.astype(np.float32)
    if weight_encoding.axis is None:
        axis = None
        scale = scale[:1]
    else:
        scale = np.broadcast_to(scale, (channels,))
    scale32 = np.maximum(scale, MIN_SCALE).astype(np.float32)
    return Encoding(scale32, np.zeros(scale32.shape, dtype=np.int64), QuantGrid(32, True), True, axis)
