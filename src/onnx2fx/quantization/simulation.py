"""Reading encodings off the simulated model: the steps PTQ and QFT share.

PTQ derives encodings from calibrated quantizers once; QFT derives them again from the same kind
of model after training has moved weights and (with range learning) scales. Both must agree on
which tensor shares whose encoding, in which order tensors are listed, and how int32 bias scales
follow from the input and weight scales, or the exported files would differ from what the
simulation computed. These helpers are that agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import numpy as np
import torch

from ..errors import Onnx2FxError, QuantizationError
from .fake_quant import SimModel
from .grid import Encoding, bias_encoding
from .initializers import get_tensor
from .placement import OnnxGraphView, OnnxNodeInfo, Placement

T = TypeVar("T")


def weight_param(sim: SimModel, initializer: str) -> torch.Tensor:
    """The torch parameter the quantized ONNX ``initializer`` lives in."""
    return get_tensor(sim.gm, sim.weight_params[initializer])


def follow_shared(tensor: str, shared: Mapping[str, str], encodings: Mapping[str, Encoding]) -> Encoding | None:
    """The encoding ``tensor`` takes from the tensor it shares one with, following chains of
    sharing (a Reshape of a MaxPool of a Relu) to the first tensor that has its own."""
    seen = set()
    while tensor in shared and tensor not in seen:
        seen.add(tensor)
        tensor = shared[tensor]
        if tensor in encodings:
            return encodings[tensor]
    return None


def concat_shared_input(concat: OnnxNodeInfo, encodings: Mapping[str, Encoding],
                        shared: Mapping[str, str]) -> str | None:
    """The input whose encoding a Concat can take instead of its own: the first, when all its
    inputs carry the same encoding (then no requantization is needed); None otherwise."""
    inputs = [i for i in concat.inputs if i]
    input_encodings = [encodings.get(i) or follow_shared(i, shared, encodings) for i in inputs]
    first = input_encodings[0] if input_encodings else None
    if first is None or not all(first.same_as(e) for e in input_encodings[1:]):
        return None
    return inputs[0]


def graph_order(graph: OnnxGraphView) -> list[str]:
    """Every tensor the graph computes, inputs first then node outputs in node order: the order in
    which encodings are listed."""
    return [*graph.inputs, *(o for n in graph.nodes for o in n.outputs if o)]


def int32_bias_encodings(sim: SimModel, placement: Placement, activations: Mapping[str, Encoding],
                   weights: Mapping[str, Encoding], graph: OnnxGraphView) -> dict[str, Encoding]:
    """The int32 encodings of the biases of quantized layers: ``scale = input scale x weight
    scale`` per output channel (a bias whose input or weight is not quantized has none)."""
    encodings = {}
    for site in placement.weights:
        if not site.bias or site.initializer not in weights or site.input_tensor not in activations:
            continue
        weight = weights[site.initializer]
        channels = graph.initializers[site.bias][1]
        encodings[site.bias] = bias_encoding(activations[site.input_tensor], weight, int(np.prod(channels)),
                                             site.bias_axis)
    return encodings


def run_model(what: str, fn: Callable[[], T]) -> T:
    """``fn()``, a step that runs the model; its failure is a QuantizationError naming ``what``.

    torch reports a model that does not accept the data (wrong batch size, dtype, rank) with
    RuntimeError and friends from deep inside the graph; the user needs to know which step failed."""
    try:
        return fn()
    except Onnx2FxError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QuantizationError(f"{what} failed: {type(exc).__name__}: {message}") from exc
