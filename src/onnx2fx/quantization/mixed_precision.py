"""Mixed precision: raise the bit widths of the layers that cost the output most until the
simulated output SQNR reaches a target.

Starting from the requested bit widths (W4A8, say), two phases, each stopping as soon as the
target is met:

1. weights below 8 bits go to 8 bits, one layer at a time;
2. then, for layers whose weights are 8 bits or more, the output activation goes to 16 bits.

Within a phase each candidate is first promoted alone and the output SQNR measured (then undone):
the candidates are promoted in the order of that SQNR, best first, and the SQNR is measured again
after each promotion. Measuring the promotion itself, rather than ranking by the error of the
layer in float, ranks by what the change actually buys: a layer's 4-bit weights can dominate
while its 8-bit output quantizer costs little, or the other way round.

The promotion that reaches the target is the best next step, not necessarily the cheapest one
that suffices: before keeping it, the weight phase tries the remaining layers whose promotion adds
fewer bytes (smallest first) in its place and keeps the first that also reaches the target
(``instead_of`` in the report names the layer it replaced). On the digits CNN at a target between
its W4A8 and W8A8 SQNRs, that puts a 4,608-weight convolution at 8 bits in place of a
32,768-weight Gemm.

Encodings are derived again the way calibration derived them, without running the data again:
a promoted weight is encoded at its new width with the config's weight scheme (and the layer
input statistics the ``mse`` scheme gathered), a promoted activation by its own calibrator on
the wider grid; the int32 bias encodings follow (``input scale x weight scale``). The result is
a :class:`QuantConfig` with per-node overrides, so the report's settings, ``encodings.json`` (one
bit width per tensor) and the QDQ model (one integer type per tensor) all say what was chosen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .calibrators import Calibrator
from .config import QuantConfig
from .fake_quant import FakeQuantize, SimModel
from .grid import Encoding, QuantGrid
from .sensitivity import OutputScorer, QuantizedLayer, finite_db
from .simulation import weight_param
from .weight_search import InputMoments, weight_encoding

WEIGHT_BITS = 8  # the width phase 1 promotes weights to
ACTIVATION_BITS = 16  # the width phase 2 promotes activations to


@dataclass
class _Saved:
    quantizer: FakeQuantize
    bits: int
    symmetric: bool
    encoding: Encoding

    @classmethod
    def of(cls, quantizer: FakeQuantize) -> _Saved:
        return cls(quantizer, quantizer.bits, quantizer.symmetric, quantizer.encoding())

    def restore(self) -> None:
        self.quantizer.bits = self.bits
        self.quantizer.symmetric = self.symmetric
        self.quantizer.set_encoding(self.encoding)


class LayerPrecision:
    """Changes the bit width of a layer's weight or output quantizer and encodes it again.

    ``refresh_biases`` derives the int32 bias encodings again from the current weight and
    activation encodings (a bias scale is ``input scale x weight scale``, so a promotion changes
    the biases of its own layer and, for an activation, of the layers that read it)."""

    def __init__(self, sim: SimModel, config: QuantConfig, symmetric: Mapping[str, bool],
                 moments: Mapping[str, InputMoments], calibrators: Mapping[int, Calibrator],
                 refresh_biases: Callable[[], None]) -> None:
        self.sim = sim
        self.config = config
        self.symmetric = symmetric  # weight initializer -> the configured symmetry of its grid
        self.moments = moments
        self.calibrators = calibrators  # id(activation quantizer) -> its calibrator
        self.refresh_biases = refresh_biases

    def can_promote(self, layer: QuantizedLayer, kind: str) -> bool:
        if kind == "weights":
            return layer.weight_quantizer.bits < WEIGHT_BITS
        quantizer = layer.output_quantizer
        return (quantizer is not None and quantizer.bits < ACTIVATION_BITS and id(quantizer) in self.calibrators
                and layer.weight_quantizer.bits >= WEIGHT_BITS)

    def quantizer(self, layer: QuantizedLayer, kind: str) -> FakeQuantize:
        quantizer = layer.weight_quantizer if kind == "weights" else layer.output_quantizer
        assert quantizer is not None
        return quantizer

    def promote(self, layer: QuantizedLayer, kind: str) -> None:
        if kind == "weights":
            quantizer = layer.weight_quantizer
            encoding = weight_encoding(weight_param(self.sim, layer.weight), quantizer.axis, quantizer.onnx_axis,
                                       WEIGHT_BITS, self.symmetric[layer.weight],
                                       self.config.resolved_weight_scheme, self.config.weight_symmetry,
                                       self.moments.get(layer.weight))
            quantizer.bits = WEIGHT_BITS
            quantizer.symmetric = encoding.symmetric
        else:
            quantizer = self.quantizer(layer, kind)
            grid = QuantGrid(ACTIVATION_BITS, quantizer.signed)
            encoding = self.calibrators[id(quantizer)].encoding(grid, quantizer.symmetric)
            quantizer.bits = ACTIVATION_BITS
        quantizer.set_encoding(encoding)
        self.refresh_biases()


def weight_bytes(sim: SimModel, sizes: Mapping[str, int], bits: Callable[[str, FakeQuantize], int]) -> int:
    """Bytes of the quantized weights at ``bits(initializer, quantizer)`` per value, each tensor
    packed (two 4-bit values per byte, as ONNX stores INT4), rounded up to whole bytes."""
    return sum(math.ceil(sizes[name] * bits(name, q) / 8) for name, q in sim.weights.items())


def search_mixed_precision(sim: SimModel, layers: Sequence[QuantizedLayer], scorer: OutputScorer,
                           precision: LayerPrecision, target_db: float, sizes: Mapping[str, int]) -> dict[str, Any]:
    """Promote layers (see the module docstring) until the output SQNR reaches ``target_db``;
    the quantizers of ``sim`` keep the chosen bit widths. Returns the report section."""
    requested = {name: q.bits for name, q in sim.weights.items()}
    before = current = scorer.sqnr_db(sim.gm)
    promoted: list[dict[str, Any]] = []
    ranking: list[dict[str, Any]] = []
    for kind in ("weights", "activations"):
        if current >= target_db:
            break
        candidates = []
        for index, layer in enumerate(layers):
            if not precision.can_promote(layer, kind):
                continue
            saved = _Saved.of(precision.quantizer(layer, kind))
            precision.promote(layer, kind)
            candidates.append((scorer.sqnr_db(sim.gm), index, layer))
            saved.restore()
            precision.refresh_biases()
        candidates.sort(key=lambda c: (-c[0], c[1]))  # best first; graph order among equals
        ranking += [{"node": layer.node, "kind": kind, "sqnr_db_promoted_alone": finite_db(alone)}
                    for alone, _, layer in candidates]
        alone_of = {id(layer): alone for alone, _, layer in candidates}
        for alone, _, layer in candidates:
            if current >= target_db:
                break
            saved = _Saved.of(precision.quantizer(layer, kind))
            precision.promote(layer, kind)
            current = scorer.sqnr_db(sim.gm)
            step = {"node": layer.node, "kind": kind, "tensor": layer.weight if kind == "weights" else layer.output,
                    "bits": [saved.bits, precision.quantizer(layer, kind).bits],
                    "sqnr_db_promoted_alone": finite_db(alone), "sqnr_db": finite_db(current)}
            if current >= target_db and kind == "weights":
                cheaper = [c for _, _, c in candidates if precision.can_promote(c, kind)]
                swap = _cheaper_last_step(sim, scorer, precision, layer, saved, cheaper, sizes, target_db)
                if swap is not None:
                    layer, current = swap
                    step.update(node=layer.node, tensor=layer.weight, instead_of=step["node"],
                                sqnr_db_promoted_alone=finite_db(alone_of[id(layer)]), sqnr_db=finite_db(current))
            promoted.append(step)
    return {"target_db": target_db, "reached": current >= target_db, "sqnr_db_before": finite_db(before),
            "sqnr_db_after": finite_db(current), "samples": scorer.samples, "promoted": promoted,
            "ranking": ranking, "layers": len(layers),
            "weight_bytes": {"requested": weight_bytes(sim, sizes, lambda name, q: requested[name]),
                             "chosen": weight_bytes(sim, sizes, lambda name, q: q.bits),
                             "all_8_bit": weight_bytes(sim, sizes, lambda name, q: max(8, requested[name]))}}


def _cheaper_last_step(sim: SimModel, scorer: OutputScorer, precision: LayerPrecision, last: QuantizedLayer,
                       saved: _Saved, others: Sequence[QuantizedLayer], sizes: Mapping[str, int],
                       target_db: float) -> tuple[QuantizedLayer, float] | None:
    """The promotion that reached the target is the best next step, but another layer with fewer
    weights may reach it too: try those (smallest first) in its place, and keep the first that
    does, with its SQNR. None (and ``last`` promoted as before) when none does."""
    def cost(layer: QuantizedLayer) -> int:
        return sizes[layer.weight] * (WEIGHT_BITS - layer.weight_quantizer.bits)

    limit = sizes[last.weight] * (WEIGHT_BITS - saved.bits)  # what ``last``'s promotion adds
    smaller = sorted((o for o in others if cost(o) < limit), key=cost)
    if not smaller:
        return None
    promoted = _Saved.of(last.weight_quantizer)
    saved.restore()
    precision.refresh_biases()
    for layer in smaller:
        before = _Saved.of(layer.weight_quantizer)
        precision.promote(layer, "weights")
        sqnr = scorer.sqnr_db(sim.gm)
        if sqnr >= target_db:
            return layer, sqnr
        before.restore()
    promoted.restore()
    precision.refresh_biases()
    return None


def promoted_config(config: QuantConfig, layers: Sequence[QuantizedLayer], promoted: Sequence[Mapping[str, Any]],
                    op_types: Mapping[str, str]) -> QuantConfig:
    """``config`` with a per-node override for each promotion: ``weights`` on the layer's node,
    ``activations`` on the node computing its output (the Relu of a Conv+Relu group)."""
    by_node = {layer.node: layer for layer in layers}
    nodes = {name: dict(specs) for name, specs in config.nodes.items()}
    for step in promoted:
        layer = by_node[step["node"]]
        node = layer.node if step["kind"] == "weights" else layer.output_node
        if node is None:
            continue
        spec = config.spec_for(step["kind"], op_types.get(node, ""), node)
        nodes.setdefault(node, {})[step["kind"]] = replace(spec, bits=step["bits"][1])
    result = replace(config, nodes=nodes)
    result.validate()
    return result
