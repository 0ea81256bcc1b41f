"""The model PTQ quantizes, with a fused attention written out node by node again.

Conversion fuses an exporter's attention (``MatMul -> scale -> Softmax -> MatMul``) into one
``F.scaled_dot_product_attention``: its scores and probabilities are never materialised, so no
quantizer can sit on them, and the quantized model would keep them in float, where integer
targets (and AIMET and onnxruntime's quantizer) quantize both. PTQ therefore quantizes a copy of the
model converted again from its source without the attention fusion (every other fusion as before),
with the given model's parameter and buffer values copied in by the ONNX initializer each was made
from, so a fine-tuned model keeps its values. Where that cannot be done (no source file, a failed
conversion, a value whose initializer the copy does not hold with the same shape), the model is
quantized as it is and the report says that the attention stays float.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.fx

from ..conversion_record import conversion_record


def fused_attentions(gm: torch.nn.Module) -> list[str]:
    """The ONNX nodes that end each attention the conversion fused (empty: none)."""
    return [use.terminal for use in conversion_record(gm).idioms if use.kind == "attention"]


def without_fused_attention(gm: torch.fx.GraphModule, source: Path,
                            input_shapes: Mapping[str, Sequence[int]] | None) -> tuple[torch.fx.GraphModule, str]:
    """``gm`` converted again without the attention fusion, with ``gm``'s values; and a note for the
    report: what was done, or why ``gm`` is returned unchanged (its attention then stays float)."""
    fused = fused_attentions(gm)
    if not fused:
        return gm, ""
    from ..converter import OnnxToFxConverter
    from ..idioms import DEFAULT_IDIOMS

    record = conversion_record(gm)
    kinds = (set(DEFAULT_IDIOMS) | {use.kind for use in record.idioms}) - {"attention"}
    kept = _kept_note(fused)
    try:
        copy = OnnxToFxConverter(source, input_shapes=input_shapes, idioms=frozenset(kinds)).convert()
    except Exception as exc:  # noqa: BLE001 - any failure leaves the model as it is, and says so
        return gm, f"{kept}: converting {source.name} without the attention fusion failed ({type(exc).__name__})"
    problem = _copy_values(gm, copy)
    if problem:
        return gm, f"{kept}: {problem}"
    copy.train(gm.training)
    return copy, (f"{len(fused)} fused attention(s) written out node by node for quantization, so that their "
                  "scores and probabilities are quantized")


def _kept_note(fused: list[str]) -> str:
    return (f"{len(fused)} attention(s) fused into F.scaled_dot_product_attention (ending at {fused[0]}"
            f"{', ...' if len(fused) > 1 else ''}): their scores and probabilities stay float in the quantized "
            "model")


def _copy_values(gm: torch.nn.Module, copy: torch.nn.Module) -> str:
    """Copy every parameter and buffer of ``gm`` that comes from an ONNX initializer into the
    tensor of ``copy`` made from the same initializer the same way; the first mismatch, or ''."""
    theirs, ours = conversion_record(gm), conversion_record(copy)
    targets: dict[tuple[str, Any], torch.Tensor] = {}
    for name, tensor in (*copy.named_parameters(), *copy.named_buffers()):
        initializer = ours.initializer_of(name)
        if initializer is not None:
            targets[(initializer, ours.transform_of(name))] = tensor
    pairs = []
    for name, tensor in (*gm.named_parameters(), *gm.named_buffers()):
        initializer = theirs.initializer_of(name)
        if initializer is None:
            continue
        target = targets.get((initializer, theirs.transform_of(name)))
        if target is None or target.shape != tensor.shape or target.dtype != tensor.dtype:
            return f"{name} (from initializer {initializer}) has no counterpart in the unfused conversion"
        pairs.append((target, tensor))
    with torch.no_grad():
        for target, tensor in pairs:
            target.copy_(tensor)
    return ""
