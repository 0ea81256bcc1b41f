"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization
and Bias Correction").

Why: a per-tensor weight grid is as coarse as the layer's largest output channel needs, so a layer
whose channels have very different ranges (common after BatchNorm folding, and in depthwise
convolutions) loses most channels to rounding. For two consecutive convolutions joined by a
positively homogeneous function f (``f(x / s) = f(x) / s`` for ``s > 0``: ReLU, LeakyReLU, or
nothing), dividing output channel ``i`` of the first layer by ``s_i`` and multiplying input channel
``i`` of the second by ``s_i`` computes exactly the same function. With
``s_i = sqrt(r1_i / r2_i)`` (``r1_i``: range of output channel ``i`` of the first weight, ``r2_i``:
range of input channel ``i`` of the second) both become ``sqrt(r1_i * r2_i)``: the ranges are
equalized across channels, and the per-tensor grids of both layers fit more channels well.

Pairs are found on the source ONNX graph (the weights that are quantized and exported are its
initializers): ``Conv -> [BatchNormalization] -> [Relu | LeakyRelu] -> Conv``, grouped and
depthwise convolutions included, where every intermediate tensor has that one consumer and is
not a graph output. The PTQ path does not fold BatchNormalization into the convolution (the QDQ
model keeps it in float after the integer convolution), so a BatchNormalization in between is
scaled too: its mean and bias by ``1 / s_i``, which divides its output by ``s_i`` exactly. Its
per-channel gain ``|scale| / sqrt(var + epsilon)`` then decides how large channel ``i`` really is,
so ``r1_i`` is taken from the weight as BatchNormalization folding would make it (equalizing the
raw weight instead unbalances the activations the gain had balanced, which costs more than the
weight grid gains). Clip (ReLU6) and other activations are not homogeneous and end a pair.
Chains (conv1 -> conv2 -> conv3) are equalized by repeated sweeps until the scales settle.

Only initializers that one node reads and one torch tensor holds are changed (else another layer
would change too); the changed initializers are listed so that the QDQ export writes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from ..conversion_record import copy_converted
from .initializers import get_tensor, sole_tensor, torch_names
from .placement import OnnxGraphView, OnnxNodeInfo, Placement

HOMOGENEOUS = ("Relu", "LeakyRelu")  # f(x / s) = f(x) / s for every s > 0
MAX_SWEEPS = 50
TOLERANCE = 1e-4  # stop when no scale moves a range by more than this (relative)


@dataclass
class _Layer:
    node: str
    weight: str  # ONNX initializer
    weight_param: str  # torch name
    groups: int
    bias: str | None = None
    bias_param: str | None = None


@dataclass
class _Pair:
    first: _Layer
    second: _Layer
    through: list[str]  # ONNX nodes in between
    norm: dict[str, str] = field(default_factory=dict)  # BatchNormalization initializer -> torch name (mean, bias)
    channels: int = 0
    gain: torch.Tensor | None = None  # |scale| / sqrt(var + epsilon) of the BatchNormalization in between


def equalized_copy(gm: torch.fx.GraphModule, graph: OnnxGraphView,
                   placement: Placement) -> tuple[torch.fx.GraphModule, dict[str, Any]]:
    """A copy of ``gm`` with cross-layer equalization applied, and what was done (for the report).

    The copy carries the conversion record, so it can stand in for the float model."""
    copied = copy_converted(gm)
    return copied, equalize(copied, graph, placement)


