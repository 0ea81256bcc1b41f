"""Reading the fine-tuned simulation back out: its quantizers by ONNX name, its encodings, the
values the QDQ writer needs, the before/after measurements and the report section.

The export must equal the simulation: the writer gets every quantized weight as the simulation
rounds it and the trained float value of every bias and normalization parameter, and the int32
bias encodings are derived again from the (possibly learned) input and weight scales and set on the
simulation's bias quantizers, so both add the same rounded biases.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn

from .._core import QdqPlan
from ..conversion_record import conversion_record
from . import distributed
from .config import QuantConfig
from .fake_quant import FakeQuantize, SimModel, set_bias_encodings
from .grid import Encoding
from .initializers import initializer_values, onnx_layout
from .losses import Objective, choose_objective
from .lr_schedule import LrSchedule
from .metrics import evaluate, flatten_outputs
from .placement import OnnxGraphView, Placement
from .qft_params import LearningRates, TrainableGroups
from .simulation import concat_shared_input, follow_shared, graph_order, int32_bias_encodings, run_model, weight_param
from .training_data import TrainingData

CURVE_POINTS = 50


# ---------------------------------------------------------------------------------- the simulated model
def sim_model(gm: torch.fx.GraphModule, graph: OnnxGraphView, activation_names: Sequence[str]) -> SimModel:
    """The quantizers of a simulated GraphModule by ONNX name (what ``insert_fake_quant`` returned)."""
    sim = SimModel(gm)
    producers: dict[str, torch.fx.Node] = dict(zip(graph.inputs, [n for n in gm.graph.nodes if n.op == "placeholder"]))
    for node in gm.graph.nodes:
        for tensor in node.meta.get("onnx_outputs", []) or []:
            producers[tensor] = node
    after: dict[torch.fx.Node, FakeQuantize] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, FakeQuantize) and module.kind == "activation" and node.args:
                after[node.args[0]] = module  # type: ignore[index]
    parameters = {o.initializer: name for name, o in conversion_record(gm).parameters.items() if o.initializer}
    for module in gm.modules():
        if not isinstance(module, FakeQuantize):
            continue
        if module.kind == "activation":
            sim.activations.setdefault(module.onnx_name, module)
        elif module.kind == "bias":
            sim.biases[module.onnx_name] = module
        elif module.onnx_name in parameters:
            sim.weights[module.onnx_name] = module
            sim.weight_params[module.onnx_name] = parameters[module.onnx_name]
    for tensor in activation_names:  # a second ONNX name of an already quantized value
        node = producers.get(tensor)
        if tensor not in sim.activations and node is not None and node in after:
            sim.activations[tensor] = after[node]
    return sim


def current_encodings(sim: SimModel, placement: Placement, graph: OnnxGraphView, names: Sequence[str]
               ) -> tuple[dict[str, Encoding], dict[str, Encoding], dict[str, Encoding], dict[str, Encoding]]:
    """Activation (incl. shared), weight and bias encodings as the quantizers hold them now, and the
    activations that get their own QuantizeLinear."""
    own = {t: q.encoding() for t, q in sim.activations.items() if q.enabled and q.initialized}
    shared = dict(placement.shared)
    producers = graph.producer_map()
    for tensor in placement.concats:
        if tensor in own or tensor not in producers:
            continue
        source = concat_shared_input(producers[tensor], own, shared)
        if source is not None:
            shared[tensor] = source
    wanted = set(names)
    activations: dict[str, Encoding] = {}
    for tensor in graph_order(graph):
        if tensor in wanted:
            encoding = own.get(tensor) or follow_shared(tensor, shared, own)
            if encoding is not None:
                activations[tensor] = encoding
    weights = {name: q.encoding() for name, q in sim.weights.items() if q.enabled and q.initialized}
    biases = int32_bias_encodings(sim, placement, activations, weights, graph)
    set_bias_encodings(sim, biases)  # learned ranges move the int32 bias scales the export uses
    quantized = {t: activations[t] for t in sim.activations if t in activations}
    return activations, weights, biases, quantized


@torch.no_grad()
def export_values(sim: SimModel, graph: OnnxGraphView, changed: Sequence[str]) -> dict[str, np.ndarray]:
    """New data for the writer, in the ONNX initializers' layout: every quantized weight as the
    simulation rounds it (its fake-quantized value), and the current float value of every other
    initializer in ``changed`` (those PTQ changed, such as bias-corrected biases, and those
    fine-tuning trained: biases, normalization parameters). The writer rounds int32 biases onto
    their grid from these values, as the simulation's bias quantizers do."""
    record = conversion_record(sim.gm)
    values = initializer_values(sim.gm, graph, [n for n in dict.fromkeys(changed) if n not in sim.weights])
    for initializer, quantizer in sim.weights.items():
        name = sim.weight_params[initializer]
        weight = quantizer(weight_param(sim, initializer).detach().float().cpu())
        values[initializer] = onnx_layout(weight, name, initializer, record.transform_of(name), graph)
    return values


