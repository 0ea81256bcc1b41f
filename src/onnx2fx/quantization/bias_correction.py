"""Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization ...", section 4.2).

Why: rounding a layer's weights changes its output by ``(Q(W) - W) x``, whose mean over the data
is in general not zero: with few bits (W4) or coarse per-tensor grids the error of each output
channel has a systematic part, a shift that the following layers amplify rather than average
out. Adding that expected shift back to the bias, ``b += E[W x] - E[Q(W) x]`` per output channel,
removes the systematic part of the error at no cost in the deployed model.

The expectation is estimated on calibration samples run through the simulated model (activation
and weight quantizers on), so ``x`` is what each layer really receives once quantized. For each
quantized Conv / ConvTranspose / Gemm / MatMul layer, a forward hook evaluates the layer on its
input with the weight error ``W - Q(W)`` alone and averages the result over everything but the
output channels; one pass gives every layer's correction. The bias corrected is the layer's own
(Conv, ConvTranspose, Gemm) or, for a MatMul, a constant added right after it (``MatMul -> Add``),
and only where exactly one node reads it; layers without a bias are left as they are (the QDQ
writer edits the source graph and does not add inputs). The corrected biases are listed so that the
QDQ export writes them (quantized to int32 from the corrected values).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .fake_quant import FakeQuantize, SimModel
from .initializers import get_tensor, sole_tensor, torch_names
from .placement import OnnxGraphView, Placement

SAMPLES = 128  # calibration samples the corrections are estimated on, at most
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass
class _Target:
    node: str  # the weight layer's ONNX node
    weight: str  # its weight initializer
    module: nn.Module
    bias: str  # ONNX initializer corrected
    bias_param: str  # its torch name


def keep_batches(batches: Iterable[tuple[torch.Tensor, ...]], limit: int
                 ) -> tuple[Iterator[tuple[torch.Tensor, ...]], list[tuple[torch.Tensor, ...]]]:
    """Pass ``batches`` through unchanged while copying their first ``limit`` samples into the
    returned list: calibration data is streamed once, and the correction needs it again after
    calibration has fixed the encodings."""
    kept: list[tuple[torch.Tensor, ...]] = []

    def passing() -> Iterator[tuple[torch.Tensor, ...]]:
        count = 0
        for batch in batches:
            if count < limit:
                n = int(batch[0].shape[0]) if batch[0].dim() else 1
                take = min(n, limit - count)
                kept.append(tuple(t[:take].clone() for t in batch))
                count += take
            yield batch

    return passing(), kept


def find_targets(sim: SimModel, graph: OnnxGraphView, placement: Placement) -> list[_Target]:
    """Quantized weight layers whose bias can be corrected on its own."""
    names = torch_names(sim.gm)
    producers = graph.producer_map()
    outputs = set(graph.outputs)
    targets = []
    for site in placement.weights:
        quantizer = sim.weights.get(site.initializer)
        if quantizer is None or not (quantizer.enabled and quantizer.initialized):
            continue
        if len(graph.consumers.get(site.initializer, [])) != 1:
            continue
        module_path, _, attr = sim.weight_params[site.initializer].rpartition(".")
        module = sim.gm.get_submodule(module_path) if module_path else sim.gm
        if attr != "weight" or not isinstance(getattr(module, "weight_quantizer", None), FakeQuantize):
            continue
        bias = site.bias
        if bias is None and site.op_type == "MatMul":
            bias = _added_constant(graph, site.node, producers, outputs)
        if bias is None:
            continue
        bias_param = sole_tensor(sim.gm, graph, names, bias)
        if bias_param is None or get_tensor(sim.gm, bias_param).numel() != _channels(module):
            continue
        targets.append(_Target(site.node, site.initializer, module, bias, bias_param))
    return targets


def _added_constant(graph: OnnxGraphView, node_name: str, producers: dict[str, Any], outputs: set[str]) -> str | None:
    """The constant of ``MatMul -> Add(constant)`` that adds one value per output column."""
    node = next((n for n in graph.nodes if n.name == node_name), None)
    if node is None or not node.outputs or node.outputs[0] in outputs:
        return None
    consumers = graph.consumers.get(node.outputs[0], [])
    if len(consumers) != 1 or consumers[0].op_type != "Add" or len(consumers[0].inputs) != 2:
        return None
    add = consumers[0]
    other = add.inputs[1] if add.inputs[0] == node.outputs[0] else add.inputs[0]
    if other == node.outputs[0] or other not in graph.initializers:
        return None
    dims = graph.initializers[other][1]
    if not dims or any(d != 1 for d in dims[:-1]):
        return None  # not a per-column bias (it would add along other axes too)
    return other


def _channels(module: nn.Module) -> int:
    """Output channels of a quantized layer."""
    weight = module.weight
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return int(weight.shape[1]) * int(module.groups)
    return int(weight.shape[0])


def _weight_error_output(module: nn.Module, x: torch.Tensor, error: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The layer applied to ``x`` with weight ``error`` and no bias: the sum over everything but
    the output channels, and how many values each channel's sum has."""
    if isinstance(module, nn.Linear):
        out = F.linear(x, error)
        rows = out.reshape(-1, out.shape[-1])
        return rows.double().sum(0), int(rows.shape[0])
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        conv = _CONV_TRANSPOSE[error.dim() - 2]
        out = conv(x, error, None, module.stride, module.padding, module.output_padding, module.groups,
                   module.dilation)
    else:
        out = module._conv_forward(x, error, None)  # type: ignore[operator]
    rows = out.movedim(1, -1).reshape(-1, out.shape[1])
    return rows.double().sum(0), int(rows.shape[0])


