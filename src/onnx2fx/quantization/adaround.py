"""AdaRound: learned rounding of weights (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
Post-Training Quantization").

Why: rounding every weight to its nearest grid point minimises each weight's own error, not the
error of the layer's output. Weights that are rounded the "wrong" way can cancel each other's
errors on the data the layer actually sees; with few bits (W4) the difference is large. AdaRound
keeps the calibrated encoding (scale and zero point) and only decides, per weight, whether it
goes to ``floor(W / s)`` or one step up, by minimising the layer's output reconstruction error.

Per quantized Conv / ConvTranspose / Linear layer (Gemm, and MatMul with a 2-D constant, which
the converter makes ``nn.Linear``), in the order the simulation runs them:

1. the layer's inputs are collected with a forward pre-hook on the first calibration samples
   run through the simulation (activation quantizers on, earlier layers already AdaRounded), at
   most :data:`CACHE_VALUES` values;
2. a continuous variable ``V`` per weight gives the soft rounding ``h(V) = clamp(sigmoid(V) x
   (zeta - gamma) + gamma, 0, 1)`` (the rectified sigmoid, zeta = 1.1, gamma = -0.1), started at
   the weight's fractional part so the soft weight starts at the float weight;
3. Adam (lr 1e-2) minimises ``||W x - W~(V) x||^2`` (summed over output channels, averaged over
   positions: the float output of the same ``x`` is the target, as in AIMET's default) plus
   ``lambda x sum(1 - |2 h(V) - 1|^beta)`` (lambda = 0.01), which pushes ``h`` to 0 or 1; the
   regulariser is off for the first 20 % of the iterations and ``beta`` then falls linearly from
   20 to 2. Each step uses a random subset of the cached inputs (about :data:`POSITIONS` output
   positions) so that memory and time per step are bounded whatever the layer size;
4. the weight becomes ``(clamp(floor(W / s) + [h(V) >= 0.5] + zp) - zp) x s``: values on the
   encoding's grid, so the weight quantizer (and the QDQ writer, which quantizes the exported
   values with the same encoding) reproduces exactly the chosen integers. Each integer is the
   round-to-nearest one or its neighbour.

The biases cancel out of the reconstruction error (both sides add the same bias), so they are
left out of it. A layer whose AdaRounded weight reconstructs its cached outputs worse than round
to nearest keeps its float weight, and so round to nearest: with few iterations, or where large
outputs outweigh the regulariser (lambda is not scale-free), some soft roundings are still
undecided at the end and thresholding them at 0.5 can lose to the nearest grid points.
The weights changed are listed so that the QDQ export writes them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import QuantizationError
from .config import QuantConfig
from .fake_quant import FakeQuantize, SimModel, quantize_dequantize
from .initializers import sole_tensor, torch_names
from .placement import OnnxGraphView, Placement

SAMPLES = 128  # calibration samples the layer inputs are collected from, at most
# optimisation steps per layer, QuantConfig's default (the paper used 10k; a few hundred give most of the gain)
ITERATIONS: int = QuantConfig.adaround_iterations
POSITIONS = 2048  # output positions (rows of a Linear, pixels of a convolution) per optimisation step, about
CACHE_VALUES = 1 << 25  # cached input values per layer, at most (128 MiB of float32)
LEARNING_RATE = 1e-2
REGULARIZATION = 0.01  # lambda
WARMUP = 0.2  # share of the iterations without the rounding regulariser
BETA = (20.0, 2.0)  # annealed from the first to the second after the warm-up
ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch

_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass
class _Layer:
    node: str  # the ONNX node
    initializer: str  # its weight initializer
    module: nn.Module  # a quantized Conv*/ConvTranspose*/Linear
    quantizer: FakeQuantize


class _Stop(Exception):
    """Raised by the input-collecting hook: the rest of the model need not run."""


def find_layers(sim: SimModel, graph: OnnxGraphView, placement: Placement
                ) -> tuple[list[_Layer], list[dict[str, str]]]:
    """The quantized weight layers AdaRound can change, in the order the simulation runs them,
    and the quantized weights it leaves alone, with the reason."""
    names = torch_names(sim.gm)
    order = {id(sim.gm.get_submodule(n.target)): i for i, n in enumerate(sim.gm.graph.nodes)
             if n.op == "call_module"}
    layers: list[tuple[int, _Layer]] = []
    skipped: list[dict[str, str]] = []
    for site in placement.weights:
        quantizer = sim.weights.get(site.initializer)
        if quantizer is None or not (quantizer.enabled and quantizer.initialized):
            continue
        param = sim.weight_params[site.initializer]
        module_path, _, attr = param.rpartition(".")
        module = sim.gm.get_submodule(module_path) if module_path else sim.gm
        if attr != "weight" or getattr(module, "weight_quantizer", None) is not quantizer or \
                not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            skipped.append({"initializer": site.initializer, "reason": "not the weight of a Conv, ConvTranspose or "
                            "Linear layer (a MatMul with a constant of rank > 2)"})
            continue
        if sole_tensor(sim.gm, graph, names, site.initializer, transform_free=False) != param:
            skipped.append({"initializer": site.initializer, "reason": "read by more than one node"})
            continue
        if id(module) not in order:
            skipped.append({"initializer": site.initializer, "reason": "its layer is not called by the model"})
            continue
        layers.append((order[id(module)], _Layer(site.node, site.initializer, module, quantizer)))
    return [layer for _, layer in sorted(layers, key=lambda item: item[0])], skipped


# ---------------------------------------------------------------------------------- the rounding
class _Rounding(nn.Module):
    """The soft and hard AdaRounded versions of one weight under a fixed encoding."""

    def __init__(self, weight: torch.Tensor, quantizer: FakeQuantize) -> None:
        super().__init__()
        shape = [1] * weight.dim()
        if quantizer.axis is not None:
            shape[quantizer.axis] = -1
        self.scale = quantizer.scale.detach().float().reshape(shape)
        self.zero_point = quantizer.zero_point.detach().float().reshape(shape)
        self.qmin, self.qmax, self.axis = quantizer.quant_min, quantizer.quant_max, quantizer.axis
        scaled = torch.div(weight.detach().float(), self.scale)  # the quantizer's own division
        floor = torch.floor(scaled)
        self.shifted = floor + self.zero_point  # the integer below, on the stored grid
        rest = (scaled - floor).clamp(0.0, 1.0)
        # h(V) = rest at the start: the soft weight starts at the float weight
        self.v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0))

    def h(self) -> torch.Tensor:
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def soft(self, h: torch.Tensor) -> torch.Tensor:
        """The weight with soft rounding ``h`` (from :meth:`h`, computed once per step)."""
        return (torch.clamp(self.shifted + h, self.qmin, self.qmax) - self.zero_point) * self.scale

    @staticmethod
    def regularizer(h: torch.Tensor, beta: float) -> torch.Tensor:
        return (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()

    @torch.no_grad()
    def integers(self) -> torch.Tensor:
        return torch.clamp(self.shifted + (self.h() >= 0.5).float(), self.qmin, self.qmax)

    @torch.no_grad()
    def hard(self) -> torch.Tensor:
        """The AdaRounded weight, on the encoding's grid (checked: quantizing it gives it back)."""
        weight = (self.integers() - self.zero_point) * self.scale
        again = quantize_dequantize(weight, self.scale.flatten(), self.zero_point.flatten(), self.qmin, self.qmax,
                                    self.axis)
        if not torch.equal(again, weight):
            raise QuantizationError("an AdaRounded weight is not on its encoding's grid")
        return weight