@torch.no_grad()
def equalize(gm: torch.fx.GraphModule, graph: OnnxGraphView, placement: Placement) -> dict[str, Any]:
    """Equalize every eligible pair of quantized convolutions of ``gm`` in place.

    Returns the report section: the pairs, how far apart the first layers' channel ranges were
    before and after (largest / smallest), the sweeps run and the initializers changed."""
    pairs = find_pairs(gm, graph, placement)
    before = [_spread(_first_ranges(gm, p)) for p in pairs]
    sweeps = 0
    while pairs and sweeps < MAX_SWEEPS:
        sweeps += 1
        if max(_equalize_pair(gm, pair) for pair in pairs) < TOLERANCE:
            break
    changed: set[str] = set()
    rows = []
    for pair, spread in zip(pairs, before):
        changed.update([pair.first.weight, pair.second.weight, *pair.norm])
        if pair.first.bias:
            changed.add(pair.first.bias)
        rows.append({"first": pair.first.node, "second": pair.second.node, "through": pair.through,
                     "channels": pair.channels, "range_spread_before": spread,
                     "range_spread_after": _spread(_first_ranges(gm, pair))})
    return {"pairs": rows, "sweeps": sweeps, "initializers": sorted(changed)}


def find_pairs(gm: torch.fx.GraphModule, graph: OnnxGraphView, placement: Placement) -> list[_Pair]:
    """Consecutive quantized convolutions that can be equalized exactly (see the module docstring)."""
    names = torch_names(gm)
    quantized = {site.initializer for site in placement.weights}
    outputs = set(graph.outputs)
    pairs: list[_Pair] = []
    for node in graph.nodes:
        if node.op_type != "Conv":
            continue
        first = _layer(gm, graph, names, node, quantized)
        if first is None:
            continue
        found = _follow(graph, node, outputs)
        if found is None:
            continue
        second_node, through = found
        second = _layer(gm, graph, names, second_node, quantized)
        if second is None:
            continue
        pair = _Pair(first, second, [n.name for n in through])
        if not _fill_norm(gm, graph, names, pair, through):
            continue
        weight1, weight2 = get_tensor(gm, first.weight_param), get_tensor(gm, second.weight_param)
        pair.channels = int(weight1.shape[0])
        if weight2.dim() != weight1.dim() or weight2.shape[1] * second.groups != pair.channels:
            continue
        pairs.append(pair)
    return pairs


def _layer(gm: torch.fx.GraphModule, graph: OnnxGraphView, names: dict[str, list[str]], node: OnnxNodeInfo,
           quantized: set[str]) -> _Layer | None:
    """A Conv whose weight (and bias, if any) can be changed on its own."""
    if node.op_type != "Conv" or len(node.inputs) < 2 or node.inputs[1] not in quantized:
        return None
    weight_param = sole_tensor(gm, graph, names, node.inputs[1])
    if weight_param is None:
        return None
    layer = _Layer(node.name, node.inputs[1], weight_param, int(node.attributes.get("group", 1)))
    if len(node.inputs) > 2 and node.inputs[2]:
        bias_param = sole_tensor(gm, graph, names, node.inputs[2])
        if bias_param is None:
            return None
        layer.bias, layer.bias_param = node.inputs[2], bias_param
    return layer


def _follow(graph: OnnxGraphView, node: OnnxNodeInfo, outputs: set[str]
            ) -> tuple[OnnxNodeInfo, list[OnnxNodeInfo]] | None:
    """The Conv that reads ``node``'s output through at most one BatchNormalization and one
    homogeneous activation, each the sole consumer of what it reads."""
    through: list[OnnxNodeInfo] = []
    tensor = node.outputs[0] if node.outputs else ""
    while True:
        consumers = graph.consumers.get(tensor, [])
        if not tensor or tensor in outputs or len(consumers) != 1:
            return None
        consumer = consumers[0]
        if consumer.inputs[0] != tensor or tensor in consumer.inputs[1:]:
            return None
        kinds = [n.op_type for n in through]
        if consumer.op_type == "Conv":
            return consumer, through
        if consumer.op_type == "BatchNormalization" and not kinds and len([o for o in consumer.outputs if o]) == 1 \
                and not int(consumer.attributes.get("training_mode", 0)) \
                and int(consumer.attributes.get("spatial", 1)):  # one value per channel (opset < 9 allows others)
            pass
        elif consumer.op_type in HOMOGENEOUS and not any(k in HOMOGENEOUS for k in kinds):
            pass
        else:
            return None
        through.append(consumer)
        tensor = consumer.outputs[0]


