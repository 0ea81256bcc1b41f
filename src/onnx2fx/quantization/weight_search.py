"""Weight range search: per output channel, the clipping range whose quantized weights are closest
to the float ones, and (when the config allows it) the choice between a symmetric and an
asymmetric grid per tensor.

Weights are static, so the search is exact: every candidate range is realised as the encoding the
export writes (float32 scale, rounded zero point) and scored by the squared error of the weights it
reproduces, all channels at once. Plain min/max keeps the largest weight of each channel exact and
pays for it with a coarse step for every other weight; at 4 bits (15 steps) one outlier per channel
costs most of a layer's signal, and clipping it is far cheaper than the rounding noise it causes.

The search is coarse-to-fine: ``coarse`` shrink factors of the min/max range (``1`` down to
``floor``), then ``fine`` factors within one coarse step of each channel's best. Asymmetric grids
then move each end on its own (one round of coordinate descent: the low end with the high end
fixed, then the high end), since a skewed channel wants a different clip on each side. The min/max range is
always a candidate, so the result is never worse than min/max.
"""

from __future__ import annotations

import numpy as np
import torch

from .grid import Encoding, QuantGrid

# An asymmetric grid costs integer kernels a zero-point correction per output channel: it is chosen
# over the configured symmetric grid only when it removes at least this share of the weight error.
ASYMMETRIC_GAIN = 0.1


def channel_rows(weight: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``weight`` as ``(channels, values)`` float32 rows: one row per channel along ``axis``, or a
    single row for a per-tensor encoding."""
    w = weight.detach().float()
    if axis is None:
        return w.reshape(1, -1)
    return w.movedim(axis, 0).reshape(w.shape[axis], -1)


def quantization_errors(rows: torch.Tensor, lo: np.ndarray, hi: np.ndarray, grid: QuantGrid,
                        symmetric: bool) -> torch.Tensor:
    """Squared error per channel of ``rows`` on the realised encodings of ``[lo, hi]`` (float64)."""
    enc = Encoding.from_range(lo, hi, grid, symmetric)
    scale = torch.from_numpy(enc.scale).unsqueeze(1)
    zero_point = torch.from_numpy(enc.zero_point.astype(np.float32)).unsqueeze(1)
    # in place: this runs once per candidate over every weight of the layer
    diff = torch.div(rows, scale).round_().add_(zero_point).clamp_(grid.qmin, grid.qmax)
    diff.sub_(zero_point).mul_(scale).sub_(rows)
    return diff.square_().sum(dim=1, dtype=torch.float64)


def search_ranges(rows: torch.Tensor, grid: QuantGrid, symmetric: bool, coarse: int = 20, fine: int = 11,
                  floor: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, error)`` per row: the clipped range with the smallest squared weight error.

    Ranges always contain zero (zero must be exact); ``error`` is the squared error of the chosen
    encoding, per row, so two grids can be compared on the same weights.
    """
    lo0 = rows.amin(dim=1).clamp(max=0).double().numpy()
    hi0 = rows.amax(dim=1).clamp(min=0).double().numpy()
    if symmetric:  # the grid is set by the larger magnitude: shrink both ends together
        absmax = np.maximum(-lo0, hi0)
        lo0, hi0 = -absmax, absmax
    best_lo, best_hi = lo0.copy(), hi0.copy()
    best_err = quantization_errors(rows, best_lo, best_hi, grid, symmetric).numpy()

    def consider(lo: np.ndarray, hi: np.ndarray) -> None:
        err = quantization_errors(rows, lo, hi, grid, symmetric).numpy()
        better = err < best_err
        best_err[better] = err[better]
        best_lo[better] = lo[better]
        best_hi[better] = hi[better]

    def search(factors_of: np.ndarray, side: str) -> None:
        """Try every factor in ``factors_of`` (rows: candidates, columns: channels) on ``side``."""
        base_lo, base_hi = best_lo.copy(), best_hi.copy()
        for factors in factors_of:
            lo = lo0 * factors if side in ("both", "lo") else base_lo
            hi = hi0 * factors if side in ("both", "hi") else base_hi
            consider(lo, hi)

    def ratio(value: np.ndarray, full: np.ndarray) -> np.ndarray:
        return np.divide(value, full, out=np.ones_like(full), where=full != 0)

    channels = rows.shape[0]
    step = (1.0 - floor) / coarse
    coarse_factors = np.repeat(np.linspace(1.0, floor, coarse + 1)[:, None], channels, axis=1)
    search(coarse_factors, "both")
    best_f = ratio(best_hi, hi0) if symmetric else np.maximum(ratio(best_lo, lo0), ratio(best_hi, hi0))
    search(np.clip(best_f[None, :] + np.linspace(-step, step, fine)[:, None], floor / 2, 1.0), "both")
    if not symmetric:
        for side, full in (("lo", lo0), ("hi", hi0)):
            search(coarse_factors, side)
            f = ratio(best_lo if side == "lo" else best_hi, full)
            search(np.clip(f[None, :] + np.linspace(-step, step, fine)[:, None], floor / 2, 1.0), side)
    return best_lo, best_hi, best_err


def searched_encoding(weight: torch.Tensor, axis: int | None, onnx_axis: int | None, bits: int, symmetric: bool,
                      choose_symmetry: bool = False) -> Encoding:
    """The encoding of ``weight`` from :func:`search_ranges`, per channel along ``axis`` (torch layout;
    ``onnx_axis`` is the same axis in the ONNX initializer).

    With ``choose_symmetry`` a symmetric configuration may become asymmetric for this tensor (on the
    unsigned grid), when that removes at least :data:`ASYMMETRIC_GAIN` of the squared error.
    """
    rows = channel_rows(weight, axis)
    grid = QuantGrid(bits, symmetric)
    lo, hi, err = search_ranges(rows, grid, symmetric)
    if choose_symmetry and symmetric:
        other = QuantGrid(bits, False)
        a_lo, a_hi, a_err = search_ranges(rows, other, False)
        if a_err.sum() < (1.0 - ASYMMETRIC_GAIN) * err.sum():
            return Encoding.from_range(a_lo, a_hi, other, False, onnx_axis)
    return Encoding.from_range(lo, hi, grid, symmetric, onnx_axis)


def weight_encoding(weight: torch.Tensor, axis: int | None, onnx_axis: int | None, bits: int, symmetric: bool,
                    scheme: str, symmetry: str = "config") -> Encoding:
    """The encoding of one weight tensor under the config's resolved ``weight_scheme`` (``minmax``
    or ``mse``) and ``weight_symmetry`` (``config`` keeps the configured grid, ``search`` lets the
    searched range pick an asymmetric grid when it is clearly better)."""
    if scheme == "minmax":
        rows = channel_rows(weight, axis)
        lo = rows.amin(dim=1).clamp(max=0).double().numpy()
        hi = rows.amax(dim=1).clamp(min=0).double().numpy()
        return Encoding.from_range(lo, hi, QuantGrid(bits, symmetric), symmetric, onnx_axis)
    if scheme != "mse":
        raise ValueError(f"unknown weight scheme {scheme!r}")
    return searched_encoding(weight, axis, onnx_axis, bits, symmetric, choose_symmetry=symmetry == "search")