def beta_at(step: int, iterations: int) -> float | None:
    """The regulariser's exponent at ``step``: None during the warm-up, then linear from
    ``BETA[0]`` to ``BETA[1]`` (AIMET's LinearTempDecay)."""
    start = int(WARMUP * iterations)
    if step < start:
        return None
    progress = (step - start) / max(iterations - start, 1)
    return BETA[1] + (BETA[0] - BETA[1]) * max(0.0, 1.0 - progress)


# ---------------------------------------------------------------------------------- one layer
def _apply(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer on ``x`` with ``weight`` and no bias (the bias cancels out of the error)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return _CONV_TRANSPOSE[weight.dim() - 2](x, weight, None, module.stride, module.padding,
                                                 module.output_padding, module.groups, module.dilation)
    return module._conv_forward(x, weight, None)  # type: ignore[operator]


def _error(module: nn.Module, x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Squared output error summed over output channels, averaged over positions."""
    channel = -1 if isinstance(module, nn.Linear) else 1
    return (_apply(module, x, weight) - target).pow(2).sum(channel).mean()


def _collect(sim: SimModel, module: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]]) -> torch.Tensor | None:
    """The inputs ``module`` receives in the simulation on ``batches``: samples first (rows for a
    Linear layer), at most :data:`CACHE_VALUES` values (one sample at least)."""
    chunks: list[torch.Tensor] = []
    held = 0

    def hook(layer: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0].detach()
        if isinstance(layer, nn.Linear):
            x = x.reshape(-1, x.shape[-1])
        chunks.append(x.float().clone())
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for batch in batches:
                if held >= CACHE_VALUES:
                    break
                try:
                    sim.gm(*batch)
                except _Stop:
                    held += chunks[-1].numel()
    finally:
        handle.remove()
    if not chunks or any(c.shape[1:] != chunks[0].shape[1:] for c in chunks):
        return None
    x = torch.cat(chunks)
    per_sample = max(x[0].numel(), 1)
    return x[:max(1, CACHE_VALUES // per_sample)]


def _step_size(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> int:
    """Samples (rows for a Linear layer) per optimisation step: about :data:`POSITIONS` outputs."""
    if isinstance(module, nn.Linear):
        return min(len(x), POSITIONS)
    with torch.no_grad():
        out = _apply(module, x[:1], weight)
    positions = max(out[0, 0].numel(), 1)
    return max(1, min(len(x), POSITIONS // positions))


@torch.no_grad()
def _outputs(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, step: int) -> torch.Tensor | None:
    """The layer's float outputs (no bias) on all of ``x``, or None when they would hold more than
    :data:`CACHE_VALUES` values (then each step computes its own)."""
    first = _apply(module, x[:1], weight)
    if first.numel() * len(x) > CACHE_VALUES:
        return None
    return torch.cat([_apply(module, x[start:start + step], weight) for start in range(0, len(x), step)])


@torch.no_grad()
def _mse(module: nn.Module, x: torch.Tensor, reference: torch.Tensor, weight: torch.Tensor, step: int) -> float:
    """Mean squared output error per output value on all of ``x``, in chunks."""
    total, count = 0.0, 0
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        difference = _apply(module, chunk, weight) - _apply(module, chunk, reference)
        total += float(difference.double().pow(2).sum())
        count += difference.numel()
    return total / max(count, 1)


def round_layer(module: nn.Module, quantizer: FakeQuantize, x: torch.Tensor, iterations: int,
                generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
    """AdaRound one layer's weight on its cached inputs ``x``; the weight is not changed here.

    Returns the hard-rounded weight and the layer's figures: the reconstruction MSE (per output
    value, on all of ``x``) of round to nearest and of AdaRound, and the share of weights rounded
    the other way than to nearest."""
    weight = module.weight.detach().float()
    rounding = _Rounding(weight, quantizer)
    step = _step_size(module, x, weight)
    targets = _outputs(module, x, weight, step)  # the float outputs, once, when they fit the cache budget
    optimizer = torch.optim.Adam(rounding.parameters(), lr=LEARNING_RATE)
    with torch.enable_grad():
        for i in range(iterations):
            index = torch.randperm(len(x), generator=generator)[:step] if step < len(x) else slice(None)
            batch = x[index]
            if targets is not None:
                target = targets[index]
            else:
                with torch.no_grad():
                    target = _apply(module, batch, weight)
            h = rounding.h()
            loss = _error(module, batch, target, rounding.soft(h))
            beta = beta_at(i, iterations)
            if beta is not None:
                loss = loss + REGULARIZATION * rounding.regularizer(h, beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    hard = rounding.hard()
    with torch.no_grad():
        nearest = quantizer(weight)
        nearest_integers = torch.div(nearest, rounding.scale).round() + rounding.zero_point
        flipped = float((rounding.integers() != nearest_integers).float().mean())
        h = rounding.h()
        undecided = float(((h > 0.01) & (h < 0.99)).float().mean())
    figures = {"mse_nearest": _mse(module, x, weight, nearest, step),
               "mse_adaround": _mse(module, x, weight, hard, step),
               "flipped": flipped, "undecided": undecided}
    return hard.to(module.weight.dtype), figures


# ---------------------------------------------------------------------------------- the model
def adaround(sim: SimModel, graph: OnnxGraphView, placement: Placement, batches: Sequence[tuple[torch.Tensor, ...]],
             iterations: int = ITERATIONS, seed: int = 0, advance: Callable[[int], None] | None = None
             ) -> dict[str, Any]:
    """AdaRound every eligible layer of ``sim`` (calibrated: its quantizers hold their encodings,
    which do not change) in place, layer after layer in the order the model runs them, on the
    inputs each receives from ``batches`` run through the simulation. ``advance(n)`` is told
    after each layer how many weights were dealt with (a progress bar: layers can take minutes).

    Returns the report section: ``iterations``, ``samples`` (calibration samples run), ``seconds``,
    ``layers`` (per layer: ``node``, ``initializer``, ``inputs`` cached, samples or, for a Linear
    layer, rows; ``mse_nearest`` / ``mse_adaround``, the reconstruction MSE per output value on
    them; ``flipped``, the share of weights rounded the other way than to nearest; ``undecided``,
    the share whose soft rounding had not settled below 0.01 or above 0.99; ``rounding``, which
    one the layer kept), ``skipped`` (quantized weights left alone, with the reason) and
    ``initializers`` (the weights changed)."""
    started = time.perf_counter()
    if iterations < 1:
        raise QuantizationError(f"adaround iterations must be at least 1, got {iterations}")
    layers, skipped = find_layers(sim, graph, placement)
    if advance is not None:
        advance(len(skipped))
    samples = sum(int(b[0].shape[0]) if b[0].dim() else 1 for b in batches)
    generator = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    changed: list[str] = []
    was_training = sim.gm.training
    sim.gm.eval()
    try:
        for layer in layers:
            row = _round_in_place(sim, layer, batches, iterations, generator)
            if row is None:
                skipped.append({"initializer": layer.initializer, "reason": "its layer did not run on the samples"})
            else:
                rows.append(row)
                if row["rounding"] == "adaround":
                    changed.append(layer.initializer)
            if advance is not None:
                advance(1)
    finally:
        sim.gm.train(was_training)
    return {"iterations": iterations, "samples": samples, "layers": rows, "skipped": skipped,
            "initializers": sorted(changed), "seconds": round(time.perf_counter() - started, 3)}


def _round_in_place(sim: SimModel, layer: _Layer, batches: Sequence[tuple[torch.Tensor, ...]], iterations: int,
                    generator: torch.Generator) -> dict[str, Any] | None:
    """AdaRound one layer on the inputs it receives now; its report row (None if it never ran).
    The weight is replaced only when the result differs from round to nearest and reconstructs the
    cached outputs at least as well."""
    started = time.perf_counter()
    x = _collect(sim, layer.module, batches)
    if x is None:
        return None
    hard, figures = round_layer(layer.module, layer.quantizer, x, iterations, generator)
    better = figures["flipped"] > 0 and figures["mse_adaround"] <= figures["mse_nearest"]
    if better:
        with torch.no_grad():
            layer.module.weight.copy_(hard)
    return {"node": layer.node, "initializer": layer.initializer, "inputs": int(len(x)),
            "mse_nearest": _round(figures["mse_nearest"]), "mse_adaround": _round(figures["mse_adaround"]),
            "flipped": round(figures["flipped"], 6), "undecided": round(figures["undecided"], 6),
            "rounding": "adaround" if better else "nearest", "seconds": round(time.perf_counter() - started, 3)}


def first_samples(batches: Sequence[tuple[torch.Tensor, ...]], limit: int) -> list[tuple[torch.Tensor, ...]]:
    """The first ``limit`` samples of ``batches`` (the last batch cut short)."""
    kept: list[tuple[torch.Tensor, ...]] = []
    count = 0
    for batch in batches:
        if count >= limit:
            break
        n = int(batch[0].shape[0]) if batch[0].dim() else 1
        take = min(n, limit - count)
        kept.append(batch if take == n else tuple(t[:take] for t in batch))
        count += take
    return kept


def _round(value: float) -> float:
    """Six significant digits: MSEs span many orders of magnitude across layers."""
    return float(f"{value:.6g}") if math.isfinite(value) else value
