"""Per-layer quantization sensitivity: which layers cost the output most when quantized.

A quantized layer is one ONNX weight op (Conv, ConvTranspose, Gemm, MatMul with a constant
operand) together with its quantizers: the weight's, the int32 bias's and the output
activation's (the quantizer at the end of its fused group: the Relu after a Conv+Relu). As in
AIMET's QuantAnalyzer, two figures per layer, both the worst model output's SQNR against the
float model on the evaluation batches:

- ``only_this_layer_sqnr_db``: this layer's quantizers on, every other quantizer off: what this
  layer alone costs (lower is more sensitive);
- ``all_but_this_layer_sqnr_db``: every quantizer on except this layer's: what leaving it in
  float would recover (higher is more sensitive).

Quantizers that belong to no weight layer (the graph inputs', an Add's, a Softmax's) are off in
the first figure and on in the second. Both figures come from switching the calibrated fake-quant
modules on and off: nothing is calibrated again, so they describe exactly the model that is
exported, as it is after calibration and mixed precision (AdaRound and bias correction, when asked
for, run afterwards and are not in these figures).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .fake_quant import FakeQuantize, SimModel
from .metrics import ErrorStats, flatten_outputs
from .placement import OnnxGraphView, Placement

PLOT_FILE = "sensitivity.png"


@dataclass
class QuantizedLayer:
    """One weight op and the quantizers that belong to it."""

    node: str  # the ONNX node
    op_type: str
    weight: str  # its quantized weight initializer
    weight_quantizer: FakeQuantize
    bias_quantizer: FakeQuantize | None
    output: str | None  # the first quantized tensor after the op (the output of its fused group)
    output_node: str | None  # the ONNX node computing ``output`` (where its activation spec is configured)
    output_quantizer: FakeQuantize | None

    def quantizers(self) -> list[FakeQuantize]:
        return [q for q in (self.weight_quantizer, self.bias_quantizer, self.output_quantizer) if q is not None]


def quantized_layers(sim: SimModel, placement: Placement, graph: OnnxGraphView) -> list[QuantizedLayer]:
    """The weight layers of ``sim`` in graph order (a weight shared by several nodes counts once)."""
    nodes = {node.name: node for node in graph.nodes}
    producers = graph.producer_map()
    layers = []
    for site in placement.weights:
        quantizer = sim.weights.get(site.initializer)
        node = nodes.get(site.node)
        if quantizer is None or node is None or not node.outputs:
            continue
        output = node.outputs[0]
        while output not in sim.activations and output in placement.fused:  # Conv -> Relu: the Relu's output
            follower = nodes[placement.fused[output]]
            output = follower.outputs[0]
        quantized = output in sim.activations
        layers.append(QuantizedLayer(site.node, site.op_type, site.initializer, quantizer,
                                     sim.biases.get(site.bias) if site.bias else None,
                                     output if quantized else None,
                                     producers[output].name if quantized and output in producers else None,
                                     sim.activations.get(output) if quantized else None))
    return layers


def all_quantizers(sim: SimModel) -> list[FakeQuantize]:
    """Every quantizer of ``sim`` once: activations, weights and int32 biases."""
    seen: dict[int, FakeQuantize] = {}
    for quantizer in [*sim.activations.values(), *sim.weights.values(), *sim.biases.values()]:
        seen.setdefault(id(quantizer), quantizer)
    return list(seen.values())


@contextlib.contextmanager
def quantizers_switched(quantizers: Sequence[FakeQuantize], on: set[int]) -> Iterator[None]:
    """Within the block, only the quantizers whose ``id`` is in ``on`` quantize (a quantizer that
    was off stays off); afterwards each is as it was."""
    saved = [(q, q.enabled) for q in quantizers]
    try:
        for quantizer, enabled in saved:
            quantizer.enabled = enabled and id(quantizer) in on
        yield
    finally:
        for quantizer, enabled in saved:
            quantizer.enabled = enabled


class OutputScorer:
    """The worst output SQNR of a simulated model against the float model's outputs on fixed
    batches (the float outputs are computed once)."""

    def __init__(self, reference: torch.nn.Module, batches: Sequence[Sequence[torch.Tensor]]) -> None:
        self.batches = list(batches)
        with torch.no_grad():
            self.references = [flatten_outputs(reference(*batch)) for batch in self.batches]
        self.samples = sum(int(b[0].shape[0]) if b and b[0].dim() else 1 for b in self.batches)
        self.runs = 0

    def sqnr_db(self, model: torch.nn.Module) -> float:
        """``10 log10(signal / noise)`` of the worst output (infinite when every output is exact)."""
        stats: list[ErrorStats] = []
        with torch.no_grad():
            for batch, references in zip(self.batches, self.references):
                outputs = flatten_outputs(model(*batch))
                if not stats:
                    stats = [ErrorStats() for _ in references]
                for stat, reference, output in zip(stats, references, outputs):
                    stat.update(reference, output)
        self.runs += 1
        return min((s.sqnr_db for s in stats), default=math.inf)


def finite_db(value: float) -> float | None:
    """A figure for JSON: rounded dB, None for an exact (infinite SQNR) result."""
    return None if math.isinf(value) or math.isnan(value) else round(value, 3)


def sensitivity_analysis(sim: SimModel, layers: Sequence[QuantizedLayer], scorer: OutputScorer) -> dict[str, Any]:
    """The per-layer table (see the module docstring), in graph order."""
    quantizers = all_quantizers(sim)
    everything = {id(q) for q in quantizers}
    all_quantized = scorer.sqnr_db(sim.gm)
    rows = []
    for layer in layers:
        own = {id(q) for q in layer.quantizers()}
        with quantizers_switched(quantizers, own):
            alone = scorer.sqnr_db(sim.gm)
        with quantizers_switched(quantizers, everything - own):
            without = scorer.sqnr_db(sim.gm)
        rows.append({"node": layer.node, "op_type": layer.op_type, "weight": layer.weight, "output": layer.output,
                     "weight_bits": layer.weight_quantizer.bits,
                     "activation_bits": layer.output_quantizer.bits if layer.output_quantizer else None,
                     "only_this_layer_sqnr_db": finite_db(alone), "all_but_this_layer_sqnr_db": finite_db(without),
                     "all_but_this_layer_gain_db": finite_db(without - all_quantized)})
    return {"samples": scorer.samples, "all_quantized_sqnr_db": finite_db(all_quantized), "layers": rows,
            "plot": None, "plot_note": None}  # the plot is drawn when the folder is written


def write_plot(section: dict[str, Any], path: Path) -> str | None:
    """Draw the sensitivity table as a PNG at ``path``; returns why not when it cannot (matplotlib,
    an optional dependency, is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no plot"
    rows = section["layers"]
    labels = [f"{row['node']} (W{row['weight_bits']}A{row['activation_bits'] or '-'})" for row in rows]
    finite = [v for row in rows for v in (row["only_this_layer_sqnr_db"], row["all_but_this_layer_sqnr_db"])
              if v is not None]
    ceiling = max(finite, default=0.0) + 10.0  # an exact result is drawn past the largest finite one
    alone = [ceiling if row["only_this_layer_sqnr_db"] is None else row["only_this_layer_sqnr_db"] for row in rows]
    without = [ceiling if row["all_but_this_layer_sqnr_db"] is None else row["all_but_this_layer_sqnr_db"]
               for row in rows]
    positions = list(range(len(rows)))
    figure, axes = plt.subplots(figsize=(8, 1.5 + 0.35 * len(rows)))
    try:
        axes.barh([p - 0.2 for p in positions], alone, height=0.4, label="only this layer quantized")
        axes.barh([p + 0.2 for p in positions], without, height=0.4, label="all but this layer quantized")
        if section.get("all_quantized_sqnr_db") is not None:
            axes.axvline(section["all_quantized_sqnr_db"], color="black", linestyle="--", label="all quantized")
        axes.set_yticks(positions)
        axes.set_yticklabels(labels, fontsize=7)
        axes.invert_yaxis()
        axes.set_xlabel("output SQNR against the float model (dB)")
        axes.set_title("Per-layer quantization sensitivity")
        axes.legend(fontsize=7, loc="lower right")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return None
