"""Sliding-window geometry shared by convolution (:mod:`.nn`) and pooling (:mod:`.pooling`):
ONNX's ``auto_pad`` and ``pads`` as explicit pads, SAME padding over sizes known only at run
time, and torch's int-or-tuple layer arguments."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value


def int_or_tuple(values: list[int]) -> tuple[int, ...] | int:
    """One int where every spatial dimension has the same value (``kernel_size=3``), else a tuple."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def _same_pads(g: Emitter, x: Value, kernel: list[int], strides: list[int], dilations: list[int],
               auto_pad: str, allow_run_time: bool = False) -> list[int] | None:
    """Explicit ONNX pads for auto_pad SAME_UPPER / SAME_LOWER. With stride 1 the total is
    ``(k - 1) * d`` whatever the size; with a larger stride over a size known only at run time it
    depends on that size: ``None`` (pad at run time, see :func:`_same_pad`) where the caller can."""
    spatial = x.static_shape()[2:]
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        if size is None and s != 1:
            if allow_run_time:
                return None
            raise g.unsupported("auto_pad", f"{auto_pad} over a spatial dimension of run-time size")
        total = (k - 1) * d if size is None else max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _same_pad(x: torch.Tensor, kernel: list[int], strides: list[int], dilations: list[int], upper: bool,
              value: float) -> torch.Tensor:
    """ONNX auto_pad SAME over spatial sizes known only at run time (SAME_UPPER puts the odd
    element at the end, SAME_LOWER at the start)."""
    pads: list[int] = []
    for axis in range(len(kernel) - 1, -1, -1):  # F.pad takes the last dim first
        size, k, s, d = x.shape[2 + axis], kernel[axis], strides[axis], dilations[axis]
        # ceil(size / s) written with non-negative operands: exported to ONNX, // becomes a Div
        # that truncates, which equals floor only when neither side is negative.
        total = torch.sym_max(((size + s - 1) // s - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        pads += [small, large] if upper else [large, small]
    return torch.nn.functional.pad(x, pads, value=value)


def pad_same_at_run_time(g: Emitter, x: Value, kernel: list[int], strides: list[int], dilations: list[int],
                         auto_pad: str, value: float) -> Value:
    """``x`` padded for ``auto_pad`` SAME with ``value`` by :func:`_same_pad` (copied into model.py)."""
    padded = _same_padded_sizes(list(g.fake(x).shape), kernel, strides, dilations)
    return g.call(g.helper(_same_pad, leaf=True), x, list(kernel), list(strides), list(dilations),
                  auto_pad == "SAME_UPPER", value, out_spec=None if padded is None else [(padded, x.dtype)])


def _same_padded_sizes(shape: list[int | torch.SymInt], kernel: list[int], strides: list[int],
                       dilations: list[int]) -> list[int | torch.SymInt] | None:
    """The sizes :func:`_same_pad` gives, written out (its ``sym_max`` run on symbolic sizes costs
    torch's sympy tens of milliseconds): a spatial size becomes ``ceil(size / s) * s - s + reach``
    where the window reaches at least a stride (``reach >= s``), so that the total padding is never
    negative and the ``max`` with 0 never applies; ``None`` otherwise (evaluated by torch)."""
    out = list(shape[:2])
    for size, k, s, d in zip(shape[2:], kernel, strides, dilations, strict=True):
        reach = (k - 1) * d + 1
        if reach < s:
            return None
        out.append(((size + s - 1) // s - 1) * s + reach)
    return out


def resolve_pads(g: Emitter, x: Value, nd: int, kernel: list[int], strides: list[int], dilations: list[int],
                 auto_pad: str, pads: list[int] | None, allow_run_time: bool = False) -> list[int] | None:
    """Explicit ONNX pads (all begins, then all ends) for ``auto_pad`` and ``pads``; ``None`` where
    SAME padding depends on a run-time size and ``allow_run_time`` (see :func:`pad_same_at_run_time`)."""
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(g, x, kernel, strides, dilations, auto_pad, allow_run_time)
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    if auto_pad not in ("NOTSET", ""):
        raise g.unsupported("auto_pad", f"unknown value {auto_pad!r}")
    return list(pads) if pads else [0] * (2 * nd)
