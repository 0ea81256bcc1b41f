"""Range learning: fake-quant modules whose scale and zero point train with the weights.

:func:`make_learnable` turns calibrated :class:`~.fake_quant.FakeQuantize` modules into
:class:`LearnableFakeQuantize` in place: ``scale`` (and, for asymmetric grids, ``zero_point``)
become float32 ``nn.Parameter``\\ s under the same names, so ``state_dict`` keys do not change.
The forward pass is torch's learnable fake-quant
(``torch._fake_quantize_learnable_per_tensor_affine`` / ``..._per_channel_affine``), which rounds
like the fixed op (same scale, zero point rounded and clamped to the grid; it multiplies by
``1 / scale`` where the fixed op divides, so a value exactly at a rounding tie may land one step
apart, which does not matter while training and is gone once the ranges are frozen) and gives
straight-through gradients for the input plus LSQ gradients for scale and zero point, scaled by
``1 / sqrt(elements per channel x qmax)`` (Esser et al., *Learned Step Size Quantization*).

:func:`freeze_ranges` turns them back into fixed quantizers holding the learned encodings, so a
fine-tuned model has the same module types as a PTQ model. A symmetric grid keeps its zero point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from .fake_quant import FakeQuantize
from .grid import MIN_SCALE, Encoding


class LearnableFakeQuantize(FakeQuantize):
    """A :class:`FakeQuantize` whose ``scale`` and ``zero_point`` are trainable parameters."""

    scale: nn.Parameter
    zero_point: nn.Parameter

    def forward(self, x: Any) -> Any:
        if self.calibrator is not None or not (self.enabled and self.initialized) or \
                not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return super().forward(x)
        y = x if x.dtype == torch.float32 else x.float()
        channels = max(int(self.scale.numel()), 1)
        grad_factor = 1.0 / math.sqrt(max(y.numel() // channels, 1) * max(self.quant_max, 1))
        if self.axis is None:
            y = torch._fake_quantize_learnable_per_tensor_affine(y, self.scale, self.zero_point, self.quant_min,
                                                                 self.quant_max, grad_factor)
        else:
            y = torch._fake_quantize_learnable_per_channel_affine(y, self.scale, self.zero_point, self.axis,
                                                                  self.quant_min, self.quant_max, grad_factor)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def rounded_zero_point(self) -> torch.Tensor:
        """The zero point the forward pass uses: rounded half to even and clamped to the grid."""
        return torch.round(self.zero_point.detach()).clamp(self.quant_min, self.quant_max).to(torch.int32)

    def encoding(self) -> Encoding:
        return Encoding(self.scale.detach().cpu().numpy().astype(np.float32),
                        self.rounded_zero_point().cpu().numpy().astype(np.int64),
                        self.grid, self.symmetric, self.onnx_axis if self.axis is not None else None)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", learnable range"


def make_learnable(quantizers: Iterable[FakeQuantize]) -> list[nn.Parameter]:
    """Swap calibrated, enabled quantizers to :class:`LearnableFakeQuantize`; return the new
    trainable parameters (scales, and zero points of asymmetric grids)."""
    params: list[nn.Parameter] = []
    seen: set[int] = set()
    for q in quantizers:
        if id(q) in seen or not (q.enabled and q.initialized) or q.calibrator is not None:
            continue
        seen.add(id(q))
        if not isinstance(q, LearnableFakeQuantize):
            scale = q.scale.detach().clone().float()
            zero_point = q.zero_point.detach().clone().float()
            del q._buffers["scale"], q._buffers["zero_point"]
            q.__class__ = LearnableFakeQuantize
            q.scale = nn.Parameter(scale)
            q.zero_point = nn.Parameter(zero_point, requires_grad=not q.symmetric)
        params.append(q.scale)
        if q.zero_point.requires_grad:
            params.append(q.zero_point)
    return params


@torch.no_grad()
def project_ranges(quantizers: Iterable[FakeQuantize]) -> None:
    """Keep learned ranges valid after an optimizer step: positive scales, zero points on the grid."""
    for q in quantizers:
        if isinstance(q, LearnableFakeQuantize):
            q.scale.clamp_(min=MIN_SCALE)
            q.zero_point.clamp_(q.quant_min, q.quant_max)


def freeze_ranges(module: nn.Module) -> int:
    """Turn every :class:`LearnableFakeQuantize` under ``module`` back into a fixed
    :class:`FakeQuantize` with the learned (rounded) encoding; return how many were frozen."""
    count = 0
    for q in module.modules():
        if not isinstance(q, LearnableFakeQuantize):
            continue
        scale = q.scale.detach().clone().float().clamp(min=MIN_SCALE)
        zero_point = q.rounded_zero_point()
        del q._parameters["scale"], q._parameters["zero_point"]
        q.__class__ = FakeQuantize
        q.register_buffer("scale", scale)
        q.register_buffer("zero_point", zero_point)
        count += 1
    return count