@torch.no_grad()
def correct_biases(sim: SimModel, graph: OnnxGraphView, placement: Placement,
                   batches: Sequence[tuple[torch.Tensor, ...]],
                   float_weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Add ``E[W x] - E[Q(W) x]`` to the bias of every eligible layer of ``sim`` (calibrated:
    its quantizers must hold their encodings), estimated on ``batches``.

    ``float_weights`` holds, by weight initializer, the float ``W`` of layers whose parameter no
    longer is (AdaRound replaced it with values on the grid, whose own error would be zero).

    Returns the report section: the layers corrected, the samples used, the largest correction
    relative to its layer's bias range, and the initializers changed."""
    targets = find_targets(sim, graph, placement)
    if not targets or not batches:
        return {"layers": [], "samples": 0, "initializers": []}
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    float_weights = float_weights or {}
    errors = {id(t.module): float_weights.get(t.weight, t.module.weight).detach()
              - t.module.weight_quantizer(t.module.weight.detach()) for t in targets}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0]
        key = id(module)
        total, count = _weight_error_output(module, x, errors[key].to(x.dtype))
        sums[key] = sums[key] + total if key in sums else total
        counts[key] = counts.get(key, 0) + count

    handles = [t.module.register_forward_hook(hook) for t in {id(t.module): t for t in targets}.values()]
    was_training = sim.gm.training
    sim.gm.eval()
    samples = 0
    try:
        for batch in batches:
            sim.gm(*batch)
            samples += int(batch[0].shape[0]) if batch[0].dim() else 1
    finally:
        for handle in handles:
            handle.remove()
        sim.gm.train(was_training)
    layers = []
    changed = []
    for target in targets:
        key = id(target.module)
        if key not in sums:
            continue  # the layer never ran on these inputs
        correction = sums[key] / counts[key]
        bias = get_tensor(sim.gm, target.bias_param)
        before = bias.detach().double().abs().max()
        bias.copy_((bias.double() + correction.reshape(bias.shape)).to(bias.dtype))
        layers.append({"node": target.node, "bias": target.bias,
                       "largest_correction": round(float(correction.abs().max()), 6),
                       "bias_range": round(float(before), 6)})
        changed.append(target.bias)
    return {"layers": layers, "samples": samples, "initializers": sorted(changed)}