def _fill_norm(gm: torch.fx.GraphModule, graph: OnnxGraphView, names: dict[str, list[str]], pair: _Pair,
               through: list[OnnxNodeInfo]) -> bool:
    """Record the BatchNormalization bias and mean that scale with the first layer's output."""
    for node in through:
        if node.op_type != "BatchNormalization":
            continue
        if len(node.inputs) < 5:
            return False
        for initializer in (node.inputs[2], node.inputs[3]):  # B, input_mean
            held = sole_tensor(gm, graph, names, initializer)
            if held is None:
                return False
            pair.norm[initializer] = held
        scale, var = (names.get(node.inputs[1]) or [None])[0], (names.get(node.inputs[4]) or [None])[0]
        if scale is None or var is None:
            return False
        eps = float(node.attributes.get("epsilon", 1e-5))
        gain = get_tensor(gm, scale).detach().double().abs()
        pair.gain = gain / torch.sqrt(get_tensor(gm, var).detach().double() + eps)
    return True


def _first_ranges(gm: torch.fx.GraphModule, pair: _Pair) -> torch.Tensor:
    """The output channel ranges of the first layer as the channels carry them: times the
    BatchNormalization's per-channel gain when one follows."""
    ranges = _out_ranges(get_tensor(gm, pair.first.weight_param))
    return ranges * pair.gain if pair.gain is not None else ranges


def _out_ranges(weight: torch.Tensor) -> torch.Tensor:
    """max |w| of each output channel (axis 0)."""
    return weight.detach().abs().reshape(weight.shape[0], -1).amax(1).double()


def _in_ranges(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """max |w| of each input channel of a (grouped) convolution weight (C_out, C_in / groups, k...)."""
    c_out, per_group = weight.shape[0], weight.shape[1]
    grouped = weight.detach().abs().reshape(groups, c_out // groups, per_group, -1)
    return grouped.amax(dim=(1, 3)).reshape(-1).double()


def _spread(ranges: torch.Tensor) -> float | None:
    """Largest over smallest nonzero channel range (1 = equal ranges)."""
    nonzero = ranges[ranges > 0]
    return round(float(nonzero.max() / nonzero.min()), 4) if nonzero.numel() else None


def _equalize_pair(gm: torch.fx.GraphModule, pair: _Pair) -> float:
    """One equalization step; returns the largest relative change of a range."""
    weight1, weight2 = get_tensor(gm, pair.first.weight_param), get_tensor(gm, pair.second.weight_param)
    r1, r2 = _first_ranges(gm, pair), _in_ranges(weight2, pair.second.groups)
    scale = torch.ones_like(r1)
    ok = (r1 > 0) & (r2 > 0)
    scale[ok] = torch.sqrt(r1[ok] / r2[ok])
    moved = float((scale - 1).abs().max()) if scale.numel() else 0.0
    if moved < TOLERANCE:
        return moved
    # output channel i of the first layer, its bias and the BatchNormalization after it: / s_i
    shape = (-1,) + (1,) * (weight1.dim() - 1)
    weight1.copy_((weight1.double() / scale.reshape(shape)).to(weight1.dtype))
    targets = [pair.first.bias_param, *pair.norm.values()]
    for name in targets:
        if name is not None:
            tensor = get_tensor(gm, name)
            tensor.copy_((tensor.double() / scale.reshape(tensor.shape)).to(tensor.dtype))
    # input channel i of the second layer: * s_i
    groups, c_out = pair.second.groups, weight2.shape[0]
    grouped = weight2.double().reshape(groups, c_out // groups, weight2.shape[1], -1)
    grouped = grouped * scale.reshape(groups, 1, weight2.shape[1], 1)
    weight2.copy_(grouped.reshape(weight2.shape).to(weight2.dtype))
    return moved if math.isfinite(moved) else 0.0
