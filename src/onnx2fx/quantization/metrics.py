"""What quantization cost: error of the simulated model against the float model.

Statistics stream over batches (sums of squares, maxima), so evaluation memory does not grow with
the number of samples. SQNR is ``10 log10(sum(ref^2) / sum((ref - quant)^2))`` in dB: every 6 dB
is about one bit of precision left.

Per layer, two numbers per quantized tensor:

- ``sqnr_db``: the simulated tensor against the same tensor of the float model, so error that
  accumulates through the network shows where it grows;
- ``quantizer_sqnr_db``: the tensor right before and after its own quantizer, the noise that
  this one quantizer adds (a bad range shows up here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.fx

from .fake_quant import FakeQuantize


class ErrorStats:
    """Streaming error statistics of an approximation against a reference."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0
        self.dot = 0.0
        self.approx_energy = 0.0
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.ref_max_abs = 0.0
        self.count = 0
        self.argmax_same = 0
        self.argmax_total = 0
        self.shape: list[int] = []

    def update(self, reference: torch.Tensor, approx: torch.Tensor, argmax: bool = False) -> None:
        ref = reference.detach().float().reshape(-1)
        app = approx.detach().float().reshape(-1)
        diff = ref - app
        # float32 dot products: fast, and their rounding is far below any quantization error
        self.signal += float(torch.dot(ref, ref))
        self.noise += float(torch.dot(diff, diff))
        self.dot += float(torch.dot(ref, app))
        self.approx_energy += float(torch.dot(app, app))
        if diff.numel():
            magnitude = diff.abs()
            self.max_abs = max(self.max_abs, float(magnitude.max()))
            self.sum_abs += float(magnitude.sum(dtype=torch.float64))
            self.ref_max_abs = max(self.ref_max_abs, float(ref.abs().max()))
        self.count += diff.numel()
        self.shape = list(reference.shape)
        if argmax and reference.dim() == 2 and reference.shape[1] > 1:
            self.argmax_same += int((reference.argmax(dim=1) == approx.reshape(reference.shape).argmax(dim=1)).sum())
            self.argmax_total += reference.shape[0]

    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.signal, self.noise)

    def to_dict(self) -> dict[str, Any]:
        cosine = self.dot / math.sqrt(self.signal * self.approx_energy) if self.signal and self.approx_energy else 1.0
        out = {"sqnr_db": _finite(self.sqnr_db), "max_abs_error": self.max_abs,
               "mean_abs_error": self.sum_abs / self.count if self.count else 0.0,
               "relative_error": self.max_abs / self.ref_max_abs * 100 if self.ref_max_abs else 0.0,
               "cosine_similarity": cosine}
        if self.argmax_total:
            out["argmax_agreement"] = self.argmax_same / self.argmax_total
        return out


def sqnr_db(signal: float, noise: float) -> float:
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _finite(value: float) -> float | None:
    """JSON has no infinity: an error-free tensor reports ``None`` (shown as "exact")."""
    return None if math.isinf(value) or math.isnan(value) else round(value, 3)


class _Recorder(torch.fx.Interpreter):
    """Runs a GraphModule node by node and keeps the values of the named nodes."""

    def __init__(self, gm: torch.fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        if n.name in self.wanted and isinstance(result, torch.Tensor):
            self.values[n.name] = result.detach()
        return result


def flatten_outputs(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flatten_outputs(v)]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in flatten_outputs(v)]
    return []


def evaluate(float_gm: torch.fx.GraphModule, sim_gm: torch.fx.GraphModule,
             batches: Iterable[Sequence[torch.Tensor]], output_names: Sequence[str],
             float_nodes: Mapping[str, str], quantizers: Mapping[str, FakeQuantize]) -> dict[str, Any]:
    """Compare ``sim_gm`` with ``float_gm`` on ``batches``.

    ``float_nodes`` maps an ONNX tensor to the float model's FX node computing it;
    ``quantizers`` maps the same tensors to the simulated model's quantizer modules.
    """
    outputs = [ErrorStats() for _ in output_names]
    layers: dict[str, ErrorStats] = {t: ErrorStats() for t in quantizers if t in float_nodes}
    local: dict[str, ErrorStats] = {t: ErrorStats() for t in layers}
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for tensor in layers:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], result: Any, tensor: str = tensor) -> None:
            if isinstance(result, torch.Tensor) and isinstance(args[0], torch.Tensor):
                captured[tensor] = (args[0].detach(), result.detach())
        handles.append(quantizers[tensor].register_forward_hook(hook))
    node_to_tensor = {float_nodes[t]: t for t in layers}
    samples = 0
    try:
        with torch.no_grad():
            for batch in batches:
                recorder = _Recorder(float_gm, set(node_to_tensor))
                float_out = flatten_outputs(recorder.run(*batch))
                captured.clear()
                sim_out = flatten_outputs(sim_gm(*batch))
                for stats, ref, approx in zip(outputs, float_out, sim_out):
                    stats.update(ref, approx, argmax=True)
                for node_name, value in recorder.values.items():
                    tensor = node_to_tensor[node_name]
                    if tensor in captured and captured[tensor][1].shape == value.shape:
                        before, after = captured[tensor]
                        layers[tensor].update(value, after)
                        local[tensor].update(before, after)
                samples += int(batch[0].shape[0]) if batch and batch[0].dim() else 1
    finally:
        for handle in handles:
            handle.remove()
    per_layer = [{"tensor": t, "sqnr_db": _finite(layers[t].sqnr_db), "quantizer_sqnr_db": _finite(local[t].sqnr_db),
                  "bits": quantizers[t].bits, "dtype": quantizers[t].grid.dtype,
                  "scale": float(quantizers[t].scale[0]), "zero_point": int(quantizers[t].zero_point[0])}
                 for t in layers if layers[t].count]
    per_layer.sort(key=lambda row: math.inf if row["sqnr_db"] is None else row["sqnr_db"])
    output_rows = [{"name": name, "shape": stats.shape, **stats.to_dict()}
                   for name, stats in zip(output_names, outputs)]
    return {"samples": samples, "outputs": output_rows, "per_layer": per_layer}


def weight_errors(weights: Mapping[str, tuple[torch.Tensor, FakeQuantize]],
                  rounded: Mapping[str, torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """SQNR of each quantized weight against its float values, worst first.

    ``rounded`` holds the tensor the quantizer is applied to where it is not the float weight
    itself (AdaRound moved it onto the grid, away from the nearest grid points)."""
    rows = []
    rounded = rounded or {}
    with torch.no_grad():
        for name, (param, quantizer) in weights.items():
            stats = ErrorStats()
            stats.update(param, quantizer(rounded.get(name, param)))
            rows.append({"initializer": name, "sqnr_db": _finite(stats.sqnr_db), "bits": quantizer.bits,
                         "per_channel": quantizer.axis is not None, "channels": int(quantizer.scale.numel())})
    rows.sort(key=lambda row: math.inf if row["sqnr_db"] is None else row["sqnr_db"])
    return rows
