"""Signal processing: DFT and STFT with ``torch.fft``. ONNX carries complex values as a trailing
axis of size 2 (real, imaginary), real signals with a trailing axis of size 1."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .registry import onnx_op


def _dft(x: torch.Tensor, length: torch.Tensor | None, axis: int | torch.Tensor, inverse: bool,
         onesided: bool) -> torch.Tensor:
    """ONNX DFT along ``axis`` (of the input including its trailing real/imaginary axis), computed
    in double precision."""
    axis = int(axis) % x.dim()
    wide = x.double()
    signal = wide[..., 0] if x.shape[-1] == 1 else torch.view_as_complex(wide.contiguous())
    if length is not None:
        n = int(length)
    elif inverse and onesided:
        n = 2 * (x.shape[axis] - 1)
    else:
        n = x.shape[axis]
    if inverse and onesided:
        return torch.fft.irfft(signal, n=n, dim=axis).unsqueeze(-1).to(x.dtype)
    if inverse:
        result = torch.fft.ifft(signal, n=n, dim=axis)
    else:
        result = torch.fft.fft(signal, n=n, dim=axis)
        if onesided:
            result = result.narrow(axis, 0, n // 2 + 1)
    return torch.view_as_real(result).to(x.dtype)


@onnx_op("DFT", 17)
def dft17(g: Emitter, x: Value, dft_length: Value | None = None, *, axis: int = 1, inverse: int = 0,
          onesided: int = 0) -> Value:
    return _lower_dft(g, x, dft_length, axis, inverse, onesided)


@onnx_op("DFT", 20)
def dft(g: Emitter, x: Value, dft_length: Value | None = None, axis: Value | None = None, *, inverse: int = 0,
        onesided: int = 0) -> Value:
    items = g.int_list(axis) if axis is not None else None
    if axis is not None and (items is None or not items[0].is_static):  # an axis given as tensor data
        sizes = [None] * (x.rank - 1) + [1 if inverse and onesided else 2]
        return g.call(g.helper(_dft, leaf=True), x, dft_length, axis, bool(inverse), bool(onesided),
                      out_spec=[(sizes, x.dtype)])
    return _lower_dft(g, x, dft_length, int(items[0].value) if items else -2, inverse, onesided)


def _lower_dft(g: Emitter, x: Value, dft_length: Value | None, axis: int, inverse: int, onesided: int) -> Value:
    axis = axis % x.rank
    sizes: list = g.shape(x)
    n = g.int_list(dft_length) if dft_length is not None else None
    length = n[0] if n is not None and n[0].is_static else None
    if dft_length is None:
        length = sizes[axis]
    if length is not None and length.is_static:
        size = int(length.value)
        if inverse and onesided:
            size = 2 * (size - 1) if dft_length is None else size
        sizes[axis] = size // 2 + 1 if onesided and not inverse else size
    else:
        sizes[axis] = None
    sizes[-1] = 1 if inverse and onesided else 2
    return g.call(g.helper(_dft, leaf=True), x, dft_length, axis, bool(inverse), bool(onesided),
                  out_spec=[(sizes, x.dtype)])


def _stft(signal: torch.Tensor, frame_step: torch.Tensor, window: torch.Tensor | None,
          frame_length: torch.Tensor | None, onesided: bool) -> torch.Tensor:
    """ONNX STFT: frames of ``frame_length`` every ``frame_step`` samples, windowed, transformed."""
    step = int(frame_step)
    size = int(frame_length) if frame_length is not None else window.shape[0]
    wide = signal.double()
    x = wide[..., 0] if signal.shape[-1] == 1 else torch.view_as_complex(wide.contiguous())
    frames = x.unfold(1, size, step)  # (batch, frames, size)
    if window is not None:
        frames = frames * window.double()
    result = torch.fft.fft(frames, dim=-1)
    if onesided:
        result = result[..., : size // 2 + 1]
    return torch.view_as_real(result).to(signal.dtype)


@onnx_op("STFT", 17)
def stft(g: Emitter, signal: Value, frame_step: Value, window: Value | None = None,
         frame_length: Value | None = None, *, onesided: int = 1) -> Value:
    spec = [([g.dim(signal, 0), None, None, 2], signal.dtype)]
    return g.call(g.helper(_stft, leaf=True), signal, frame_step, window, frame_length, bool(onesided),
                  out_spec=spec)


def _mel_weight_matrix(num_mel_bins: torch.Tensor, dft_length: torch.Tensor, sample_rate: torch.Tensor,
                       lower_edge_hertz: torch.Tensor, upper_edge_hertz: torch.Tensor,
                       dtype: torch.dtype) -> torch.Tensor:
    """Triangular filters spaced evenly on the mel scale, one column per mel bin."""
    bins, length, rate = int(num_mel_bins), int(dft_length), int(sample_rate)
    low = 2595 * torch.log10(1 + lower_edge_hertz.double() / 700)
    high = 2595 * torch.log10(1 + upper_edge_hertz.double() / 700)
    mel = torch.arange(bins + 2, dtype=torch.float64) * (high - low) / (bins + 2) + low
    hertz = 700 * (torch.pow(10.0, mel / 2595) - 1)
    points = (((length + 1) * hertz) // rate).long().tolist()
    out = torch.zeros(length // 2 + 1, bins, dtype=torch.float64)
    for i in range(bins):
        left, center, right = points[i], points[i + 1], points[i + 2]
        if center == left:
            out[center, i] = 1
        else:
            for j in range(left, center + 1):
                out[j, i] = (j - left) / (center - left)
        for j in range(center, right):
            out[j, i] = (right - j) / (right - center)
    return out.to(dtype)


@onnx_op("MelWeightMatrix", 17)
def mel_weight_matrix(g: Emitter, num_mel_bins: Value, dft_length: Value, sample_rate: Value,
                      lower_edge_hertz: Value, upper_edge_hertz: Value, *, output_datatype: int = 1) -> Value:
    from ..tensors import torch_dtype

    dtype = torch_dtype(output_datatype)
    return g.call(g.helper(_mel_weight_matrix, leaf=True), num_mel_bins, dft_length, sample_rate, lower_edge_hertz,
                  upper_edge_hertz, dtype, out_spec=[([None, None], dtype)])