def objective_for(teacher: torch.fx.GraphModule, batches: Sequence[tuple[torch.Tensor, ...]], supervised: bool,
                  output_names: Sequence[str], distillation: str = "auto") -> Objective:
    with torch.no_grad():
        outputs = flatten_outputs(run_model("running the float model", lambda: teacher(*batches[0])))
    return choose_objective(outputs, supervised, output_names, distillation)


@torch.no_grad()
def measure(teacher: torch.fx.GraphModule, sim_gm: torch.fx.GraphModule, batches: list[tuple[torch.Tensor, ...]],
             labels: torch.Tensor | None, output_names: Sequence[str], with_float: bool) -> dict[str, Any]:
    """Output SQNR of the simulated model against the float model, and accuracies with labels."""
    sim_gm.eval()
    rows = run_model("evaluating", lambda: evaluate(teacher, sim_gm, batches, output_names, {}, {}))["outputs"]
    sqnrs = [r["sqnr_db"] for r in rows if r.get("sqnr_db") is not None]
    result: dict[str, Any] = {"sqnr_db": min(sqnrs) if sqnrs else None, "outputs": rows}
    if labels is not None:
        result["accuracy"] = accuracy(sim_gm, batches, labels)
        if with_float:
            result["float_accuracy"] = accuracy(teacher, batches, labels)
    return result


def accuracy(model: nn.Module, batches: list[tuple[torch.Tensor, ...]], labels: torch.Tensor) -> float:
    predictions = torch.cat([flatten_outputs(model(*b))[0].argmax(1) for b in batches])
    return float((predictions == labels).double().mean())


# ---------------------------------------------------------------------------------- report
def qft_report(source: Path, model_path: Path | None, start: str | None, cfg: QuantConfig, version: str,
               data: TrainingData, eval_info: dict[str, Any], objective: Objective, graph: OnnxGraphView,
               training: dict[str, Any], before: dict[str, Any], after: dict[str, Any],
               ctx: distributed.DistContext, *, rates: LearningRates, schedule: LrSchedule, range_learning: str,
               batch_size: int, seed: int, epochs: int, groups: TrainableGroups, frozen: int, storage: str,
               plan: QdqPlan, weight_encodings: Mapping[str, Encoding], started: float) -> dict[str, Any]:
    steps = training["steps"]
    report: dict[str, Any] = {
        "status": "ok",
        "source_onnx": str(source),
        "model": str(model_path) if model_path else None,
        "start": {"from": start or "PTQ run first with the same options",
                  "ptq_sqnr_db": before["sqnr_db"]},
        "settings": {**cfg.to_dict(), "encoding_version": version, "epochs": epochs, "optimizer": "adam",
                     "lr": rates.weights, "learning_rates": rates.to_dict(), "lr_schedule": schedule.to_dict(),
                     "range_learning": range_learning, "range_lr": rates.ranges if groups.ranges else None,
                     "batch_size": batch_size, "seed": seed, "batchnorm": "statistics frozen (eval mode)",
                     "trained": groups.counts(), "trained_weights": len(groups.weights),
                     "trained_parameters": int(sum(groups.counts().values())),
                     "trained_initializers": len(groups.exported),
                     "learnable_quantizers": frozen, **ctx.describe()},
        "objective": objective.to_dict(graph.outputs),
        "data": {**data.description, "steps_per_epoch": data.steps(ctx.world),
                 "samples_seen": training["samples"]},
        "evaluation": eval_info,
        "loss": loss_summary(steps, training["epochs"]),
        "sqnr_db": {"before": before["sqnr_db"], "after": after["sqnr_db"]},
        "outputs": {"before": before["outputs"], "after": after["outputs"]},
        "checkpoints": training["checkpoints"],
        "resumed_from_epoch": training["resumed_from_epoch"],
        "training_seconds": training["seconds"],
        "int4_storage": storage if any(e.grid.bits == 4 for e in weight_encodings.values()) else None,
        "qdq": None,
        "warnings": list(data.warnings),
        "seconds": 0.0,
    }
    if report["int4_storage"] == "int8":
        report["warnings"].append("4-bit weights are stored as 8-bit initializers holding 4-bit values (the source "
                                  f"model is opset {graph.opset}; INT4 initializers need opset 21)")
    if "accuracy" in before:
        report["accuracy"] = {"float": before["float_accuracy"], "ptq": before["accuracy"], "qft": after["accuracy"]}
    report["min_opset"] = plan.required_opset
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def loss_summary(steps: Sequence[float], epochs: Sequence[float | None]) -> dict[str, Any]:
    """First and last values, per-epoch means and the curve averaged into at most CURVE_POINTS buckets."""
    if not steps:
        return {"steps": 0, "per_epoch": list(epochs), "curve": []}
    window = max(1, len(steps) // 10)
    buckets = min(CURVE_POINTS, len(steps))
    edges = np.linspace(0, len(steps), buckets + 1).astype(int)
    curve = [{"step": int(hi), "loss": float(np.mean(steps[lo:hi]))}
             for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    return {"first": float(steps[0]), "last": float(steps[-1]), "min": float(min(steps)),
            "first_window_mean": float(np.mean(steps[:window])), "last_window_mean": float(np.mean(steps[-window:])),
            "window": window, "steps": len(steps), "per_epoch": list(epochs), "curve": curve}
