"""What fine-tuning trains, in parameter groups with their own learning rates.

- **weights**: the quantized weights (straight-through gradients through rounding);
- **biases**: every other float bias of the model (int32 biases of quantized layers train in float
  and are rounded onto their int32 grid by the export, like the simulation does);
- **norms**: the affine scale and shift of BatchNorm / LayerNorm / GroupNorm / InstanceNorm layers
  (BatchNorm statistics stay frozen);
- **ranges**: the quantizers' scales (and asymmetric zero points) with LSQ gradients: the weight
  quantizers' per-output-channel scales by default, the activation quantizers' too on request.

A bias or normalization parameter trains only when the QDQ export can carry its new value: it
must be a float32 ``nn.Parameter`` made from one FLOAT initializer (not a graph input) that no
other torch tensor holds, in a layout the export can undo. Then the exported ONNX computes what
the fine-tuned simulation computes; anything else stays frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..conversion_record import conversion_record
from ..errors import QuantizationError
from .fake_quant import SimModel
from .initializers import get_tensor, torch_names
from .learnable import make_learnable
from .placement import FLOAT, OnnxGraphView
from .simulation import weight_param

TRAINABLE = ("weights", "biases", "norms")
RANGE_LEARNING = ("none", "weights", "all")
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
EXPORTABLE_TRANSFORMS = (None, "transpose", "reshape")


@dataclass
class LearningRates:
    """Peak learning rates per group (Adam); ``None`` falls back as documented on :func:`~.qft.qft`."""

    weights: float
    biases: float
    norms: float
    ranges: float

    def to_dict(self) -> dict[str, float]:
        return {"weights": self.weights, "biases": self.biases, "norms": self.norms, "ranges": self.ranges}


@dataclass
class TrainableGroups:
    weights: list[nn.Parameter] = field(default_factory=list)
    biases: list[nn.Parameter] = field(default_factory=list)
    norms: list[nn.Parameter] = field(default_factory=list)
    ranges: list[nn.Parameter] = field(default_factory=list)
    exported: list[str] = field(default_factory=list)  # initializers of the trained biases and norms

    def optimizer_groups(self, rates: LearningRates) -> tuple[list[dict[str, Any]], list[float]]:
        """Adam's parameter groups (empty ones left out) and their peak learning rates, in order."""
        groups = [{"params": params, "lr": lr, "name": name}
                  for name, params, lr in (("weights", self.weights, rates.weights),
                                           ("biases", self.biases, rates.biases), ("norms", self.norms, rates.norms),
                                           ("ranges", self.ranges, rates.ranges)) if params]
        return groups, [g["lr"] for g in groups]

    def counts(self) -> dict[str, int]:
        return {name: int(sum(p.numel() for p in params)) for name, params in
                (("weights", self.weights), ("biases", self.biases), ("norms", self.norms), ("ranges", self.ranges))}


def trainable_groups(sim: SimModel, graph: OnnxGraphView, train: Sequence[str], range_learning: str
                     ) -> TrainableGroups:
    """Freeze every parameter, then unfreeze the groups ``train`` names and the ranges
    ``range_learning`` names (``none``, ``weights`` or ``all``)."""
    for param in sim.gm.parameters():
        param.requires_grad_(False)
    groups = TrainableGroups()
    seen: set[int] = set()
    if "weights" in train:
        for initializer, quantizer in sim.weights.items():
            weight = weight_param(sim, initializer)
            if quantizer.enabled and quantizer.initialized and isinstance(weight, nn.Parameter) and \
                    id(weight) not in seen:
                weight.requires_grad_(True)
                groups.weights.append(weight)
                seen.add(id(weight))
    if "biases" in train or "norms" in train:
        for initializer, _name, param, is_norm in _float_parameters(sim, graph):
            if id(param) in seen or ("norms" if is_norm else "biases") not in train:
                continue
            param.requires_grad_(True)
            (groups.norms if is_norm else groups.biases).append(param)
            groups.exported.append(initializer)
            seen.add(id(param))
    if range_learning != "none":
        quantizers = sim.quantizers() if range_learning == "all" else list(sim.weights.values())
        groups.ranges = make_learnable(quantizers)
    if not any((groups.weights, groups.biases, groups.norms, groups.ranges)):
        raise QuantizationError("the model has no quantized weights to fine-tune")
    return groups


def _float_parameters(sim: SimModel, graph: OnnxGraphView) -> list[tuple[str, str, nn.Parameter, bool]]:
    """(initializer, torch name, parameter, is a normalization parameter) of every bias or
    normalization parameter whose new value the export can write (see the module docstring)."""
    record = conversion_record(sim.gm)
    held = torch_names(sim.gm)
    quantized = set(sim.weights)
    found = []
    for name, origin in record.parameters.items():
        initializer = origin.initializer
        if not initializer or initializer in quantized or initializer in graph.inputs or \
                initializer not in graph.initializers or graph.initializers[initializer][0] != FLOAT:
            continue
        if len(held.get(initializer, [])) != 1 or origin.transform not in EXPORTABLE_TRANSFORMS:
            continue
        try:
            param = get_tensor(sim.gm, name)
        except AttributeError:
            continue
        if not isinstance(param, nn.Parameter) or param.dtype != torch.float32:
            continue
        module_path, _, attr = name.rpartition(".")
        owner = sim.gm.get_submodule(module_path) if module_path else sim.gm
        if isinstance(owner, NORM_LAYERS) and attr in ("weight", "bias"):
            found.append((initializer, name, param, True))
        elif attr == "bias" or initializer in sim.biases or _is_added_bias(graph, initializer, param):
            found.append((initializer, name, param, False))
    return found


def _is_added_bias(graph: OnnxGraphView, initializer: str, param: torch.Tensor) -> bool:
    """A 1-D constant of several values that only Add nodes read: the bias of a MatMul written as
    MatMul + Add, or the shift of a normalization written out as ReduceMean / Sub / Div / Mul / Add
    (a single value, such as a decomposed normalization's epsilon, is not a bias)."""
    consumers = graph.consumers.get(initializer, [])
    return param.dim() == 1 and param.numel() > 1 and bool(consumers) and all(c.op_type == "Add" for c in consumers)
